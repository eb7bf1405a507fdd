"""VS — Vital Signs: the height and weight measured at screening (recorded with the
subject, used for BSA dosing) as HEIGHT and WEIGHT at the SCREENING visit dated on
the consent date, and every ``vital_sign`` record (FHIR vital-signs Observations: height,
weight, BMI, blood pressure, heart rate, temperature, respiratory rate).

VSTESTCD/VSTEST come from the vital signs table (mappings/terminology/vital_signs.yaml,
CDISC CT VSTESTCD C66741 / VSTEST C67153, matched by name, code or LOINC); VSORRESU and
VSSTRESU are CDISC UNIT terms (units table).  The original result keeps the text as
measured (98.6 °F, 154 lb); the standard result is converted by the UCUM library to the
test's standard unit (°C, kg, cm …) as LB does (:mod:`.findings`).  A measurement not done
has VSSTAT NOT DONE and VSREASND.  Baseline (VSLOBXFL, and VSBLFL for SDTMIG 3.3 readers):
per subject and test, the last measurement on or before the first dose, the screening
height and weight included (they are usually the only ones).

Not round-tripped: SDTM -> records gives back the screening height and weight (subject
fields) only; the VS rows of ``vital_sign`` records are not read back to records (the
domain module returns one record type).
"""
from __future__ import annotations

from typing import Any

from trialbridge.converters.core import iso8601
from trialbridge.converters.core.records import where
from trialbridge.mappings import derive, terminology
from trialbridge.mappings.sdtm.common import base_row, subject_id_of, subject_index
from trialbridge.mappings.sdtm.context import Context
from trialbridge.mappings.sdtm.findings import flag_last_before_exposure, result_variables, timing_variables
from trialbridge.mappings.terminology import ct

DOMAIN = "VS"
ORDER = 80
RECORD_TYPE = "subject"  # from_sdtm gives fields of the subject records (height, weight)
FILLS_RECORDS = True  # its records fill in fields of records another domain gave, matched by subject_id

TESTS = (("height_cm", "HEIGHT", "Height", "cm"), ("weight_kg", "WEIGHT", "Weight", "kg"))
# result variables findings.result_variables gives that VS does not have (no reference range)
NOT_IN_VS = ("VSORNRLO", "VSORNRHI", "VSSTNRLO", "VSSTNRHI", "VSNRIND")


def to_sdtm(ctx: Context) -> list[dict[str, Any]]:
    rows = []
    screening = next((v for v in ctx.study.visits if v.day < 1), None)
    for sid, info in ctx.subjects.items():
        s = info.row
        for field, code, name, unit in TESTS:
            if not s.get(field):
                continue
            value = derive.to_number(s[field])
            problem = derive.number_problem(s[field]) if value is None else None
            if problem is not None:
                ctx.log.error("SDTM-NUM-RANGE" if problem[0] == "range" else "SDTM-NUM-FORMAT",
                              f"{field} {s[field]!r} is {problem[1]}; VSORRES keeps the text, VSSTRESN left empty",
                              **where(s, field), value=s[field])
            row = base_row(ctx, DOMAIN, sid)
            row.update(VSTESTCD=code, VSTEST=name, VSORRES=s[field], VSORRESU=unit,
                       VSSTRESC=derive.format_number(value), VSSTRESN=value, VSSTRESU=unit,
                       VISITNUM=screening.number if screening else None, VISIT=screening.name if screening else "",
                       EPOCH=ctx.epoch(sid, s.get("consent_date"), undecided="earlier"),
                       VSDTC=s.get("consent_date", ""),
                       VSDY=iso8601.study_day(s.get("consent_date"), info.rfstdtc))
            rows.append(row)
    measured = [row for rec in ctx.records["vital_sign"] if (row := _measurement(ctx, rec)) is not None]
    # the screening height and weight are measurements before the first dose like any other:
    # the last of each test on or before it is the baseline, whichever record it came from
    flag_last_before_exposure(ctx, rows + measured, DOMAIN, ("VSLOBXFL", "VSBLFL"), lambda r: r["VSTESTCD"])
    return rows + measured


def _measurement(ctx: Context, rec: dict[str, Any]) -> dict[str, Any] | None:
    """One VS row for a vital_sign record (None, reported, for a test the table does not know)."""
    test = terminology.load_table("vital_signs").lookup(rec["test"])
    if test is None:
        terminology.count_unmapped("vital_signs", rec["test"], ctx.log)
        ctx.reject(rec, "TERM-UNMAPPED-VSTEST", f"vital sign {rec['test']!r} is not in the vital signs table", "test")
        return None
    unit = terminology.unit(rec.get("unit")) if rec.get("unit") else None
    if unit and unit["ucum"] in (test.get("read_units") or {}):  # /min of a heart rate: beats/min
        rec = {**rec, "unit": test["read_units"][unit["ucum"]]}
    row = base_row(ctx, DOMAIN, rec["subject_id"])
    row.update(VSTESTCD=test["vstestcd"], VSTEST=test["vstest"])
    if rec.get("position"):
        row["VSPOS"] = ct.codelist("POSITION").lookup(rec["position"]) or rec["position"]
    row.update(result_variables(ctx, rec, DOMAIN, test, where(rec, "result")))
    for name in NOT_IN_VS:
        row.pop(name, None)
    if rec.get("location"):
        row["VSLOC"] = ct.codelist("LOC").lookup(rec["location"]) or rec["location"]
    row.update(timing_variables(ctx, rec, DOMAIN))
    return row


def seq_key(row: dict[str, Any]):
    return (row["VSDTC"], row["VSTESTCD"])


def from_sdtm(datasets: dict, study=None) -> list[dict[str, str]]:
    """{subject_id, height_cm, weight_kg} per subject with a screening height or weight."""
    return [{"subject_id": sid, **fields} for sid, fields in sorted(subject_fields(datasets).items())]


def subject_fields(datasets: dict) -> dict[str, dict[str, str]]:
    """subject_id -> {height_cm, weight_kg} for SDTM -> records."""
    vs = datasets.get("VS")
    if vs is None:
        return {}
    dm = subject_index(datasets)
    out: dict[str, dict[str, str]] = {}
    for row in vs.rows:
        for field, code, _name, _unit in TESTS:
            if row.get("VSTESTCD") == code and row.get("VSORRES"):
                out.setdefault(subject_id_of(dm, row["USUBJID"]), {})[field] = row["VSORRES"]
    return out
