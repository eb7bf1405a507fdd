"""Per-run context for records -> SDTM: subjects with their USUBJID and reference
dates, subject elements, visit and epoch assignment, and the SUPPQUAL collector.

Built once from the canonical records and the study configuration; every domain
module reads it and none writes to another's rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from trialbridge.converters.core import iso8601
from trialbridge.converters.core.issues import IssueLog
from trialbridge.converters.core.records import Records, where
from trialbridge.mappings import derive
from trialbridge.mappings.study import Study


@dataclass
class SubjectInfo:
    row: dict[str, Any]
    usubjid: str
    rficdtc: str = ""
    rfxstdtc: str = ""
    rfxendtc: str = ""
    rfendtc: str = ""
    elements: list[dict[str, str]] = field(default_factory=list)  # SE rows: ETCD, SESTDTC, SEENDTC, EPOCH
    unplanned: dict[str, float] = field(default_factory=dict)  # date -> VISITNUM of an unplanned visit

    @property
    def rfstdtc(self) -> str:
        return self.rfxstdtc


@dataclass
class SuppRow:
    rdomain: str
    usubjid: str
    idvar: str
    idvarval: str
    qnam: str
    qlabel: str
    qval: str
    qorig: str = "CRF"
    qeval: str = ""


class Context:
    def __init__(self, records: Records, study: Study, log: IssueLog):
        self.records = records
        self.study = study
        self.log = log
        self.studyid = study.study_id
        self.supp: list[SuppRow] = []
        self.subjects: dict[str, SubjectInfo] = {}
        self.rejected: set[tuple[str, Any]] = set()
        self._build_subjects()
        self._build_elements()
        self._build_unplanned_visits()

    # -- subjects and reference dates ------------------------------------------------
    def _build_subjects(self) -> None:
        doses: dict[str, list[dict]] = {}
        for ex in self.records["exposure"]:
            doses.setdefault(ex["subject_id"], []).append(ex)
        last_contact: dict[str, list[str]] = {}
        for name in ("visit", "disposition", "lab_result", "cell_phenotype"):
            for r in self.records[name]:
                d = r.get("start") or r.get("date") or r.get("collected")
                if d:
                    last_contact.setdefault(r["subject_id"], []).append(d)
        for s in self.records["subject"]:
            sid = s["subject_id"]
            info = SubjectInfo(row=s, usubjid=self.study.usubjid(s["site_id"], sid), rficdtc=s.get("consent_date", ""))
            if self.study.site(s["site_id"]) is None:
                self.log.error("DM-UNKNOWN-SITE", f"site {s['site_id']!r} is not in the study configuration's sites",
                               **where(s, "site_id"), value=s["site_id"])
            # a dose dated before consent is an error (EX-BEFORE-CONSENT); it stays in EX but
            # does not move the reference dates, so one typo does not shift every study day
            mine = [e for e in doses.get(sid, []) if not dosed_before_consent(e["start"], info.rficdtc)]
            if mine:
                info.rfxstdtc = iso8601.earliest(e["start"] for e in mine) or ""
                info.rfxendtc = iso8601.latest(e.get("end") or e["start"] for e in mine) or ""
            contacts = last_contact.get(sid, []) + [info.rfxendtc, s.get("death_date", "")]
            info.rfendtc = (iso8601.latest(contacts) or "") if info.rfxstdtc else ""
            self.subjects[sid] = info

    def usubjid(self, subject_id: str) -> str:
        return self.subjects[subject_id].usubjid

    def reject(self, row: dict, code: str, message: str, field_name: str | None = None, value: Any = None,
               severity: str = "error") -> None:
        """Record that an input row could not be converted, with the reason."""
        self.log.add(severity, code, message + "; row not converted", **where(row, field_name),
                     value=value if value is not None else (row.get(field_name) if field_name else None))
        loc = row.get("_where") or {}
        if loc:
            self.rejected.add((loc.get("file"), loc.get("record")))
            self.log.count_row(loc.get("file"), "rejected")

    # -- subject elements (SE) -----------------------------------------------------------
    def _build_elements(self) -> None:
        by_subject: dict[str, list[dict]] = {}
        for ex in self.records["exposure"]:
            by_subject.setdefault(ex["subject_id"], []).append(ex)
        disp_end: dict[str, str] = {}
        for d in self.records["disposition"]:
            if (d.get("category") or "DISPOSITION EVENT") == "DISPOSITION EVENT":
                disp_end[d["subject_id"]] = iso8601.latest([disp_end.get(d["subject_id"]), d["date"]]) or ""
        scrn = self._element_by_epoch("SCREENING")
        fu = self._element_by_epoch("FOLLOW-UP")
        for sid, info in self.subjects.items():
            doses = sorted((e for e in by_subject.get(sid, []) if not dosed_before_consent(e["start"], info.rficdtc)),
                           key=lambda e: iso8601.sort_key(e["start"]))
            segments: list[list[str]] = []  # [ETCD, start, end]
            if scrn and info.rficdtc:
                segments.append([scrn, info.rficdtc, info.rfxstdtc or disp_end.get(sid, "") or info.rficdtc])
            course_runs: list[tuple[str, list[dict]]] = []
            for ex in doses:
                course = ex.get("course") or "INITIAL"
                if course_runs and course_runs[-1][0] == course:
                    course_runs[-1][1].append(ex)
                else:
                    course_runs.append((course, [ex]))
            for i, (course, run) in enumerate(course_runs):
                element = self.study.element_for_course(course)
                if element is None:
                    self.log.error("SE-UNKNOWN-COURSE", f"course {course!r} matches no element of the study "
                                   "configuration; dose kept in EX but no SE element", **where(run[0], "course"),
                                   value=course)
                    continue
                start = run[0]["start"]
                last_end = iso8601.latest(e.get("end") or e["start"] for e in run) or ""
                fu_start = _next_day(last_end)
                nxt = course_runs[i + 1][1][0]["start"] if i + 1 < len(course_runs) else None
                gap_before_next = nxt is not None and fu and iso8601.before(fu_start, nxt, precision="day") and \
                    course_runs[i + 1][0] == "RETREATMENT"
                if nxt and not gap_before_next:
                    segments.append([element["code"], start, nxt])
                else:
                    segments.append([element["code"], start, fu_start])
                    if fu:
                        segments.append([fu, fu_start, nxt or info.rfendtc or fu_start])
            info.elements = [
                {"ETCD": code, "SESTDTC": st, "SEENDTC": en, "EPOCH": self.epoch_of_element(code, info)}
                for code, st, en in segments
            ]

    def _element_by_epoch(self, epoch: str) -> str | None:
        for arm in self.study.config["arms"]:
            for e in arm["elements"]:
                if e["epoch"] == epoch:
                    return e["element"]
        return None

    def epoch_of_element(self, etcd: str, info: SubjectInfo | None = None) -> str:
        arms = self.study.config["arms"]
        if info is not None:
            arm = self.study.arm(info.row.get("actual_arm") or info.row.get("planned_arm") or "")
            if arm:
                arms = [arm] + arms
        for arm in arms:
            for e in arm["elements"]:
                if e["element"] == etcd:
                    return e["epoch"]
        return ""

    def epoch(self, subject_id: str, dtc: str | None, *, undecided: str) -> str:
        """EPOCH of a date/time: that of the subject element it falls in (SDTMIG 3.4
        §4.1.3.1, :func:`element_at`); a date after the last element takes the last
        element's; a partial date has none."""
        info = self.subjects.get(subject_id)
        if not info:
            return ""
        el = element_at(info.elements, dtc, undecided=undecided)
        if el is None and info.elements and iso8601.date_part(dtc) \
                and iso8601.within(dtc, info.elements[-1]["SESTDTC"]):
            el = info.elements[-1]
        return el["EPOCH"] if el else ""

    # -- visits ------------------------------------------------------------------------
    def planned_visit(self, label: str | None):
        if not label:
            return None
        key = label.strip().upper()
        if not hasattr(self, "_aliases"):
            self._aliases = {k.upper(): v for k, v in (self.study.config.get("visit_aliases") or {}).items()}
            self._planned = {v.name.upper(): v for v in self.study.visits}
        name = self._aliases.get(key.replace(" ", ""), self._aliases.get(key, key))
        return self._planned.get(name.upper())

    def _build_unplanned_visits(self) -> None:
        # planned visit of each subject's visit date, for observations that name no visit
        self.visit_on: dict[tuple[str, str], object] = {}
        unplanned: dict[str, set[str]] = {}
        for v in self.records["visit"]:
            planned = self.planned_visit(v["visit"])
            if planned is None:
                unplanned.setdefault(v["subject_id"], set()).add(v["start"][:10])
            else:
                self.visit_on.setdefault((v["subject_id"], v["start"][:10]), planned)
        for sid, info in self.subjects.items():
            for d in sorted(unplanned.get(sid, ())):
                info.unplanned[d] = self._unplanned_number(info, d)

    def _unplanned_number(self, info: SubjectInfo, day: str) -> float:
        sd = iso8601.study_day(day, info.rfstdtc)
        base = 0.0
        for v in self.study.visits:
            if sd is not None and v.day <= sd:
                base = max(base, v.number)
        taken = {n for n in info.unplanned.values() if int(round(n * 100)) // 100 == int(base)}
        k = 1
        while round(base + k / 100, 2) in taken:
            k += 1
        return round(base + k / 100, 2)

    def visit_for(self, subject_id: str, dtc: str | None, label: str | None = None) -> tuple[float | None, str]:
        """VISITNUM and VISIT for an observation: the planned visit the site named, else
        the subject's visit on that date, else the planned window containing the study
        day, else an unplanned visit numbered after the last planned one before it."""
        planned = self.planned_visit(label)
        if planned:
            return planned.number, planned.name
        info = self.subjects.get(subject_id)
        if info is None or not dtc:
            return None, ""
        day = dtc[:10]
        p = self.visit_on.get((subject_id, day))
        if p is not None:
            return p.number, p.name
        if day in info.unplanned:
            n = info.unplanned[day]
            return n, unplanned_name(n)
        sd = iso8601.study_day(dtc, info.rfstdtc)
        if sd is not None:
            fits = [v for v in self.study.visits if v.window[0] <= sd <= v.window[1]]
            if fits:
                best = min(fits, key=lambda v: (abs(v.day - sd), v.number))
                return best.number, best.name
        if sd is None and not info.rfstdtc:
            return None, ""
        n = self._unplanned_number(info, day)
        info.unplanned[day] = n
        return n, unplanned_name(n)

    # -- SUPPQUAL --------------------------------------------------------------------------
    def add_supp(self, rdomain: str, usubjid: str, idvar: str, idvarval: Any, qnam: str, qlabel: str, qval: str,
                 qorig: str = "CRF", qeval: str = "") -> None:
        if qval in (None, ""):
            return
        self.supp.append(SuppRow(rdomain, usubjid, idvar, derive.format_number(idvarval)
                                 if isinstance(idvarval, (int, float)) else str(idvarval), qnam, qlabel, str(qval),
                                 qorig, qeval))


def element_at(elements: list[dict[str, Any]], dtc: str | None, *, undecided: str) -> dict[str, Any] | None:
    """The SE element (a row with SESTDTC, SEENDTC) a date/time complete to the day falls in.

    An element runs from SESTDTC up to, not including, SEENDTC, both instants (a boundary
    without a time is the start of its day: :func:`iso8601.within`).  When the value's
    precision cannot place it — a date without a time on the day the first dose was given
    at 08:30 — ``undecided`` chooses: ``"earlier"`` for findings and milestones, collected
    before the dose by protocol (and flagged --LOBXFL on that basis), ``"later"`` for
    adverse events, which count as treatment-emergent on the day of first dose (AETRTEM)
    and so must not fall in SCREENING, and for doses, which belong to the element they start."""
    if undecided not in ("earlier", "later"):
        raise ValueError("undecided must be 'earlier' or 'later'")
    if iso8601.date_part(dtc) is None:
        return None
    found, possible = None, []
    for el in elements:
        if iso8601.parse(el.get("SESTDTC")) is None:
            continue
        inside = iso8601.within(dtc, el["SESTDTC"], el.get("SEENDTC"))
        if inside:
            found = el
        elif inside is None:
            possible.append(el)
    if found is None and possible:
        found = possible[0] if undecided == "earlier" else possible[-1]
    return found


def dosed_before_consent(start: str, consent: str) -> bool:
    """A dose whose date is known to be before the day of informed consent (EX-BEFORE-CONSENT):
    compared by day, so ``2020-05`` is before a consent on 4 June and ``2020-06`` is not known
    to be."""
    return iso8601.before(start, consent, precision="day")


def unplanned_name(number: float) -> str:
    return f"UNSCHEDULED {number:.2f}"


def _next_day(dtc: str) -> str:
    d = iso8601.date_part(dtc)
    return (d + timedelta(days=1)).isoformat() if d else ""
