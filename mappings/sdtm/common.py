"""The small closed set of mapping algorithms the SDTM domain modules choose from
(after sdtm.oak): ``assign`` (copy a record field to a variable as is), ``assign_ct``
(map through a terminology table, reporting every unmapped value), ``iso_date``
(copy an ISO 8601 date, reporting partial dates) and derivations from
:mod:`mappings.derive`.

A domain module declares its simple fields as ``Field`` rows; the same rows drive
records -> SDTM and SDTM -> records, so both directions stay symmetric.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trialbridge.converters.core import iso8601
from trialbridge.mappings.terminology import ct
from trialbridge.converters.core.records import where
from trialbridge.mappings import derive, terminology
from trialbridge.mappings.sdtm.context import Context


@dataclass(frozen=True)
class Field:
    record: str  # field of the internal record
    variable: str  # SDTM variable
    table: str | None = None  # terminology table for assign_ct; None = assign as is
    kind: str = "text"  # text | date | number


def forward(rec: dict[str, Any], fields: tuple[Field, ...], ctx: Context, out: dict[str, Any]) -> None:
    """Fill ``out`` from ``rec`` by the declared fields."""
    for f in fields:
        value = rec.get(f.record, "")
        if f.kind == "number":
            out[f.variable] = derive.to_number(value) if value else None
            if value and out[f.variable] is None:
                problem = derive.number_problem(value)
                if problem is not None and problem[0] == "range":
                    ctx.log.error("SDTM-NUM-RANGE", f"{f.record} {value!r} is {problem[1]}; {f.variable} left empty",
                                  **where(rec, f.record), value=value)
                else:
                    reason = problem[1] if problem else "not a number"
                    ctx.log.error("SDTM-NOT-NUMERIC", f"{f.record} is {reason}; {f.variable} left empty",
                                  **where(rec, f.record), value=value)
            continue
        if f.table and value:
            mapped = terminology.map_term(f.table, value, log=ctx.log, where=where(rec, f.record))
            out[f.variable] = mapped or ""
            continue
        if f.kind == "date" and value and iso8601.is_partial(value):
            ctx.log.info("SDTM-PARTIAL-DATE", f"{f.record} is a partial date; kept as given in {f.variable}, "
                         "study day left empty", **where(rec, f.record), value=value)
        out[f.variable] = value


def backward(row: dict[str, Any], fields: tuple[Field, ...], rec: dict[str, Any]) -> None:
    """Fill record ``rec`` from SDTM ``row`` by the declared fields."""
    for f in fields:
        value = row.get(f.variable)
        if f.kind == "number":
            rec[f.record] = derive.format_number(value) if isinstance(value, (int, float)) else (value or "")
        else:
            rec[f.record] = "" if value is None else str(value)


def ny(value: str | None) -> str:
    """Y/N from the captured value through the NY codelist (C66742); '' when empty."""
    if not value:
        return ""
    return ct.codelist("NY").lookup(value) or ""


def base_row(ctx: Context, domain: str, subject_id: str) -> dict[str, Any]:
    return {"STUDYID": ctx.studyid, "DOMAIN": domain, "USUBJID": ctx.usubjid(subject_id)}


def subject_index(datasets: dict) -> dict[str, dict[str, Any]]:
    """USUBJID -> DM row, for the SDTM -> records direction."""
    dm = datasets.get("DM")
    return {r["USUBJID"]: r for r in dm.rows} if dm else {}


def subject_id_of(dm_index: dict[str, dict], usubjid: str) -> str:
    row = dm_index.get(usubjid)
    return str(row.get("SUBJID") or usubjid) if row else usubjid


def clean(rec: dict[str, Any]) -> dict[str, Any]:
    """Drop empty values so records compare equal to what a reader produces."""
    return {k: v for k, v in rec.items() if v not in ("", None)}


def visit_label(visit: str | None, study) -> str:
    """The site's visit label for an SDTM VISIT: planned visits by name, any unplanned
    visit ("UNSCHEDULED 3.01") as UNSCHEDULED — the number is derived, not captured."""
    if not visit:
        return ""
    if study is not None and any(v.name == visit for v in study.visits):
        return visit
    return "UNSCHEDULED" if visit.startswith("UNSCHEDULED") else visit
