#!/usr/bin/env python
"""Extract the CDISC SDTM controlled terminology trialbridge uses into one small CSV.

Source: NCI EVS SDTM Terminology release 2025-03-28 (``SDTM Terminology.txt``, tab-separated),
as shipped by patterninstitute/sdtm.terminology @ e4fdc5f0f869.  Output:
``mappings/terminology/ct/sdtm-ct-2025-03-28.csv`` with columns codelist, codelist_code,
codelist_name, extensible, term_code, submission_value, synonyms, nci_preferred_term; rows in
the order of ``CODELISTS`` then by submission value.

Besides ``CODELISTS`` it takes every codelist the SDTM schemas (schemas/sdtm/*.json, built by
scripts/build_sdtm_schemas.py) reference, so run that script first.

Usage::

    python scripts/extract_ct.py [--source "/path/SDTM Terminology.txt"] [--out mappings/terminology/ct/sdtm-ct-2025-03-28.csv]
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


from trialbridge.converters.core.files import atomic_open  # noqa: E402

# Codelists by submission short name (C-code in the comment); keep sorted by purpose.
CODELISTS = [
    "DOMAIN",    # C66734 SDTM Domain Abbreviation
    "SEX",       # C66731
    "RACE",      # C74457
    "ETHNIC",    # C66790
    "AGEU",      # C66781
    "NY",        # C66742 No Yes Response
    "ND",        # C66789 Not Done
    "EPOCH",     # C99079
    "ROUTE",     # C66729 Route of Administration
    "FRM",       # C66726 Pharmaceutical Dosage Form
    "FREQ",      # C71113 Frequency
    "UNIT",      # C71620
    "LBTESTCD",  # C65047
    "LBTEST",    # C67154
    "LBSTRESC",  # C102580
    "SPECTYPE",  # C78734 Specimen Type
    "METHOD",    # C85492
    "NRIND",     # C78736 Reference Range Indicator
    "AESEV",     # C66769 Severity/Intensity Scale for Adverse Events
    "OUT",       # C66768 Outcome of Event
    "ACN",       # C66767 Action Taken with Study Treatment
    "DSCAT",     # C74558 Category of Disposition Event
    "NCOMPLT",   # C66727 Completion/Reason for Non-Completion
    "PROTMLST",  # C114118 Protocol Milestone
    "OTHEVENT",  # C150811 Other Disposition Event Response
    "IECAT",     # C66797 Category of Inclusion/Exclusion
    "TSPARMCD",  # C66738 Trial Summary Parameter Test Code
    "TSPARM",    # C67152 Trial Summary Parameter Test Name
    "STYPE",     # C99077 Study Type Response
    "TPHASE",    # C66737 Trial Phase Response
    "TTYPE",     # C66739 Trial Type Response
    "TBLIND",    # C66735 Trial Blinding Schema Response
    "TCNTRL",    # C66785 Control Type Response
    "TINDTP",    # C66736 Trial Intent Type Response
    "INTTYPE",   # C99078 Intervention Type Response
    "INTMODEL",  # C99076 Intervention Model Response (TS INTMODEL)
    "SEXPOP",    # C66732 Sex of Participants Response
    "CPTESTCD",  # C181173 Cell Phenotyping Test Code
    "CPTEST",    # C181174 Cell Phenotyping Test Name
    "CPCAT",     # C181171 Category for Cell Phenotyping
    "CELSTATE",  # C181172 Cell State Response
]


def schema_codelists() -> list[str]:
    """Codelists referenced (``x-codelist``) by the committed schemas/sdtm/*.json, so that every
    CT-controlled variable of a dataset trialbridge writes can be checked."""
    import json

    found: set[str] = set()
    for path in sorted((REPO / "schemas" / "sdtm").glob("*.json")):
        for prop in json.loads(path.read_text(encoding="utf-8"))["properties"].values():
            if prop.get("x-codelist"):
                found.add(prop["x-codelist"])
    return sorted(found - set(CODELISTS))


COLUMNS = ["codelist", "codelist_code", "codelist_name", "extensible", "term_code",
           "submission_value", "synonyms", "nci_preferred_term"]


def extract(source: Path) -> list[dict[str, str]]:
    heads: dict[str, dict] = {}
    terms: dict[str, list[dict]] = {}
    with open(source, encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if row["Codelist Code"]:
                terms.setdefault(row["Codelist Code"], []).append(row)
            else:
                heads[row["CDISC Submission Value"]] = row
    out = []
    for short in CODELISTS + schema_codelists():
        head = heads.get(short)
        if head is None:
            print(f"warning: codelist {short} not in this CT release; skipped", file=sys.stderr)
            continue
        for t in sorted(terms.get(head["Code"], []), key=lambda r: r["CDISC Submission Value"]):
            out.append({
                "codelist": short,
                "codelist_code": head["Code"],
                "codelist_name": head["Codelist Name"],
                "extensible": head["Codelist Extensible (Yes/No)"],
                "term_code": t["Code"],
                "submission_value": t["CDISC Submission Value"],
                "synonyms": t["CDISC Synonym(s)"],
                "nci_preferred_term": t["NCI Preferred Term"],
            })
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=REPO.parent / "shared" / "reference" / "ct"
                    / "nci-evs-sdtm-ct" / "SDTM Terminology.txt")
    ap.add_argument("--version", default="2025-03-28",
                    help="the CDISC package date of the source file: the extract becomes sdtm-ct-<version>.csv, "
                         "which `--ct <version>` then selects")
    ap.add_argument("--out", type=Path, default=None, help="default: mappings/terminology/ct/sdtm-ct-<version>.csv")
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = REPO / "mappings" / "terminology" / "ct" / f"sdtm-ct-{args.version}.csv"
    rows = extract(args.source)
    with atomic_open(args.out) as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    print(f"{len(rows)} terms in {len({r['codelist'] for r in rows})} codelists -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
