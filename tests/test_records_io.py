"""The internal records reader: exact text kept, bad rows rejected with file/row/field,
JSON and CSV equivalent, unknown columns reported, every finding code documented."""
from __future__ import annotations

import re
import shutil

import pytest

from trialbridge.converters.formats import records as records_io
from trialbridge.converters.core.issues import IssueLog, TrialbridgeError
from tests.conftest import ROOT, SAMPLE


def test_sample_reads_completely(sample_records):
    records, log = sample_records
    assert not log.issues
    counts = {name: len(rows) for name, rows in records.items()}
    assert counts == {"subject": 59, "exposure": 553, "lab_result": 2827, "cell_phenotype": 1380,
                      "adverse_event": 45, "visit": 286, "disposition": 118, "vital_sign": 0}
    assert records.study_id == "NCT04387942"
    first = records["subject"][0]
    assert first["_where"]["record"] == 1 and first["_where"]["file"].endswith("subjects.csv")


def test_json_input_keeps_number_text(tmp_path):
    folder = tmp_path / "in"
    shutil.copytree(SAMPLE, folder)
    (folder / "lab_results.csv").unlink()
    # a JSON number 1.30 must stay "1.30" (json.loads would make it 1.3)
    (folder / "lab_results.json").write_text(
        '[{"subject_id": "001", "collected": "2020-06-05T08:00", "test": "IgG", "result": 1.30, "unit": "g/L"}]')
    log = IssueLog()
    records = records_io.read_records(folder, log)
    (row,) = records["lab_result"]
    assert row["result"] == "1.30"


def test_unknown_column_is_reported_with_count(tmp_path):
    folder = tmp_path / "in"
    shutil.copytree(SAMPLE, folder)
    text = (folder / "visits.csv").read_text().splitlines()
    text = [text[0] + ",weather"] + [line + ",sunny" for line in text[1:]]
    (folder / "visits.csv").write_text("\n".join(text) + "\n")
    log = IssueLog()
    records_io.read_records(folder, log)
    (issue,) = [i for i in log.issues if i.code == "REC-UNKNOWN-COLUMN"]
    assert issue.field == "weather" and issue.value == 286 and issue.severity == "warning"


def test_schema_error_names_file_row_and_field(tmp_path):
    folder = tmp_path / "in"
    shutil.copytree(SAMPLE, folder)
    lines = (folder / "adverse_events.csv").read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[3].split(",")
    cells[header.index("start")] = "15/07/2020"
    lines[3] = ",".join(cells)
    (folder / "adverse_events.csv").write_text("\n".join(lines) + "\n")
    log = IssueLog()
    records = records_io.read_records(folder, log)
    (issue,) = log.issues
    assert (issue.code, issue.record, issue.field, issue.value) == ("REC-SCHEMA", 3, "start", "15/07/2020")
    assert len(records["adverse_event"]) == 44


def test_write_records_round_trip(sample_records, tmp_path):
    records, _ = sample_records
    records_io.write_records(records, tmp_path, IssueLog())
    again = records_io.read_records(tmp_path, IssueLog())
    for name, rows in records.items():
        strip = lambda rs: sorted(tuple(sorted((k, v) for k, v in r.items() if k != "_where")) for r in rs)  # noqa: E731
        assert strip(rows) == strip(again[name]), name


def test_every_finding_code_in_the_source_is_documented():
    documented = "".join(p.read_text() for p in sorted((ROOT / "docs").glob("*.md")))
    sources = [p.read_text() for p in list((ROOT / "converters").rglob("*.py")) + list((ROOT / "mappings").rglob("*.py"))]
    codes = set()
    for text in sources:
        codes.update(re.findall(r'\.(?:error|warning|info|add\([^,]+,)\(?\s*f?"([A-Z]{2,6}-[A-Z0-9-]+)"', text))
        codes.update(re.findall(r'ctx\.reject\([^"]*"([A-Z]{2,6}-[A-Z0-9-]+)"', text))
        codes.update(re.findall(r'\.issue\(\s*"(?:error|warning|info)",\s*f?"([A-Z]{2,6}-[A-Z0-9-]+)"', text))
    assert len(codes) > 20
    missing = sorted(c for c in codes if c not in documented and not c.startswith("TERM-UNMAPPED-"))
    assert not missing, missing


def test_spreadsheet_cp1252_csv_is_read_with_a_warning(tmp_path):
    folder = tmp_path / "in"
    shutil.copytree(SAMPLE, folder)
    text = (folder / "subjects.csv").read_text("utf-8").replace("Test", "Tést")
    (folder / "subjects.csv").write_bytes(text.encode("cp1252"))
    log = IssueLog()
    records = records_io.read_records(folder, log)
    assert records["subject"][0]["given_name"] == "Tést"
    assert [i.code for i in log.issues] == ["REC-ENCODING"]


@pytest.mark.parametrize("name, content, message", [
    ("subjects.csv", "study_id,site_id,subject_id\n", "no subject row could be read (0 row(s) read"),
    ("subjects.json", '{"a": 1}', "first: REC-JSON file holds a JSON object, not an array of record objects"),
    ("subjects.csv", "", "0 row(s) read, 0 rejected)"),
])
def test_unusable_subject_files_give_one_clear_error(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(TrialbridgeError, match=re.escape(message)):
        records_io.read_records(tmp_path, IssueLog())
