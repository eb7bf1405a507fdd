"""Privacy (docs/privacy.md): a subject's own identifying values never leave the subject record.

* the matcher, on values worked out by hand (what is and is not caught);
* pseudonymised USUBJIDs: the keyed hash recomputed here from the standard library, the same
  in every domain and SUPP--, stable for one key, different for another;
* plant and scan: names, phones, MRNs and addresses planted in every free-text field of a
  records folder and of a FHIR Bundle (whose Patients carry them), a key file's secret; every
  byte written by every command (SDTM in all three formats, define.xml, issues.json, validate
  reports in HTML and JSON, FHIR NDJSON and Bundle, records CSV, stdout and stderr) scanned
  for each planted value.
"""
from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from trialbridge.cli import main
from trialbridge.converters.core import privacy
from trialbridge.converters.core.issues import IssueLog
from trialbridge.converters.core.records import Records, record_types
from trialbridge.converters.formats import records as records_io
from trialbridge.converters.formats.fhir import io as fhir_io
from trialbridge.mappings.fhir import assemble
from trialbridge.mappings.study import load_study

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "nct04387942"

PEOPLE = {
    "001": {"family_name": "Okonkwo", "given_name": "Adaeze", "medical_record_number": "MRN7731904",
            "phone": "+44 20 7946 0958", "address": "14 Harbour Road, Kingsbridge"},
    "002": {"family_name": "Vasquez-Iriarte", "given_name": "Xiomara", "medical_record_number": "HX-55820417",
            "phone": "(617) 555-0199", "address": "221 Quillfeather Lane, Dunmore, PA 18512"},
}
# what must appear nowhere in any output (case ignored)
NEEDLES = ["Okonkwo", "Adaeze", "7731904", "7946 0958", "79460958", "Harbour Road", "Kingsbridge",
           "Vasquez", "Iriarte", "Xiomara", "55820417", "555-0199", "5550199", "Quillfeather", "Dunmore", "18512"]
SECRET = "q8R2+correct-horse-battery-staple-Zt41"


def planted_text(sid: str) -> str:
    p = PEOPLE[sid]
    digits = "".join(c for c in p["phone"] if c.isdigit())
    return (f"{p['given_name']} {p['family_name'].upper()} said to call {p['phone']} or {digits} "
            f"(hospital no. {p['medical_record_number']}), home {p['address'].lower()}")


def _rows(name: str, sids: tuple[str, ...]) -> list[dict]:
    path = SAMPLE / f"{record_types()[name].file}.csv"
    if not path.exists():
        return []
    with open(path, encoding="utf-8", newline="") as fh:
        return [r for r in csv.DictReader(fh) if r["subject_id"] in sids]


def planted_records() -> dict[str, list[dict]]:
    """Two sample subjects with planted identifying values: in their identifying fields (where
    they belong), in every free-text field of every record (where they must not stay), and a
    phone and MRN in a coded field of every record type."""
    sids = ("001", "002")
    out: dict[str, list[dict]] = {}
    for name, rtype in record_types().items():
        rows = _rows(name, sids)
        if name == "vital_sign":
            rows = [{"subject_id": sid, "collected": "2020-06-04T08:00", "test": "HEIGHT", "result": "",
                     "unit": "", "position": "", "location": "", "visit": "SCREENING"} for sid in sids]
        free = [f for f, p in rtype.schema["properties"].items() if p.get("x-free-text")]
        for row in rows:
            if name == "subject":
                row.update(PEOPLE[row["subject_id"]])
            for f in free:
                row[f] = planted_text(row["subject_id"])
        coded = {"adverse_event": "decoded_term", "lab_result": "accession", "exposure": "lot_number",
                 "cell_phenotype": "specimen", "disposition": "category"}.get(name)
        for n, row in enumerate(rows):
            if coded:
                p = PEOPLE[row["subject_id"]]
                row[coded] = p["phone"] if n % 2 else p["medical_record_number"]
        out[name] = rows
    return out


def write_records_folder(folder: Path) -> None:
    folder.mkdir(parents=True)
    for name, rows in planted_records().items():
        rtype = record_types()[name]
        with open(folder / f"{rtype.file}.csv", "w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=rtype.fields, lineterminator="\n")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: row.get(k, "") for k in rtype.fields})


def write_fhir_bundle(path: Path, records_folder: Path) -> None:
    """The planted records as a hospital would send them: Patients with name, telecom, MRN and
    address; the free text in the AdverseEvents, dispositions, Encounters … unchanged."""
    log = IssueLog()
    records = records_io.read_records(records_folder, log)
    resources = assemble.records_to_fhir(records, load_study("NCT04387942"), log, include_identifiers=True)
    fhir_io.write_bundle(resources, path)


def run(*args: str, env: dict | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)
    assert result.exit_code in (0, 1), f"exit {result.exit_code}: {result.stdout}{result.stderr}"
    return result.exit_code, result.stdout + result.stderr


def leaks(blob: bytes, needles: list[str]) -> list[str]:
    low = blob.lower()
    return [n for n in needles if n.lower().encode() in low]


def scan_folder(folder: Path, needles: list[str], skip=None) -> dict[str, list[str]]:
    found = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            data = p.read_bytes() if skip is None else skip(p)
            hit = leaks(data, needles)
            if hit:
                found[str(p.relative_to(folder))] = hit
    return found


def _without_identifying_columns(path: Path) -> bytes:
    """A records output file without the subject record's identifying columns, which hold the
    subject's values by design (the records format is the site's own)."""
    if path.name != "subjects.csv":
        return path.read_bytes()
    identifying = set(record_types()["subject"].identifying)
    rows = list(csv.DictReader(io.StringIO(path.read_text("utf-8"))))
    return json.dumps([{k: v for k, v in r.items() if k not in identifying} for r in rows]).encode()


# ----------------------------------------------------------------------------- the matcher


def test_names_match_as_whole_words_whatever_the_case_accents_and_apostrophes():
    who = privacy.identity([("name", "O'Brien"), ("name", "Müller"), ("name", "van der Berg"), ("name", "Li")])
    assert who.redact("seen by OBRIEN's GP") == ("seen by [REDACTED]'s GP", {"name"})
    assert who.redact("o’brien fell") == ("[REDACTED] fell", {"name"})
    assert who.redact("MULLER and müller") == ("[REDACTED] and [REDACTED]", {"name"})
    assert who.redact("the van der Berg family") == ("the [REDACTED] family", {"name"})
    # too short, inside a longer word, particles on their own, spelling variants: not matched
    assert who.redact("Li said Bergen van Mueller") == ("Li said Bergen van Mueller", set())


def test_phones_match_by_their_last_seven_digits_whatever_the_punctuation():
    who = privacy.identity([("phone", "+44 20 7946 0958")])
    assert who.redact("call 020.7946.0958 today") == ("call [REDACTED] today", {"phone"})
    assert who.redact("+442079460958") == ("[REDACTED]", {"phone"})
    assert who.redact("tel (79) 46-09-58") == ("tel ([REDACTED]", {"phone"})
    assert who.redact("dose 7946 mg, 0958 h") == ("dose 7946 mg, 0958 h", set())  # digits split by words
    assert privacy.identity([("phone", "12 34 56")]).redact("123456") == ("123456", set())  # < 7 digits


def test_identifiers_and_addresses():
    who = privacy.identity([("identifier", "MRN-00123456"), ("address", "12 Elm Street, Springfield, IL 62704, USA")])
    assert who.redact("mrn 00123456") == ("[REDACTED]", {"identifier"})
    assert who.redact("number 00123456.") == ("number [REDACTED].", {"identifier"})
    assert who.redact("lives at 12  ELM street; Springfield") == ("lives at [REDACTED]; [REDACTED]", {"address"})
    assert who.redact("zip 62704") == ("zip [REDACTED]", {"address"})
    assert who.redact("USA trip, Elm tree") == ("USA trip, Elm tree", set())  # short part, one word of a line
    short = privacy.identity([("identifier", "29660"), ("identifier", "AB12")])  # digits only: 6 or more
    assert short.redact("CD3 count 29660, ref AB12") == ("CD3 count 29660, ref [REDACTED]", {"identifier"})


def test_coded_fields_are_checked_for_phones_and_identifiers_only():
    log = IssueLog()
    records = Records()
    records.rows["subject"] = [{"subject_id": "001", "family_name": "Rash", "phone": "555 123 4567"}]
    records.rows["adverse_event"] = [
        {"subject_id": "001", "ae_number": "1", "term": "Rash per Rash family", "decoded_term": "Rash",
         "severity": "5551234567", "_where": {"file": "ae.csv", "record": 1}}]
    changed = privacy.redact_records(records, privacy.subject_values(records), log)
    ae = records.rows["adverse_event"][0]
    assert changed == 2
    assert (ae["term"], ae["decoded_term"], ae["severity"]) == ("[REDACTED] per [REDACTED] family", "Rash",
                                                                "[REDACTED]")
    assert [(i.code, i.file, i.record, i.field, i.value) for i in log.issues] == [
        ("PRIV-REDACTED", "ae.csv", 1, "term", None), ("PRIV-REDACTED", "ae.csv", 1, "severity", None)]
    assert records.rows["subject"][0]["family_name"] == "Rash"  # the subject record keeps its own values


def test_scrub_log_takes_values_out_of_messages_values_and_unmapped_counts():
    log = IssueLog()
    log.error("TERM-UNMAPPED-SEVERITY", "severity 'Okonkwo' is not mapped", value="Okonkwo", field="severity")
    log.count_unmapped("severity", "Okonkwo")
    privacy.scrub_log(log, [("name", "Okonkwo")])
    assert (log.issues[0].message, log.issues[0].value) == ("severity '[REDACTED]' is not mapped", "[REDACTED]")
    assert dict(log.unmapped["severity"]) == {"[REDACTED]": 1}


# ----------------------------------------------------------------------------- pseudonyms


def _by_hand(key: bytes, study: str, site: str, subject: str) -> str:
    digest = hmac.new(key, f"{study}\x00{site}\x00{subject}".encode(), hashlib.sha256).digest()
    b32 = base64.b32encode(digest).decode()
    return b32.translate(str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", "0123456789ABCDEFGHJKMNPQRSTVWXYZ"))[:12]


def test_pseudonym_is_the_keyed_hash_in_crockford_base32():
    key = b"0123456789abcdef0123"
    assert privacy.pseudonym(key, "NCT04387942", "01", "001") == _by_hand(key, "NCT04387942", "01", "001")
    assert privacy.pseudonym(key, "NCT04387942", "01", "001") != privacy.pseudonym(key, "NCT04387942", "02", "001")
    assert privacy.pseudonym(key + b"x", "NCT04387942", "01", "001") != privacy.pseudonym(key, "NCT04387942", "01", "001")
    assert set(privacy.pseudonym(key, "S", "1", "2")) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")


def test_a_short_or_missing_key_file_is_a_usage_error_and_nothing_is_written(tmp_path):
    (tmp_path / "key").write_text("short\n")
    result = CliRunner().invoke(main, ["convert", str(SAMPLE), "--to", "sdtm", "-o", str(tmp_path / "out"),
                                       "--pseudonymise-key-file", str(tmp_path / "key")])
    assert result.exit_code == 2 and "holds 5 byte(s)" in result.stderr and "short" not in result.stderr.replace(
        str(tmp_path), "")
    assert not (tmp_path / "out").exists()
    result = CliRunner().invoke(main, ["convert", str(SAMPLE), "--to", "fhir", "-o", str(tmp_path / "out")],
                                env={privacy.PSEUDONYM_ENV: str(tmp_path / "key")})
    assert result.exit_code == 2 and "to SDTM" in result.stderr


# ----------------------------------------------------------------------------- plant and scan


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("planted")
    write_records_folder(tmp / "records")
    write_fhir_bundle(tmp / "bundle.json", tmp / "records")
    (tmp / "key").write_text(SECRET + "\n")
    return tmp


def test_planted_values_are_really_in_the_inputs(planted):
    # the scan below can fail: every needle is in the inputs
    inputs = b"".join(p.read_bytes() for p in sorted((planted / "records").iterdir())) + (planted / "bundle.json").read_bytes()
    assert leaks(inputs, NEEDLES) == NEEDLES
    bundle = json.loads((planted / "bundle.json").read_bytes())
    patients = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    assert sorted(p["name"][0]["family"] for p in patients) == ["Okonkwo", "Vasquez-Iriarte"]


def test_no_planted_value_reaches_any_output_byte(planted):
    out = planted / "out"
    console = []
    key_env = {privacy.PSEUDONYM_ENV: str(planted / "key")}
    records, bundle = planted / "records", planted / "bundle.json"
    for name, args, env in [
        ("sdtm", ["convert", records, "--to", "sdtm", "-o", out / "sdtm", "--format", "xpt,dataset-json,csv",
                  "--pseudonymise-key-file", planted / "key"], None),
        ("sdtm-env", ["convert", records, "--to", "sdtm", "-o", out / "sdtm-env", "--format", "csv"], key_env),
        ("fhir-ndjson", ["convert", records, "--to", "fhir", "-o", out / "fhir-ndjson"], None),
        ("fhir-bundle", ["convert", records, "--to", "fhir", "-o", out / "fhir-bundle", "--format", "bundle"], None),
        ("fhir-r5", ["convert", records, "--to", "fhir", "-o", out / "fhir-r5", "--fhir-version", "R5"], None),
        ("from-fhir-sdtm", ["convert", bundle, "--to", "sdtm", "-o", out / "from-fhir-sdtm", "--format",
                            "xpt,dataset-json,csv", "--pseudonymise-key-file", planted / "key"], None),
        ("from-fhir-records", ["convert", bundle, "--to", "records", "-o", out / "from-fhir-records"], None),
        ("from-fhir-fhir", ["convert", bundle, "--to", "fhir", "-o", out / "from-fhir-fhir"], None),
        ("records", ["convert", records, "--to", "records", "-o", out / "records"], None),
    ]:
        _code, text = run(*args, env=env)
        console.append(text)
    for report in ("report.html", "report.json"):
        console.append(run("validate", out / "sdtm", "--report", out / "reports" / f"sdtm-{report}")[1])
        console.append(run("validate", out / "from-fhir-sdtm", "--report", out / "reports" / f"fhir-sdtm-{report}")[1])
        console.append(run("validate", out / "fhir-ndjson", "--report", out / "reports" / f"fhir-{report}")[1])
        console.append(run("validate", bundle, "--report", out / "reports" / f"input-bundle-{report}")[1])

    needles = NEEDLES + [SECRET, SECRET[:16]]
    assert scan_folder(out, needles, skip=_without_identifying_columns) == {}
    assert leaks("".join(console).encode(), needles) == []
    # the scan is not vacuous: every output was written, redactions were reported, and the
    # records output's subject file does hold the values where they belong
    assert {p.name for p in (out / "sdtm").iterdir()} >= {"ae.xpt", "ae.json", "ae.csv", "ds.xpt", "sv.csv", "ex.csv",
                                                           "lb.csv", "define.xml", "issues.json"}
    assert (out / "fhir-bundle" / "bundle.json").is_file() and (out / "reports" / "input-bundle-report.html").is_file()
    assert leaks((out / "records" / "subjects.csv").read_bytes(), ["Okonkwo", "Xiomara"]) == ["Okonkwo", "Xiomara"]
    issues = json.loads((out / "sdtm" / "issues.json").read_bytes())
    redacted = sorted({(Path(i["file"]).name, i["field"]) for i in issues["issues"] if i["code"] == "PRIV-REDACTED"})
    assert redacted == [("adverse_events.csv", "decoded_term"), ("adverse_events.csv", "term"),
                        ("cell_phenotypes.csv", "not_done_reason"), ("cell_phenotypes.csv", "specimen"),
                        ("dispositions.csv", "category"), ("dispositions.csv", "verbatim"),
                        ("exposures.csv", "adjustment_reason"), ("exposures.csv", "lot_number"),
                        ("lab_results.csv", "accession"), ("lab_results.csv", "not_done_reason"),
                        ("visits.csv", "reason"), ("vital_signs.csv", "not_done_reason")]
    assert all(i["value"] is None for i in issues["issues"] if i["code"] == "PRIV-REDACTED")
    assert issues["run"]["usubjid"] == "pseudonymised (HMAC-SHA256, keyed)"


def test_pseudonymised_usubjid_is_the_same_everywhere_and_for_every_run(planted):
    out = planted / "out"
    if not (out / "sdtm").exists():
        pytest.skip("needs the outputs of test_no_planted_value_reaches_any_output_byte")
    key = SECRET.encode()
    want = {f"NCT04387942-{_by_hand(key, 'NCT04387942', '01', sid)}" for sid in ("001", "002")}
    seen = {}
    for p in sorted((out / "sdtm").glob("*.csv")):
        rows = list(csv.DictReader(io.StringIO(p.read_text("utf-8"))))
        if rows and "USUBJID" in rows[0]:
            seen[p.stem] = {r["USUBJID"] for r in rows}
    assert seen["dm"] == want
    assert all(ids <= want for ids in seen.values()) and {"ae", "ds", "ex", "lb", "sv", "suppae"} <= set(seen)
    assert "NCT04387942-01-00" not in "".join((out / "sdtm" / n).read_text("utf-8", "replace")
                                              for n in ("define.xml", "ae.json", "issues.json", "dm.csv"))
    # the key from the environment gives the same bytes; FHIR input gives the same pseudonyms
    assert (out / "sdtm-env" / "dm.csv").read_bytes() == (out / "sdtm" / "dm.csv").read_bytes()
    fhir_dm = list(csv.DictReader(io.StringIO((out / "from-fhir-sdtm" / "dm.csv").read_text("utf-8"))))
    assert {r["USUBJID"] for r in fhir_dm} == want


def test_validate_does_not_quote_a_patients_identifying_values(tmp_path):
    """A Patient the R4 schema rejects (a telecom that is not a list, a name given as text):
    the schema's message would quote the value; the report holds the finding without it."""
    patient = {"resourceType": "Patient", "id": "p1", "name": "Okonkwo Adaeze",
               "telecom": {"system": "phone", "value": "+44 20 7946 0958"}, "gender": "female"}
    path = tmp_path / "Patient.ndjson"
    path.write_text(json.dumps(patient) + "\n")
    code, text = run("validate", path, "--report", tmp_path / "report.json")
    report = (tmp_path / "report.json").read_bytes()
    assert code == 1 and b"FHIR-SCHEMA" in report
    assert leaks(report + text.encode(), ["Okonkwo", "Adaeze", "7946 0958"]) == []


def test_scrub_log_leaves_file_names_in_counter_keys_alone():
    """Out-of-scope counters are keyed "file<TAB>type<TAB>value"; Synthea names its files
    after the patient: the file part is the user's own and stays, the value is scrubbed."""
    log = IssueLog()
    log.unmapped["fhir-scope:code"] = Counter({"in/Adaeze_Okonkwo_1.json\tObservation\tOkonkwo": 2,
                                               "in/Adaeze_Okonkwo_1.json\tObservation\tLOINC|1234-5": 1})
    privacy.scrub_log(log, [("name", "Okonkwo")])
    assert dict(log.unmapped["fhir-scope:code"]) == {"in/Adaeze_Okonkwo_1.json\tObservation\t[REDACTED]": 2,
                                                     "in/Adaeze_Okonkwo_1.json\tObservation\tLOINC|1234-5": 1}
