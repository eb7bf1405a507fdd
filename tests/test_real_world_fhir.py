"""Public real-world inputs: what maps is converted, what does not is reported — never a
traceback. HL7 R4 example instances, Synthea patient bundles, and the CDISC pilot SDTM
converted to FHIR (which must validate)."""
from __future__ import annotations

import json
from collections import Counter

import pytest
from click.testing import CliRunner

from trialbridge.cli import main
from tests.conftest import reference


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _codes(path):
    report = json.loads(path.read_text())
    return report, Counter(i["code"] for i in report["issues"])


def test_hl7_examples_folder_reports_what_it_cannot_map(tmp_path):
    folder = reference("fhir-r4", "examples-hl7")
    result = run("convert", folder, "--to", "records", "-o", tmp_path, "--study", "NCT04387942")
    assert result.exit_code in (0, 1) and "internal error" not in result.output, result.output
    report, codes = _codes(tmp_path / "issues.json")
    # one Patient has a ResearchSubject; the others are not enrolled: out of scope, counted
    assert codes["FHIR-NOT-ENROLLED"] >= 1 and codes["FHIR-SUBJECT-ID-ASSUMED"] == 1
    assert codes["FHIR-OUT-OF-SCOPE-TYPE"] >= 1  # types with no mapping are counted per type


@pytest.mark.parametrize("name", ["Carroll471_OHara248_274f5452-2a39-44c4-a7cb-f36de467762e.json",
                                  "hospitalInformation1596649672088.json"])
def test_synthea_bundles_convert_without_traceback(name, tmp_path):
    bundle = reference("fhir-r4", "synthea-bundles", name)
    result = run("convert", bundle, "--to", "records", "-o", tmp_path, "--study", "NCT04387942")
    assert result.exit_code in (0, 1) and "internal error" not in result.output, result.output
    report, codes = _codes(tmp_path / "issues.json")
    read = sum(c["read"] for c in report["rows"].values())
    assert read > 0
    assert codes.get("FHIR-OUT-OF-SCOPE-TYPE", 0) >= 1 and report["summary"]["error"] == 0


@pytest.mark.parametrize("folder", ["cdiscpilot01", "phuse-tdf-sdtm-v1.0"])
def test_cdisc_pilot_converts_to_valid_fhir(folder, tmp_path):
    source = reference("sdtm", folder)
    result = run("convert", source, "--to", "fhir", "-o", tmp_path / "fhir")
    assert "internal error" not in result.output, result.output
    report, codes = _codes(tmp_path / "fhir" / "issues.json")
    assert report["summary"]["error"] == 0
    assert codes["STUDY-FROM-SDTM"] == 1
    lines = {p.stem: sum(1 for _ in p.open()) for p in (tmp_path / "fhir").glob("*.ndjson")}
    assert lines["Patient"] == 306 and lines["MedicationAdministration"] == 591 and lines["AdverseEvent"] > 900
    result = run("validate", tmp_path / "fhir")
    assert result.exit_code == 0 and "0 error(s)" in result.output, result.output


def test_fhir_input_is_validated_on_reading(tmp_path):
    """Invalid resources read are reported with the schema's message and, for those the fast
    schema check rejects, the fhir.resources model's precise one."""
    bundle = tmp_path / "in.json"
    bundle.write_text(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Patient", "id": "p", "gender": "weird", "birthDate": "2020-13-01"}},
        {"nope": 1}]}))
    result = run("convert", bundle, "--to", "records", "-o", tmp_path / "out", "--study", "NCT04387942")
    assert result.exit_code == 1 and "internal error" not in result.output
    report, codes = _codes(tmp_path / "out" / "issues.json")
    assert codes["FHIR-SCHEMA"] == 2 and codes["FHIR-MODEL"] >= 1 and codes["FHIR-JSON"] == 1
    assert all(i["record"] == "Patient/p" for i in report["issues"] if i["code"] == "FHIR-SCHEMA")
