"""LB — Laboratory Test Results: one row per test per specimen collection.

The lab test table (mappings/terminology/lab_tests.yaml) gives LBTESTCD, LBTEST, LBCAT,
LBLOINC, the specimen and the standard unit.  A test name the table does not know is
an error (TERM-UNMAPPED-LABTEST) and the row is not converted.  Flow-cytometry cell
subsets are not LB: they go to CP (mappings/sdtm/cp.py).

Not round-tripped: ``visit`` comes back as the derived VISIT when the record had none;
units given as aliases come back as their UCUM code.
"""
from __future__ import annotations

from typing import Any

from trialbridge.mappings import terminology
from trialbridge.mappings.sdtm.common import clean, subject_id_of, subject_index
from trialbridge.mappings.sdtm.context import Context
from trialbridge.mappings.sdtm.findings import finding_row, flag_last_before_exposure, result_record

DOMAIN = "LB"
ORDER = 30
RECORD_TYPE = "lab_result"  # what from_sdtm gives back


def to_sdtm(ctx: Context) -> list[dict[str, Any]]:
    rows = []
    for rec in ctx.records["lab_result"]:
        test = terminology.lab_test(rec["test"])
        if test is None:
            terminology.count_unmapped("lab_tests", rec["test"], ctx.log)
            ctx.reject(rec, "TERM-UNMAPPED-LABTEST", f"lab test {rec['test']!r} is not in the lab test table", "test")
            continue
        rows.append(finding_row(ctx, rec, DOMAIN, test, {
            "LBREFID": rec.get("accession", ""), "LBTESTCD": test["lbtestcd"], "LBTEST": test["lbtest"],
            "LBCAT": test.get("lbcat", ""), "LBLOINC": test.get("loinc", "")}))
    flag_last_before_exposure(ctx, rows, "LB", ("LBLOBXFL", "LBBLFL"), lambda r: (r["LBTESTCD"], r["LBSPEC"]))
    return rows


def seq_key(row: dict[str, Any]):
    return (row["LBDTC"], row["LBTESTCD"], row["LBSPEC"], row.get("LBREFID", ""))


def from_sdtm(datasets: dict, study) -> list[dict[str, Any]]:
    lb = datasets.get("LB")
    if lb is None:
        return []
    dm = subject_index(datasets)
    out = []
    for row in lb.rows:
        test = terminology.lab_test_by_code(row.get("LBTESTCD", ""))
        rec = result_record(row, "LB", subject_id_of(dm, row["USUBJID"]), study)
        rec["test"] = test["name"] if test else row.get("LBTESTCD", "")
        rec["accession"] = row.get("LBREFID", "")
        out.append(clean(rec))
    return out
