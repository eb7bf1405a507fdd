"""Trial design domains TA, TE, TV, TI, TS — built from the study configuration
(SDTMIG 3.4 section 7).  They carry no subject data, so there is no reverse mapping:
reading them back, the configuration is the source of truth.

TS also takes what only the data can say (ACTSUB, SENDTC) from a :class:`SubjectTally`
gathered one DM row at a time, and codes its values from the table
``mappings/terminology/ts/trial_summary.yaml``: a parameter with a CDISC codelist gets the
term's C-code (TSVALCD), ``CDISC CT`` (TSVCDREF) and the CT package date (TSVCDVER); other codes
(SNOMED, UNII, MED-RT, a registry) come from the configuration.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Callable, Iterable

import jsonschema
import yaml

from trialbridge.converters.core.issues import IssueLog, schema_problem
from trialbridge.mappings.terminology import ct
from trialbridge.mappings.study import Study


def ta(study: Study) -> list[dict[str, Any]]:
    rows = []
    for arm in study.config["arms"]:
        for n, e in enumerate(arm["elements"], start=1):
            element = study.element(e["element"]) or {}
            rows.append({"STUDYID": study.study_id, "DOMAIN": "TA", "ARMCD": arm["code"], "ARM": arm["name"],
                         "TAETORD": n, "ETCD": e["element"], "ELEMENT": element.get("name", ""),
                         "TABRANCH": e.get("branch", ""), "TATRANS": e.get("transition", ""), "EPOCH": e["epoch"]})
    return rows


def te(study: Study) -> list[dict[str, Any]]:
    return [{"STUDYID": study.study_id, "DOMAIN": "TE", "ETCD": e["code"], "ELEMENT": e["name"],
             "TESTRL": e["start_rule"], "TEENRL": e.get("end_rule", ""), "TEDUR": e.get("duration", "")}
            for e in study.config["elements"]]


def tv(study: Study) -> list[dict[str, Any]]:
    rows = []
    for v in study.visits:
        lo, hi = v.window
        rows.append({"STUDYID": study.study_id, "DOMAIN": "TV", "VISITNUM": v.number, "VISIT": v.name,
                     "VISITDY": v.day, "TVSTRL": f"Study day {v.day} (window day {lo} to {hi})"})
    return rows


def ti(study: Study) -> list[dict[str, Any]]:
    return [{"STUDYID": study.study_id, "DOMAIN": "TI", "IETESTCD": c["code"], "IETEST": c["text"],
             "IECAT": c["category"]} for c in study.config.get("criteria", [])]


# What the output itself conforms to: SDTMIG 3.3 metadata (CP from 3.4), which goes with
# SDTM v1.7.  Added to TS unless the study configuration states them.
STANDARD_TS = ({"parmcd": "SDTIGVER", "value": "3.3"}, {"parmcd": "SDTMVER", "value": "1.7"})

CDISC_CT = "CDISC CT"  # TSVCDREF of a value coded from CDISC controlled terminology


@lru_cache(maxsize=1)
def ts_table() -> dict[str, Any]:
    """The TS parameter table, checked against its schema."""
    text = resources.files("trialbridge.mappings").joinpath("terminology", "ts", "trial_summary.yaml").read_text("utf-8")
    data = yaml.safe_load(text)
    schema = json.loads(resources.files("trialbridge.schemas").joinpath(
        "config/trial_summary_table.schema.json").read_text("utf-8"))
    problem = schema_problem(jsonschema.Draft202012Validator(schema), data)
    if problem:
        raise ValueError(f"mappings/terminology/ts/trial_summary.yaml invalid {problem}")
    return data


@dataclass
class SubjectTally:
    """What TS derives from the subjects, gathered from DM one row at a time (nothing held
    per subject): how many DM rows, how many of them entered the trial (ARMNRS not one of the
    table's ``actual_subjects_exclude``: screen failures and subjects never assigned), and the
    latest end of participation (RFPENDTC, else RFENDTC) over every subject."""

    exclude: frozenset[str] = field(default_factory=lambda: frozenset(ts_table()["actual_subjects_exclude"]))
    subjects: int = 0
    enrolled: int = 0
    last_date: str = ""

    def add(self, dm_row: dict[str, Any]) -> None:
        self.subjects += 1
        if (dm_row.get("ARMNRS") or "") not in self.exclude:
            self.enrolled += 1
        end = str(dm_row.get("RFPENDTC") or dm_row.get("RFENDTC") or "")[:10]
        if end > self.last_date:
            self.last_date = end

    @classmethod
    def of(cls, dm_rows: Iterable[dict[str, Any]]) -> "SubjectTally":
        tally = cls()
        for row in dm_rows:
            tally.add(row)
        return tally


# Derivations the table names (``derived``): each gives the parameter's values, [] when it
# cannot (no subjects gathered).
def planned_arms(study: Study, tally: SubjectTally | None) -> list[str]:
    return [str(len(study.config["arms"]))]


def planned_subjects(study: Study, tally: SubjectTally | None) -> list[str]:
    n = study.config.get("planned_subjects")
    return [str(n)] if n else []


def site_countries(study: Study, tally: SubjectTally | None) -> list[str]:
    return sorted({s["country"] for s in study.config["sites"]})


def actual_subjects(study: Study, tally: SubjectTally | None) -> list[str]:
    return [str(tally.enrolled)] if tally is not None else []  # data seen: none enrolled is 0


def study_end_date(study: Study, tally: SubjectTally | None) -> list[str]:
    return [tally.last_date] if tally is not None and tally.last_date else []


DERIVATIONS: dict[str, Callable[[Study, SubjectTally | None], list[str]]] = {
    f.__name__: f for f in (planned_arms, planned_subjects, site_countries, actual_subjects, study_end_date)}


def _summary_items(study: Study, tally: SubjectTally | None, log: IssueLog | None) -> list[dict[str, Any]]:
    """The configured items, then the derived parameters the configuration does not state,
    then the standards the output conforms to."""
    items = list(study.config["trial_summary"])
    given = {t["parmcd"] for t in items}
    for parmcd, name in ts_table()["derived"].items():
        values = DERIVATIONS[name](study, tally)
        if parmcd not in given:
            items.extend({"parmcd": parmcd, "value": v} for v in values)
        elif values and log is not None:
            stated = [t.get("value") for t in items if t["parmcd"] == parmcd]
            if stated != values:
                log.warning("TS-DERIVED-DIFFERS", f"TS {parmcd} is configured as {', '.join(map(str, stated))} "
                            f"but the data give {', '.join(values)}; the configured value is written",
                            file="ts", field=parmcd, value=", ".join(values))
    return items + [t for t in STANDARD_TS if t["parmcd"] not in given]


def _coded(t: dict[str, Any], log: IssueLog | None) -> dict[str, str]:
    """TSVALCD, TSVCDREF, TSVCDVER of one item: as configured, else from the parameter's CDISC
    codelist, else the format its value is written in."""
    if t.get("code_system"):
        return {"TSVALCD": t.get("code", ""), "TSVCDREF": t["code_system"], "TSVCDVER": t.get("code_version", "")}
    value = t.get("value")
    if value is None:
        return {}
    table = ts_table()
    parmcd = t["parmcd"]
    if parmcd in table["codelists"]:
        codelist = ct.codelist(table["codelists"][parmcd])
        if value in codelist.terms:
            return {"TSVALCD": codelist.terms[value], "TSVCDREF": CDISC_CT, "TSVCDVER": ct.version()}
        if log is None:
            return {}
        where = {"file": "ts", "field": parmcd, "value": value}
        if t.get("ct_extension") and codelist.extensible:
            log.info("TS-VALUE-CT-EXTENSION", f"TS {parmcd} value {value!r} is a sponsor extension of codelist "
                     f"{codelist.short_name} ({codelist.code}, extensible), as the configuration states; "
                     f"TSVALCD left empty", **where)
            return {}
        near = codelist.lookup(value)
        hint = f" (its submission value is {near!r})" if near else ""
        log.add("warning" if codelist.extensible else "error", "TS-VALUE-NOT-IN-CT",
                f"TS {parmcd} value {value!r} is not a term of codelist {codelist.short_name} "
                f"({codelist.code}, {'extensible' if codelist.extensible else 'non-extensible'}){hint}; "
                f"TSVALCD left empty", **where)
        return {}
    if parmcd in table["self_coded"]:  # the value is its own code (a country's ISO 3166 code)
        return {"TSVALCD": value, "TSVCDREF": table["self_coded"][parmcd], "TSVCDVER": ""}
    if parmcd in table["formats"]:  # written in a standard format, no code (ISO 8601)
        return {"TSVALCD": "", "TSVCDREF": table["formats"][parmcd], "TSVCDVER": ""}
    return {}


def ts(study: Study, log: IssueLog | None = None, tally: SubjectTally | None = None) -> list[dict[str, Any]]:
    """TS rows: configured, derived (``tally``: DM gathered row by row; without it ACTSUB and
    SENDTC are left out) and coded.  Findings go to ``log`` when given."""
    rows = []
    seq: dict[str, int] = {}
    parm = ct.codelist("TSPARM") if ct.has_codelist("TSPARM") else None
    parmcd = ct.codelist("TSPARMCD") if ct.has_codelist("TSPARMCD") else None
    for t in _summary_items(study, tally, log):
        seq[t["parmcd"]] = seq.get(t["parmcd"], 0) + 1
        name = ""
        if parm and parmcd and t["parmcd"] in parmcd.terms:
            code = parmcd.terms[t["parmcd"]]
            name = next((v for v, c in parm.terms.items() if c == code), "")
        row = {"STUDYID": study.study_id, "DOMAIN": "TS", "TSSEQ": seq[t["parmcd"]], "TSPARMCD": t["parmcd"],
               "TSPARM": name or t["parmcd"], "TSVAL": t.get("value", ""), "TSVALNF": t.get("null_flavor", ""),
               "TSVALCD": "", "TSVCDREF": "", "TSVCDVER": ""}
        row.update(_coded(t, log))
        rows.append(row)
    if log is not None:
        present = {r["TSPARMCD"] for r in rows}
        for missing in (p for p in ts_table()["expected"] if p not in present):
            log.warning("TS-PARM-MISSING", f"TS has no {missing} record (SDTMIG 3.3 Appendix C1 / FDA TCG expect it; "
                        f"give its value, or a null_flavor saying why there is none)", file="ts", field="TSPARMCD",
                        value=missing)
    return rows


def design_rows(study: Study, log: IssueLog | None = None, tally: SubjectTally | None = None) -> dict[str, list[dict[str, Any]]]:
    """Every trial design dataset's rows (unsorted)."""
    return {"TA": ta(study), "TE": te(study), "TV": tv(study), "TI": ti(study), "TS": ts(study, log, tally)}

