"""`validate` as a gate a submitter can trust: every copy of a dataset is checked, the exit
code follows --fail-on, rules can be chosen, and the report lists what every rule did — as
JSON and as an Excel workbook with Pinnacle 21's sheets."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from trialbridge.cli import main

DIRTY = Path(__file__).resolve().parents[1] / "samples" / "nct04387942-dirty"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("gate") / "sdtm"
    result = run("convert", DIRTY, "--to", "sdtm", "--format", "xpt,dataset-json", "-o", out, "--quiet")
    assert result.exit_code == 1, result.output  # the dirty sample's planted errors, in the conversion
    return out


def _edited(folder: Path, tmp_path: Path) -> Path:
    """The folder with dm.json's second row edited by hand to SEX=X (dm.xpt untouched)."""
    copy = tmp_path / "edited"
    copy.mkdir()
    for p in folder.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    doc = json.loads((copy / "dm.json").read_text())
    sex = [c["name"] for c in doc["columns"]].index("SEX")
    assert doc["rows"][1][sex] == "F"
    doc["rows"][1][sex] = "X"
    (copy / "dm.json").write_text(json.dumps(doc))
    return copy


def test_a_copy_edited_by_hand_does_not_pass(folder, tmp_path):
    edited = _edited(folder, tmp_path)
    result = run("validate", edited, "--report", tmp_path / "r.json")
    assert result.exit_code == 1
    doc = orjson.loads((tmp_path / "r.json").read_bytes())
    found = [(Path(i["file"]).name, i["record"], i["field"], i["value"]) for i in doc["issues"]
             if i["code"] == "SDTM-COPY-DIFFERS"]
    assert found == [("dm.json", 2, "SEX", "X")]
    assert sorted(Path(p).name for p in doc["run"]["copies_compared"]) == sorted(
        p.name for p in edited.glob("*.json") if p.name != "issues.json")


def test_fail_on_and_rule_selection(folder, tmp_path):
    # the untouched output: one warning (the planted unit mq/dL, SDTM-CT-INVALID), no error
    assert run("validate", folder).exit_code == 0
    assert run("validate", folder, "--fail-on", "warning").exit_code == 1
    assert run("validate", folder, "--fail-on", "warning", "--exclude", "SDTM-CT-INVALID").exit_code == 0
    result = run("validate", folder, "--rules", "SDTM-REQ-MISSING,SDTM-SEQ-DUPLICATE", "--report", tmp_path / "r.json")
    assert result.exit_code == 0
    rules = orjson.loads((tmp_path / "r.json").read_bytes())["rules_run"]
    status = {r["id"]: (r["status"], r["reason"]) for r in rules}
    assert status["SDTM-REQ-MISSING"] == ("ran", "") and status["SDTM-SEQ-DUPLICATE"] == ("ran", "")
    assert status["SDTM-CT-INVALID"] == ("skipped", "not selected by --rules")
    bad = run("validate", folder, "--rules", "SDTM-NO-SUCH")
    assert bad.exit_code == 2 and "unknown rule id(s) SDTM-NO-SUCH" in bad.output


def test_excel_report_has_pinnacle_21s_sheets_and_is_reproducible(folder, tmp_path):
    from openpyxl import load_workbook

    a, b = tmp_path / "a.xlsx", tmp_path / "b.xlsx"
    assert run("validate", folder, "--report", a).exit_code == 0
    assert run("validate", folder, "--report", b).exit_code == 0
    assert a.read_bytes() == b.read_bytes()  # SOURCE_DATE_EPOCH fixes every stamp
    assert run("validate", folder, "--report", a).exit_code == 0  # its own report: replaced, not refused
    assert a.read_bytes() == b.read_bytes()
    wb = load_workbook(a)
    assert wb.sheetnames == ["Dataset Summary", "Issue Summary", "Details", "Rules"]
    details = list(wb["Details"].iter_rows(min_row=4, values_only=True))
    ct = [r for r in details if r[6] == "SDTM-CT-INVALID"]
    assert len(ct) == 1 and ct[0][0] == "LB" and ct[0][1] == 85 and ct[0][4] == "LBORRESU" and ct[0][5] == "mq/dL"
    assert ct[0][8] == "Warning"
    summary = {r[0]: r[1:] for r in wb["Dataset Summary"].iter_rows(min_row=4, values_only=True)}
    assert summary["LB"][0] == 250  # 252 lab rows less the misspelt Ferritinn and the exact duplicate (both rejected)
    rules = {r[0]: (r[1], r[5]) for r in wb["Rules"].iter_rows(min_row=4, values_only=True)}
    assert rules["SDTM-CT-INVALID"] == (None, "issues")  # CORE has no rule of its own for codelist values: empty cell
    assert rules["SDTM-REQ-MISSING"] == ("CORE-000355, CORE-000356", "ran")
    with zipfile.ZipFile(io.BytesIO(a.read_bytes())) as z:
        assert {i.date_time for i in z.infolist()} == {(2026, 1, 1, 0, 0, 0)}
