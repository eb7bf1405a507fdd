"""MedDRA coding with ``--meddra DIR``, against the tiny made-up dictionary in
tests/meddra-tiny (its README: every code there is invented, none is MedDRA's).  Every
expected value below was read off those files by hand."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from lxml import etree

from trialbridge.cli import main
from trialbridge.converters.core.issues import IssueLog, TrialbridgeError
from trialbridge.converters.pipeline import convert
from trialbridge.mappings.terminology import meddra
from tests.conftest import SAMPLE

TINY = Path(__file__).resolve().parent / "meddra-tiny"
VARIABLES = ("AELLT", "AELLTCD", "AEDECOD", "AEPTCD", "AEHLT", "AEHLTCD", "AEHLGT", "AEHLGTCD",
             "AEBODSYS", "AEBDSYCD", "AESOC", "AESOCCD")
GEN, INF = "General disorders and administration site conditions", "Infections and infestations"
# PT -> (AEPTCD, AEHLT, AEHLTCD, AEHLGT, AEHLGTCD, SOC, SOC code): mdhier.asc, primary lines
PTS = {
    "Fatigue": ("93000001", "Tiny HLT asthenic conditions", "92000001", "Tiny HLGT general system disorders", "91000001", GEN, "90000001"),
    "Pyrexia": ("93000002", "Tiny HLT febrile conditions", "92000002", "Tiny HLGT general system disorders", "91000001", GEN, "90000001"),
    "Chills": ("93000003", "Tiny HLT febrile conditions", "92000002", "Tiny HLGT general system disorders", "91000001", GEN, "90000001"),
    "Infusion site erythema": ("93000004", "Tiny HLT infusion site reactions", "92000003", "Tiny HLGT administration site reactions", "91000002", GEN, "90000001"),
    "Infusion site pain": ("93000005", "Tiny HLT infusion site reactions", "92000003", "Tiny HLGT administration site reactions", "91000002", GEN, "90000001"),
    "Infusion site pruritus": ("93000006", "Tiny HLT infusion site reactions", "92000003", "Tiny HLGT administration site reactions", "91000002", GEN, "90000001"),
    "Infusion site swelling": ("93000007", "Tiny HLT infusion site reactions", "92000003", "Tiny HLGT administration site reactions", "91000002", GEN, "90000001"),
    "Upper respiratory tract infection": ("93000008", "Tiny HLT upper respiratory infections", "92000004", "Tiny HLGT infections, pathogen unspecified", "91000003", INF, "90000002"),
    "Nasopharyngitis": ("93000009", "Tiny HLT upper respiratory infections", "92000004", "Tiny HLGT infections, pathogen unspecified", "91000003", INF, "90000002"),
    "Tonsillitis": ("93000010", "Tiny HLT upper respiratory infections", "92000004", "Tiny HLGT infections, pathogen unspecified", "91000003", INF, "90000002"),
    "Bronchitis": ("93000011", "Tiny HLT lower respiratory infections", "92000005", "Tiny HLGT infections, pathogen unspecified", "91000003", INF, "90000002"),
    "Pneumonia": ("93000012", "Tiny HLT lower respiratory infections", "92000005", "Tiny HLGT infections, pathogen unspecified", "91000003", INF, "90000002"),
    "Gastroenteritis": ("93000013", "Tiny HLT abdominal infections", "92000006", "Tiny HLGT infections, pathogen unspecified", "91000003", INF, "90000002"),
    "Alanine aminotransferase increased": ("93000014", "Tiny HLT liver enzyme tests", "92000007", "Tiny HLGT hepatobiliary investigations", "91000004", "Investigations", "90000003"),
    "Drug-induced liver injury": ("93000015", "Tiny HLT hepatic injuries", "92000008", "Tiny HLGT hepatic disorders", "91000005", "Hepatobiliary disorders", "90000004"),
    "Myalgia": ("93000016", "Tiny HLT muscle pains", "92000010", "Tiny HLGT muscle disorders", "91000006", "Musculoskeletal and connective tissue disorders", "90000005"),
    "Sinus tachycardia": ("93000017", "Tiny HLT rate and rhythm disorders", "92000011", "Tiny HLGT cardiac arrhythmias", "91000008", "Cardiac disorders", "90000006"),
}
# verbatim terms that are current LLTs of their PT (llt.asc 94…); every other event's LLT is its PT's own
VERBATIM_LLTS = {"fever": ("Fever", "94000001"), "muscle aches": ("Muscle aches", "94000003"),
                 "common cold": ("Common cold", "94000004")}
NS = {"odm": "http://www.cdisc.org/ns/odm/v1.3"}


def expected_row(term: str, pt: str) -> tuple:
    code, hlt, hlt_code, hlgt, hlgt_code, soc, soc_code = PTS[pt]
    llt, llt_code = VERBATIM_LLTS.get(term, (pt, code))
    return (llt, llt_code, pt, code, hlt, hlt_code, hlgt, hlgt_code, soc, soc_code, soc, soc_code)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def meddra_version_in(define: Path) -> str:
    root = etree.parse(str(define))
    return root.find(".//odm:CodeList[@OID='CL.MEDDRA']/odm:ExternalCodeList", NS).get("Version")


@pytest.fixture(scope="module")
def coded(tmp_path_factory):
    out = tmp_path_factory.mktemp("meddra") / "sdtm"
    result = CliRunner().invoke(main, ["convert", str(SAMPLE), "--to", "sdtm", "-o", str(out), "--format", "csv",
                                       "--meddra", str(TINY), "-q"])
    assert result.exit_code == 0, result.output
    return out


def test_every_sample_ae_row_gets_the_whole_hierarchy(coded):
    rows = read_csv(coded / "ae.csv")
    assert len(rows) == 45
    for row in rows:
        assert all(row[v] for v in VARIABLES), row
        assert tuple(row[v] for v in VARIABLES) == expected_row(row["AETERM"], row["AEDECOD"])
    llt_codes = [row["AELLTCD"] for row in rows]
    assert (llt_codes.count("94000001"), llt_codes.count("94000003"), llt_codes.count("94000004")) == (4, 4, 2)
    # "low grade fever" is the non-current LLT 94000002: never used, coded by the decoded term Pyrexia
    low = [row for row in rows if row["AETERM"] == "low grade fever"]
    assert len(low) == 3 and {(r["AELLT"], r["AELLTCD"]) for r in low} == {("Pyrexia", "93000002")}


def test_run_summary_and_noncurrent_findings(coded):
    issues = json.loads((coded / "issues.json").read_text())["issues"]
    ours = [i for i in issues if i["code"].startswith("MEDDRA-")]
    assert [i["code"] for i in ours if i["code"] == "MEDDRA-CODED"] == ["MEDDRA-CODED"]
    summary = next(i for i in ours if i["code"] == "MEDDRA-CODED")
    assert summary["message"].startswith("45 of 45 adverse event(s) coded with MedDRA 0.1-tiny")
    assert summary["file"].endswith("nct04387942/adverse_events.csv") and summary["value"] == 0
    noncurrent = [(i["severity"], i["record"], i["field"], i["value"]) for i in ours if i["code"] == "MEDDRA-LLT-NONCURRENT"]
    assert noncurrent == [("info", 5, "term", "low grade fever"), ("info", 6, "term", "low grade fever"),
                          ("info", 24, "term", "low grade fever")]
    assert len(ours) == 4


def test_define_gives_the_distribution_version(coded):
    assert meddra_version_in(coded / "define.xml") == "0.1-tiny"
    root = etree.parse(str(coded / "define.xml"))
    for var in ("AELLTCD", "AEPTCD", "AEHLTCD", "AEHLGTCD", "AEBDSYCD", "AESOCCD"):  # 8-digit codes, integers
        item = root.find(f".//odm:ItemDef[@OID='IT.AE.{var}']", NS)
        assert (item.get("DataType"), item.get("Length")) == ("integer", "8"), var


def test_without_a_dictionary_one_warning_says_how_many_and_how(tmp_path):
    result = convert(SAMPLE, "sdtm", tmp_path / "out", formats="csv", meddra_version="27.1")
    (warning,) = [i for i in result.log.issues if i.code.startswith("MEDDRA-")]
    assert (warning.code, warning.severity, warning.value) == ("MEDDRA-NOT-CODED", "warning", 45)
    assert warning.file.endswith("nct04387942/adverse_events.csv")
    assert warning.message.startswith("45 of 45 adverse event(s) have no MedDRA codes")
    assert "--meddra DIR" in warning.message
    rows = read_csv(tmp_path / "out" / "ae.csv")
    assert [r["AEPTCD"] for r in rows] == [""] * 45
    assert {(r["AEBODSYS"] == r["AESOC"]) for r in rows} == {True}
    assert meddra_version_in(tmp_path / "out" / "define.xml") == "27.1"  # --meddra-version without a folder


def test_dictionary_folder_loaded_once_per_process_and_path():
    first = meddra.load(str(TINY))
    assert meddra.load(str(TINY)) is first
    assert (len(first.llts), len(first.pts), sum(len(p) for p in first.paths.values())) == (23, 17, 18)


# ----------------------------------------------------------------------------- one event


def event(**fields) -> dict:
    return {"subject_id": "001", "ae_number": "1", "_where": {"file": "adverse_events.csv", "record": 7}, **fields}


def code(rec: dict, dic=None) -> tuple[bool, IssueLog]:
    log = IssueLog()
    return meddra.code_event(rec, dic or meddra.load(str(TINY)), log), log


def test_unknown_term_is_an_error_and_the_event_stays_uncoded():
    rec = event(term="headache", decoded_term="Headache", body_system="Nervous system disorders")
    ok, log = code(rec)
    assert not ok
    assert [(i.code, i.severity, i.record, i.field, i.value) for i in log.issues] == [
        ("MEDDRA-TERM-UNKNOWN", "error", 7, "decoded_term", "Headache")]
    assert not any(rec.get(f) for f in meddra.CODE_FIELDS)
    assert rec["decoded_term"] == "Headache" and rec["body_system"] == "Nervous system disorders"


def test_decoded_term_that_is_an_llt_becomes_its_pt():
    rec = event(term="hot", decoded_term="FEVER")
    ok, log = code(rec)
    assert ok
    assert (rec["llt"], rec["llt_code"], rec["decoded_term"], rec["pt_code"]) == ("Fever", "94000001", "Pyrexia", "93000002")
    assert [(i.code, i.field) for i in log.issues] == [("MEDDRA-DECOD-NOT-PT", "decoded_term")]


def test_only_a_noncurrent_llt_is_not_used():
    rec = event(term="Low  grade FEVER")  # case and spaces ignored; no decoded term to fall back on
    ok, log = code(rec)
    assert not ok and "pt_code" not in rec
    assert [(i.code, i.severity, i.field) for i in log.issues] == [("MEDDRA-LLT-NONCURRENT", "warning", "term")]


def test_given_noncurrent_llt_code_is_kept_and_the_hierarchy_filled():
    rec = event(term="low grade fever", llt_code="94000002")
    ok, log = code(rec)
    assert ok
    assert (rec["llt"], rec["llt_code"], rec["decoded_term"], rec["pt_code"], rec["hlt_code"], rec["body_system_code"]) \
        == ("Low grade fever", "94000002", "Pyrexia", "93000002", "92000002", "90000001")
    assert [(i.code, i.severity, i.field) for i in log.issues] == [("MEDDRA-LLT-NONCURRENT", "warning", "llt_code")]


def test_given_codes_are_checked():
    rec = event(term="fever", llt_code="94000001", pt_code="93000003")  # Fever is under Pyrexia, not Chills
    ok, log = code(rec)
    assert [(i.code, i.severity, i.field, i.value) for i in log.issues] == [
        ("MEDDRA-CODE-MISMATCH", "error", "pt_code", "93000003")]
    assert (rec["llt_code"], rec["pt_code"], rec["decoded_term"]) == ("94000001", "93000003", "Chills")
    rec = event(term="x", pt_code="93999999")
    ok, log = code(rec)
    assert ok and rec["pt_code"] == "93999999"
    assert [(i.code, i.field) for i in log.issues] == [("MEDDRA-CODE-UNKNOWN", "pt_code")]
    rec = event(term="x", pt_code="10O37844")  # a letter O
    ok, log = code(rec)
    assert [(i.code, i.field) for i in log.issues][0] == ("MEDDRA-CODE-INVALID", "pt_code")


def test_secondary_soc_as_body_system_keeps_the_primary_as_aesoc():
    rec = event(term="pneumonia", decoded_term="Pneumonia", body_system="respiratory, thoracic and mediastinal disorders")
    ok, log = code(rec)
    assert ok and not log.issues
    assert (rec["hlt_code"], rec["hlgt_code"]) == ("92000005", "91000003")  # the primary path's
    assert (rec["body_system"], rec["body_system_code"], rec["soc"], rec["soc_code"]) == (
        "Respiratory, thoracic and mediastinal disorders", "90000007", INF, "90000002")


def test_body_system_on_no_path_is_replaced_by_the_primary_soc():
    rec = event(term="fever", decoded_term="Pyrexia", body_system="Cardiac disorders")
    ok, log = code(rec)
    assert (rec["body_system"], rec["body_system_code"]) == (GEN, "90000001") and "soc" not in rec
    assert [(i.code, i.field, i.value) for i in log.issues] == [("MEDDRA-SOC-MISMATCH", "body_system", "Cardiac disorders")]


def test_a_name_two_current_llts_share_is_ambiguous(tmp_path):
    folder = tmp_path / "MedAscii"
    shutil.copytree(TINY, folder)
    with open(folder / "llt.asc", "a", encoding="utf-8") as fh:
        fh.write("94000099$pyrexia$93000003$$$$$$$Y$$\n")  # a second "pyrexia", under Chills
    rec = event(term="hot", decoded_term="Pyrexia")
    ok, log = code(rec, meddra.load(str(tmp_path)))  # found in the MedAscii subfolder
    assert not ok
    (issue,) = log.issues
    assert (issue.code, issue.field) == ("MEDDRA-TERM-AMBIGUOUS", "decoded_term")
    assert "Pyrexia (93000002); pyrexia (94000099)" in issue.message


def test_a_latin_1_distribution_is_read(tmp_path):
    folder = tmp_path / "latin1"
    shutil.copytree(TINY, folder)
    with open(folder / "llt.asc", "ab") as fh:
        fh.write("94000098$Fi\u00e8vre l\u00e9g\u00e8re$93000002$$$$$$$Y$$\n".encode("latin-1"))
    rec = event(term="FIÈVRE LÉGÈRE")
    ok, log = code(rec, meddra.load(str(folder)))
    assert ok and not log.issues
    assert (rec["llt"], rec["llt_code"], rec["pt_code"]) == ("Fièvre légère", "94000098", "93000002")


# ----------------------------------------------------------------------------- codes in the input


def test_codes_in_a_fhir_adverse_event_are_used(tmp_path):
    fhir = tmp_path / "fhir"
    assert convert(SAMPLE, "fhir", fhir).log.has_errors is False
    lines = (fhir / "AdverseEvent.ndjson").read_text().splitlines()
    first = json.loads(lines[0])
    assert first["event"]["coding"] == [{"system": "http://terminology.hl7.org/CodeSystem/mdr", "display": "Fatigue"}]
    first["event"]["coding"] = [{"system": "http://terminology.hl7.org/CodeSystem/mdr", "code": "93000001", "display": "Fatigue"},
                                {"system": "http://terminology.hl7.org/CodeSystem/mdr", "code": "94000006", "display": "Tiredness"}]
    (fhir / "AdverseEvent.ndjson").write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")

    plain = convert(fhir, "sdtm", tmp_path / "plain", formats="csv")
    rows = read_csv(tmp_path / "plain" / "ae.csv")
    given = [r for r in rows if r["AEPTCD"]]
    assert [(r["AETERM"], r["AELLT"], r["AELLTCD"], r["AEDECOD"], r["AEPTCD"], r["AEHLTCD"]) for r in given] == [
        ("tired after infusion", "Tiredness", "94000006", "Fatigue", "93000001", "")]
    (warning,) = [i for i in plain.log.issues if i.code.startswith("MEDDRA-")]
    assert (warning.code, warning.value, Path(warning.file).name) == ("MEDDRA-NOT-CODED", 44, "AdverseEvent.ndjson")

    with_dictionary = convert(fhir, "sdtm", tmp_path / "coded", formats="csv", meddra=TINY)
    rows = read_csv(tmp_path / "coded" / "ae.csv")
    row = next(r for r in rows if r["AELLTCD"] == "94000006")
    assert tuple(row[v] for v in VARIABLES) == ("Tiredness", "94000006", *expected_row("x", "Fatigue")[2:])
    assert all(r["AEPTCD"] for r in rows) and len(rows) == 45
    assert not [i for i in with_dictionary.log.issues if i.severity != "info"]


def test_coded_records_round_trip_through_sdtm(tmp_path):
    convert(SAMPLE, "records", tmp_path / "records", meddra=TINY)
    text = (tmp_path / "records" / "adverse_events.csv").read_text()
    convert(tmp_path / "records", "sdtm", tmp_path / "sdtm")
    convert(tmp_path / "sdtm", "records", tmp_path / "back")
    assert (tmp_path / "back" / "adverse_events.csv").read_text() == text


def test_worker_processes_code_the_same(tmp_path):
    convert(SAMPLE, "sdtm", tmp_path / "one", formats="csv", meddra=TINY, workers=1)
    convert(SAMPLE, "sdtm", tmp_path / "two", formats="csv", meddra=TINY, workers=2)
    assert (tmp_path / "one" / "ae.csv").read_bytes() == (tmp_path / "two" / "ae.csv").read_bytes()


# ----------------------------------------------------------------------------- bad folders, validate


def _garbled(tmp_path: Path) -> Path:
    folder = tmp_path / "garbled"
    shutil.copytree(TINY, folder)
    (folder / "pt.asc").write_text("93000001$Fatigue$$90000001$\nthis is not MedDRA\n", encoding="utf-8")
    return folder


@pytest.mark.parametrize("case,expected", [
    ("missing", "error: --meddra {p}: no such folder"),
    ("empty", "error: --meddra {p}: not a MedDRA ASCII distribution (needs llt.asc, pt.asc, mdhier.asc, in the "
              "folder or its MedAscii folder)"),
    ("garbled", "error: --meddra {p}: pt.asc line 1 has 4 $-separated field(s), not 11: not a MedDRA ASCII "
                "distribution file"),
])
def test_a_bad_dictionary_folder_is_one_line_and_exit_2(tmp_path, case, expected):
    folder = {"missing": tmp_path / "nowhere", "empty": tmp_path, "garbled": None}[case] or _garbled(tmp_path)
    for command in (["convert", str(SAMPLE), "--to", "sdtm", "-o", str(tmp_path / "out")], ["validate", str(SAMPLE)]):
        result = CliRunner().invoke(main, [*command, "--meddra", str(folder)])
        assert result.exit_code == 2
        assert result.output.strip() == expected.format(p=folder.resolve())
    assert not (tmp_path / "out").exists()


def test_validate_checks_the_ae_variables_against_the_dictionary(coded, tmp_path):
    clean = CliRunner().invoke(main, ["validate", str(coded), "--meddra", str(TINY), "--report", str(tmp_path / "r.json")])
    issues = json.loads((tmp_path / "r.json").read_text())["issues"]
    assert not [i for i in issues if i["code"].startswith("MEDDRA-")], clean.output
    folder = tmp_path / "changed"
    shutil.copytree(coded, folder)
    rows = read_csv(folder / "ae.csv")
    rows[0]["AEHLTCD"] = "92000002"  # row 1 is Fatigue: its HLT is 92000001
    with open(folder / "ae.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    CliRunner().invoke(main, ["validate", str(folder), "--meddra", str(TINY), "--report", str(tmp_path / "r2.json")])
    issues = json.loads((tmp_path / "r2.json").read_text())["issues"]
    found = [(i["code"], i["record"], i["field"], i["value"]) for i in issues if i["code"].startswith("MEDDRA-")]
    assert found == [("MEDDRA-SDTM-DIFFERS", 1, "AEHLTCD", "92000002")]
