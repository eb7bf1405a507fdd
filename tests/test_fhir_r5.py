"""FHIR R5 as a shape conversion of our R4 (mappings/fhir/r5.py): round trips are the proof.

* every R4 resource made from the sample, converted to R5, passes the fhir.resources R5 models;
* R4 -> R5 -> R4 is identity (same bytes) for every resource of the sample, and nothing of the
  sample needs the stash extension (every element has an R5 home);
* records -> R4 -> R5 -> R4 -> records gives the same records as the R4 path, and those are
  the sample records;
* detect_version / detect_versions on both shapes; hand-checked R5 resources.
"""
from __future__ import annotations

from collections import Counter
from decimal import Decimal

import pytest

from trialbridge.mappings.fhir import EXT, EXT_LOCAL_DATETIME, NCIT, assemble
from trialbridge.converters.formats.fhir import io as fhir_io
from trialbridge.converters.core.issues import IssueLog
from trialbridge.converters.core.records import public, record_types
from trialbridge.converters.formats.fhir import versions as r5
from trialbridge.mappings.fhir.patient import patient_id

STASH_URLS = {r5.STASH[r5.R4], r5.STASH[r5.R5]}


@pytest.fixture(scope="module")
def sample_r4(sample_records, study):
    records, _ = sample_records
    return list(assemble.records_to_fhir(records, study, IssueLog()))


@pytest.fixture(scope="module")
def sample_r5(sample_r4):
    return [r5.to_r5(r) for r in sample_r4]


def _urls(resource):
    return [e.get("url") for e in resource.get("extension", []) or []]


def _by_subject(resources, rtype, study_id, subject_id):
    ref = f"Patient/{patient_id(study_id, subject_id)}"
    return [r for r in resources if r["resourceType"] == rtype and r["subject"]["reference"] == ref]


# --------------------------------------------------------------------------- the sample


def test_every_r5_resource_validates(sample_r5):
    log = IssueLog()
    counts = r5.validate_r5(sample_r5, log)
    assert counts["resources"] == len(sample_r5) > 4000
    assert [(i.code, i.record, i.message) for i in log.issues][:5] == []
    assert counts["invalid"] == 0
    # every element we write has an R5 home: nothing went to the stash
    assert not [r["id"] for r in sample_r5 if STASH_URLS & set(_urls(r))]
    types = Counter(r["resourceType"] for r in sample_r5)
    assert {"ResearchStudy", "Patient", "ResearchSubject", "MedicationAdministration", "Observation",
            "AdverseEvent"} <= set(types)


def test_r4_r5_r4_is_identity(sample_r4, sample_r5):
    for before, converted in zip(sample_r4, sample_r5):
        back = r5.to_r4(converted)
        assert back == before, before["id"]
        assert fhir_io.dumps(back) == fhir_io.dumps(before), before["id"]


def test_r5_is_deterministic(sample_r4, sample_r5):
    assert [fhir_io.dumps(r5.to_r5(r)) for r in sample_r4] == [fhir_io.dumps(r) for r in sample_r5]


def test_records_r5_records_is_identity(sample_records, sample_r4, sample_r5, study, tmp_path):
    records, _ = sample_records
    # through a file, as the runner reads it (decimals parsed exactly)
    fhir_io.write_ndjson(sample_r5, tmp_path)
    read = list(fhir_io.read_fhir(tmp_path, IssueLog()))
    log = IssueLog()
    assert r5.detect_versions(read, log) == "R5"
    assert not [i for i in log.issues if i.code == "FHIR-VERSION-MIXED"]
    via_r5 = assemble.fhir_to_records(r5.normalise_to_r4(read, log), study, log)
    via_r4 = assemble.fhir_to_records(sample_r4, study, IssueLog())
    assert not [i for i in log.issues if i.severity == "error"]
    for name in record_types():
        assert [public(r) for r in via_r5[name]] == [public(r) for r in via_r4[name]], name
    # and the R4 path gives the sample records back (identifying fields are not written)
    for name in ("subject", "exposure", "lab_result", "cell_phenotype", "adverse_event"):
        rtype = record_types()[name]
        drop = set(rtype.identifying)

        def norm(rows):
            out = [{k: v for k, v in public(r).items() if k not in drop and v != ""} for r in rows]
            return sorted(out, key=lambda r: tuple(r.get(k, "") for k in rtype.key))

        assert norm(via_r5[name]) == norm(records[name]), name


def test_detect_version_on_both_shapes(sample_r4, sample_r5):
    shaped = ("ResearchStudy", "ResearchSubject", "MedicationAdministration", "AdverseEvent")
    for res4, res5 in zip(sample_r4, sample_r5):
        if res4["resourceType"] in shaped:
            assert (r5.detect_version(res4), r5.detect_version(res5)) == ("R4", "R5"), res4["resourceType"]
        elif res4["resourceType"] in ("Patient", "Observation"):
            assert r5.detect_version(res4) is None and r5.detect_version(res5) is None
    assert r5.detect_versions(sample_r4) == "R4"
    assert r5.detect_versions(sample_r5) == "R5"


def test_mixed_input_is_reported_and_read(sample_r4, sample_r5, study):
    mixed = sample_r5[:len(sample_r5) // 2] + sample_r4[len(sample_r4) // 2:]
    log = IssueLog()
    normalised = r5.normalise_to_r4(mixed, log)
    assert [i.code for i in log.issues] == ["FHIR-VERSION-MIXED"]
    assert log.issues[0].severity == "warning"
    assert normalised == sample_r4


# --------------------------------------------------------------------------- hand-checked resources


def test_first_dose_of_subject_001_in_r5(sample_r5, study):
    doses = _by_subject(sample_r5, "MedicationAdministration", study.study_id, "001")
    first = min(doses, key=lambda r: r["occurencePeriod"]["_start"]["extension"][0]["valueString"])
    local = EXT_LOCAL_DATETIME
    assert first["status"] == "completed"
    assert "effectivePeriod" not in first and "medicationReference" not in first and "context" not in first
    assert first["occurencePeriod"] == {
        "start": "2020-06-05T08:30:00+08:00", "_start": {"extension": [{"url": local, "valueString": "2020-06-05T08:30"}]},
        "end": "2020-06-05T09:30:00+08:00", "_end": {"extension": [{"url": local, "valueString": "2020-06-05T09:30"}]}}
    # the R4 writer names a contained Medication: R5 CodeableReference.reference
    assert first["medication"] == {"reference": {"reference": "#med"}}
    assert first["contained"] == [{"resourceType": "Medication", "id": "med", "code": {"text": "rhIL-2"},
                                   "doseForm": {"coding": [{"system": NCIT, "code": "C42957",
                                                            "display": "INJECTION, POWDER, LYOPHILIZED, FOR SOLUTION"}],
                                                "text": "INJECTION, POWDER, LYOPHILIZED, FOR SOLUTION"},
                                   "batch": {"lotNumber": "L20200503"}}]
    assert first["dosage"]["dose"] == {"value": Decimal("315000"), "unit": "[iU]",
                                       "system": "http://unitsofmeasure.org", "code": "[iU]"}
    assert first["dosage"]["route"]["text"] == "INTRAVENOUS"
    assert first["subject"] == {"reference": f"Patient/{patient_id(study.study_id, '001')}"}
    if "encounter" in first:  # the visit's Encounter (R4 context)
        assert first["encounter"]["reference"].startswith("Encounter/")


def test_medication_codeable_concept_and_datetime():
    r4 = {"resourceType": "MedicationAdministration", "id": "x", "status": "in-progress",
          "medicationCodeableConcept": {"text": "rhIL-2"}, "subject": {"reference": "Patient/p"},
          "effectiveDateTime": "2020-06-05", "_effectiveDateTime": {"extension": [
              {"url": "urn:trialbridge:fhir:extension:local-datetime", "valueString": "2020-06-05T08:30"}]},
          "context": {"reference": "Encounter/e"}, "category": {"text": "inpatient"},
          "reasonCode": [{"text": "per protocol"}]}
    out = r5.to_r5(r4)
    assert out["medication"] == {"concept": {"text": "rhIL-2"}}
    assert out["occurenceDateTime"] == "2020-06-05"
    assert out["_occurenceDateTime"] == r4["_effectiveDateTime"]
    assert out["encounter"] == {"reference": "Encounter/e"}
    assert out["category"] == [{"text": "inpatient"}]
    assert out["reason"] == [{"concept": {"text": "per protocol"}}]
    assert r5.model_errors_r5(out) == []
    assert r5.to_r4(out) == r4


def test_adverse_event_in_r5(sample_r5, study):
    ae = next(r for r in sample_r5 if r["resourceType"] == "AdverseEvent"
              and r["identifier"][0]["value"] == "1" and r["code"]["text"] == "tired after infusion")
    assert ae["status"] == "completed"  # has an end date
    assert ae["actuality"] == "actual"
    assert ae["code"] == {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/mdr", "display": "Fatigue"}],
                          "text": "tired after infusion"}
    assert ae["occurrenceDateTime"] == "2020-06-08"
    assert ae["seriousness"]["coding"][0]["code"] == "non-serious" and ae["seriousness"]["text"] == "N"
    assert "severity" not in ae and "event" not in ae and "date" not in ae
    exts = {e["url"]: e for e in ae["extension"]}
    assert exts[r5.AE_SEVERITY]["valueCodeableConcept"] == {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/adverse-event-severity", "code": "mild",
                    "display": "Mild"}, {"system": NCIT, "code": "C41338", "display": "MILD"}], "text": "MILD"}
    assert exts[r5.AE_GRADE]["valueCodeableConcept"] == {"text": "1"}
    assert EXT + "grade" not in exts and "urn:trialbridge:fhir:extension:grade" not in exts
    assert ae["outcome"] == [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/adverse-event-outcome",
                                          "code": "resolved", "display": "Resolved"},
                                         {"system": NCIT, "code": "C49498", "display": "RECOVERED/RESOLVED"}],
                              "text": "RECOVERED/RESOLVED"}]
    assert ae["suspectEntity"] == [{"instanceReference": {"display": "rhIL-2"}, "causality": {"entityRelatedness": {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/adverse-event-causality-assess",
                    "code": "Probably-Likely", "display": "Probably/Likely"}], "text": "RELATED"}}}]
    statuses = Counter(r["status"] for r in sample_r5 if r["resourceType"] == "AdverseEvent")
    assert set(statuses) <= {"completed", "in-progress", "unknown"}


def test_research_study_and_subject_in_r5(sample_r5):
    study = next(r for r in sample_r5 if r["resourceType"] == "ResearchStudy")
    assert study["status"] == "active"
    assert study["progressStatus"][0]["state"]["coding"][0] == {"system": r5.STUDY_STATUS_SYSTEM, "code": "active"}
    assert study["associatedParty"] == [{"name": "First Hospital of Jilin University", "role": {
        "coding": [{"system": r5.PARTY_ROLE_SYSTEM, "code": "sponsor"}]}}]
    assert [g["linkId"] for g in study["comparisonGroup"]] == ["HSP", "HSPN"]
    assert "sponsor" not in study and "arm" not in study
    subjects = [r for r in sample_r5 if r["resourceType"] == "ResearchSubject"]
    links = {g["linkId"] for g in study["comparisonGroup"]}
    for s in subjects:
        assert "individual" not in s and s["subject"]["reference"].startswith("Patient/")
        assert s["status"] == "active"
        assert s["progress"][0]["subjectState"]["coding"][0]["system"] == r5.SUBJECT_STATE_SYSTEM
        assert s.get("assignedComparisonGroup", "HSP") in links


# --------------------------------------------------------------------------- what has no home: the stash


def test_elements_without_r5_home_are_stashed_and_restored():
    study = {"resourceType": "ResearchStudy", "id": "s", "status": "closed-to-accrual",
             "enrollment": [{"reference": "Group/g"}], "sponsor": {"reference": "Organization/o", "display": "Org"},
             "arm": [{"name": "Arm A (low dose)", "description": "low"}], "reasonStopped": {"text": "slow"}}
    out = r5.to_r5(study)
    assert r5.model_errors_r5(out) == []
    assert "enrollment" not in out
    stashed = [{s["url"]: s["valueString"] for s in e["extension"]} for e in out["extension"]
               if e["url"] == r5.STASH[r5.R4]]
    assert {"name": "enrollment", "json": '[{"reference":"Group/g"}]'} in stashed
    assert out["comparisonGroup"][0]["linkId"] == r5.comparison_group_id("Arm A (low dose)") != "Arm A (low dose)"
    assert out["associatedParty"][0]["party"] == {"reference": "Organization/o"}
    assert out["whyStopped"] == {"text": "slow"}
    assert r5.to_r4(out) == study

    subject = {"resourceType": "ResearchSubject", "id": "x", "status": "withdrawn", "study": {"reference": "R/s"},
               "individual": {"reference": "Patient/p"}, "assignedArm": "Arm A (low dose)"}
    out = r5.to_r5(subject)
    assert r5.model_errors_r5(out) == []
    assert r5.to_r4(out) == subject

    ae = {"resourceType": "AdverseEvent", "id": "a", "actuality": "actual", "subject": {"reference": "Patient/p"},
          "event": {"text": "rash"}, "referenceDocument": [{"reference": "DocumentReference/d"}],
          "outcome": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/adverse-event-outcome",
                                  "code": "ongoing"}]},
          "suspectEntity": [{"instance": {"display": "drug"}, "causality": [
              {"assessment": {"text": "RELATED"}, "productRelatedness": "yes"}, {"assessment": {"text": "NOT"}}]}]}
    out = r5.to_r5(ae)
    assert r5.model_errors_r5(out) == []
    assert out["status"] == "in-progress"
    assert {dict((s["url"], s["valueString"]) for s in e["extension"])["name"]
            for e in out["extension"] if e["url"] == r5.STASH[r5.R4]} == {"referenceDocument", "suspectEntity"}
    assert r5.to_r4(out) == ae


def test_r5_only_content_survives_r5_r4_r5():
    ae = {"resourceType": "AdverseEvent", "id": "a", "status": "entered-in-error", "actuality": "actual",
          "subject": {"reference": "Patient/p"}, "code": {"text": "rash"},
          "occurrencePeriod": {"start": "2020-06-01", "end": "2020-06-03"},
          "outcome": [{"text": "recovered"}, {"text": "sequelae"}],
          "identifier": [{"value": "1"}, {"value": "2"}]}
    assert r5.detect_version(ae) == "R5"
    back4 = r5.to_r4(ae)
    assert r5.detect_version(back4) == "R4"
    assert back4["event"] == {"text": "rash"} and back4["outcome"] == {"text": "recovered"}
    assert "status" not in back4 and "occurrencePeriod" not in back4
    assert r5.to_r5(back4) == ae

    subject = {"resourceType": "ResearchSubject", "id": "x", "status": "active", "study": {"reference": "R/s"},
               "subject": {"reference": "Patient/p"}, "progress": [
                   {"subjectState": {"coding": [{"system": r5.SUBJECT_STATE_SYSTEM, "code": "on-study"}]}},
                   {"milestone": {"text": "randomised"}, "startDate": "2020-06-05"}]}
    back4 = r5.to_r4(subject)
    assert back4["status"] == "on-study" and back4["individual"] == {"reference": "Patient/p"}
    assert r5.to_r5(back4) == subject

    encounter = {"resourceType": "Encounter", "id": "e", "status": "discharged",
                 "class": [{"coding": [{"code": "AMB"}]}], "actualPeriod": {"start": "2020-06-05"}}
    back4 = r5.to_r4(encounter)
    assert back4["status"] == "finished" and back4["period"] == {"start": "2020-06-05"}
    assert r5.to_r5(back4) == encounter


def test_validate_r5_reports_model_errors():
    log = IssueLog()
    bad = {"resourceType": "AdverseEvent", "id": "a", "actuality": "actual", "subject": {"reference": "Patient/p"},
           "event": {"text": "R4 shape"}}
    counts = r5.validate_r5([bad], log)
    assert counts == {"resources": 1, "invalid": 1}
    assert {i.code for i in log.issues} == {"FHIR-MODEL-R5"}
    assert all(i.severity == "error" and i.record == "AdverseEvent/a" for i in log.issues)
