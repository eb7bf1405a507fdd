"""FHIR validation: schema on the parsed resource, models only for rejected resources, R4
and R5 schemas.  Expected findings are written out by hand."""
from __future__ import annotations

from decimal import Decimal

import pytest

from trialbridge.converters.core import jsoncodec
from trialbridge.converters.core.issues import IssueLog
from trialbridge.converters.formats.fhir import validate as fhir_validate
from trialbridge.converters.formats.fhir import versions as r5

OBSERVATION = {"resourceType": "Observation", "id": "o", "status": "final", "code": {"text": "IgG"},
               "subject": {"reference": "Patient/p"}}


def test_schema_takes_codec_numbers_as_they_are():
    """float (fast path), Decimal (exact path), ExactDecimal (1e3 as written) and big ints."""
    for text in ('{"value": 4.5}', '{"value": 4.50}', '{"value": 1e3}', '{"value": 12345678901234567890}'):
        res = {**OBSERVATION, "valueQuantity": jsoncodec.loads(text)}
        assert fhir_validate.schema_errors(res) == []
    bad = {**OBSERVATION, "valueQuantity": {"value": "4.50"}}  # a string is not a decimal
    assert [e.split(":")[0] for e in fhir_validate.schema_errors(bad)] == ["valueQuantity/value"]


def test_models_run_only_on_what_the_schema_rejected(monkeypatch):
    called = []
    monkeypatch.setattr(fhir_validate, "model_errors", lambda res: called.append(res["id"]) or ["model says no"])
    log = IssueLog()
    bad = {**OBSERVATION, "id": "bad", "status": "guessed"}  # not in the required value set
    counts = fhir_validate.validate_resources([OBSERVATION, bad], log, check_references=False)
    assert counts == {"resources": 2, "invalid": 1}
    assert called == ["bad"]
    assert [(i.code, i.record) for i in log.issues] == [("FHIR-SCHEMA", "Observation/bad"),
                                                        ("FHIR-MODEL", "Observation/bad")]


R5_SUBJECT = {"resourceType": "ResearchSubject", "id": "s", "status": "active",
              "study": {"reference": "ResearchStudy/x"}, "subject": {"reference": "Patient/p"},
              "progress": [{"subjectState": {"coding": [{"code": "on-study"}]}}]}


@pytest.mark.parametrize("rtype", ["ResearchStudy", "ResearchSubject", "AdverseEvent", "MedicationAdministration",
                                   "Encounter", "Observation", "Patient", "CodeSystem"])
def test_r5_schema_compiles(rtype):
    """CodeSystem carries the decimal pattern the erratum mends."""
    assert fhir_validate.schema_validator(rtype, "R5") is not None
    assert "Observation" in fhir_validate.resource_types("R5") and "ActorDefinition" in fhir_validate.resource_types("R5")


def test_r5_schema_first_models_only_for_rejected(monkeypatch):
    called = []
    real = r5.model_errors_r5
    monkeypatch.setattr(r5, "model_errors_r5", lambda res: called.append(res["id"]) or real(res))
    # HumanName.use is one of the few codes the R5 JSON schema enumerates; the models take any code
    patient = {"resourceType": "Patient", "id": "bad", "name": [{"use": "nickname-ish", "family": "X"}]}
    log = IssueLog()
    assert r5.validate_r5([R5_SUBJECT, patient], log) == {"resources": 2, "invalid": 1}
    assert called == ["bad"]  # the valid one never reached the models
    assert real(patient) == []  # so the schema's message is reported
    assert [(i.code, i.record) for i in log.issues] == [("FHIR-SCHEMA-R5", "Patient/bad")]
    assert log.issues[0].message.startswith("name/0/use: ")


def test_r5_schema_rejects_r4_shape_that_models_explain():
    r4_shaped = {"resourceType": "ResearchSubject", "id": "s4", "status": "on-study",
                 "study": {"reference": "ResearchStudy/x"}, "individual": {"reference": "Patient/p"}}
    assert fhir_validate.schema_errors(r4_shaped, "R5")  # additional property individual
    log = IssueLog()
    assert r5.validate_r5([r4_shaped], log) == {"resources": 1, "invalid": 1}
    assert {i.code for i in log.issues} == {"FHIR-MODEL-R5"}


def test_r5_decimals_validate_on_the_exact_path():
    dose = {"resourceType": "MedicationAdministration", "id": "m", "status": "completed",
            "medication": {"concept": {"text": "x"}}, "subject": {"reference": "Patient/p"},
            "occurenceDateTime": "2020-06-05", "dosage": {"dose": {"value": Decimal("1.30")}}}
    assert fhir_validate.schema_errors(dose, "R5") == []


def test_resource_types_share_one_compiled_schema_with_the_same_findings():
    """Every type checks through one compiled schema per version; its findings are those of
    a validator compiled for that type alone (contained resources included)."""
    bad = {**OBSERVATION, "status": "guessed", "valueQuantity": {"value": "x"}, "extra": 1,
           "contained": [{"resourceType": "Patient", "id": "c", "gender": "x"}]}
    patient = {"resourceType": "Patient", "id": "p", "gender": "unknown-ish", "birthDate": "1970-13-01"}
    for res in (bad, patient, OBSERVATION):
        shared = fhir_validate.schema_validator(res["resourceType"])
        alone = fhir_validate._standalone(res["resourceType"], "R4")
        assert sorted((list(e.instance_path), e.message) for e in shared.iter_errors(res)) == \
            sorted((list(e.instance_path), e.message) for e in alone.iter_errors(res))
        assert shared.is_valid(res) == alone.is_valid(res) == (res is OBSERVATION)
    assert {"Observation", "Patient"} <= set(fhir_validate._compiled_for("R4").types)
    # a validator handed a resource of another type checks it as its own type, as before
    assert not fhir_validate.schema_validator("Patient").is_valid(OBSERVATION)
