"""CP — Cell Phenotype Findings (SDTMIG 3.4): flow-cytometry lymphocyte subsets.

One row per population and measure (absolute count or percentage of the parent
population).  The cell phenotype table (mappings/terminology/cell_phenotypes.yaml)
gives CPTESTCD/CPTEST from CDISC CT (C181173/C181174), the surface markers, the
standard unit and LOINC.  An unknown population is an error (TERM-UNMAPPED-CPTEST) and
the row is not converted.

Not round-tripped: as LB.
"""
from __future__ import annotations

from typing import Any

from trialbridge.mappings import terminology
from trialbridge.mappings.sdtm.common import clean, subject_id_of, subject_index
from trialbridge.mappings.sdtm.context import Context
from trialbridge.mappings.sdtm.findings import finding_row, flag_last_before_exposure, result_record

DOMAIN = "CP"
ORDER = 35
RECORD_TYPE = "cell_phenotype"  # what from_sdtm gives back


def to_sdtm(ctx: Context) -> list[dict[str, Any]]:
    rows = []
    for rec in ctx.records["cell_phenotype"]:
        test = terminology.cp_test(rec["population"], rec["measure"])
        if test is None:
            terminology.count_unmapped("cell_phenotypes", f"{rec['population']} / {rec['measure']}", ctx.log)
            ctx.reject(rec, "TERM-UNMAPPED-CPTEST", f"cell population {rec['population']!r} ({rec['measure']}) is "
                       "not in the cell phenotype table", "population")
            continue
        rows.append(finding_row(ctx, rec, DOMAIN, test, {
            "CPTESTCD": test["cptestcd"], "CPTEST": test["cptest"], "CPCAT": test.get("cpcat", ""),
            "CPMRKSTR": test.get("markers", ""), "CPMETHOD": test.get("method", "FLOW CYTOMETRY")}))
    flag_last_before_exposure(ctx, rows, "CP", ("CPLOBXFL",), lambda r: (r["CPTESTCD"], r["CPSPEC"]))
    return rows


def seq_key(row: dict[str, Any]):
    return (row["CPDTC"], row["CPTESTCD"], row["CPSPEC"])


def from_sdtm(datasets: dict, study) -> list[dict[str, Any]]:
    cp = datasets.get("CP")
    if cp is None:
        return []
    dm = subject_index(datasets)
    out = []
    for row in cp.rows:
        test = terminology.cp_test_by_code(row.get("CPTESTCD", ""))
        rec = result_record(row, "CP", subject_id_of(dm, row["USUBJID"]), study)
        rec["population"] = test["population"] if test else row.get("CPTEST", "")
        rec["measure"] = test["measure"] if test else ""
        out.append(clean(rec))
    return out
