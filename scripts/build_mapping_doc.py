"""Write docs/mapping.md — per record type, SDTM variable <- record field -> FHIR element —
from the mapping tables, so the page cannot drift from the code:

* SDTM: the ``FIELDS`` of the SDTM domain modules (mappings/sdtm/*.py); for the record types
  whose rows are built by code rather than declared fields (LB, CP and VS rows in
  mappings/sdtm/findings.py, SV), the small explicit table :data:`BUILT` below;
* FHIR: the ``x-fhir`` annotation of each property in schemas/internal/*.schema.json
  (tests/test_mapping_doc.py converts the sample and checks every element is written);
* HL7 FHIR-to-CDISC Joint Mapping IG: the IG's FHIRPath for the same SDTM variable, read from
  its cdiscMaps.csv when given (``--ig PATH``, default ../shared/reference/hl7-fhir-cdisc-mapping/
  cdiscMaps.csv beside the repo).  Without it the IG cells of the page as committed are kept,
  so the page does not depend on the reference folder being on the machine.

    python scripts/build_mapping_doc.py [--check] [--ig PATH]
"""
from __future__ import annotations

import csv
import importlib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "mapping.md"
DEFAULT_IG = ROOT.parent / "shared" / "reference" / "hl7-fhir-cdisc-mapping" / "cdiscMaps.csv"
IG_SOURCE = "HL7/fhir-cdisc-mapping @ dd0f35816dcb (FHIR to CDISC Joint Mapping IG v1.0.0 STU1, cdiscMaps.csv)"

from trialbridge.converters.core.records import record_types  # noqa: E402

# record type -> SDTM domain modules whose FIELDS map it
DECLARED = {"subject": ("dm",), "adverse_event": ("ae",), "exposure": ("ex",), "disposition": ("ds",)}
DECLARED_EXTRA = {"ae": ("SOC_FIELDS",)}  # further Field tuples of a module

# rows built by code: record type -> (record field, SDTM variable, where it is set / note)
BUILT: dict[str, tuple[tuple[str, str, str], ...]] = {
    "subject": (
        ("country", "COUNTRY", "the site's country when empty (mappings/sdtm/dm.py)"),
        ("planned_arm", "ARMCD", "study arm table; from cohort when empty (mappings/sdtm/dm.py)"),
        ("planned_arm", "ARM", "study arm table (mappings/sdtm/dm.py)"),
        ("cohort", "ARMCD", "when planned_arm is empty (mappings/sdtm/dm.py)"),
        ("actual_arm", "ACTARMCD", "planned arm when empty (mappings/sdtm/dm.py)"),
        ("actual_arm", "ACTARM", "planned arm when empty (mappings/sdtm/dm.py)"),
        ("screen_failure", "ARMNRS", "SCREEN FAILURE when Y (mappings/sdtm/dm.py)"),
        ("relapse_date", "SUPPDM.QVAL", "QNAM RELAPSDT (mappings/sdtm/dm.py)"),
        ("height_cm", "VSORRES", "VS row VSTESTCD HEIGHT at screening (mappings/sdtm/vs.py)"),
        ("weight_kg", "VSORRES", "VS row VSTESTCD WEIGHT at screening (mappings/sdtm/vs.py)"),
    ),
    "adverse_event": (
        ("serious", "AESER", "NY codelist (mappings/sdtm/ae.py)"),
    ),
    "visit": (
        ("visit", "VISIT", "with VISITNUM from the study's visit plan (mappings/sdtm/sv.py)"),
        ("start", "SVSTDTC", "mappings/sdtm/sv.py"),
        ("end", "SVENDTC", "start when empty (mappings/sdtm/sv.py)"),
        ("reason", "SVUPDES", "unplanned visits (mappings/sdtm/sv.py)"),
    ),
    "lab_result": (
        ("visit", "VISIT", "findings.timing_variables"),
        ("collected", "LBDTC", "findings.timing_variables"),
        ("test", "LBTESTCD", "lab test table (mappings/sdtm/lb.py)"),
        ("test", "LBTEST", "lab test table (mappings/sdtm/lb.py)"),
        ("result", "LBORRES", "findings.result_variables; LBSTRESC/LBSTRESN derived (UCUM)"),
        ("unit", "LBORRESU", "findings.result_variables; LBSTRESU is the test's standard unit"),
        ("ref_low", "LBORNRLO", "findings.result_variables; LBSTNRLO converted"),
        ("ref_high", "LBORNRHI", "findings.result_variables; LBSTNRHI converted"),
        ("specimen", "LBSPEC", "specimen table (findings.finding_row)"),
        ("not_done_reason", "LBREASND", "with LBSTAT NOT DONE (findings.result_variables)"),
        ("accession", "LBREFID", "mappings/sdtm/lb.py"),
    ),
    "cell_phenotype": (
        ("visit", "VISIT", "findings.timing_variables"),
        ("collected", "CPDTC", "findings.timing_variables"),
        ("population", "CPTESTCD", "with measure, cell phenotype table (mappings/sdtm/cp.py)"),
        ("population", "CPTEST", "with measure, cell phenotype table (mappings/sdtm/cp.py)"),
        ("measure", "CPTESTCD", "with population (mappings/sdtm/cp.py)"),
        ("result", "CPORRES", "findings.result_variables; CPSTRESC/CPSTRESN derived (UCUM)"),
        ("unit", "CPORRESU", "findings.result_variables"),
        ("ref_low", "CPORNRLO", "findings.result_variables"),
        ("ref_high", "CPORNRHI", "findings.result_variables"),
        ("specimen", "CPSPEC", "specimen table (findings.finding_row)"),
        ("not_done_reason", "CPREASND", "with CPSTAT NOT DONE (findings.result_variables)"),
    ),
    "vital_sign": (
        ("visit", "VISIT", "findings.timing_variables"),
        ("collected", "VSDTC", "findings.timing_variables"),
        ("test", "VSTESTCD", "vital signs table (mappings/sdtm/vs.py)"),
        ("test", "VSTEST", "vital signs table (mappings/sdtm/vs.py)"),
        ("result", "VSORRES", "findings.result_variables; VSSTRESC/VSSTRESN derived (UCUM)"),
        ("unit", "VSORRESU", "findings.result_variables"),
        ("position", "VSPOS", "POSITION codelist (mappings/sdtm/vs.py)"),
        ("location", "VSLOC", "LOC codelist (mappings/sdtm/vs.py)"),
        ("not_done_reason", "VSREASND", "with VSSTAT NOT DONE (findings.result_variables)"),
    ),
}

NOT_WRITTEN_TO_FHIR = {"vital_sign": "vital_sign records are read from FHIR vital-signs Observations "
                                     "(mappings/fhir/vital_signs.py), not written to FHIR"}


def sdtm_rows(rtype: str) -> list[tuple[str, str, str]]:
    """(record field, SDTM variable, note) for one record type."""
    out = []
    for mod_name in DECLARED.get(rtype, ()):
        mod = importlib.import_module(f"trialbridge.mappings.sdtm.{mod_name}")
        for attr in ("FIELDS", *DECLARED_EXTRA.get(mod_name, ())):
            for f in getattr(mod, attr):
                note = f"{mod.DOMAIN} `{attr}`"
                if f.table:
                    note += f", table `{f.table}`"
                if f.kind != "text":
                    note += f", {f.kind}"
                out.append((f.record, f.variable, note))
    out += BUILT.get(rtype, ())
    if rtype == "adverse_event":  # one flag per seriousness criterion, from its table
        from trialbridge.mappings import terminology

        for e in terminology.load_table("serious_criteria").entries:
            out.append(("serious_criteria", e["variable"],
                        f"Y when {e['criterion']} is named (mappings/terminology/serious_criteria.yaml)"))
    return out


def ig_paths(path: Path) -> dict[str, str]:
    """SDTM variable -> the IG's FHIRPath(s) for it (SDTM domains only, not the LAB rows)."""
    found: dict[str, list[str]] = {}
    with path.open(newline="", encoding="utf-8-sig") as fh:
        for row in csv.DictReader(fh):
            var = (row.get("SDTM Element") or "").strip()
            if not var or row.get("Domain") == "LAB":
                continue
            paths = [p.strip() for p in re.split(r"\r\n|\n|\\r\\n", row.get("FHIR Path") or "") if p.strip()]
            if not paths:
                paths = ["IG gap: " + _first_sentence(row.get("FHIR Gap") or "no FHIR element")]
            for p in paths:
                if p not in found.setdefault(var, []):
                    found[var].append(p)
    return {var: "<br>".join(f"`{p}`" if not p.startswith("IG gap: ") else p for p in ps) for var, ps in found.items()}


def _first_sentence(text: str, limit: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " …"


def cell(text: str) -> str:
    return " ".join(text.replace("|", "\\|").split())


def render(ig: dict[str, str] | None, kept: dict[tuple[str, str, str], str]) -> str:
    lines = [
        "# Mapping reference: SDTM variable ← record field → FHIR element",
        "",
        "Generated by `scripts/build_mapping_doc.py`; do not edit by hand (tests/test_mapping_doc.py checks it is",
        "up to date, and that every FHIR element named here is written when the sample is converted to FHIR).",
        "",
        "Sources: **SDTM** — the `FIELDS` declared by the SDTM domain modules (`mappings/sdtm/*.py`) and, for",
        "rows built in code (LB, CP, VS in `mappings/sdtm/findings.py`, SV), the explicit table in the script;",
        "**FHIR** — the `x-fhir` annotation of each field in `schemas/internal/*.schema.json` (a simple path:",
        "`extension[name]` is the trialbridge extension `https://trialbridge.org/fhir/StructureDefinition/name`,",
        "see `mappings/fhir/extensions.yaml`; `contained[Type]` the contained resource);",
        f"**HL7 IG** — the FHIRPath the HL7 FHIR-to-CDISC Joint Mapping IG gives for the same SDTM variable ({IG_SOURCE}).",
        "The IG covers AE, DM, LB and VS, not EX, DS, SV or CP: there the IG column is empty. Where ours differs",
        "from the IG, ours is what trialbridge writes and reads; the IG is shown beside it for comparison.",
        "",
        "Fields marked *identifying* stay in the records and never reach SDTM (nor FHIR, unless",
        "`--include-identifiers`). Variables derived rather than mapped (USUBJID, --SEQ, --DY, EPOCH, the",
        "standard results) are not listed; see the domain modules.",
        "",
    ]
    for name, rtype in record_types().items():
        props = rtype.schema["properties"]
        by_field: dict[str, list[tuple[str, str]]] = {}
        for field, var, note in sdtm_rows(name):
            assert field in props, f"{name}.{field}: not a field of schemas/internal/{name}.schema.json"
            by_field.setdefault(field, []).append((var, note))
        lines += [f"## `{name}` ({rtype.file}.csv) — {rtype.schema['title']}", ""]
        if name in NOT_WRITTEN_TO_FHIR:
            lines += [NOT_WRITTEN_TO_FHIR[name] + ".", ""]
        lines += ["| SDTM variable | record field | FHIR element (trialbridge) | HL7 IG FHIRPath | notes / source |",
                  "|---|---|---|---|---|"]
        for field, prop in props.items():
            fhir = f"`{prop['x-fhir']}`" if "x-fhir" in prop else "—"
            rows = by_field.get(field) or [("", "")]
            for var, note in rows:
                if prop.get("x-identifying"):
                    note = "*identifying*" + (f"; {note}" if note else "")
                if ig is not None:
                    ig_cell = ig.get(var, "") if var else ""
                else:
                    ig_cell = kept.get((name, field, var), "")
                lines.append("| " + " | ".join(cell(c) for c in (
                    f"`{var}`" if var else "—", f"`{field}`", fhir, ig_cell, note)) + " |")
        lines.append("")
    return "\n".join(lines)


def kept_ig(text: str) -> dict[tuple[str, str, str], str]:
    """The IG cells of the page as it stands, by (record type, field, variable)."""
    out: dict[tuple[str, str, str], str] = {}
    rtype = None
    for line in text.splitlines():
        m = re.match(r"^## `([a-z_]+)`", line)
        if m:
            rtype = m.group(1)
            continue
        if rtype and line.startswith("| ") and not line.startswith("| SDTM"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            if len(cells) == 5:
                var, field = cells[0].strip("`"), cells[1].strip("`")
                out[(rtype, field, "" if var == "—" else var)] = cells[3].replace("\\|", "|")
    return out


def main(argv: list[str]) -> int:
    ig_path = Path(argv[argv.index("--ig") + 1]) if "--ig" in argv else DEFAULT_IG
    old = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
    ig = ig_paths(ig_path) if ig_path.exists() else None
    new = render(ig, kept_ig(old))
    if "--check" in argv:
        if new != old:
            print("docs/mapping.md is out of date: python scripts/build_mapping_doc.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new, encoding="utf-8")
    if ig is None:
        print(f"note: {ig_path} not found; the HL7 IG column was kept from the page as it was", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
