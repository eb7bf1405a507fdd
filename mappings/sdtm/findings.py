"""What LB and CP share: original vs standard results with UCUM unit conversion,
reference ranges and --NRIND, visits, epochs, baseline flags.

Original result (--ORRES, --ORRESU, --ORNRLO/HI) keeps the text exactly as reported;
the standard result is the value converted to the test's standard unit by a UCUM
library (ucumvert on pint) — never a hand-written factor table — and rounded to the
significant digits of the text it came from (:func:`derive.converted_digits`: ``0.53``
mg/dL of creatinine is 47 umol/L, not 46.85289958), as are converted reference ranges; a
result already in the standard unit keeps its text.  A result with a comparator
(``<0.5``) keeps it in --STRESC and has no --STRESN.
"""
from __future__ import annotations

import re
from typing import Any, Callable

from trialbridge.converters.core import iso8601
from trialbridge.converters.core.records import where
from trialbridge.mappings import derive, terminology
from trialbridge.mappings.sdtm.common import base_row, visit_label
from trialbridge.mappings.sdtm.context import Context

_COMPARATOR = re.compile(r"^\s*(<=|>=|<|>)\s*(.+)$")


def result_variables(ctx: Context, rec: dict[str, Any], p: str, test: dict[str, Any], log_where: dict) -> dict[str, Any]:
    """--ORRES … --NRIND for one result.  ``p`` is the domain prefix (LB, CP)."""
    out: dict[str, Any] = {}
    result = rec.get("result", "")
    unit_text = rec.get("unit", "")
    out[f"{p}ORRES"] = result
    out[f"{p}ORNRLO"] = rec.get("ref_low", "")
    out[f"{p}ORNRHI"] = rec.get("ref_high", "")
    unit = terminology.unit(unit_text) if unit_text else None
    if unit_text and unit is None:
        ctx.log.warning("TERM-UNMAPPED-UNIT", f"unit {unit_text!r} is not a known UCUM or CDISC unit; "
                        f"{p}ORRESU kept as given, no standard result", **where(rec, "unit"), value=unit_text)
        terminology.count_unmapped("units", unit_text, ctx.log)
    out[f"{p}ORRESU"] = unit["cdisc"] if unit else unit_text
    std_unit = test.get("standard_unit") or ""
    std = terminology.unit(std_unit) if std_unit else None
    out[f"{p}STRESU"] = ""
    out[f"{p}STRESC"] = ""
    out[f"{p}STRESN"] = None
    out[f"{p}STNRLO"] = None
    out[f"{p}STNRHI"] = None
    out[f"{p}NRIND"] = ""
    if rec.get("not_done_reason"):
        out[f"{p}STAT"] = "NOT DONE"
        out[f"{p}REASND"] = rec["not_done_reason"]
    if not result:
        return out
    comparator, number_text = "", result
    m = _COMPARATOR.match(result)
    if m:
        comparator, number_text = m.group(1), m.group(2)
    number = derive.to_number(number_text)
    if number is None:
        if _not_a_number(ctx, p, result, number_text, log_where):
            out[f"{p}STRESC"] = result
            return out
        if not m:
            # qualitative result (NEGATIVE, POSITIVE ...): standard = original
            out[f"{p}STRESC"] = result
            ctx.log.info(f"{p}-NONNUMERIC-RESULT", f"result is not numeric; {p}STRESC = {p}ORRES, {p}STRESN empty",
                         **log_where, value=result)
        return out
    _check_range_scale(ctx, rec, p, number, log_where)
    if unit_text and unit is None:
        return out
    factor_from = unit["ucum"] if unit else None
    if std is None or factor_from is None:
        if not unit_text and not std_unit:
            value = number
        else:
            ctx.log.warning(f"{p}-NO-STANDARD-UNIT", "no unit to standardise from or to; standard result left empty",
                            **log_where, value=unit_text or result)
            return out
    else:
        value = terminology.convert_value(number, factor_from, std["ucum"], test.get("molar_mass_g_per_mol"))
        if value is None:
            ctx.log.warning(f"{p}-UNIT-NOT-CONVERTIBLE", f"{unit_text!r} cannot be converted to the standard unit "
                            f"{std_unit!r}; standard result left empty", **where(rec, "unit"), value=unit_text)
            return out
        same = unit["ucum"] == std["ucum"]  # same unit: nothing to round away
        value = derive.round_sig(value, 10 if same else derive.converted_digits(number_text))
        out[f"{p}STRESU"] = std["cdisc"]
        for bound, var in (("ref_low", f"{p}STNRLO"), ("ref_high", f"{p}STNRHI")):
            n = derive.to_number(rec.get(bound))
            if n is None and rec.get(bound):
                _not_a_number(ctx, p, rec[bound], rec[bound], where(rec, bound), var)
            if n is not None:
                conv = terminology.convert_value(n, factor_from, std["ucum"], test.get("molar_mass_g_per_mol"))
                digits = 10 if same else derive.converted_digits(rec.get(bound))
                out[var] = derive.round_sig(conv, digits) if conv is not None else None
    # same unit: the standard text keeps the reported precision ("1.30" stays "1.30")
    same_unit = unit is not None and std is not None and unit["ucum"] == std["ucum"]
    if comparator:
        out[f"{p}STRESC"] = f"{comparator}{number_text if same_unit else derive.format_number(value)}"
        ctx.log.info(f"{p}-NONNUMERIC-RESULT", f"result has a comparator; {p}STRESC = {out[f'{p}STRESC']!r}, "
                     f"{p}STRESN empty", **log_where, value=result)
        return out
    out[f"{p}STRESC"] = number_text if same_unit else derive.format_number(value)
    out[f"{p}STRESN"] = value
    out[f"{p}NRIND"] = derive.reference_range_indicator(value, out[f"{p}STNRLO"], out[f"{p}STNRHI"])
    return out


def _not_a_number(ctx: Context, p: str, given: str, number_text: str, log_where: dict,
                  variable: str | None = None) -> bool:
    """Report a result (or range limit) that looks numeric but gives no float: beyond what a
    float holds (SDTM-NUM-RANGE, error) or in another notation, such as a decimal comma
    (SDTM-NUM-FORMAT, warning).  The text is kept as given; the numeric variable stays empty,
    never a wrong number.  True when it was one of these."""
    problem = derive.number_problem(number_text)
    if problem is None:
        return False
    kind, reason = problem
    variable = variable or f"{p}STRESN"
    keeps = f"{p}ORRES and {p}STRESC keep the text" if variable.endswith("STRESN") else "the original limit keeps the text"
    if kind == "range":
        ctx.log.error("SDTM-NUM-RANGE", f"{given!r} is {reason}; {keeps}, {variable} left empty", **log_where,
                      value=given)
    else:
        ctx.log.warning("SDTM-NUM-FORMAT", f"{given!r} is {reason}; not read as a number: {keeps}, {variable} "
                        "left empty", **log_where, value=given)
    return True


RANGE_SCALE = 30  # a result this many times beyond its range: the range is likely in another unit


def _check_range_scale(ctx: Context, rec: dict[str, Any], p: str, number: float, log_where: dict) -> None:
    """A result and its reference range orders of magnitude apart — 0.53 beside 44–106, a
    creatinine in mg/dL with the range left in umol/L (88 times), IgG in g/L with a mg/dL range
    (100 times) — is a warning: --NRIND from them would be wrong.  The factor
    :data:`RANGE_SCALE` stays clear of true abnormalities a trial sees (an ALT of 20 times the
    upper limit in a liver injury) while catching the common unit slips."""
    lo, hi = derive.to_number(rec.get("ref_low")), derive.to_number(rec.get("ref_high"))
    if number is None or number <= 0 or not (lo or hi):
        return
    too_high = hi is not None and hi > 0 and number > RANGE_SCALE * hi
    too_low = lo is not None and lo > 0 and number * RANGE_SCALE < lo
    if too_high or too_low:
        bounds = f"{rec.get('ref_low') or ''}-{rec.get('ref_high') or ''}"
        ctx.log.warning(f"{p}-RANGE-SCALE", f"result {rec.get('result')} and its reference range {bounds} are more "
                        f"than {RANGE_SCALE} times apart: is the range given in another unit than the result "
                        f"({rec.get('unit') or 'no unit'})?  {p}NRIND is derived from them as given",
                        **log_where, value=rec.get("result"))


def finding_row(ctx: Context, rec: dict[str, Any], p: str, test: dict[str, Any],
                identity: dict[str, Any]) -> dict[str, Any]:
    """One LB/CP row: the test's identity variables, then result, specimen and timing."""
    row = base_row(ctx, p, rec["subject_id"])
    row.update(identity)
    row.update(result_variables(ctx, rec, p, test, where(rec, "result")))
    spec = rec.get("specimen") or test.get("specimen", "")
    row[f"{p}SPEC"] = (terminology.map_term("specimen", spec, log=ctx.log, where=where(rec, "specimen")) or "") \
        if spec else ""
    row.update(timing_variables(ctx, rec, p))
    return row


def timing_variables(ctx: Context, rec: dict[str, Any], p: str) -> dict[str, Any]:
    sid = rec["subject_id"]
    info = ctx.subjects[sid]
    dtc = rec.get("collected", "")
    if dtc and iso8601.is_partial(dtc):
        ctx.log.info("SDTM-PARTIAL-DATE", f"collection date is partial; kept as given in {p}DTC, study day left empty",
                     **where(rec, "collected"), value=dtc)
    visitnum, visit = ctx.visit_for(sid, dtc, rec.get("visit"))
    return {"VISITNUM": visitnum, "VISIT": visit, "EPOCH": ctx.epoch(sid, dtc, undecided="earlier"), f"{p}DTC": dtc,
            f"{p}DY": iso8601.study_day(dtc, info.rfstdtc)}


def flag_last_before_exposure(ctx: Context, rows: list[dict[str, Any]], p: str, flags: tuple[str, ...],
                              group: Callable[[dict], Any]) -> None:
    """Baseline: per subject and test, the last non-missing result collected on or before
    the first dose (SDTMIG 3.4 --LOBXFL; --BLFL for 3.3 readers).  A result dated the day
    of first dose without a time (or with a coarser one) is taken as pre-dose, as EPOCH
    takes it (``undecided="earlier"``); a partial date that cannot be placed before the
    dose (``2020-06`` for a dose on 5 June) is not a baseline."""
    rfx = {info.usubjid: info.rfxstdtc for info in ctx.subjects.values()}
    best: dict[Any, dict[str, Any]] = {}
    for r in rows:
        first = rfx.get(r["USUBJID"])
        if not first or not r.get(f"{p}DTC") or not (r.get(f"{p}ORRES")):
            continue
        if _pre_dose(r[f"{p}DTC"], first):
            key = (r["USUBJID"], group(r))
            # the later of the two; of equal dates the one read last
            best[key] = iso8601.latest([best.get(key), r], key=lambda row: row and row[f"{p}DTC"])
    for r in best.values():
        for flag in flags:
            r[flag] = "Y"


def _pre_dose(dtc: str, first_dose: str) -> bool:
    order = iso8601.compare(dtc, first_dose)
    if order is None and iso8601.compare(dtc, first_dose, precision="day") == 0:
        return True  # the day of first dose, time unknown: pre-dose
    return order in (-1, 0)


def result_record(row: dict[str, Any], p: str, subject_id: str, study) -> dict[str, Any]:
    """The record fields LB and CP share, from one SDTM row (the reverse of
    :func:`result_variables` and :func:`timing_variables`)."""
    return {
        "subject_id": subject_id,
        "visit": visit_label(row.get("VISIT"), study),
        "collected": row.get(f"{p}DTC", ""),
        "result": row.get(f"{p}ORRES", ""),
        "unit": terminology.cdisc_to_ucum(row.get(f"{p}ORRESU", "")) or row.get(f"{p}ORRESU", ""),
        "ref_low": row.get(f"{p}ORNRLO", ""),
        "ref_high": row.get(f"{p}ORNRHI", ""),
        "specimen": row.get(f"{p}SPEC", ""),
        "not_done_reason": row.get(f"{p}REASND", ""),
    }
