"""The hand-written hospital export (samples/hospital-export-handwritten): FHIR nobody here
generated, in a hospital's own identifier systems, arm and visit names, US units, with a
patient who is not enrolled and every Observation/MedicationAdministration shape of issue 8.

Every expected value below is the one worked out by hand in the sample's README (with the
arithmetic there), not copied from a run.  The same resources rearranged as a Bulk Data
export folder (NDJSON files and manifest), a transaction and a searchset Bundle give the
same SDTM; repeats, paging and ambiguity are checked on variants of it.
"""
from __future__ import annotations

import copy
import csv
import json
import re
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from trialbridge.cli import main
from trialbridge.converters.pipeline import convert
from tests.conftest import ROOT

SAMPLE = ROOT / "samples" / "hospital-export-handwritten" / "export.json"
BASE = "https://ehr.example-hospital.org/fhir/"
U101, U102, U103 = (f"NCT04387942-01-{n}" for n in ("101", "102", "103"))


def _tables(folder: Path) -> dict[str, list[dict]]:
    return {p.stem.upper(): list(csv.DictReader(open(p, encoding="utf-8", newline="")))
            for p in sorted(folder.glob("*.csv"))}


def _run(source: Path, out: Path, **kw):
    result = convert(source, "sdtm", out, formats="csv", **kw)
    return result, _tables(out), json.loads((out / "issues.json").read_text("utf-8"))


def _pick(rows, *names):
    return [tuple(r[n] for n in names) for r in rows]


@pytest.fixture(scope="module")
def bundle():
    return json.loads(SAMPLE.read_text("utf-8"))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("handwritten")
    return _run(SAMPLE, out)


def test_dm(converted):
    _, got, _ = converted
    assert _pick(got["DM"], "USUBJID", "SUBJID", "SITEID", "SEX", "BRTHDTC", "RFICDTC", "AGE", "COUNTRY") == [
        (U101, "101", "01", "F", "2012-03-14", "2020-07-01", "8", "CHN"),
        (U102, "102", "01", "M", "2009-11-02", "2020-07-03", "10", "CHN"),
        (U103, "103", "01", "F", "2014-05-20", "2020-07-06", "6", "CHN")]
    assert _pick(got["DM"], "RFSTDTC", "RFXSTDTC", "RFXENDTC", "RFENDTC", "RFPENDTC") == [
        ("2020-07-06T08:30:00-05:00", "2020-07-06T08:30:00-05:00", "2020-07-07T08:45:00-05:00",
         "2020-07-13T08:00:00-05:00", "2020-07-13T08:00:00-05:00"),
        ("2020-07-09T09:00:00-05:00", "2020-07-09T09:00:00-05:00", "2020-07-09T09:00:00-05:00",
         "2020-07-15T08:15:00-05:00", "2020-07-15T08:15:00-05:00"),
        ("", "", "", "", "")]
    assert _pick(got["DM"], "ARMCD", "ARM", "ACTARMCD", "ARMNRS") == [
        ("HSP", "rhIL-2 7-day course", "HSP", ""),
        ("HSPN", "rhIL-2 7-day course then every two weeks for 3 months", "HSPN", ""),
        ("", "", "", "SCREEN FAILURE")]


def test_ex(converted):
    _, got, _ = converted
    assert _pick(got["EX"], "USUBJID", "EXSEQ", "EXTRT", "EXSTDTC", "EXENDTC", "EXSTDY", "EXENDY", "EXDOSE",
                 "EXDOSU", "EXROUTE", "EXLOT", "EXDOSFRM", "EPOCH") == [
        (U101, "1", "rhIL-2", "2020-07-06T08:30:00-05:00", "2020-07-06T09:00:00-05:00", "1", "1", "550000", "IU",
         "INTRAVENOUS", "", "", "TREATMENT"),
        (U101, "2", "rhIL-2", "2020-07-07T08:45:00-05:00", "2020-07-07T08:45:00-05:00", "2", "2", "550000", "IU",
         "INTRAVENOUS", "L20A117", "", "TREATMENT"),
        # ma-102-1 (a rate, no dose) is not converted
        (U102, "1", "rhIL-2", "2020-07-09T09:00:00-05:00", "2020-07-09T09:00:00-05:00", "1", "1", "700000", "IU",
         "INTRAVENOUS", "L20A117", "INJECTION, POWDER, FOR SOLUTION", "TREATMENT")]


def test_lb(converted):
    _, got, _ = converted
    assert _pick(got["LB"], "USUBJID", "LBSEQ", "LBTESTCD", "LBORRES", "LBORRESU", "LBORNRLO", "LBORNRHI",
                 "LBSTRESC", "LBSTRESN", "LBSTRESU", "LBSTNRLO", "LBSTNRHI", "LBNRIND") == [
        (U101, "1", "CREAT", "0.45", "mg/dL", "0.3", "0.7", "40", "40", "umol/L", "27",
         "62", "NORMAL"),
        (U101, "2", "IGE", "245", "IU/mL", "", "", "245", "245", "IU/mL", "", "", ""),
        (U101, "3", "IGG", "1050", "mg/dL", "700", "1600", "10.5", "10.5", "g/L", "7", "16", "NORMAL"),
        (U101, "4", "TNF", "Not detected", "", "", "", "Not detected", "", "", "", "", ""),
        (U101, "5", "INTLK6", "<1.5", "ng/L", "", "", "<1.5", "", "ng/L", "", "", ""),
        (U101, "6", "ALT", "", "", "", "", "", "", "", "", "", ""),
        (U102, "1", "C3", "Result to follow", "", "", "", "Result to follow", "", "", "", "", ""),
        (U102, "2", "IGA", "210", "mg/dL", "70", "400", "2.1", "2.1", "g/L", "0.7", "4", "NORMAL"),
        (U103, "1", "CREAT", "0.38", "mg/dL", "", "", "34", "34", "umol/L", "", "", "")]
    assert _pick(got["LB"], "LBDTC", "VISIT", "EPOCH", "LBDY", "LBLOBXFL", "LBREFID", "LBSPEC", "LBSTAT",
                 "LBREASND") == [
        ("2020-07-06T07:45:00-05:00", "DAY 0", "SCREENING", "1", "Y", "", "SERUM", "", ""),
        ("2020-07-06T07:45:00-05:00", "DAY 0", "SCREENING", "1", "Y", "", "SERUM", "", ""),
        ("2020-07-06T07:45:00-05:00", "DAY 0", "SCREENING", "1", "Y", "ACC-7001", "SERUM", "", ""),
        ("2020-07-06T07:45:00-05:00", "DAY 0", "SCREENING", "1", "Y", "", "SERUM", "", ""),
        ("2020-07-06T12:45:00Z", "DAY 0", "SCREENING", "1", "Y", "", "SERUM", "", ""),
        ("2020-07-06T15:00:00-05:00", "DAY 0", "TREATMENT", "1", "", "", "SERUM", "NOT DONE", "Specimen hemolyzed"),
        ("2020-07-08T07:30:00-05:00", "SCREENING", "SCREENING", "-1", "Y", "", "SERUM", "", ""),
        ("2020-07-08T07:30:00-05:00", "SCREENING", "SCREENING", "-1", "Y", "ACC-7102", "SERUM", "", ""),
        ("2020-07-06T09:00:00-05:00", "", "SCREENING", "", "", "", "SERUM", "", "")]
    assert {r["LBTESTCD"]: r["LBLOINC"] for r in got["LB"]}["IGE"] == "19113-0"  # the local code IGE-S


def test_cp(converted):
    _, got, _ = converted
    assert _pick(got["CP"], "USUBJID", "CPTESTCD", "CPORRES", "CPORRESU", "CPSTRESC", "CPSTRESN", "CPSTRESU",
                 "CPSPEC", "CPDTC", "VISIT", "EPOCH", "CPDY", "CPLOBXFL") == [
        (U102, "TLYCE", "2.35", "10^9/L", "2350", "2350", "10^6/L", "BLOOD", "2020-07-08T07:30:00-05:00",
         "SCREENING", "SCREENING", "-1", "Y")]


def test_vs(converted):
    _, got, _ = converted
    assert _pick(got["VS"], "USUBJID", "VSSEQ", "VSTESTCD", "VSORRES", "VSORRESU", "VSSTRESC", "VSSTRESN",
                 "VSSTRESU", "VSPOS", "VSDTC", "VISIT", "EPOCH", "VSDY", "VSLOBXFL", "VSBLFL") == [
        (U101, "1", "HEIGHT", "50.5", "in", "128", "128", "cm", "", "2020-07-01T10:00:00-05:00", "SCREENING",
         "SCREENING", "-5", "Y", "Y"),
        (U101, "2", "WEIGHT", "61.6", "LB", "27.9", "27.9", "kg", "", "2020-07-01T10:00:00-05:00",
         "SCREENING", "SCREENING", "-5", "Y", "Y"),
        (U101, "3", "DIABP", "64", "mmHg", "64", "64", "mmHg", "SITTING", "2020-07-06T08:00:00-05:00", "DAY 0",
         "SCREENING", "1", "Y", "Y"),
        (U101, "4", "HR", "88", "beats/min", "88", "88", "beats/min", "", "2020-07-06T08:00:00-05:00", "DAY 0",
         "SCREENING", "1", "Y", "Y"),
        (U101, "5", "RESP", "20", "", "", "", "", "", "2020-07-06T08:00:00-05:00", "DAY 0", "SCREENING", "1", "Y",
         "Y"),
        (U101, "6", "SYSBP", "102", "mmHg", "102", "102", "mmHg", "SITTING", "2020-07-06T08:00:00-05:00", "DAY 0",
         "SCREENING", "1", "Y", "Y"),
        (U101, "7", "TEMP", "98.6", "F", "37", "37", "C", "", "2020-07-06T08:00:00-05:00", "DAY 0", "SCREENING",
         "1", "Y", "Y")]


def test_ae_sv_se_and_no_ds(converted):
    _, got, _ = converted
    assert _pick(got["AE"], "USUBJID", "AESPID", "AETERM", "AEDECOD", "AEPTCD", "AELLTCD", "AESEV", "AESER", "AEREL",
                 "AEOUT", "AESTDTC", "AESTDY", "EPOCH") == [
        (U101, "AE-88", "Rash on both forearms", "Rash", "10037844", "", "MILD", "N", "POSSIBLY RELATED",
         "RECOVERED/RESOLVED", "2020-07-07T14:00:00-05:00", "2", "TREATMENT")]
    assert _pick(got["SUPPAE"], "USUBJID", "QNAM", "QVAL") == [(U101, "AETRTEM", "Y")]
    assert _pick(got["SV"], "USUBJID", "VISITNUM", "VISIT", "SVSTDTC", "SVENDTC", "SVSTDY") == [
        (U101, "1", "SCREENING", "2020-07-01T09:30:00-05:00", "2020-07-01T09:30:00-05:00", "-5"),
        (U101, "2", "DAY 0", "2020-07-06T07:30:00-05:00", "2020-07-06T12:00:00-05:00", "1"),
        (U101, "3", "DAY 7", "2020-07-13T08:00:00-05:00", "2020-07-13T08:00:00-05:00", "8"),
        (U102, "3", "DAY 7", "2020-07-15T08:15:00-05:00", "2020-07-15T08:15:00-05:00", "7")]
    assert _pick(got["SE"], "USUBJID", "ETCD", "TAETORD", "SESTDTC", "SEENDTC") == [
        (U101, "SCRN", "1", "2020-07-01", "2020-07-06T08:30:00-05:00"),
        (U101, "IL2C1", "2", "2020-07-06T08:30:00-05:00", "2020-07-08"),
        (U101, "FU", "3", "2020-07-08", "2020-07-13T08:00:00-05:00"),
        (U102, "SCRN", "1", "2020-07-03", "2020-07-09T09:00:00-05:00"),
        (U102, "IL2C1", "2", "2020-07-09T09:00:00-05:00", "2020-07-10"),
        (U102, "FU", "4", "2020-07-10", "2020-07-15T08:15:00-05:00"),
        (U103, "SCRN", "", "2020-07-06", "2020-07-06")]
    assert "DS" not in got and "MH" not in got


def test_accounting_and_findings(converted):
    result, got, report = converted
    assert report["rows"] == {str(SAMPLE): {"read": 46, "converted": 34, "rejected": 1, "out_of_scope": 11}}
    assert report["summary"] == {"error": 0, "warning": 4, "info": 22}
    codes = Counter((i["severity"], i["code"]) for i in report["issues"])
    assert codes == Counter({
        ("warning", "FHIR-VALUE-NOT-MAPPED"): 1, ("warning", "VS-NO-STANDARD-UNIT"): 1,
        ("warning", "SDTM-CT-INVALID"): 2, ("info", "FHIR-DIALECT"): 1, ("info", "FHIR-NOT-ENROLLED"): 1,
        ("info", "FHIR-OUT-OF-SCOPE-CODE"): 2, ("info", "FHIR-OUT-OF-SCOPE-MEDICATION"): 1,
        ("info", "FHIR-OUT-OF-SCOPE-STATUS"): 3, ("info", "FHIR-OUT-OF-SCOPE-TYPE"): 1, ("info", "FHIR-PANEL"): 1,
        ("info", "FHIR-ELEMENT-NOT-MAPPED"): 8, ("info", "LB-NONNUMERIC-RESULT"): 3,
        ("info", "TS-VALUE-CT-EXTENSION"): 1})  # the study's TS DOSU IU/m2, a declared UNIT extension
    scope = {(i["code"], i["value"]) for i in report["issues"] if i["code"].startswith("FHIR-OUT-OF-SCOPE")}
    assert scope == {("FHIR-OUT-OF-SCOPE-CODE", "Emergency department visit"),
                     ("FHIR-OUT-OF-SCOPE-CODE", "http://loinc.org|72166-2"),
                     ("FHIR-OUT-OF-SCOPE-MEDICATION", "http://www.nlm.nih.gov/research/umls/rxnorm|161"),
                     ("FHIR-OUT-OF-SCOPE-STATUS", "not-done (Patient refused)"),
                     ("FHIR-OUT-OF-SCOPE-STATUS", "entered-in-error"),
                     ("FHIR-OUT-OF-SCOPE-STATUS", "actuality potential"),
                     ("FHIR-OUT-OF-SCOPE-TYPE", "no mapping to the trial records")}
    (rate,) = [i for i in report["issues"] if i["code"] == "FHIR-VALUE-NOT-MAPPED"]  # the one rejected
    assert (rate["record"], rate["field"]) == ("MedicationAdministration/ma-102-1", "dosage.rateQuantity")
    (not_enrolled,) = [i for i in report["issues"] if i["code"] == "FHIR-NOT-ENROLLED"]
    assert not_enrolled["message"].startswith("1 Patient(s)") and not_enrolled["value"] == 3
    # every finding about the input names its file; SDTM findings name their dataset
    assert all(i["file"] for i in report["issues"])
    assert all(i["file"] == str(SAMPLE) for i in report["issues"] if i["code"].startswith("FHIR-"))


def test_no_identifying_data_in_the_output(converted):
    result, _, _ = converted
    files = [p for p in result.written if p.suffix in (".csv", ".xml", ".json")]
    assert len(files) >= 15
    text = b"".join(p.read_bytes() for p in files)
    # names as words: TS's "Adaptive Design" (TSPARM of ADAPT) is not the patient Ada
    assert b"E1001" not in text and not re.search(rb"\bAda\b", text) and not re.search(rb"\bCleo\b", text)
    assert b'"Example' not in text and b",Example" not in text


def test_records_written_from_it_read_back_to_the_same_vs(converted, tmp_path):
    """FHIR -> records (vital_signs.csv among them) -> SDTM gives the same VS rows."""
    convert(SAMPLE, "records", tmp_path / "records")
    header = (tmp_path / "records" / "vital_signs.csv").read_text("utf-8").splitlines()
    assert header[0] == "subject_id,visit,collected,test,result,unit,position,location,not_done_reason"
    assert len(header) == 8  # seven measurements
    _, got, report = _run(tmp_path / "records", tmp_path / "sdtm")
    keep = ("USUBJID", "VSSEQ", "VSTESTCD", "VSORRES", "VSORRESU", "VSSTRESN", "VSSTRESU", "VSDTC", "VSPOS")
    assert _pick(got["VS"], *keep) == _pick(converted[1]["VS"], *keep)
    assert report["summary"]["error"] == 0


# --------------------------------------------------------------------------- the same data as it comes


def _resources(bundle: dict) -> list[dict]:
    """The resources with every reference in the relative form a Bulk Data export writes
    (no fullUrls there): urn:uuid and absolute URLs become Type/id."""
    text = json.dumps([e["resource"] for e in bundle["entry"]])
    text = text.replace('"reference": "urn:uuid:7d0f3a52-1c1e-4b8e-9d55-000000001001"', '"reference": "Patient/pat-1001"')
    return json.loads(text.replace(f'"reference": "{BASE}', '"reference": "'))


def _same_sdtm(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name] == want[name], name


def test_a_bulk_data_export_folder_gives_the_same_sdtm(bundle, converted, tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    by_type: dict[str, list[dict]] = {}
    for res in _resources(bundle):
        by_type.setdefault(res["resourceType"], []).append(res)
    output = []
    for rtype, items in sorted(by_type.items()):
        parts = [items[: len(items) // 2], items[len(items) // 2:]] if rtype == "Observation" else [items]
        for n, part in enumerate(parts, start=1):
            name = f"{rtype}.{n}.ndjson"
            (folder / name).write_text("".join(json.dumps(r) + "\n" for r in part), "utf-8")
            output.append({"type": rtype, "url": f"https://ehr.example-hospital.org/bulk/job1/{name}", "count": len(part)})
    # the same Patient exported twice, identically (a second file of the type)
    pat = next(r for r in by_type["Patient"] if r["id"] == "pat-1001")
    (folder / "Patient.2.ndjson").write_text(json.dumps(pat, indent=1).replace("\n", "") + "\n", "utf-8")
    output.append({"type": "Patient", "url": "https://ehr.example-hospital.org/bulk/job1/Patient.2.ndjson", "count": 1})
    (folder / "manifest.json").write_text(json.dumps({
        "transactionTime": "2020-07-21T06:00:00-05:00", "request": "https://ehr.example-hospital.org/fhir/$export",
        "requiresAccessToken": True, "output": output, "error": []}), "utf-8")
    (folder / "leftover.ndjson").write_text(json.dumps(pat) + "\n", "utf-8")  # not in the manifest
    result, got, report = _run(folder, tmp_path / "out")
    _same_sdtm(got, converted[1])
    rows = report["rows"]
    assert sum(c["read"] for c in rows.values()) == 47
    assert sum(c["converted"] for c in rows.values()) == 35  # the repeat counts as its first copy did
    assert sum(c["rejected"] for c in rows.values()) == 1
    assert sum(c["out_of_scope"] for c in rows.values()) == 11
    assert all(c["read"] == c["converted"] + c["rejected"] + c["out_of_scope"] for c in rows.values())
    assert rows[str(folder / "Patient.2.ndjson")] == {"read": 1, "converted": 1, "rejected": 0, "out_of_scope": 0}
    codes = Counter(i["code"] for i in report["issues"])
    assert codes["FHIR-DUPLICATE-MERGED"] == 1 and codes["FHIR-EXPORT-MANIFEST"] == 1
    (unlisted,) = [i for i in report["issues"] if i["code"] == "FHIR-EXPORT-UNLISTED"]
    assert unlisted["file"] == str(folder / "leftover.ndjson")


def test_transaction_and_searchset_bundles_give_the_same_sdtm(bundle, converted, tmp_path):
    transaction = copy.deepcopy(bundle)
    transaction["type"] = "transaction"
    for entry in transaction["entry"]:
        res = entry["resource"]
        entry["request"] = {"method": "PUT", "url": f"{res['resourceType']}/{res['id']}"}
    transaction["entry"].append({"request": {"method": "DELETE", "url": "Observation/obs-old"}})
    path = tmp_path / "transaction.json"
    path.write_text(json.dumps(transaction), "utf-8")
    _, got, report = _run(path, tmp_path / "t")
    _same_sdtm(got, converted[1])
    assert report["rows"][str(path)] == {"read": 47, "converted": 34, "rejected": 1, "out_of_scope": 12}
    assert [i["value"] for i in report["issues"] if i["code"] == "FHIR-BUNDLE-NO-RESOURCE"] == ["DELETE Observation/obs-old"]

    searchset = {"resourceType": "Bundle", "type": "searchset", "total": 47,
                 "link": [{"relation": "self", "url": BASE + "Observation?_include=Observation:patient"},
                          {"relation": "next", "url": BASE + "Observation?_include=Observation:patient&page=2"}],
                 "entry": [{**e, "search": {"mode": "include" if e["resource"]["resourceType"] != "Observation"
                                            else "match"}} for e in bundle["entry"]]}
    path = tmp_path / "searchset.json"
    path.write_text(json.dumps(searchset), "utf-8")
    _, got, report = _run(path, tmp_path / "s")
    _same_sdtm(got, converted[1])
    (paging,) = [i for i in report["issues"] if i["code"] == "FHIR-SEARCHSET-INCOMPLETE"]
    assert paging["severity"] == "warning" and "(20 of 47 matches)" in paging["message"]  # 14 of 101, 4 of 102, 1 of 103, 1 of 2001


def test_a_repeat_that_differs_is_named_and_not_read(bundle, converted, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.json").write_text(json.dumps(bundle), "utf-8")
    igg = copy.deepcopy(next(e["resource"] for e in bundle["entry"] if e["resource"]["id"] == "obs-101-igg"))
    igg["valueQuantity"]["value"] = 1100
    (folder / "b.ndjson").write_text(json.dumps(igg) + "\n", "utf-8")
    _, got, report = _run(folder, tmp_path / "out")
    _same_sdtm(got, converted[1])  # the first copy (a.json) is read
    (differs,) = [i for i in report["issues"] if i["code"] == "FHIR-DUPLICATE-DIFFERS"]
    assert differs["severity"] == "warning" and differs["file"] == str(folder / "b.ndjson")
    assert differs["record"] == "Observation/obs-101-igg"
    assert report["rows"][str(folder / "b.ndjson")] == {"read": 1, "converted": 0, "rejected": 1, "out_of_scope": 0}


def test_an_arm_the_study_does_not_have_leaves_arm_empty_and_names_the_choices(bundle, converted, tmp_path):
    changed = copy.deepcopy(bundle)
    rs = next(e["resource"] for e in changed["entry"] if e["resource"]["id"] == "rs-102")
    rs["assignedArm"] = "IL-2 weekly (pilot arm)"
    path = tmp_path / "arm.json"
    path.write_text(json.dumps(changed), "utf-8")
    _, got, report = _run(path, tmp_path / "out")
    (unmatched,) = [i for i in report["issues"] if i["code"] == "FHIR-ARM-UNMATCHED"]
    assert unmatched["severity"] == "warning" and unmatched["value"] == "IL-2 weekly (pilot arm)"
    assert "HSP (rhIL-2 7-day course)" in unmatched["message"] and "HSPN (" in unmatched["message"]
    assert _pick(got["DM"], "USUBJID", "ARMCD", "ARM", "ACTARMCD")[1] == (U102, "", "", "")
    for name in ("EX", "LB", "CP", "VS", "AE", "SV"):  # everything else still converts
        assert got[name] == converted[1][name], name


def test_identifier_readings_assumed_or_refused(bundle, tmp_path):
    """Without the site's dialect (other systems): one identifier on each ResearchSubject is
    taken as the subject id and said so; two on each is ambiguous and stops the run with one
    message naming the choices (exit 2, no traceback)."""
    text = json.dumps(bundle).replace("ehr.example-hospital.org", "other-ehr.example.net")
    one = tmp_path / "one.json"
    one.write_text(text, "utf-8")
    result, got, report = _run(one, tmp_path / "one")
    assert [r["SUBJID"] for r in got["DM"]] == ["101", "102", "103"]
    (assumed,) = [i for i in report["issues"] if i["code"] == "FHIR-SUBJECT-ID-ASSUMED"]
    assert assumed["severity"] == "info"
    assert assumed["value"] == "https://other-ehr.example.net/fhir/sid/research-subject"
    # no dialect: the site study's only identifier, the study's only site
    assert {i["code"] for i in report["issues"]} >= {"FHIR-SITE-ASSUMED", "FHIR-ARM-UNMATCHED"}

    two = json.loads(text)
    for entry in two["entry"]:
        if entry["resource"]["resourceType"] == "ResearchSubject":
            entry["resource"]["identifier"].append({"system": "https://other-ehr.example.net/fhir/sid/enrolment",
                                                    "value": "E-" + entry["resource"]["id"]})
    path = tmp_path / "two.json"
    path.write_text(json.dumps(two), "utf-8")
    done = CliRunner().invoke(main, ["convert", str(path), "--to", "sdtm", "-o", str(tmp_path / "two")])
    assert done.exit_code == 2, done.output
    assert "Traceback" not in done.output and done.output.count("error:") == 1
    assert "https://other-ehr.example.net/fhir/sid/enrolment on 3 of 3" in done.output
    assert "https://other-ehr.example.net/fhir/sid/research-subject on 3 of 3" in done.output
