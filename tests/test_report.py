"""The HTML validation report (converters/report.py), rendered in a real headless Chromium.

One report comes from a real validation run over the converted NCT04387942 sample with
problems put in (a DM row twice, a SEX outside its codelist, no TS); one from a hand-made log
that exercises escaping and the 200-per-rule cap.  The browser's DOM must show the counts and
rule codes; a screenshot must be a real image.  Needs Debian's ``chromium`` package at
/usr/bin/chromium; skipped with the reason when it is not installed.
"""
from __future__ import annotations

import copy
import json
import struct
import subprocess
from pathlib import Path

import pytest
from lxml import html

from trialbridge.converters.core.datasets import Dataset
from trialbridge.converters.core.issues import IssueLog
from trialbridge.converters.validation.report import (MAX_FINDINGS_PER_RULE, json_report, render_html, write_html_report,
                               write_json_report)
from trialbridge.converters.validation.rules import RULES_BY_ID, validate_datasets

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="headless Chromium not installed at /usr/bin/chromium (apt-get install chromium)")


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=60, check=True,
    )


def dump_dom(tmp_path: Path, page: Path) -> str:
    return chromium(tmp_path, "--dump-dom", page.resolve().as_uri()).stdout


def hand_made_log(n: int = MAX_FINDINGS_PER_RULE + 50) -> dict:
    log = IssueLog()
    for row in range(1, n + 1):
        log.error("SDTM-SEQ-DUPLICATE", "Duplicate AESEQ 1 within USUBJID & more", file="/data/ae.xpt",
                  record=row, field="AESEQ", value=1, usubjid=f"S1-{row:03d}", seq=1)
    log.warning("SDTM-XPT-ASCII", "Non-ASCII character in AETERM", file="ae.xpt", record=3, field="AETERM",
                value="<script>alert(1)</script>\x01")
    log.info("STUDY-NO-CONFIG", "no configuration for study 'X'")
    log.count_row("adverse_events.csv", "read")
    log.run = {"trialbridge": "source", "command": "validate", "resources": {"Patient": 2, "Observation": 5}}
    return log.to_json_obj()


# --------------------------------------------------------------------------- real validation run


@pytest.fixture(scope="module")
def broken_sample_log(sample_sdtm) -> tuple[dict, dict[str, int]]:
    datasets, _ = sample_sdtm
    datasets = {name: ds for name, ds in datasets.items() if name != "TS"}  # SDTM-TS-SSTDTC
    dm = datasets["DM"]
    rows = copy.deepcopy(dm.rows)
    rows.append(dict(rows[0]))  # the first subject twice: SDTM-DM-ONE-PER-SUBJECT
    rows[1]["SEX"] = "X"  # non-extensible codelist: SDTM-CT-INVALID error
    datasets["DM"] = Dataset(dm.name, dm.label, dm.variables, rows, dm.keys, dm.source)
    log = IssueLog()
    validate_datasets(datasets, log)
    return log.to_json_obj(), {name: len(ds.rows) for name, ds in datasets.items()}


@needs_chromium
def test_report_of_a_real_run_in_chromium(broken_sample_log, tmp_path):
    log_json, rows = broken_sample_log
    codes = {i["code"] for i in log_json["issues"]}
    assert {"SDTM-TS-SSTDTC", "SDTM-DM-ONE-PER-SUBJECT", "SDTM-CT-INVALID"} <= codes
    page = write_html_report(log_json, tmp_path / "report.html", title="NCT04387942 validation",
                             datasets_summary=rows, define_status="not produced by this run")

    dom = html.fromstring(dump_dom(tmp_path, page))
    errors = log_json["summary"]["error"]
    assert errors >= 3
    assert dom.get_element_by_id("count-error").text_content() == str(errors)
    assert dom.get_element_by_id("count-warning").text_content() == str(log_json["summary"]["warning"])
    assert "not produced by this run" in dom.get_element_by_id("define-status").text_content()
    for code in ("SDTM-TS-SSTDTC", "SDTM-DM-ONE-PER-SUBJECT", "SDTM-CT-INVALID"):
        row = dom.get_element_by_id(f"rulerow-{code}")
        assert row.text_content().startswith(code)
        assert RULES_BY_ID[code].description in row.text_content()
    dm_cells = [td.text_content() for td in dom.get_element_by_id("dataset-DM").findall("td")]
    dm_errors = sum(1 for i in log_json["issues"] if i["severity"] == "error" and i["file"] == "dm.xpt")
    assert dm_cells[:3] == ["DM", "60", str(dm_errors)]
    drill = dom.get_element_by_id("rule-SDTM-DM-ONE-PER-SUBJECT")
    assert drill.tag == "details" and "NCT04387942-01-001" in drill.text_content()
    assert not dom.xpath("//script")


@needs_chromium
def test_screenshot_is_a_readable_page(broken_sample_log, tmp_path):
    log_json, rows = broken_sample_log
    page = write_html_report(log_json, tmp_path / "report.html", title="NCT04387942 validation",
                             datasets_summary=rows)
    png = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={png}", "--window-size=1200,900", page.resolve().as_uri())
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (1200, 900)
    assert len(data) > 20_000  # a blank 1200x900 page compresses to a few KB


# --------------------------------------------------------------------------- hand-made log


@needs_chromium
def test_values_are_escaped_in_the_browser(tmp_path):
    page = write_html_report(hand_made_log(), tmp_path / "r.html", title="<b>escaped</b> & title")
    text = dump_dom(tmp_path, page)
    dom = html.fromstring(text)
    assert not dom.xpath("//script") and not dom.xpath("//body//b")
    assert "<script>alert(1)</script>\\x01" in dom.get_element_by_id("rule-SDTM-XPT-ASCII").text_content()
    assert dom.findtext(".//title") == "<b>escaped</b> & title"


def test_findings_capped_per_rule_with_a_more_line():
    dom = html.fromstring(render_html(hand_made_log(), title="t"))
    block = dom.get_element_by_id("rule-SDTM-SEQ-DUPLICATE")
    assert len(block.findall(".//tbody/tr")) == MAX_FINDINGS_PER_RULE
    assert block.find_class("more")[0].text_content().startswith("50 more")
    assert "250 findings" in block.findtext("summary")
    assert dom.get_element_by_id("count-error").text_content() == "250"
    # rules ordered by severity: errors, warnings, then info codes (no description)
    order = [tr.get("id") for tr in dom.get_element_by_id("by-rule").findall(".//tbody/tr")]
    assert order == ["rulerow-SDTM-SEQ-DUPLICATE", "rulerow-SDTM-XPT-ASCII", "rulerow-STUDY-NO-CONFIG"]
    run = {tr.findtext("th"): tr.findtext("td") for tr in dom.get_element_by_id("run").findall(".//tbody/tr")}
    assert run == {"command": "validate", "resources": "Observation: 5, Patient: 2", "trialbridge": "source"}
    # a finding without a file is counted against the study, not lost
    assert dom.get_element_by_id("dataset-(study)").findall("td")[4].text_content() == "1"


def test_self_contained_and_deterministic():
    log_json = hand_made_log()
    first = render_html(log_json, title="t", datasets_summary={"AE": 3}, define_status="valid")
    assert first == render_html(json.loads(json.dumps(log_json)), title="t", datasets_summary={"AE": 3},
                                define_status="valid")
    dom = html.fromstring(first)
    assert not dom.xpath("//script | //link | //img | //iframe | //@src")
    assert all(href.startswith("#rule-") for href in dom.xpath("//@href"))
    assert "Content-Security-Policy" in first.decode()


def test_json_report_adds_rule_descriptions(tmp_path):
    log_json = hand_made_log(3)
    path = write_json_report(log_json, tmp_path / "report.json", datasets_summary={"AE": 3})
    obj = json.loads(path.read_text())
    assert obj["issues"] == log_json["issues"] and obj["summary"] == log_json["summary"]
    assert obj["rules"]["SDTM-SEQ-DUPLICATE"]["mirrors"] == RULES_BY_ID["SDTM-SEQ-DUPLICATE"].mirrors
    assert "STUDY-NO-CONFIG" not in obj["rules"] and obj["datasets"] == {"AE": 3}
    assert json_report(log_json)["rules"].keys() == {"SDTM-SEQ-DUPLICATE", "SDTM-XPT-ASCII"}
