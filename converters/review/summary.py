"""What the study review page shows, worked out from an SDTM folder's datasets as plain,
sorted Python values (no plotting here, so each number can be tested on its own).

Every function takes the datasets as :func:`converters.formats.sdtm.read_sdtm_folder` returns
them and, where the study configuration says more than the data (an arm's cohort, the tests
to plot), the :class:`~trialbridge.mappings.study.Study` or ``None``.  Orders are fixed:
arms by ARMCD, subjects by arm then USUBJID, visits by VISITNUM, so the same folder gives the
same page.

Study days: a --DY / --STDY variable when it holds a number, else the day counted from the
subject's RFSTDTC (SDTMIG 4.4.4, no day 0) by :func:`converters.core.iso8601.study_day`; an
event with neither is left off the swimmer plot and counted in ``Swimmer.undated``.
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from trialbridge.converters.core.datasets import Dataset
from trialbridge.converters.core.iso8601 import study_day

NOT_ASSIGNED = "(no arm)"
DISPOSITION_EVENT = "DISPOSITION EVENT"
SEVERITY_ORDER = ("MILD", "MODERATE", "SEVERE")


def rows(datasets: dict[str, Dataset], name: str) -> list[dict[str, Any]]:
    ds = datasets.get(name)
    return ds.rows if ds is not None else []


def text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or math.isinf(value):
        return None
    return float(value)


def _arm_label(dm_row: dict) -> str:
    return text(dm_row.get("ARM")) or NOT_ASSIGNED


def _cohort(study, armcd: str) -> str:
    arm = study.arm(armcd) if study is not None and armcd else None
    return str(arm.get("cohort") or "") if arm else ""


# --------------------------------------------------------------------------- enrolment, disposition


@dataclass
class Enrolment:
    """One row per (arm, cohort): subjects in DM, treated (RFXSTDTC given), and each
    DSDECOD of the DISPOSITION EVENT records; ``decods`` is the column order."""
    decods: list[str]
    rows: list[dict[str, Any]]
    total: dict[str, Any]


def enrolment(datasets: dict[str, Dataset], study=None) -> Enrolment:
    arm_of: dict[str, tuple[str, str, str]] = {}
    for r in rows(datasets, "DM"):
        armcd = text(r.get("ARMCD"))
        arm_of[text(r.get("USUBJID"))] = (armcd, _arm_label(r), _cohort(study, armcd))
    decod_counts: dict[tuple, Counter] = defaultdict(Counter)
    for r in rows(datasets, "DS"):
        if text(r.get("DSCAT")).upper() == DISPOSITION_EVENT or (not text(r.get("DSCAT")) and r.get("DSDECOD")):
            key = arm_of.get(text(r.get("USUBJID")), ("", NOT_ASSIGNED, ""))
            decod_counts[key][text(r.get("DSDECOD")) or "(not coded)"] += 1
    decods = sorted({d for c in decod_counts.values() for d in c})
    groups: dict[tuple, dict[str, Any]] = {}
    for r in rows(datasets, "DM"):
        key = arm_of[text(r.get("USUBJID"))]
        g = groups.setdefault(key, {"armcd": key[0], "arm": key[1], "cohort": key[2], "subjects": 0, "treated": 0})
        g["subjects"] += 1
        g["treated"] += 1 if text(r.get("RFXSTDTC")) else 0
    for key in decod_counts:
        groups.setdefault(key, {"armcd": key[0], "arm": key[1], "cohort": key[2], "subjects": 0, "treated": 0})
    out = []
    for key in sorted(groups, key=lambda k: (k[0] == "", k[0], k[1], k[2])):
        g = groups[key]
        g["disposition"] = {d: decod_counts[key].get(d, 0) for d in decods}
        out.append(g)
    total = {"subjects": sum(g["subjects"] for g in out), "treated": sum(g["treated"] for g in out),
             "disposition": {d: sum(g["disposition"][d] for g in out) for d in decods}}
    return Enrolment(decods, out, total)


# --------------------------------------------------------------------------- swimmer plot


@dataclass
class SwimLane:
    usubjid: str
    arm: str
    start: int
    end: int
    doses: list[int] = field(default_factory=list)
    visits: list[tuple[int, str]] = field(default_factory=list)
    adverse_events: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    relapses: list[int] = field(default_factory=list)


@dataclass
class Swimmer:
    lanes: list[SwimLane]
    undated: Counter  # dataset -> events without a study day
    relapse_variable: str | None


def _day(row: dict, day_var: str, date_var: str, reference: str) -> int | None:
    value = number(row.get(day_var))
    if value is not None:
        return int(value)
    return study_day(text(row.get(date_var)) or None, reference or None)


def swimmer(datasets: dict[str, Dataset], study=None, relapse_qnam: str = "RELAPSDT") -> Swimmer:
    """One lane per subject with a reference start (RFSTDTC): from day 1 to the last day the
    subject is known on study (RFPENDTC, RFENDTC or the latest event), with EX doses
    (EXSTDY), SV visits (SVSTDY), AEs by AESEV (AESTDY) and relapses (SUPPDM ``relapse_qnam``,
    a date)."""
    dm = {text(r.get("USUBJID")): r for r in rows(datasets, "DM") if text(r.get("RFSTDTC"))}
    lanes = {u: SwimLane(u, _arm_label(r), 1, 1) for u, r in dm.items()}
    undated: Counter = Counter()

    def lane_day(name: str, r: dict, day_var: str, date_var: str) -> tuple[SwimLane | None, int | None]:
        lane = lanes.get(text(r.get("USUBJID")))
        if lane is None:
            return None, None
        day = _day(r, day_var, date_var, text(dm[lane.usubjid].get("RFSTDTC")))
        if day is None:
            undated[name] += 1
        return lane, day

    for r in rows(datasets, "EX"):
        lane, day = lane_day("EX", r, "EXSTDY", "EXSTDTC")
        if day is not None:
            lane.doses.append(day)
    for r in rows(datasets, "SV"):
        lane, day = lane_day("SV", r, "SVSTDY", "SVSTDTC")
        if day is not None:
            lane.visits.append((day, text(r.get("VISIT"))))
    for r in rows(datasets, "AE"):
        lane, day = lane_day("AE", r, "AESTDY", "AESTDTC")
        if day is not None:
            lane.adverse_events.setdefault(text(r.get("AESEV")) or "(not given)", []).append(
                (day, text(r.get("AEDECOD")) or text(r.get("AETERM"))))
    relapse_seen = False
    for r in rows(datasets, "SUPPDM"):
        if text(r.get("QNAM")) != relapse_qnam:
            continue
        relapse_seen = True
        lane = lanes.get(text(r.get("USUBJID")))
        if lane is None:
            continue
        day = study_day(text(r.get("QVAL")) or None, text(dm[lane.usubjid].get("RFSTDTC")))
        if day is None:
            undated["SUPPDM"] += 1
        else:
            lane.relapses.append(day)
    for u, lane in lanes.items():
        r = dm[u]
        ends = [study_day(text(r.get(v)) or None, text(r.get("RFSTDTC"))) for v in ("RFPENDTC", "RFENDTC")]
        events = lane.doses + [d for d, _ in lane.visits] + lane.relapses + \
            [d for evs in lane.adverse_events.values() for d, _ in evs]
        lane.start = min([1] + events)
        lane.end = max([1] + [e for e in ends if e is not None] + events)
        lane.doses.sort()
        lane.visits.sort()
        lane.relapses.sort()
        for evs in lane.adverse_events.values():
            evs.sort()
    ordered = sorted(lanes.values(), key=lambda la: (la.arm == NOT_ASSIGNED, la.arm, la.usubjid))
    return Swimmer(ordered, undated, relapse_qnam if relapse_seen else None)


# --------------------------------------------------------------------------- lab trajectories


@dataclass
class Trajectory:
    domain: str
    testcd: str
    test: str
    unit: str
    reference_range: tuple[float | None, float | None]
    visits: list[str]  # category order on the x axis (by VISITNUM)
    by_arm: dict[str, list[tuple[str, list[tuple[str, float]]]]]  # arm -> [(usubjid, [(visit, value)])]
    range_results: int = 0  # results that have this reference range (ranges may differ by age or sex)

    @property
    def points(self) -> int:
        return sum(len(values) for subjects in self.by_arm.values() for _, values in subjects)


def trajectory_tests(datasets: dict[str, Dataset], study=None) -> list[tuple[str, str]]:
    """(domain, test code) to plot: the study configuration's ``review.trajectories`` (those
    present in the data, in its order), else every test of every findings dataset with
    numeric standard results (--STRESN), by domain and test code."""
    configured = ((study.config.get("review") or {}).get("trajectories") if study is not None else None)
    if configured:
        out = []
        for domain, codes in configured.items():
            present = {text(r.get(f"{domain}TESTCD")) for r in rows(datasets, domain)}
            out.extend((domain, code) for code in codes if code in present)
        return out
    out = []
    for domain in sorted(datasets):
        ds = datasets[domain]
        names = {v.name for v in ds.variables}
        if {f"{domain}TESTCD", f"{domain}STRESN", "VISITNUM"} <= names:
            out.extend((domain, code) for code in sorted({text(r.get(f"{domain}TESTCD")) for r in ds.rows
                                                          if number(r.get(f"{domain}STRESN")) is not None}))
    return out


def trajectory(datasets: dict[str, Dataset], domain: str, testcd: str) -> Trajectory:
    """Each subject's standard results (--STRESN) of one test by visit, grouped by arm; the
    reference range is the most common (--STNRLO, --STNRHI) pair of the test's rows (ranges
    may differ by age or sex: ``range_results`` says how many results have it)."""
    arm_of = {text(r.get("USUBJID")): _arm_label(r) for r in rows(datasets, "DM")}
    visit_order: dict[str, float] = {}
    values: dict[str, dict[str, list[tuple[float, str, float]]]] = defaultdict(lambda: defaultdict(list))
    ranges: Counter = Counter()
    units: Counter = Counter()
    names: Counter = Counter()
    for r in rows(datasets, domain):
        if text(r.get(f"{domain}TESTCD")) != testcd:
            continue
        value, visitnum = number(r.get(f"{domain}STRESN")), number(r.get("VISITNUM"))
        if value is None or visitnum is None:
            continue
        visit = text(r.get("VISIT")) or f"VISIT {visitnum:g}"
        visit_order[visit] = min(visit_order.get(visit, visitnum), visitnum)
        usubjid = text(r.get("USUBJID"))
        values[arm_of.get(usubjid, NOT_ASSIGNED)][usubjid].append((visitnum, visit, value))
        ranges[(number(r.get(f"{domain}STNRLO")), number(r.get(f"{domain}STNRHI")))] += 1
        units[text(r.get(f"{domain}STRESU"))] += 1
        names[text(r.get(f"{domain}TEST"))] += 1

    def most_common(counter: Counter, default):
        return sorted(counter.items(), key=lambda kv: (-kv[1], str(kv[0])))[0][0] if counter else default

    by_arm = {arm: [(u, [(visit, v) for _, visit, v in sorted(points, key=lambda p: (p[0], p[2]))])
                    for u, points in sorted(subjects.items())]
              for arm, subjects in sorted(values.items(), key=lambda kv: (kv[0] == NOT_ASSIGNED, kv[0]))}
    reference_range = most_common(ranges, (None, None))
    return Trajectory(domain, testcd, most_common(names, testcd), most_common(units, ""), reference_range,
                      [v for v, _ in sorted(visit_order.items(), key=lambda kv: (kv[1], kv[0]))], by_arm,
                      ranges.get(reference_range, 0))


# --------------------------------------------------------------------------- adverse events


@dataclass
class AeTable:
    severities: list[str]
    rows: list[dict[str, Any]]  # {soc, pt, subjects, events, by_severity}; a SOC row has pt ""


def ae_table(datasets: dict[str, Dataset]) -> AeTable:
    """Events and subjects by SOC (AEBODSYS, else AESOC) and PT (AEDECOD, else AETERM), each
    SOC followed by its PTs; columns per AESEV (MILD, MODERATE, SEVERE first)."""
    events: dict[tuple[str, str], Counter] = defaultdict(Counter)
    subjects: dict[tuple[str, str], set] = defaultdict(set)
    severities: set[str] = set()
    for r in rows(datasets, "AE"):
        soc = text(r.get("AEBODSYS")) or text(r.get("AESOC")) or "(not coded)"
        pt = text(r.get("AEDECOD")) or text(r.get("AETERM")) or "(not coded)"
        sev = text(r.get("AESEV")) or "(not given)"
        severities.add(sev)
        for key in ((soc, ""), (soc, pt)):
            events[key][sev] += 1
            subjects[key].add(text(r.get("USUBJID")))
    order = [s for s in SEVERITY_ORDER if s in severities] + sorted(severities - set(SEVERITY_ORDER))

    def line(key):
        return {"soc": key[0], "pt": key[1], "subjects": len(subjects[key]), "events": sum(events[key].values()),
                "by_severity": {s: events[key].get(s, 0) for s in order}}

    socs = sorted((k for k in events if k[1] == ""), key=lambda k: (-sum(events[k].values()), k[0]))
    out = []
    for soc in socs:
        out.append(line(soc))
        pts = sorted((k for k in events if k[0] == soc[0] and k[1]), key=lambda k: (-sum(events[k].values()), k[1]))
        out.extend(line(k) for k in pts)
    return AeTable(order, out)
