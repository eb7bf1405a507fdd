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


# Counts worked out from the inputs themselves (resource types, Patients referenced, which
# Patient has a ResearchSubject), not from a run: see the comments.

HL7_CONVERTED = {  # Patient/example is the one with a ResearchSubject (researchsubject-example)
    "adverseevent-example.json", "observation-example-bloodpressure.json", "observation-example-bmi.json",
    "observation-example-body-height.json", "observation-example-body-temperature.json",
    "observation-example-heart-rate.json", "patient-example.json", "researchstudy-example.json",
    "researchsubject-example.json"}
HL7_READ = {"bundle-example.json": 2, "diagnosticreport-example-f001-bloodexam.json": 2,
            "diagnosticreport-example-lipids.json": 5}  # every other file is one resource


def _totals(report):
    out = Counter()
    for counts in report["rows"].values():
        out.update(counts)
    return out


def _csv(path):
    import csv

    return list(csv.DictReader(open(path, encoding="utf-8", newline=""))) if path.exists() else []


def test_hl7_examples_folder(tmp_path):
    """40 example files, 46 resources: the ResearchStudy (the input's only sponsor study,
    assumed to be the one converted), a ResearchSubject (its only identifier assumed to be the
    subject id, the study's only site) and Patient/example's 7 resources convert; the
    resources of Patients f001, f201, pat1, pat2, 347 (no ResearchSubject) and 3 types with no
    mapping are out of scope: info, never errors."""
    folder = reference("fhir-r4", "examples-hl7")
    result = run("convert", folder, "--to", "sdtm", "-o", tmp_path, "--study", "NCT04387942", "--format", "csv")
    assert "internal error" not in result.output, result.output
    report, codes = _codes(tmp_path / "issues.json")
    assert len(report["rows"]) == 40
    for file, counts in report["rows"].items():
        name = file.rsplit("/", 1)[-1]
        read = HL7_READ.get(name, 1)
        assert counts == ({"read": 1, "converted": 1, "rejected": 0, "out_of_scope": 0} if name in HL7_CONVERTED
                          else {"read": read, "converted": 0, "rejected": 0, "out_of_scope": read}), name
    assert _totals(report) == {"read": 46, "converted": 9, "rejected": 0, "out_of_scope": 37}
    # out of scope: one FHIR-NOT-ENROLLED (info) per file holding resources of Patients f001 and
    # f201, which are in the folder with no ResearchSubject (1 Bundle, 10 Observations, 2 Patients);
    # one FHIR-PATIENT-NOT-IN-INPUT (warning) per file whose resources name a Patient the folder does
    # not hold: pat1 (14 MedicationAdministrations), pat2 (the lipids Bundle, 5), 347 (bundle-example's
    # MedicationRequest); Medication
    # (not the study drug), Organization, Practitioner
    assert codes == Counter({
        "FHIR-NOT-ENROLLED": 13, "FHIR-PATIENT-NOT-IN-INPUT": 16, "FHIR-OUT-OF-SCOPE-TYPE": 3,
        "FHIR-STUDY-ASSUMED": 1, "FHIR-FILE-NOT-READ": 2,  # license.html, version.info: named (info), not read
        "FHIR-SUBJECT-ID-ASSUMED": 1, "FHIR-ASSUMED": 1, "FHIR-ELEMENT-NOT-MAPPED": 1,
        "FHIR-SEARCHSET-INCOMPLETE": 1,  # bundle-example: 1 of 3 matches, a next link
        "FHIR-SUBJECT-INCOMPLETE": 1,  # the ResearchSubject has no period: no consent date
        "SDTM-AE-AFTER-LAST-CONTACT": 1, "SDTM-CT-INVALID": 2,  # VSLOC "Right arm" (bodySite text)
        # the two errors are about what is missing in the data, not about anything out of scope:
        "DM-UNKNOWN-ARM": 1,  # a candidate with no assignedArm
        "SDTM-REQ-MISSING": 1,  # AEDECOD: the example's event is coded in SNOMED CT only
        "TS-PARM-MISSING": 1,  # SENDTC: the one subject has no end of participation
        "TS-VALUE-CT-EXTENSION": 1,  # the study's TS DOSU IU/m2, a declared UNIT extension
        "MEDDRA-NOT-CODED": 1,  # the same event: no MedDRA code (and no --meddra)
    })
    assert [i["value"] for i in report["issues"] if i["code"] == "TS-PARM-MISSING"] == ["SENDTC"]
    # 5 + 16 absent Patients + TS SENDTC + MedDRA; 13 + 3 + 4 assumed/not mapped + 2 files not read + TS DOSU
    assert report["summary"] == {"error": 2, "warning": 23, "info": 23}
    assert not [i for i in report["issues"] if i["severity"] == "error" and i["code"].startswith("FHIR-")]
    assert all(i["file"] for i in report["issues"])  # every finding names the file it is about
    dm = _csv(tmp_path / "dm.csv")
    assert [(r["USUBJID"], r["SUBJID"], r["SITEID"], r["SEX"], r["BRTHDTC"]) for r in dm] == [
        ("NCT04387942-01-123", "123", "01", "M", "1974-12-25")]
    vs = _csv(tmp_path / "vs.csv")
    assert [(r["VSTESTCD"], r["VSORRES"], r["VSORRESU"], r["VSSTRESN"], r["VSSTRESU"], r["VSDTC"]) for r in vs] == [
        ("BMI", "16.2", "kg/m2", "16.2", "kg/m2", "1999-07-02"),
        # 66.899999999999991 in, as written in the example; x 2.54 = 169.926 cm (10 significant digits)
        ("HEIGHT", "66.899999999999991", "in", "169.926", "cm", "1999-07-02"),
        ("HR", "44", "beats/min", "44", "beats/min", "1999-07-02"),
        ("TEMP", "36.5", "C", "36.5", "C", "1999-07-02"),
        ("DIABP", "60", "mmHg", "60", "mmHg", "2012-09-17"),
        ("SYSBP", "107", "mmHg", "107", "mmHg", "2012-09-17")]
    ae = _csv(tmp_path / "ae.csv")
    assert [(r["AESPID"], r["AETERM"], r["AESEV"], r["AESER"], r["AESTDTC"]) for r in ae] == [
        ("49476534", "This was a mild rash on the left forearm", "MILD", "N", "2017-01-29T12:34:56+00:00")]


def test_the_hl7_research_subject_and_patient_examples_alone(tmp_path):
    """The pair that crashed: subject 123 of the study's only site, no arm, no consent date."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("researchsubject-example.json", "patient-example.json"):
        (folder / name).write_bytes(reference("fhir-r4", "examples-hl7", name).read_bytes())
    result = run("convert", folder, "--to", "records", "-o", tmp_path / "out", "--study", "NCT04387942")
    assert result.exit_code == 0 and "internal error" not in result.output, result.output
    subjects = _csv(tmp_path / "out" / "subjects.csv")
    assert [(s["study_id"], s["site_id"], s["subject_id"], s["sex"], s["birth_date"], s["screen_failure"])
            for s in subjects] == [("NCT04387942", "01", "123", "M", "1974-12-25", "")]
    report, codes = _codes(tmp_path / "out" / "issues.json")
    assert _totals(report) == {"read": 2, "converted": 2, "rejected": 0, "out_of_scope": 0}
    assert codes == Counter({"FHIR-SUBJECT-ID-ASSUMED": 1, "FHIR-ASSUMED": 1, "FHIR-SUBJECT-INCOMPLETE": 1})


SYNTHEA = {  # entries per file (Bundle.entry), all of Patients with no ResearchSubject
    "Carroll471_OHara248_274f5452-2a39-44c4-a7cb-f36de467762e.json": 171,
    "Frankie174_Jast432_a5b737fb-1f94-4767-802b-1112051f5101.json": 287,
    "Gabriele201_Rohan584_b0223c9b-0019-42b0-99b8-7d689d7f8414.json": 228,
    "Kallie862_Frami345_9a0d7938-4f49-43f6-8eea-b22e1bbe1b74.json": 297,
    "hospitalInformation1596649672088.json": 18,  # Organizations
    "practitionerInformation1596649672088.json": 18,  # Practitioners
}


def test_synthea_bundles_are_out_of_scope_not_errors(tmp_path):
    """Four patients, none enrolled: every resource out of scope (info), no error.  The 20
    Organizations and Practitioners that the patient bundles repeat from the two information
    files differ from them (those carry utilization extensions): named at info level, as they
    belong to no trial subject."""
    folder = reference("fhir-r4", "synthea-bundles")
    result = run("convert", folder, "--to", "sdtm", "-o", tmp_path, "--study", "NCT04387942", "--format", "csv")
    assert result.exit_code == 0 and "internal error" not in result.output, result.output
    report, codes = _codes(tmp_path / "issues.json")
    assert {f.rsplit("/", 1)[-1]: c for f, c in report["rows"].items()} == {
        name: {"read": n, "converted": 0, "rejected": 0, "out_of_scope": n} for name, n in SYNTHEA.items()}
    assert codes == Counter({"FHIR-NOT-ENROLLED": 4, "FHIR-OUT-OF-SCOPE-TYPE": 10, "FHIR-DUPLICATE-DIFFERS": 20,
                             "FHIR-NO-SUBJECTS": 1, "TS-PARM-MISSING": 1, "TS-VALUE-CT-EXTENSION": 1,
                             "FHIR-FILE-NOT-READ": 1})  # LICENSE-iris-fhir-template
    # no subject: ACTSUB is 0, and there is no study end date to derive
    assert [i["value"] for i in report["issues"] if i["code"] == "TS-PARM-MISSING"] == ["SENDTC"]
    assert report["summary"] == {"error": 0, "warning": 2, "info": 36}
    assert all(i["file"] for i in report["issues"])
    assert _csv(tmp_path / "dm.csv") == []


@pytest.mark.parametrize("name", sorted(SYNTHEA))
def test_each_synthea_bundle_alone(name, tmp_path):
    bundle = reference("fhir-r4", "synthea-bundles", name)
    result = run("convert", bundle, "--to", "records", "-o", tmp_path, "--study", "NCT04387942")
    assert result.exit_code == 0 and "internal error" not in result.output, result.output
    report, codes = _codes(tmp_path / "issues.json")
    assert _totals(report) == {"read": SYNTHEA[name], "converted": 0, "rejected": 0, "out_of_scope": SYNTHEA[name]}
    assert report["summary"]["error"] == 0
    patient_bundle = not name.endswith("1596649672088.json")
    assert codes["FHIR-NOT-ENROLLED"] == (1 if patient_bundle else 0)
    assert codes["FHIR-OUT-OF-SCOPE-TYPE"] == (2 if patient_bundle else 1)  # Organization, Practitioner


def test_a_synthea_patient_linked_by_mrn_reaches_vs(tmp_path):
    """--link-subjects: Carroll's MRN (type MR) makes him trial subject 901; his 9 heights,
    9 weights, 9 BMIs and 9 blood pressures (2 rows each) are 45 VS rows; his 14 Encounters
    are visits; the 52 other Observations and the types with no mapping stay out of scope."""
    records = tmp_path / "trial"
    records.mkdir()
    (records / "subjects.csv").write_text(
        "study_id,site_id,subject_id,sex,consent_date,planned_arm,medical_record_number\n"
        "NCT04387942,01,901,M,2015-01-01,HSP,274f5452-2a39-44c4-a7cb-f36de467762e\n", "utf-8")
    bundle = reference("fhir-r4", "synthea-bundles", "Carroll471_OHara248_274f5452-2a39-44c4-a7cb-f36de467762e.json")
    result = run("convert", bundle, "--to", "sdtm", "-o", tmp_path / "out", "--study", "NCT04387942", "--format",
                 "csv", "--link-subjects", records)
    assert result.exit_code == 0 and "internal error" not in result.output, result.output
    report, codes = _codes(tmp_path / "out" / "issues.json")
    # 1 Patient + 14 Encounters + 36 vital-signs Observations
    assert _totals(report) == {"read": 171, "converted": 51, "rejected": 0, "out_of_scope": 120}
    assert codes["FHIR-LINKED-BY-MRN"] == 1 and report["summary"]["error"] == 0
    assert codes["FHIR-OUT-OF-SCOPE-CODE"] == 17  # 17 distinct LOINC codes (lipids, CBC, pain, smoking)
    vs = _csv(tmp_path / "out" / "vs.csv")
    assert Counter(r["VSTESTCD"] for r in vs) == {"HEIGHT": 9, "WEIGHT": 9, "BMI": 9, "SYSBP": 9, "DIABP": 9}
    first = [(r["VSTESTCD"], r["VSORRES"], r["VSORRESU"]) for r in vs if r["VSDTC"] == "2011-07-24T15:32:17+00:00"]
    assert ("HEIGHT", "193.3", "cm") in first and ("WEIGHT", "106.3", "kg") in first
    assert ("SYSBP", "114", "mmHg") in first and ("DIABP", "72", "mmHg") in first
    assert len(_csv(tmp_path / "out" / "sv.csv")) == 14 and len(_csv(tmp_path / "out" / "dm.csv")) == 1


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
