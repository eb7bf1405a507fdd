"""FHIR mapping modules: hand-checked values from the sample, and one case per rule."""
from __future__ import annotations

from decimal import Decimal

import pytest

from trialbridge.mappings.fhir import assemble
from trialbridge.converters.formats.fhir import io as fhir_io
from trialbridge.converters.formats.fhir import validate as fhir_validate
from trialbridge.converters.core.issues import IssueLog
from trialbridge.converters.core.records import Records, public
from trialbridge.mappings.fhir import (EXT_LOCAL_DATETIME, LOINC, NCIT, UCUM, FhirContext, adverse_event, encounter,
                           medication_administration, observation, patient, research_subject)
from trialbridge.mappings.fhir.ids import resource_id
from trialbridge.mappings.terminology import ct


@pytest.fixture(scope="module")
def ctx(study):
    return FhirContext(study, IssueLog())


def _first(rows, **match):
    found = [public(r) for r in rows if all(r.get(k) == v for k, v in match.items())]
    assert len(found) == 1, match
    return found[0]


def _valid(resource):
    assert fhir_validate.schema_errors(resource) == []
    assert fhir_validate.model_errors(resource) == []


def test_ids_are_uuid5_of_natural_keys():
    # golden value: changing the namespace or the key layout changes every id
    assert resource_id("Patient", "NCT04387942", "001") == "59eaf24e-cb0c-5244-9276-c0573a5f924d"
    assert resource_id("Patient", "NCT04387942", "001") != resource_id("Patient", "NCT04387942", "002")


def test_first_dose_of_subject_001(sample_records, ctx):
    records, _ = sample_records
    rows = [r for r in records["exposure"] if r["subject_id"] == "001"]
    first = public(min(rows, key=lambda r: r["start"]))
    res = medication_administration.to_fhir(first, ctx)
    dose = res["dosage"]["dose"]
    assert dose == {"value": Decimal("315000"), "unit": "[iU]", "system": UCUM, "code": "[iU]"}
    assert '"value":315000,' in fhir_io.dumps(res)
    # a site-local time: the full dateTime with the site's offset (Asia/Shanghai), the text as recorded kept
    period = res["effectivePeriod"]
    assert period["start"] == "2020-06-05T08:30:00+08:00"
    assert period["_start"]["extension"] == [{"url": EXT_LOCAL_DATETIME, "valueString": "2020-06-05T08:30"}]
    assert res["dosage"]["route"]["coding"][0] == {"system": "http://snomed.info/sct", "code": "47625008",
                                                   "display": "Intravenous route"}
    assert res["status"] == "completed"
    _valid(res)
    back = medication_administration.from_fhir(
        fhir_io.loads(fhir_io.dumps(res)), FhirContext(ctx.study, IssueLog(), subjects={res["subject"]["reference"]: "001"}))
    assert back["start"] == "2020-06-05T08:30" and back["end"] == "2020-06-05T09:30" and back["dose"] == "315000"


def test_igg_day_7_of_subject_001(sample_records, ctx):
    records, _ = sample_records
    rec = _first(records["lab_result"], subject_id="001", visit="DAY 7", test="IgG")
    res = observation.to_fhir(rec, ctx, kind="lab_result")
    codings = res["code"]["coding"]
    assert {"system": LOINC, "code": "2465-3", "display": "IgG [Mass/volume] in Serum or Plasma"} in codings
    # CDISC CT as the NCI Thesaurus code of the LBTESTCD term, the submission value as display
    assert {"system": NCIT, "code": "C81971", "display": "IGG"} in codings
    assert res["valueQuantity"] == {"value": Decimal("10.5"), "unit": "g/L", "system": UCUM, "code": "g/L"}
    assert res["referenceRange"][0]["low"]["value"] == Decimal("5.0")
    assert res["category"][0]["coding"][0]["code"] == "laboratory"
    assert res["subject"] == {"reference": f"Patient/{resource_id('Patient', 'NCT04387942', '001')}"}
    assert res["contained"][0]["type"]["coding"] == [{"system": NCIT, "code": "C13325", "display": "SERUM"}]
    assert res["encounter"] == {"display": "DAY 7"}
    assert '"low":{"value":5.0,' in fhir_io.dumps(res)  # 5.0 stays 5.0
    assert res["interpretation"][0]["coding"][0]["code"] == "N"  # 10.5 within 5.0-14.6
    _valid(res)


@pytest.mark.parametrize("result, code", [("6.0", "H"), ("0.0", "N"), ("5.4", "N"), ("<2.0", None), ("-0.1", "L")])
def test_interpretation_follows_the_nrind_rule(ctx, result, code):
    res = observation.to_fhir(_lab(result=result), ctx)  # range 0.0-5.4 pg/mL
    got = res.get("interpretation", [{}])[0].get("coding", [{}])[0].get("code")
    assert got == code


def _lab(**over):
    rec = {"subject_id": "001", "visit": "DAY 7", "collected": "2020-06-12T08:00", "test": "IL-6", "result": "1.30",
           "unit": "pg/mL", "ref_low": "0.0", "ref_high": "5.4", "specimen": "SERUM", "accession": "A1"}
    rec.update(over)
    return {k: v for k, v in rec.items() if v is not None}


def _roundtrip_obs(rec, ctx, kind="lab_result"):
    res = observation.to_fhir(rec, ctx, kind=kind)
    _valid(res)
    sub = FhirContext(ctx.study, IssueLog(), subjects={res["subject"]["reference"]: rec["subject_id"]})
    got_kind, back = observation.from_fhir(fhir_io.loads(fhir_io.dumps(res)), sub)
    assert got_kind == kind
    return res, back


def test_decimal_text_is_kept(ctx):
    res, back = _roundtrip_obs(_lab(), ctx)
    assert '"value":1.30,' in fhir_io.dumps(res)
    assert back == _lab()


def test_comparator_result(ctx):
    res, back = _roundtrip_obs(_lab(result="<2.0"), ctx)
    assert res["valueQuantity"]["comparator"] == "<" and res["valueQuantity"]["value"] == Decimal("2.0")
    assert back["result"] == "<2.0"


def test_non_numeric_result_is_value_string(ctx):
    res, back = _roundtrip_obs(_lab(result="hemolysed", unit=None, ref_low=None, ref_high=None), ctx)
    assert res["valueString"] == "hemolysed" and "valueQuantity" not in res
    assert back["result"] == "hemolysed"


def test_not_done(ctx):
    res, back = _roundtrip_obs(_lab(result=None, not_done_reason="sample lost"), ctx)
    assert res["status"] == "cancelled"
    assert res["dataAbsentReason"]["coding"][0]["code"] == "not-performed"
    assert back["not_done_reason"] == "sample lost" and "result" not in back


def test_cell_phenotype_percent(ctx):
    rec = {"subject_id": "001", "visit": "DAY 0", "collected": "2020-06-05T08:00", "population": "CD3+ T cells",
           "measure": "PERCENT", "result": "71.5", "unit": "%", "ref_low": "56.0", "ref_high": "75.0",
           "specimen": "BLOOD"}
    res, back = _roundtrip_obs(rec, ctx, kind="cell_phenotype")
    assert {"system": LOINC, "code": "8124-0", "display": "CD3 cells/100 cells in Blood"} in res["code"]["coding"]
    assert back == rec


def test_offset_datetime_written_unchanged(ctx):
    res = observation.to_fhir(_lab(collected="2020-06-12T08:00:00+08:00"), ctx)
    assert res["effectiveDateTime"] == "2020-06-12T08:00:00+08:00" and "_effectiveDateTime" not in res


def test_adverse_event_partial_date_and_codes(ctx):
    rec = {"subject_id": "002", "ae_number": "9", "term": "rash", "decoded_term": "Rash", "start": "2020-06",
           "severity": "MODERATE", "serious": "Y", "relatedness": "NOT RELATED", "outcome": "RECOVERING/RESOLVING",
           "end": "2020-07", "grade": "2"}
    res = adverse_event.to_fhir(rec, ctx)
    _valid(res)
    assert res["date"] == "2020-06" and "_date" not in res
    assert res["seriousness"]["coding"][0]["code"] == "serious"
    assert res["severity"]["coding"][0]["code"] == "moderate"
    assert res["suspectEntity"][0]["causality"][0]["assessment"]["coding"][0]["code"] == "Unassessable-Unclassifiable"
    sub = FhirContext(ctx.study, IssueLog(), subjects={res["subject"]["reference"]: "002"})
    assert adverse_event.from_fhir(res, sub) == rec
    # from a source without text, codes map back through the tables
    for key in ("seriousness", "severity", "outcome"):
        res[key].pop("text")
    res["suspectEntity"][0]["causality"][0]["assessment"].pop("text")
    back = adverse_event.from_fhir(res, sub)
    assert (back["serious"], back["severity"], back["outcome"], back["relatedness"]) == \
        ("Y", "MODERATE", "RECOVERING/RESOLVING", "NOT RELATED")


def test_identifiers_omitted_by_default(sample_records, study):
    records, _ = sample_records
    rec = public(records.subjects_by_id()["001"])
    plain = patient.to_fhir(rec, FhirContext(study, IssueLog()))
    text = fhir_io.dumps(plain)
    for secret in (rec["family_name"], rec["medical_record_number"], rec["phone"], rec["address"]):
        assert secret not in text
    assert not {"name", "telecom", "address"} & set(plain)
    full = patient.to_fhir(rec, FhirContext(study, IssueLog(), include_identifiers=True))
    _valid(full)
    assert full["name"] == [{"family": "Subject001", "given": ["Test"]}]
    # reading a Patient that carries names never copies them unless asked
    assert "family_name" not in patient.from_fhir(full, FhirContext(study, IssueLog()))
    assert patient.from_fhir(full, FhirContext(study, IssueLog(), include_identifiers=True))["family_name"] == "Subject001"


def test_what_is_not_the_study_is_out_of_scope_and_counted(study):
    """Codes outside the study's tables and types with no mapping are counted at info level
    (with system, code and count), a resource of a Patient not in the input is a warning; never
    errors."""
    log = IssueLog()
    pat = {"resourceType": "Patient", "id": "p1", "identifier": [{"system": "urn:trialbridge:fhir:subject-id",
                                                                   "value": "900"}], "gender": "female"}
    unknown_obs = {"resourceType": "Observation", "id": "o1", "status": "final",
                   "code": {"coding": [{"system": LOINC, "code": "0000-0"}]}, "subject": {"reference": "Patient/p1"}}
    orphan = {"resourceType": "AdverseEvent", "id": "a1", "actuality": "actual",
              "subject": {"reference": "Patient/missing"}, "event": {"text": "x"}}
    others = [{"resourceType": "Condition", "id": f"c{n}"} for n in range(2)]
    records = assemble.fhir_to_records([pat, unknown_obs, orphan, *others], study, log)
    assert not [i for i in log.issues if i.severity == "error"]
    codes = {i.code: i for i in log.issues}
    assert codes["FHIR-OUT-OF-SCOPE-CODE"].value == f"{LOINC}|0000-0" and codes["FHIR-OUT-OF-SCOPE-CODE"].severity == "info"
    assert codes["FHIR-OUT-OF-SCOPE-CODE"].message.startswith("1 Observation resource(s) with code")
    assert codes["FHIR-OUT-OF-SCOPE-TYPE"].message.startswith("2 Condition resource(s)")
    # the AdverseEvent names a Patient the input does not hold: a reference to nothing, said so
    absent = codes["FHIR-PATIENT-NOT-IN-INPUT"]
    assert (absent.severity, absent.record, absent.field, absent.value) == ("warning", "AdverseEvent/a1", "subject",
                                                                         "Patient/missing")
    assert absent.message.startswith("1 resource(s) name 1 Patient(s) the input does not hold (Patient/missing)")
    assert "FHIR-NOT-ENROLLED" not in codes
    # our own older output: a trial subject id on the Patient and no ResearchSubject
    assert codes["FHIR-NO-RESEARCHSUBJECT"].severity == "warning"
    assert [r["subject_id"] for r in records["subject"]] == ["900"]
    assert records["subject"][0]["sex"] == "F" and records["subject"][0]["site_id"] == "01"
    assert records["lab_result"] == [] and records["adverse_event"] == []


def test_validator_reports_schema_model_and_reference_errors():
    log = IssueLog()
    bad_code = {"resourceType": "Patient", "id": "p", "gender": "robot"}
    no_status = {"resourceType": "Observation", "id": "o", "code": {"text": "x"}, "subject": {"reference": "Patient/p"}}
    dangling = {"resourceType": "Observation", "id": "o2", "status": "final", "code": {"text": "x"},
                "subject": {"reference": "Patient/zzz"}, "specimen": {"reference": "#nothing"}}
    counts = fhir_validate.validate_resources([bad_code, no_status, dangling, dict(bad_code)], log, model_check=True)
    assert counts == {"resources": 4, "invalid": 3}
    assert [i.record for i in log.issues if i.code == "FHIR-DUPLICATE-ID"] == ["Patient/p"]
    found = [(i.code, i.record) for i in log.issues]
    assert ("FHIR-SCHEMA", "Patient/p") in found
    assert ("FHIR-MODEL", "Observation/o") in found
    assert sorted(i.value for i in log.issues if i.code == "FHIR-REF-UNRESOLVED") == ["#nothing", "Patient/zzz"]
    # by default the models run only on what the schema rejected: a missing status (which
    # the R4 JSON schema does not require) passes; a bad code gets the models' messages too
    log = IssueLog()
    assert fhir_validate.validate_resources([no_status, bad_code], log) == {"resources": 2, "invalid": 1}
    assert {i.code for i in log.issues if i.record == "Observation/o"} == set()
    assert {i.code for i in log.issues if i.record == "Patient/p"} >= {"FHIR-SCHEMA"}


def test_read_fhir_ndjson_file_keeps_decimals_and_reports_bad_lines(tmp_path):
    path = tmp_path / "Observation.ndjson"
    path.write_text('{"resourceType":"Observation","id":"a","valueQuantity":{"value":1.30}}\n\nnot json\n', "utf-8")
    log = IssueLog()
    got = list(fhir_io.read_fhir(path, log))
    assert len(got) == 1 and str(got[0]["valueQuantity"]["value"]) == "1.30"
    assert [(i.code, i.record) for i in log.issues] == [("FHIR-JSON", 3)]
    assert log.accounting[str(path)] == {"read": 2, "rejected": 1}


# --------------------------------------------------------------------------- visits and dispositions


def _sub_ctx(study, subject_ref, sid="001"):
    return FhirContext(study, IssueLog(), subjects={subject_ref: sid})


def test_visit_is_an_encounter(ctx):
    rec = {"subject_id": "001", "visit": "UNSCHEDULED", "start": "2020-07-01T10:15", "end": "2020-07-01T11:00",
           "status": "DONE", "reason": "Relapse of purpura"}
    res = encounter.to_fhir(rec, ctx)
    _valid(res)
    assert res["status"] == "finished"
    assert res["class"] == {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB",
                            "display": "ambulatory"}
    assert res["type"] == [{"text": "UNSCHEDULED"}] and res["reasonCode"] == [{"text": "Relapse of purpura"}]
    assert res["period"]["start"] == "2020-07-01T10:15:00+08:00"
    assert res["period"]["_start"]["extension"] == [{"url": EXT_LOCAL_DATETIME, "valueString": "2020-07-01T10:15"}]
    assert res["id"] == resource_id("Encounter", "NCT04387942", "001", "UNSCHEDULED", "2020-07-01T10:15")
    assert encounter.from_fhir(fhir_io.loads(fhir_io.dumps(res)), _sub_ctx(ctx.study, res["subject"]["reference"])) == rec


def test_missed_visit_is_a_cancelled_encounter(ctx):
    rec = {"subject_id": "001", "visit": "MONTH 6", "start": "2020-12-01", "status": "NOT DONE",
           "reason": "Travel restrictions"}
    res = encounter.to_fhir(rec, ctx)
    _valid(res)
    assert res["status"] == "cancelled"
    assert encounter.from_fhir(res, _sub_ctx(ctx.study, res["subject"]["reference"])) == rec


def test_encounter_from_another_system(ctx):
    """No trialbridge extension: the label comes from type.text; other statuses are reported."""
    sub = _sub_ctx(ctx.study, "Patient/p")
    res = {"resourceType": "Encounter", "id": "e1", "status": "in-progress", "class": encounter.AMBULATORY,
           "type": [{"text": "DAY 7"}], "subject": {"reference": "Patient/p"},
           "period": {"start": "2020-06-12T08:00:00+08:00"}}
    assert encounter.from_fhir(res, sub) == {"subject_id": "001", "visit": "DAY 7", "start": "2020-06-12T08:00:00+08:00"}
    assert [i.code for i in sub.log.issues] == ["FHIR-UNMAPPED-CODE"]
    sub = _sub_ctx(ctx.study, "Patient/p")
    assert encounter.from_fhir({**res, "type": []}, sub) is None
    assert [i.code for i in sub.log.issues] == ["FHIR-VISIT-INCOMPLETE"]
    sub = _sub_ctx(ctx.study, "Patient/p")
    assert encounter.from_fhir({**res, "status": "entered-in-error"}, sub) is None
    assert [i.code for i in sub.log.issues] == ["FHIR-ENTERED-IN-ERROR"]


def test_observation_links_to_the_encounter_of_its_visit(study):
    visits = [{"subject_id": "001", "visit": "DAY 7", "start": "2020-06-12"},
              {"subject_id": "001", "visit": "UNSCHEDULED", "start": "2020-06-20"}]
    lab = _lab()
    exposure = {"subject_id": "001", "treatment": "rhIL-2", "start": "2020-06-12T09:00", "dose": "1", "dose_unit": "[iU]"}
    records = Records(study_id="NCT04387942")
    records.rows["subject"] = [{"study_id": "NCT04387942", "site_id": "01", "subject_id": "001", "screen_failure": "N"}]
    records.rows["visit"] = visits
    records.rows["lab_result"] = [lab, _lab(visit="UNSCHEDULED", collected="2020-06-13T08:00")]
    records.rows["exposure"] = [exposure]
    log = IssueLog()
    resources = list(assemble.records_to_fhir(records, study, log))
    enc_ref = f"Encounter/{encounter.encounter_id('NCT04387942', visits[0])}"
    obs = [r for r in resources if r["resourceType"] == "Observation"]
    linked = next(o for o in obs if o["encounter"]["display"] == "DAY 7")
    assert linked["encounter"] == {"reference": enc_ref, "display": "DAY 7"}
    # label matches but the date does not: display only
    assert next(o for o in obs if o["encounter"]["display"] == "UNSCHEDULED")["encounter"] == {"display": "UNSCHEDULED"}
    ma = next(r for r in resources if r["resourceType"] == "MedicationAdministration")
    assert ma["context"] == {"reference": enc_ref}
    assert fhir_validate.validate_resources(resources, IssueLog(), model_check=True)["invalid"] == 0
    # a reference without display gets its label from the Encounter
    linked.pop("encounter")
    linked["encounter"] = {"reference": enc_ref}
    back = assemble.fhir_to_records(resources, study, IssueLog())
    assert sorted(r["visit"] for r in back["lab_result"]) == ["DAY 7", "UNSCHEDULED"]
    assert [public(v) for v in back["visit"]] == [{**v, "status": "DONE"} for v in visits]


def test_dispositions_on_research_subject(ctx):
    subject = {"study_id": "NCT04387942", "site_id": "01", "subject_id": "025", "consent_date": "2020-08-01",
               "planned_arm": "HSP", "screen_failure": "N"}
    dispositions = [
        {"subject_id": "025", "event": "INFORMED CONSENT OBTAINED", "category": "PROTOCOL MILESTONE",
         "verbatim": "Informed consent signed by parent/guardian", "date": "2020-08-01"},
        {"subject_id": "025", "event": "WITHDRAWAL BY SUBJECT", "category": "DISPOSITION EVENT",
         "verbatim": "Parents withdrew consent", "date": "2020-12-01T10:00"},
    ]
    res = research_subject.to_fhir(subject, ctx, dispositions)
    assert fhir_validate.schema_errors(res) == []
    # fhir.resources' R4B Extension model has no field for a primitive extension on value[x]
    # (``_valueDateTime``), which the R4 JSON format allows and the official schema accepts
    assert fhir_validate.model_errors(res) == ["extension/3/extension/3/_valueDateTime: Extra inputs are not permitted"]
    assert res["status"] == "off-study"
    assert res["period"] == {"start": "2020-08-01", "end": "2020-12-01T10:00:00+08:00", "_end": {"extension": [
        {"url": EXT_LOCAL_DATETIME, "valueString": "2020-12-01T10:00"}]}}
    disp = [e for e in res["extension"] if e["url"] == research_subject.EXT_DISPOSITION]
    assert disp[0]["extension"] == [
        {"url": "event", "valueCodeableConcept": {"coding": [{"system": NCIT, "code": "C16735",
                                                               "display": "INFORMED CONSENT OBTAINED"}],
                                                   "text": "INFORMED CONSENT OBTAINED"}},
        {"url": "verbatim", "valueString": "Informed consent signed by parent/guardian"},
        {"url": "category", "valueCodeableConcept": {"coding": [{"system": NCIT, "code": "C74588",
                                                                  "display": "PROTOCOL MILESTONE"}],
                                                      "text": "PROTOCOL MILESTONE"}},
        {"url": "date", "valueDateTime": "2020-08-01"}]
    # a site-local time: the full dateTime at the site's offset + the text as recorded
    assert disp[1]["extension"][-1] == {"url": "date", "valueDateTime": "2020-12-01T10:00:00+08:00", "_valueDateTime": {
        "extension": [{"url": EXT_LOCAL_DATETIME, "valueString": "2020-12-01T10:00"}]}}
    back = fhir_io.loads(fhir_io.dumps(res))
    assert research_subject.from_fhir(back, ctx) == subject
    assert research_subject.dispositions_from_fhir(back, "025", ctx) == dispositions
    # screen failure is ineligible; a milestone alone leaves the screen_failure status
    failed = research_subject.to_fhir({**subject, "screen_failure": "Y"}, ctx, [
        dispositions[0], {"subject_id": "025", "event": "Screen failed", "date": "2020-08-03"}])
    assert failed["status"] == "ineligible"
    assert research_subject.to_fhir(subject, ctx, dispositions[:1])["status"] == "on-study"
    assert research_subject.to_fhir({**subject, "screen_failure": ""}, ctx, dispositions)["status"] == "off-study"
    assert "screen_failure" not in research_subject.from_fhir(
        research_subject.to_fhir({**subject, "screen_failure": ""}, ctx, dispositions), ctx)


def test_disposition_of_unknown_subject_is_reported(study):
    records = Records(study_id="NCT04387942")
    records.rows["disposition"] = [{"subject_id": "999", "event": "COMPLETED", "date": "2021-01-01"}]
    log = IssueLog()
    # only the study and its site study: no ResearchSubject for a subject that does not exist
    assert [r["resourceType"] for r in assemble.records_to_fhir(records, study, log)] == ["ResearchStudy"] * 2
    assert [i.code for i in log.issues if i.severity != "info"] == ["FHIR-DISPOSITION-NO-SUBJECT"]


def test_site_level_study_part_of_the_sponsor_study(sample_records, study):
    """FHIR-to-CDISC IG shape: ResearchSubject.study is the site's study, partOf the sponsor
    study; a ResearchSubject without our site extension still gets its site from it."""
    records, _ = sample_records
    resources = list(assemble.records_to_fhir(records, study, IssueLog()))
    studies = [r for r in resources if r["resourceType"] == "ResearchStudy"]
    assert len(studies) == 2
    sponsor, site = studies
    assert site["partOf"] == [{"reference": f"ResearchStudy/{sponsor['id']}"}]
    assert site["identifier"][0]["value"] == "01" and site["location"][0]["coding"][0]["code"] == "CHN"
    subjects = [r for r in resources if r["resourceType"] == "ResearchSubject"]
    assert {s["study"]["reference"] for s in subjects} == {f"ResearchStudy/{site['id']}"}
    assert all(any(e["url"].endswith("site-id") for e in s.get("extension", [])) for s in subjects)
    for s in subjects:  # as another system would send it: no local site extension
        s["extension"] = [e for e in s.get("extension", []) if not e["url"].endswith("site-id")]
    back = assemble.fhir_to_records(resources, study, IssueLog())
    assert {r["site_id"] for r in back["subject"]} == {"01"}


def test_resource_modules_are_discovered_with_their_declarations():
    """The FHIR side finds its modules as the SDTM side does: by what they declare."""
    found = [(m.RESOURCE_TYPE, m.RECORD_TYPES, m.ORDER) for m in assemble.resource_modules()]
    assert found == [("ResearchStudy", (), 10), ("Patient", ("subject",), 20), ("ResearchSubject", ("subject",), 30),
                     ("Encounter", ("visit",), 40), ("MedicationAdministration", ("exposure",), 50),
                     ("Observation", ("lab_result", "cell_phenotype"), 60), ("Observation", ("vital_sign",), 61),
                     ("AdverseEvent", ("adverse_event",), 70)]
    assert assemble.resource_order() == ("ResearchStudy", "Patient", "ResearchSubject", "Encounter",
                                         "MedicationAdministration", "Observation", "AdverseEvent")


def test_final_disposition_event_is_the_latest_dated():
    from trialbridge.mappings.fhir.research_subject import final_event
    events = [{"event": "COMPLETED", "category": "DISPOSITION EVENT", "date": "2020-11-27"},
              {"event": "INFORMED CONSENT OBTAINED", "category": "PROTOCOL MILESTONE", "date": "2020-12-01"},
              {"event": "WITHDRAWAL BY SUBJECT", "category": "DISPOSITION EVENT", "date": "2020-11"},
              {"event": "DEATH", "category": "DISPOSITION EVENT", "date": "2020-11-27"}]
    # milestones do not count; "2020-11" cannot be placed against the 27th and sorts before
    # it; of the two events on 2020-11-27 the one listed last (the hub's latest) is final
    assert final_event(events)["event"] == "DEATH"
    assert final_event(events[:2])["event"] == "COMPLETED" and final_event([]) is None


def test_cdisc_codes_are_nci_thesaurus_c_codes_and_old_files_still_read(ctx):
    """Observation.code carries the LBTESTCD / CPTESTCD term as its NCIt C-code (display: the
    submission value); files written with the invented http://cdisc.org/ct/... systems still map."""
    res = observation.to_fhir(_lab(test="IFN-gamma", result="3.1"), ctx, kind="lab_result")
    assert res["code"]["coding"] == [
        {"system": LOINC, "code": "27415-9", "display": "Interferon gamma [Mass/volume] in Serum or Plasma"},
        {"system": NCIT, "code": "C81996", "display": "IFNG"}]
    cp = observation.to_fhir({"subject_id": "001", "collected": "2020-06-05T08:00", "population": "CD3+ T cells",
                              "measure": "COUNT", "result": "2966", "unit": "/uL"}, ctx, kind="cell_phenotype")
    assert {"system": NCIT, "code": "C122157", "display": "TLYCE"} in cp["code"]["coding"]
    for coding, kind in (({"system": "http://cdisc.org/ct/lbtestcd", "code": "INTLK4"}, "lab_result"),
                         ({"system": "http://cdisc.org/ct/cptestcd", "code": "TLYCE"}, "cell_phenotype"),
                         ({"system": NCIT, "code": "C74832"}, "lab_result")):
        got, entry = observation.kind_of({"code": {"coding": [coding]}})
        assert got == kind and entry is not None, coding


def test_coded_values_carry_the_nci_thesaurus_code_of_their_cdisc_term(ctx):
    """Route, dose form, AE severity, outcome and seriousness, result interpretation: the standard
    FHIR coding first, then the NCIt
    coding of the CDISC term; the record's text as given."""
    dose = {"subject_id": "001", "treatment": "rhIL-2", "start": "2020-06-05", "dose": "1", "dose_unit": "mg",
            "route": "IV", "dose_form": "Lyophilized powder for injection"}
    res = medication_administration.to_fhir(dose, ctx)
    assert res["dosage"]["route"]["coding"][1] == {"system": NCIT, "code": "C38276", "display": "INTRAVENOUS"}
    assert res["dosage"]["route"]["text"] == "IV"
    assert res["contained"][0]["form"] == {
        "coding": [{"system": NCIT, "code": "C42957", "display": "INJECTION, POWDER, LYOPHILIZED, FOR SOLUTION"}],
        "text": "Lyophilized powder for injection"}
    ae = adverse_event.to_fhir({"subject_id": "001", "ae_number": "9", "term": "x", "start": "2020-06",
                                "severity": "MODERATE", "outcome": "FATAL"}, ctx)
    assert ae["severity"]["coding"][1] == {"system": NCIT, "code": "C41339", "display": "MODERATE"}
    assert ae["outcome"]["coding"][1] == {"system": NCIT, "code": "C48275", "display": "FATAL"}
    ae = adverse_event.to_fhir({"subject_id": "001", "ae_number": "9", "term": "x", "start": "2020-06", "serious": "Y"},
                               ctx)
    assert ae["seriousness"]["coding"][1] == {"system": NCIT, "code": "C49488", "display": "Y"}
    high = observation.to_fhir(_lab(result="6.0"), ctx)["interpretation"][0]["coding"]
    assert high[0]["code"] == "H" and high[1] == {"system": NCIT, "code": ct.codelist("NRIND").terms["HIGH"],
                                                  "display": "HIGH"}
    pat = patient.to_fhir({"subject_id": "001", "sex": "F"}, ctx)
    assert pat["gender"] == "female"


def _study_with_sites(study, *sites):
    import copy

    from trialbridge.mappings.study import Study

    config = copy.deepcopy(study.config)
    config["sites"] = [{"site_id": f"{n + 1:02d}", "name": f"Site {n + 1}", "country": "CHN", **s}
                       for n, s in enumerate(sites)]
    return Study(config, study.path)


@pytest.mark.parametrize("site, local, written", [
    ({"time_zone": "Asia/Shanghai"}, "2020-06-05T08:30", "2020-06-05T08:30:00+08:00"),
    ({"time_zone": "Asia/Shanghai"}, "2020-06-05T08:30:15.5", "2020-06-05T08:30:15.5+08:00"),
    ({"utc_offset": "-05:00"}, "2021-07-01T09:00", "2021-07-01T09:00:00-05:00"),
    ({"time_zone": "America/New_York"}, "2021-07-01T09:00", "2021-07-01T09:00:00-04:00"),  # daylight saving
    ({"time_zone": "America/New_York"}, "2021-01-01T09:00", "2021-01-01T09:00:00-05:00"),
    ({"time_zone": "America/New_York"}, "2021-11-07T01:30", "2021-11-07"),  # ambiguous: clocks went back
    ({"time_zone": "America/New_York"}, "2021-03-14T02:30", "2021-03-14"),  # does not exist: clocks went forward
    ({}, "2020-06-05T08:30", "2020-06-05"),  # no time zone configured: date precision
    ({"time_zone": "Asia/Shanghai"}, "2020-06-05T08", "2020-06-05"),  # no minutes: not completed
    ({"time_zone": "Asia/Shanghai"}, "2020-06-05T08:30+05:30", "2020-06-05T08:30:00+05:30"),  # its own offset
])
def test_site_local_times_get_the_site_offset_when_known(study, site, local, written):
    ctx = FhirContext(_study_with_sites(study, site), IssueLog())
    rec = _lab(collected=local)
    res = observation.to_fhir({**rec, "subject_id": "001"}, ctx, kind="lab_result")
    assert res["effectiveDateTime"] == written
    assert res["_effectiveDateTime"]["extension"] == [{"url": EXT_LOCAL_DATETIME, "valueString": local}]
    assert fhir_validate.schema_errors(res) == []
    sub = FhirContext(ctx.study, IssueLog(), subjects={res["subject"]["reference"]: "001"})
    assert observation.from_fhir(fhir_io.loads(fhir_io.dumps(res)), sub)[1]["collected"] == local


def test_complete_fhir_datetimes_are_written_as_they_are(ctx):
    res = observation.to_fhir(_lab(collected="2020-06-05T08:30:00+08:00"), ctx, kind="lab_result")
    assert res["effectiveDateTime"] == "2020-06-05T08:30:00+08:00" and "_effectiveDateTime" not in res


def test_the_site_of_the_subject_decides_the_offset(study, sample_records):
    """Two sites in different zones: a record is written with its subject's site's offset; a
    record whose subject (and so site) is unknown keeps date precision."""
    two = _study_with_sites(study, {"time_zone": "Asia/Shanghai"}, {"time_zone": "Europe/Berlin"})
    records = Records(study_id="NCT04387942")
    records.rows["subject"] = [{"study_id": "NCT04387942", "site_id": "02", "subject_id": "900", "sex": "F",
                                "consent_date": "2020-06-01"}]
    records.rows["lab_result"] = [{**_lab(collected="2020-06-05T08:30"), "subject_id": sid} for sid in ("900", "901")]
    made = {r["subject"]["reference"]: r for t, _k, r in assemble.subject_resources(records, two, IssueLog())
            if t == "Observation"}
    got = sorted(r["effectiveDateTime"] for r in made.values())
    assert got == ["2020-06-05", "2020-06-05T08:30:00+02:00"]


def test_time_zone_configuration_is_checked(tmp_path, study):
    import yaml

    from trialbridge.converters.core.issues import TrialbridgeError
    from trialbridge.mappings.study import load_study

    for site, message in (({"time_zone": "Mars/Olympus_Mons"}, "is not an IANA time zone"),
                          ({"time_zone": "Asia/Shanghai", "utc_offset": "+08:00"}, "sites/0"),
                          ({"utc_offset": "+8"}, "sites/0/utc_offset")):
        config = _study_with_sites(study, site).config
        path = tmp_path / "study.yaml"
        path.write_text(yaml.safe_dump(config), "utf-8")
        with pytest.raises(TrialbridgeError, match=message):
            load_study(path)
    assert load_study("NCT04387942").config["sites"][0]["time_zone"] == "Asia/Shanghai"
