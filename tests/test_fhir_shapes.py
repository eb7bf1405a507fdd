"""Real FHIR shapes, one case each (issue 8, parts 4 and 5): every shape either maps or gives
a finding naming the element; references in every form find their Patient; Bundles of every
type and Bulk Data folders are read as they come.  Inputs are written here by hand."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from trialbridge.converters.core.issues import IssueLog
from trialbridge.converters.pipeline import convert
from trialbridge.mappings.fhir import assemble

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def _person(pid="p1", ref=None, extra=()):
    """A sponsor study, one ResearchSubject (subject S1, its only identifier) and its Patient."""
    ref = ref or f"Patient/{pid}"
    return [
        {"resourceType": "ResearchStudy", "id": "s", "status": "active",
         "identifier": [{"system": "https://clinicaltrials.gov", "value": "NCT04387942"}]},
        {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "2012-01-01"},
        {"resourceType": "ResearchSubject", "id": "rs1", "status": "on-study", "period": {"start": "2020-06-01"},
         "identifier": [{"system": "urn:example:subject", "value": "S1"}], "study": {"reference": "ResearchStudy/s"},
         "individual": {"reference": ref}, "assignedArm": "HSP"},
        *extra]


def _obs(oid, code, **shape):
    return {"resourceType": "Observation", "id": oid, "status": shape.pop("status", "final"),
            "code": {"coding": [{"system": LOINC, "code": code}]}, "subject": {"reference": "Patient/p1"}, **shape}


def _read(study, *resources):
    log = IssueLog()
    records = assemble.fhir_to_records(list(_person(extra=resources)), study, log)
    return records, log


def _one(rows):
    assert len(rows) == 1, rows
    return {k: v for k, v in rows[0].items() if not k.startswith("_")}


@pytest.mark.parametrize("shape, result, unit", [
    ({"valueQuantity": {"value": 4.50, "unit": "g/L", "system": UCUM, "code": "g/L"}}, "4.5", "g/L"),
    ({"valueQuantity": {"comparator": ">=", "value": 20, "unit": "g/L", "system": UCUM, "code": "g/L"}}, ">=20", "g/L"),
    ({"valueString": "hemolysed"}, "hemolysed", None),
    ({"valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "260385009",
                                           "display": "Negative"}]}}, "Negative", None),
    ({"valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "260385009"}]}}, "260385009", None),
    ({"valueInteger": 7}, "7", None),
    ({"valueBoolean": False}, "false", None),
])
def test_lab_values(study, shape, result, unit):
    records, log = _read(study, _obs("o", "2465-3", effectiveDateTime="2020-06-05T08:00:00+08:00", **shape))
    rec = _one(records["lab_result"])
    assert rec.get("result") == result and rec.get("unit") == unit and rec["test"] == "IgG"
    assert not [i for i in log.issues if i.severity != "info"]


@pytest.mark.parametrize("element, value", [
    ("valueRange", {"low": {"value": 1}, "high": {"value": 2}}), ("valueRatio", {"numerator": {"value": 1}}),
    ("valuePeriod", {"start": "2020-06-05"}), ("valueTime", "08:00:00"), ("valueDateTime", "2020-06-05"),
    ("valueSampledData", {"origin": {"value": 0}, "period": 1, "dimensions": 1, "data": "1 2"}),
])
def test_values_that_are_not_one_result_are_named(study, element, value):
    records, log = _read(study, _obs("o", "2465-3", effectiveDateTime="2020-06-05", **{element: value}))
    assert "result" not in _one(records["lab_result"])
    (issue,) = [i for i in log.issues if i.code == "FHIR-VALUE-NOT-MAPPED"]
    assert issue.field == element and issue.severity == "warning"


@pytest.mark.parametrize("shape, collected, counted", [
    ({"effectiveDateTime": "2020-06-05T08:00:00+08:00"}, "2020-06-05T08:00:00+08:00", None),
    ({"effectivePeriod": {"start": "2020-06-05T08:00:00+08:00", "end": "2020-06-05T09:00:00+08:00"}},
     "2020-06-05T08:00:00+08:00", "effectivePeriod.end"),
    ({"effectiveInstant": "2020-06-05T00:00:00.000Z"}, "2020-06-05T00:00:00.000Z", None),
    ({"issued": "2020-06-06T10:00:00+08:00"}, "2020-06-06T10:00:00+08:00", "issued"),
])
def test_when(study, shape, collected, counted):
    records, log = _read(study, _obs("o", "2465-3", valueString="x", **shape))
    assert _one(records["lab_result"])["collected"] == collected
    elements = [i.value.split(":")[0] for i in log.issues if i.code == "FHIR-ELEMENT-NOT-MAPPED"]
    assert elements == ([counted] if counted else [])


def test_timing_or_no_date_at_all(study):
    records, log = _read(study, _obs("o", "2465-3", valueString="x", effectiveTiming={"event": ["2020-06-05"]}))
    assert records["lab_result"] == []
    assert [(i.code, i.field) for i in log.issues if i.severity != "info"] == [
        ("FHIR-VALUE-NOT-MAPPED", "effectiveTiming"), ("FHIR-NO-DATE", "effective[x]")]


def test_not_done(study):
    coded = _obs("a", "2465-3", status="cancelled", effectiveDateTime="2020-06-05",
                 dataAbsentReason={"coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
                                               "code": "not-performed", "display": "Not Performed"}]})
    bare = _obs("b", "2458-8", status="cancelled", effectiveDateTime="2020-06-05")
    records, log = _read(study, coded, bare)
    got = {r["test"]: r.get("not_done_reason") for r in records["lab_result"]}
    assert got == {"IgG": "Not Performed", "IgA": "cancelled"}


def test_reference_ranges(study):
    rng = [{"low": {"value": 1, "unit": "g/L"}, "high": {"value": 2, "unit": "g/L"},
            "age": {"low": {"value": 0, "unit": "a"}, "high": {"value": 5, "unit": "a"}}},
           {"low": {"value": 5, "unit": "g/L"}, "high": {"value": 15, "unit": "g/L"},
            "age": {"low": {"value": 6, "unit": "a"}, "high": {"value": 17, "unit": "a"}}}]
    # born 2012-01-01: 8 years old on 2020-06-05, the second range applies
    records, _ = _read(study, _obs("o", "2465-3", effectiveDateTime="2020-06-05", valueQuantity={
        "value": 9, "unit": "g/L", "system": UCUM, "code": "g/L"}, referenceRange=rng))
    rec = _one(records["lab_result"])
    assert (rec["ref_low"], rec["ref_high"], rec["unit"]) == ("5", "15", "g/L")


def test_components_of_a_lab_observation(study):
    panel = _obs("o", "24331-1", effectiveDateTime="2020-06-05", component=[
        {"code": {"coding": [{"system": LOINC, "code": "2465-3"}]}, "valueQuantity": {"value": 9, "unit": "g/L"}},
        {"code": {"coding": [{"system": LOINC, "code": "2458-8"}]}, "valueQuantity": {"value": 2, "unit": "g/L"}},
        {"code": {"coding": [{"system": LOINC, "code": "0000-0"}]}, "valueQuantity": {"value": 1}}])
    records, log = _read(study, panel)
    assert sorted((r["test"], r["result"]) for r in records["lab_result"]) == [("IgA", "2"), ("IgG", "9")]
    assert [i.value for i in log.issues if i.code == "FHIR-ELEMENT-NOT-MAPPED"] == [
        "component: a component whose code is in neither lab_tests nor cell_phenotypes"]


def test_specimen_collection_time_is_the_date_when_there_is_no_other(study):
    spec = {"resourceType": "Specimen", "id": "sp", "subject": {"reference": "Patient/p1"}, "type": {"text": "Serum"},
            "accessionIdentifier": {"value": "A9"}, "collection": {"collectedDateTime": "2020-06-05T07:00:00+08:00"}}
    records, _ = _read(study, spec, _obs("o", "2465-3", valueString="x", specimen={"reference": "Specimen/sp"}))
    rec = _one(records["lab_result"])
    assert (rec["collected"], rec["accession"], rec["specimen"]) == ("2020-06-05T07:00:00+08:00", "A9", "Serum")


@pytest.mark.parametrize("status, converted", [("completed", True), ("in-progress", True), ("stopped", True),
                                               ("not-done", False), ("entered-in-error", False)])
def test_administration_statuses(study, status, converted):
    ma = {"resourceType": "MedicationAdministration", "id": "m", "status": status,
          "medicationCodeableConcept": {"text": "rhIL-2"}, "subject": {"reference": "Patient/p1"},
          "effectiveDateTime": "2020-06-05T08:30:00+08:00",
          "dosage": {"dose": {"value": 1, "unit": "IU", "system": UCUM, "code": "[iU]"}}}
    records, log = _read(study, ma)
    assert bool(records["exposure"]) is converted
    if not converted:
        assert [k for k in log.issues if k.code == "FHIR-OUT-OF-SCOPE-STATUS"][0].value.startswith(status)


def test_medication_named_only_by_display(study):
    ma = {"resourceType": "MedicationAdministration", "id": "m", "status": "completed",
          "medicationReference": {"display": "rhIL-2"}, "subject": {"reference": "Patient/p1"},
          "effectivePeriod": {"start": "2020-06-05T08:30:00+08:00"},
          "dosage": {"dose": {"value": 1, "unit": "IU", "system": UCUM, "code": "[iU]"}}}
    records, _ = _read(study, ma)
    assert _one(records["exposure"])["treatment"] == "rhIL-2"


def test_r5_research_subject_names_the_person_in_subject(study, tmp_path):
    res = _person()
    res[2] = {"resourceType": "ResearchSubject", "id": "rs1", "status": "active", "progress": [],
              "identifier": [{"system": "urn:example:subject", "value": "S1"}], "study": {"reference": "ResearchStudy/s"},
              "subject": {"reference": "Patient/p1"}, "period": {"start": "2020-06-01"}}
    path = tmp_path / "r5.json"
    path.write_text(json.dumps({"resourceType": "Bundle", "type": "collection",
                                "entry": [{"resource": r} for r in res]}))
    result = convert(path, "records", tmp_path / "out", study_ref="NCT04387942")
    subjects = (tmp_path / "out" / "subjects.csv").read_text().splitlines()
    assert len(subjects) == 2 and ",S1," in subjects[1]
    assert result.log.accounting[str(path)] == {"read": 3, "converted": 3, "rejected": 0, "out_of_scope": 0}


# --------------------------------------------------------------------------- references and inputs


def _bundle(path, entries, btype="collection", **extra):
    path.write_text(json.dumps({"resourceType": "Bundle", "type": btype, "entry": entries, **extra}), "utf-8")
    return path


def test_references_in_every_form_reach_their_patient(tmp_path):
    """urn:uuid fullUrl (the Patient's entry comes last), absolute, versioned references."""
    person = _person(ref="urn:uuid:0b4ce2cd-0000-4000-8000-000000000001")
    patient = person.pop(1)
    obs = [_obs("o1", "2465-3", effectiveDateTime="2020-06-05", valueString="1",
                subject={"reference": "urn:uuid:0b4ce2cd-0000-4000-8000-000000000001"}),
           _obs("o2", "2458-8", effectiveDateTime="2020-06-05", valueString="2",
                subject={"reference": "https://ehr.example/fhir/Patient/p1"}),
           _obs("o3", "2472-9", effectiveDateTime="2020-06-05", valueString="3",
                subject={"reference": "Patient/p1/_history/7"})]
    entries = [{"resource": r} for r in person + obs]
    entries.append({"fullUrl": "urn:uuid:0b4ce2cd-0000-4000-8000-000000000001", "resource": patient})
    path = _bundle(tmp_path / "b.json", entries)
    result = convert(path, "records", tmp_path / "out", study_ref="NCT04387942")
    labs = (tmp_path / "out" / "lab_results.csv").read_text().splitlines()
    assert len(labs) == 4 and all(line.startswith("S1,") for line in labs[1:])
    assert result.log.accounting[str(path)] == {"read": 6, "converted": 6, "rejected": 0, "out_of_scope": 0}


def test_a_reference_to_a_patient_not_in_the_input_is_out_of_scope(tmp_path):
    path = _bundle(tmp_path / "b.json", [{"resource": r} for r in _person()] + [
        {"resource": _obs("o9", "2465-3", effectiveDateTime="2020-06-05", valueString="1",
                          subject={"reference": "urn:uuid:11111111-0000-4000-8000-000000000009"})}])
    result = convert(path, "records", tmp_path / "out", study_ref="NCT04387942")
    assert result.log.accounting[str(path)] == {"read": 4, "converted": 3, "rejected": 0, "out_of_scope": 1}
    assert not result.log.has_errors


def test_nested_bundles_and_operation_outcomes(tmp_path):
    document = {"resourceType": "Bundle", "type": "document",
                "entry": [{"resource": _obs("o1", "2465-3", effectiveDateTime="2020-06-05", valueString="1")}]}
    outcome = {"resourceType": "OperationOutcome", "id": "oo", "issue": [
        {"severity": "warning", "code": "incomplete", "diagnostics": "results after 2020-06-30 not included"}]}
    path = _bundle(tmp_path / "b.json", [{"resource": r} for r in _person()] + [
        {"resource": document}, {"resource": outcome, "search": {"mode": "outcome"}}], btype="searchset")
    result = convert(path, "records", tmp_path / "out", study_ref="NCT04387942")
    codes = Counter(i.code for i in result.log.issues)
    assert codes["FHIR-BUNDLE-NESTED"] == 1 and codes["FHIR-SENDER-OUTCOME"] == 1
    assert result.log.accounting[str(path)] == {"read": 5, "converted": 4, "rejected": 0, "out_of_scope": 1}


def test_bulk_export_manifest_problems(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "Patient.ndjson").write_text("".join(json.dumps(r) + "\n" for r in _person()), "utf-8")
    (folder / "manifest.json").write_text(json.dumps({
        "transactionTime": "2020-07-01T00:00:00Z", "request": "https://ehr.example/fhir/$export",
        "output": [{"type": "Patient", "url": "https://ehr.example/bulk/Patient.ndjson", "count": 2},
                   {"type": "Observation", "url": "https://ehr.example/bulk/Observation.ndjson"}],
        "error": []}), "utf-8")
    result = convert(folder, "records", tmp_path / "out", study_ref="NCT04387942")
    issues = {i.code: i for i in result.log.issues}
    assert issues["FHIR-EXPORT-FILE-MISSING"].severity == "error"
    assert issues["FHIR-EXPORT-FILE-MISSING"].value == "https://ehr.example/bulk/Observation.ndjson"
    assert issues["FHIR-EXPORT-COUNT"].value == 2  # the file has 3
    assert result.log.accounting[str(folder / "Patient.ndjson")]["read"] == 3


def test_consent_date_from_the_consent_resource(study):
    """R4 ResearchSubject.consent names a Consent: its dateTime is the consent date."""
    person = _person()
    person[2] = {**person[2], "consent": {"reference": "Consent/c1"}}
    del person[2]["period"]
    consent = {"resourceType": "Consent", "id": "c1", "status": "active", "dateTime": "2020-05-30",
               "scope": {"text": "research"}, "category": [{"text": "research"}], "patient": {"reference": "Patient/p1"}}
    log = IssueLog()
    records = assemble.fhir_to_records([*person, consent], study, log)
    assert _one(records["subject"])["consent_date"] == "2020-05-30"
    assert not [i for i in log.issues if i.code == "FHIR-SUBJECT-INCOMPLETE"]
