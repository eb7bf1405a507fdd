"""The hospital EHR export sample (samples/nct04387942-fhir, built by
scripts/build_fhir_sample.py) converts to the same SDTM as the CSV sample it was made from.

What differs by construction: the hospital writes IgG/IgA/IgM/C3/C4 and creatinine in mg/dL
and lymphocyte subset counts in 10*3/uL, so LBORRES/LBORRESU/LBORNRLO/LBORNRHI (CP alike)
differ for those tests and only for them; every standard-result variable is the same.  One
nuance: --STRESC of a converted result is the shortest text of the converted number
("1.3"), while the same-unit path keeps the reported text ("1.30"), so for converted tests
--STRESC is compared as a number.  The patient names, MRNs, phones and addresses in the
export never reach the SDTM files or the records written from it.
"""
from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

import pytest

from trialbridge.converters.formats.fhir import io as fhir_io
from trialbridge.converters.formats.fhir import validate as fhir_validate
from trialbridge.converters.formats import records as records_io
from trialbridge.converters.core.issues import IssueLog
from trialbridge.converters.pipeline import convert
from trialbridge.mappings.fhir import SUBJECT_ID_SYSTEM
from tests.conftest import ROOT, SAMPLE

HOSPITAL = ROOT / "samples" / "nct04387942-fhir"
IDENTICAL = ("DM", "EX", "AE", "DS", "SV", "SE", "VS", "TA", "TE", "TI", "TS", "TV", "SUPPAE", "SUPPDM", "SUPPEX")
CONVERTED_LB = {"IGG": "mg/dL", "IGA": "mg/dL", "IGM": "mg/dL", "C3": "mg/dL", "C4": "mg/dL", "CREAT": "mg/dL"}
ORIGINAL = ("ORRES", "ORRESU", "ORNRLO", "ORNRHI")


def _datasets(folder: Path) -> dict[str, list[dict]]:
    return {p.stem.upper(): list(csv.DictReader(open(p, encoding="utf-8", newline="")))
            for p in sorted(folder.glob("*.csv"))}


def _export_subjects() -> set[str]:
    """The trial subject ids of the Patients in the export (it holds a subset of the sample)."""
    import json

    ids = set()
    for line in open(HOSPITAL / "ndjson" / "Patient.ndjson", encoding="utf-8"):
        ids.update(i["value"] for i in json.loads(line)["identifier"] if i["system"] == SUBJECT_ID_SYSTEM)
    return ids


def _same_subjects_sample(folder: Path) -> Path:
    """The CSV sample cut to the export's subjects: the records the export was built from."""
    keep = _export_subjects()
    folder.mkdir()
    for src in sorted(SAMPLE.glob("*.csv")):
        with open(src, encoding="utf-8", newline="") as fh, open(folder / src.name, "w", encoding="utf-8",
                                                                  newline="") as out:
            reader = csv.DictReader(fh)
            writer = csv.DictWriter(out, fieldnames=reader.fieldnames)
            writer.writeheader()
            writer.writerows(r for r in reader if r["subject_id"] in keep)
    return folder


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    base = tmp_path_factory.mktemp("hospital")
    out = {}
    sample = _same_subjects_sample(base / "csv-in")
    assert len(_export_subjects()) == 24
    for name, source in (("csv-sample", sample), ("bundle", HOSPITAL / "bundle.json"),
                         ("ndjson", HOSPITAL / "ndjson")):
        result = convert(source, "sdtm", base / name, formats="csv,xpt")
        assert not [i for i in result.log.issues if i.severity == "error"], name
        out[name] = base / name
    convert(HOSPITAL / "bundle.json", "records", base / "records")
    out["records"] = base / "records"
    return out


def test_sample_is_up_to_date_and_deterministic():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_fhir_sample.py"), "--check"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_export_looks_like_a_hospital_export():
    log = IssueLog()
    resources = list(fhir_io.read_fhir(HOSPITAL / "bundle.json", log))
    assert log.issues == []
    assert fhir_validate.validate_resources(resources, log, model_check=False)["invalid"] == 0
    assert log.issues == []
    patients = [r for r in resources if r["resourceType"] == "Patient"]
    assert len(patients) == 24 and all(p.get("name") and p.get("telecom") and p.get("address") for p in patients)
    assert all(any(i.get("type", {}).get("coding", [{}])[0].get("code") == "MR" for i in p["identifier"])
               for p in patients)
    units = {}
    for r in resources:
        if r["resourceType"] == "Observation" and "valueQuantity" in r:
            units.setdefault(r["code"]["text"], set()).add(r["valueQuantity"].get("code"))
    for test in ("IgG", "IgA", "IgM", "C3", "C4", "Creatinine"):
        assert units[test] == {"mg/dL"}, test
    assert units["CD3+ T cells"] == {"10*3/uL", "%"}
    assert units["ALT"] == {"U/L"}
    # exact decimal arithmetic: IgG 10.5 g/L of subject 001 on DAY 7 is 1050.0 mg/dL
    text = (HOSPITAL / "bundle.json").read_text("utf-8")
    assert '"value":1050.0,"unit":"mg/dL"' in text
    values = [r["valueQuantity"]["value"] for r in resources
              if r["resourceType"] == "Observation" and r["code"]["text"] == "Creatinine" and "valueQuantity" in r]
    # creatinine x 0.011312 is exact: 42 umol/L -> 0.475104 mg/dL, no rounding
    assert Decimal("0.475104") in values and all(isinstance(v, Decimal) for v in values)


def test_bundle_and_ndjson_give_the_same_sdtm(converted):
    assert _datasets(converted["bundle"]) == _datasets(converted["ndjson"])


def test_same_sdtm_as_the_csv_sample(converted):
    expected, got = _datasets(converted["csv-sample"]), _datasets(converted["bundle"])
    assert sorted(got) == sorted(expected)
    for name in IDENTICAL:
        assert got[name] == expected[name], name
    for name, p, converted_units in (("LB", "LB", CONVERTED_LB), ("CP", "CP", None)):
        assert len(got[name]) == len(expected[name]) > 0
        differing = set()
        for g, e in zip(got[name], expected[name]):
            assert set(g) == set(e)
            same = [k for k in g if k not in {p + s for s in ORIGINAL + ("STRESC",)}]
            assert {k: g[k] for k in same} == {k: e[k] for k in same}, (name, g[p + "TESTCD"])
            is_converted = (g[p + "TESTCD"] in converted_units) if converted_units else e[p + "ORRESU"] == "10^6/L"
            if is_converted:
                differing.add(g[p + "TESTCD"])
                assert g[p + "ORRESU"] == (converted_units[g[p + "TESTCD"]] if converted_units else "10^9/L")
                assert e[p + "ORRESU"] in ("g/L", "umol/L", "10^6/L")
                if e[p + "STRESC"]:
                    assert float(g[p + "STRESC"]) == float(e[p + "STRESC"]) == float(g[p + "STRESN"])
                if e[p + "ORRES"]:
                    assert g[p + "ORRES"] != e[p + "ORRES"]
            else:
                assert {k: g[k] for k in g} == {k: e[k] for k in e}, (name, g[p + "TESTCD"])
        if converted_units:
            assert differing == set(converted_units)
        else:
            assert len(differing) == 6  # the six COUNT tests


def test_no_identifying_data_in_any_output(converted):
    subjects = list(csv.DictReader(open(SAMPLE / "subjects.csv", encoding="utf-8", newline="")))
    secrets = set()
    for s in subjects:
        secrets.update(s[k] for k in ("family_name", "medical_record_number", "phone", "address") if s[k])
    secrets.update({"Example Street", "Testville", "hospital.example.org"})
    # the export itself carries them (that is the point of the sample)
    export = (HOSPITAL / "bundle.json").read_bytes()
    assert all(s.encode() in export for s in ("Subject001", "MRN9900001", "000-0000-0001", "Testville"))
    for name in ("bundle", "ndjson", "records"):
        files = [p for p in converted[name].rglob("*") if p.is_file()]
        assert files
        for path in files:
            data = path.read_bytes()
            found = [s for s in secrets if s.encode() in data]
            assert not found, (path.name, found[:3])
    # and the records read back have no identifying field
    back = records_io.read_records(converted["records"], IssueLog())
    assert not any({"family_name", "given_name", "medical_record_number", "phone", "address"} & set(r)
                   for r in back["subject"])


def test_ehr_export_without_trial_ids_links_by_mrn(converted, tmp_path):
    """An EHR knows its patients by MRN, not by trial subject id: with --link-subjects the
    Patients are matched to the trial's subjects and the clinical data converts."""
    import json

    entries = []
    for rtype in ("Patient", "MedicationAdministration", "Observation", "AdverseEvent"):
        for line in open(HOSPITAL / "ndjson" / f"{rtype}.ndjson", encoding="utf-8"):
            res = json.loads(line)
            if rtype == "Patient":  # no trial identifier, no trial extensions
                res["identifier"] = [i for i in res["identifier"] if i["system"] != SUBJECT_ID_SYSTEM]
                res.pop("extension", None)
            res.pop("encounter", None)
            res.pop("context", None)
            entries.append({"resource": res})
    ehr = tmp_path / "ehr.json"
    ehr.write_text(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries}))

    # without the link nobody is enrolled: out of scope, counted, no error
    unlinked = convert(ehr, "records", tmp_path / "unlinked", study_ref="NCT04387942")
    assert not unlinked.log.has_errors
    (not_enrolled,) = [i for i in unlinked.log.issues if i.code == "FHIR-NOT-ENROLLED"]
    assert not_enrolled.message.startswith("24 Patient(s) with no ResearchSubject")
    assert unlinked.log.accounting[str(ehr)] == {"read": len(entries), "converted": 0, "rejected": 0,
                                                 "out_of_scope": len(entries)}

    result = convert(ehr, "sdtm", tmp_path / "sdtm", formats="csv", study_ref="NCT04387942", link_subjects=SAMPLE)
    # the one warning: the EHR's 16 adverse events carry no MedDRA codes (and no --meddra was given)
    assert [(i.code, i.value) for i in result.log.issues if i.severity != "info"] == [("MEDDRA-NOT-CODED", 16)]
    assert sum(1 for i in result.log.issues if i.code == "FHIR-LINKED-BY-MRN") == 24
    got, want = _datasets(tmp_path / "sdtm"), _datasets(converted["csv-sample"])
    for name in ("EX", "AE", "VS"):
        assert got[name] == want[name], name
    # DM too, but for the end-of-participation dates: the EHR export has no visits or dispositions
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("RFENDTC", "RFPENDTC")} for r in rows]  # noqa: E731
    assert strip(got["DM"]) == strip(want["DM"])
    assert len(got["LB"]) == len(want["LB"]) and len(got["CP"]) == len(want["CP"])
    assert b"MRN99" not in b"".join(p.read_bytes() for p in (tmp_path / "sdtm").glob("*.csv"))
