"""Build samples/nct04387942-fhir/ (a synthetic hospital EHR export) from the CSV sample.

    python scripts/build_fhir_sample.py [--check]

The export holds the subjects in ``SUBJECTS`` (24 of the 59: every kind the sample has —
HSP and HSPN, relapse with re-treatment, each kind of dropout, the screen failure, a partial
birth date), which keeps each file small enough to read and ship.  Writes ``bundle.json`` (a ``collection`` Bundle) and ``ndjson/<ResourceType>.ndjson`` with
the same resources.  Built from the records of ``samples/nct04387942`` by
``assemble.records_to_fhir`` (with ``include_identifiers=True``), then post-processed to look
like what a hospital sends:

* **Identifiers present**: Patient name, telecom (phone), address and a medical record
  number under a hospital identifier system (all synthetic, as in subjects.csv).  The
  converter must never carry them into exportable record fields or SDTM.
* **US-style units** on some labs, converted with ``decimal.Decimal`` (exact, no floats),
  result and reference range alike:
  IgG, IgA, IgM, C3, C4: g/L -> mg/dL (x 100);
  creatinine: umol/L -> mg/dL (x 0.011312 = 113.12 g/mol / 10 000: 1 umol/L = 113.12 ug/L =
  0.011312 mg/dL; the molar mass is the lab_tests table's).  The product is an exact,
  terminating decimal, so nothing is rounded and converting back gives the original value
  (to the 10 significant digits LBSTRESN keeps).  The clinical factor "divide by 88.42" is
  an approximation of 10 000 / 113.12 = 88.4016... and is not used;
  lymphocyte subset counts (CP, COUNT): /uL -> 10*3/uL (/ 1000).
* **Hospital-style codes**: Observation.code carries LOINC only when the test has a LOINC
  code (the NCIt coding of LBTESTCD/CPTESTCD is dropped; tests without LOINC keep it, as a
  hospital's local code would); Encounters carry the visit label in ``type.text`` only (no
  trialbridge visit extension).

Deterministic: re-running writes identical bytes.  ``--check`` builds into a temporary folder
and exits 1 when the committed files differ.  Exits 1 when building logged an error.
"""
from __future__ import annotations

import filecmp
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


from trialbridge.mappings.fhir import assemble
from trialbridge.converters.formats import records as records_io  # noqa: E402
from trialbridge.converters.formats.fhir import io as fhir_io
from trialbridge.converters.core.issues import IssueLog  # noqa: E402
from trialbridge.mappings import terminology  # noqa: E402
from trialbridge.mappings.fhir import EXT, LOINC, NCIT, RESOURCE_KEY_SYSTEM, UCUM  # noqa: E402
from trialbridge.mappings.fhir.patient import MRN_SYSTEM  # noqa: E402
from trialbridge.mappings.study import load_study  # noqa: E402

SOURCE = ROOT / "samples" / "nct04387942"
TARGET = ROOT / "samples" / "nct04387942-fhir"
HOSPITAL_MRN_SYSTEM = "https://hospital.example.org/fhir/sid/mrn"

# LBTESTCD / CPTESTCD -> (unit written by the trial records, hospital unit, factor)
MG_PER_DL = "mg/dL"
LAB_UNITS = {
    **{code: ("g/L", MG_PER_DL, Decimal("100")) for code in ("IGG", "IGA", "IGM", "C3", "C4")},
    "CREAT": ("umol/L", MG_PER_DL, Decimal("113.12") / Decimal("10000")),
}
COUNT_UNIT = ("/uL", "10*3/uL", Decimal("0.001"))
# 001-020 (HSP and HSPN, relapses 002/006/017, lost to follow-up 016, AE withdrawal 018)
# + 024 (partial birth date, relapse), 025/026 (withdrawals), 037 (screen failure)
SUBJECTS = frozenset([f"{n:03d}" for n in range(1, 21)] + ["024", "025", "026", "037"])


def _scaled(value, factor: Decimal) -> Decimal:
    exact = Decimal(str(value)) * factor
    return Decimal(format(exact, "f"))  # plain notation: 1050.0, never 1.050E+3


def _convert_quantity(q: dict | None, old_unit: str, new_unit: str, factor: Decimal) -> None:
    if not q or q.get("unit") != old_unit or "value" not in q:
        return
    q["value"] = _scaled(q["value"], factor)
    q["unit"] = new_unit
    q["system"] = UCUM
    q["code"] = new_unit


def hospitalise(res: dict) -> dict:
    """One resource as the hospital would send it (see module docstring)."""
    rtype = res["resourceType"]
    # trialbridge's own resource-key identifiers are not what a hospital sends
    if isinstance(res.get("identifier"), list) and any(i.get("system") == RESOURCE_KEY_SYSTEM for i in res["identifier"]):
        res["identifier"] = [i for i in res["identifier"] if i.get("system") != RESOURCE_KEY_SYSTEM]
        if not res["identifier"]:
            del res["identifier"]
    if rtype == "Patient":
        for ident in res.get("identifier", []):
            if ident.get("system") == MRN_SYSTEM:
                ident["system"] = HOSPITAL_MRN_SYSTEM
                ident["use"] = "usual"
        for name in res.get("name", []):
            name["use"] = "official"
        for tel in res.get("telecom", []):
            tel["use"] = "home"
        for addr in res.get("address", []):
            line, _, city = addr["text"].partition(", ")
            addr.update({"use": "home", "line": [line], "city": city})
    elif rtype == "Encounter":
        res["extension"] = [e for e in res.get("extension", []) if e.get("url") != EXT + "visit"]
        if not res["extension"]:
            del res["extension"]
    elif rtype == "Observation":
        codings = res["code"].get("coding", [])
        cdisc = next((c["code"] for c in codings if c["system"] == NCIT), None)
        conversion = None
        if terminology.lab_test_by_ncit(cdisc):
            conversion = LAB_UNITS.get(terminology.lab_test_by_ncit(cdisc)["lbtestcd"])
        elif terminology.cp_test_by_ncit(cdisc):
            conversion = COUNT_UNIT
        if conversion:
            _convert_quantity(res.get("valueQuantity"), *conversion)
            for rng in res.get("referenceRange", []):
                _convert_quantity(rng.get("low"), *conversion)
                _convert_quantity(rng.get("high"), *conversion)
        if any(c["system"] == LOINC for c in codings):
            res["code"]["coding"] = [c for c in codings if c["system"] == LOINC]
    return res


def build(target: Path) -> IssueLog:
    log = IssueLog()
    records = records_io.read_records(SOURCE, log)
    for name, rows in records.items():
        records.rows[name] = [r for r in rows if r["subject_id"] in SUBJECTS]
    study = load_study(records.study_id or "NCT04387942")
    resources = [hospitalise(r) for r in assemble.records_to_fhir(records, study, log, include_identifiers=True)]
    target.mkdir(parents=True, exist_ok=True)
    fhir_io.write_bundle(resources, target / "bundle.json", "collection")
    fhir_io.write_ndjson(resources, target / "ndjson")
    return log


def _same(a: Path, b: Path) -> bool:
    names = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.suffix in (".json", ".ndjson"))
    other = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.suffix in (".json", ".ndjson"))
    return names == other and all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def main(argv: list[str]) -> int:
    if "--check" in argv:
        with tempfile.TemporaryDirectory() as tmp:
            log = build(Path(tmp))
            same = _same(Path(tmp), TARGET)
        print("up to date" if same else f"{TARGET} differs from a fresh build")
        return 0 if same and not log.has_errors else 1
    log = build(TARGET)
    print(f"wrote {TARGET / 'bundle.json'} and {TARGET / 'ndjson'}")
    return 1 if log.has_errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
