"""The study review page (``trialbridge report``), opened once in Debian's headless Chromium.

The folder is the NCT04387942 sample converted to SDTM (XPT) with two problems put in: no TS
(SDTM-TS-SSTDTC, a finding about the study) and DM's second subject with SEX "X"
(SDTM-CT-INVALID in DM), so the page has findings to place beside the data.  The counts below
were worked out from the sample's SDTM (Counter over its rows):

- DM 59 subjects: 39 in arm HSP, 19 in HSPN, 1 screen failure without an arm; 58 treated.
- DS DISPOSITION EVENT: HSP 37 COMPLETED, 2 WITHDRAWAL BY PARENT/GUARDIAN; HSPN 17
  COMPLETED, 1 LOST TO FOLLOW-UP, 1 ADVERSE EVENT; no arm 1 SCREEN FAILURE: 6 bars.
- Swimmer (the 58 subjects with RFSTDTC): 553 EX doses, 285 SV visits (286 less the screen
  failure's), AEs 35 mild, 8 moderate, 2 severe, 6 relapses (SUPPDM RELAPSDT): 889 markers.
- LB: IGA, IGG, IGM, IGE, C3, C4 224 results each (151 HSP + 73 HSPN); CP: TLYH, TLC,
  TLYHR, NKCE, BLYCE 115 each (77 + 38), as the study configuration's review section says.
- AE: 45 events in 6 SOCs and 17 PTs; General disorders and administration site conditions
  26 events in 19 subjects, its first PT Pyrexia 9 events in 8 subjects.
"""
from __future__ import annotations

import copy
import json
import struct
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from lxml import html

from trialbridge.cli import main
from trialbridge.converters.core.datasets import Dataset
from trialbridge.converters.core.issues import IssueLog
from trialbridge.converters.formats import sdtm as sdtm_io
from trialbridge.converters.review import summary
from trialbridge.converters.review.page import build_page, render_page

from tests.browser import CHROMIUM, visit

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="headless Chromium not installed at /usr/bin/chromium (apt-get install chromium)")

LB_TESTS = ["IGA", "IGG", "IGM", "IGE", "C3", "C4"]
CP_TESTS = ["TLYH", "TLC", "TLYHR", "NKCE", "BLYCE"]
HSP = "rhIL-2 7-day course"
HSPN = "rhIL-2 7-day course then every two weeks for 3 months"

# Evaluated in the page after its load event: every Plotly plot, its traces and what each
# holds (non-null y values), and the markers Plotly drew as SVG.
PROBE = """(() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(el => ({
  id: el.id,
  traces: el.data.map(t => ({name: t.name, type: t.type, meta: t.meta || null,
                             points: t.y.filter(v => v !== null && v !== undefined).length,
                             total: t.type === 'bar' && t.orientation !== 'h' ? t.y.reduce((a, b) => a + b, 0) : null})),
  markers: el.querySelectorAll('path.point').length,
  bars: el.querySelectorAll('.bars .point').length})))()"""


@pytest.fixture(scope="module")
def broken_folder(sample_sdtm, tmp_path_factory) -> Path:
    datasets, _ = sample_sdtm
    datasets = {name: ds for name, ds in datasets.items() if name != "TS"}
    dm = datasets["DM"]
    rows = copy.deepcopy(dm.rows)
    rows[1]["SEX"] = "X"
    datasets["DM"] = Dataset(dm.name, dm.label, dm.variables, rows, dm.keys, dm.source)
    folder = tmp_path_factory.mktemp("review-sdtm")
    sdtm_io.write_datasets(datasets, folder, ["xpt"], IssueLog(), "NCT04387942")
    return folder


@pytest.fixture(scope="module")
def page(broken_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("review") / "review.html"
    result = CliRunner().invoke(main, ["report", str(broken_folder), "-o", str(out)])
    return out, result


@pytest.fixture(scope="module")
def browser_visit(page, tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip("headless Chromium not installed at /usr/bin/chromium")
    path, _ = page
    return visit(path, PROBE, tmp_path_factory.mktemp("chromium-profile"))


def test_the_command_writes_one_page(page):
    path, result = page
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "plot-cp 575, plot-disposition 6, plot-lb 1344, plot-swimmer 947" in result.output
    assert path.exists() and path.stat().st_size > 4_000_000  # Plotly's JavaScript is inside


@needs_chromium
def test_every_plot_holds_the_samples_points(browser_visit):
    plots = {p["id"]: p for p in browser_visit.value}
    assert list(plots) == ["plot-disposition", "plot-swimmer", "plot-lb", "plot-cp"]

    disposition = {t["name"]: (t["points"], t["total"]) for t in plots["plot-disposition"]["traces"]}
    assert disposition == {"ADVERSE EVENT": (3, 1), "COMPLETED": (3, 54), "LOST TO FOLLOW-UP": (3, 1),
                           "SCREEN FAILURE": (3, 1), "WITHDRAWAL BY PARENT/GUARDIAN": (3, 2)}  # 3 arms each
    assert plots["plot-disposition"]["bars"] == 5 * 3

    swimmer = {t["name"]: t["points"] for t in plots["plot-swimmer"]["traces"]}
    assert swimmer == {f"on study: {HSP}": 39, f"on study: {HSPN}": 19, "dose (EX)": 553, "visit (SV)": 285,
                       "AE mild": 35, "AE moderate": 8, "AE severe": 2, "relapse (SUPPDM RELAPSDT)": 6}
    assert plots["plot-swimmer"]["markers"] == 553 + 285 + 35 + 8 + 2 + 6
    assert plots["plot-swimmer"]["bars"] == 58

    for div, tests, (hsp, hspn) in (("plot-lb", LB_TESTS, (151, 73)), ("plot-cp", CP_TESTS, (77, 38))):
        by_test: dict[str, dict[str, int]] = {}
        for t in plots[div]["traces"]:
            by_test.setdefault(t["meta"], {})[t["name"]] = t["points"]
        assert list(by_test) == tests
        assert all(arms == {HSP: hsp, HSPN: hspn} for arms in by_test.values()), by_test
        assert plots[div]["markers"] == len(tests) * (hsp + hspn)


@needs_chromium
def test_no_console_errors(browser_visit):
    assert browser_visit.exceptions == []
    assert [m for m in browser_visit.console if m["level"] in ("error", "warning", "assert")] == []


@needs_chromium
def test_screenshot_is_not_blank(browser_visit):
    png = browser_visit.screenshot
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (1400, 3000)
    assert len(png) > 300_000  # a blank 1400x3000 page is a few KB; tables and plots make ~700 KB


def test_tables_and_findings_beside_their_data(page):
    path, _ = page
    dom = html.fromstring(path.read_bytes())
    cells = [[td.text_content() for td in dom.get_element_by_id(f"enrol-{arm}").findall("td")]
             for arm in ("HSP", "HSPN", "none", "total")]
    # arm, ARMCD, cohort, subjects, treated, then ADVERSE EVENT, COMPLETED, LOST TO FOLLOW-UP,
    # SCREEN FAILURE, WITHDRAWAL BY PARENT/GUARDIAN
    assert cells == [[HSP, "HSP", "HSP", "39", "39", "0", "37", "0", "0", "2"],
                     [HSPN, "HSPN", "HSPN", "19", "19", "1", "17", "1", "0", "0"],
                     ["(no arm)", "", "", "1", "0", "0", "0", "0", "1", "0"],
                     ["All", "", "", "59", "58", "1", "54", "1", "1", "2"]]
    ae_rows = dom.get_element_by_id("ae-table").findall(".//tbody/tr")
    assert len(ae_rows) == 6 + 17
    # SOC, PT, subjects, events, mild, moderate, severe
    assert [td.text_content() for td in ae_rows[0]][:4] == [
        "General disorders and administration site conditions", "", "19", "26"]
    assert ae_rows[0].get("class") == "soc"
    assert [td.text_content() for td in ae_rows[1]][:4] == ["", "Pyrexia", "8", "9"]
    assert sum(int(r[3].text_content()) for r in ae_rows if r.get("class") == "soc") == 45

    enrolment = dom.get_element_by_id("findings-enrolment").text_content()
    assert "SDTM-CT-INVALID in DM" in enrolment and "NCT04387942-01-002" in enrolment
    other = dom.get_element_by_id("findings-other").text_content()
    assert "SDTM-TS-SSTDTC" in other and "SDTM-CT-INVALID" not in other
    assert "No validation findings for AE, SUPPAE" in dom.get_element_by_id("findings-adverse-events").text_content()


def test_self_contained_and_deterministic(page, broken_folder):
    path, _ = page
    data = path.read_bytes()
    dom = html.fromstring(data)
    assert not dom.xpath("//link | //img | //iframe | //@src")
    assert "default-src 'none'" in dom.xpath("//meta[@http-equiv='Content-Security-Policy']/@content")[0]
    assert [d.get("id") for d in dom.find_class("plot")] == ["plot-disposition", "plot-swimmer", "plot-lb", "plot-cp"]
    second = path.with_name("again.html")
    result = CliRunner().invoke(main, ["report", str(broken_folder), "-o", str(second)])
    assert result.exit_code == 0 and second.read_bytes() == data


def test_findings_from_an_issues_json(sample_sdtm, broken_folder, tmp_path):
    issues = tmp_path / "issues.json"
    issues.write_text(json.dumps({"issues": [
        {"severity": "warning", "code": "SDTM-DY-INCONSISTENT", "file": "lb.xpt", "record": 3, "field": "LBDY",
         "value": "5", "usubjid": "NCT04387942-01-001", "message": "LBDY 5 but LBDTC gives 4"}]}))
    out = tmp_path / "r.html"
    result = CliRunner().invoke(main, ["report", str(broken_folder), "-o", str(out), "--issues", str(issues)])
    assert result.exit_code == 0, result.output
    assert "findings: 1 (from issues.json)" in result.output
    dom = html.fromstring(out.read_bytes())
    assert "SDTM-DY-INCONSISTENT in LB: 1" in dom.get_element_by_id("findings-trajectories").text_content()
    assert "No validation findings for DM, DS, SUPPDM" in dom.get_element_by_id("findings-enrolment").text_content()


def test_without_a_configuration_every_numeric_test_is_plotted(sample_sdtm):
    datasets, _ = sample_sdtm
    tests = summary.trajectory_tests(datasets, None)
    assert Counter(d for d, _ in tests) == {"LB": 16, "CP": 12, "VS": 2}
    enrol = summary.enrolment(datasets, None)
    assert [g["cohort"] for g in enrol.rows] == ["", "", ""]  # cohorts come from the configuration


@pytest.mark.parametrize("args, message", [
    (["report", "{tmp}/nothing", "-o", "{tmp}/r.html"], "not a folder"),
    (["report", "{folder}", "-o", "{tmp}/r.html", "--issues", "{tmp}/bad.json"], "cannot read the findings"),
    (["report", "{folder}", "-o", "{folder}/r.html"], "SDTM folder"),
])
def test_usage_problems_are_one_line(args, message, broken_folder, tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    args = [a.format(tmp=tmp_path, folder=broken_folder) for a in args]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_page_has_no_subject_identifying_values(sample_sdtm):
    """SDTM holds no names or phones; the page shows USUBJID (a trial id) and no BRTHDTC."""
    datasets, _ = sample_sdtm
    text = render_page(datasets, [], study=None, title="t", findings_source="none")[0].decode()
    births = {str(r.get("BRTHDTC")) for r in datasets["DM"].rows if r.get("BRTHDTC")}
    assert births and not any(b in text for b in births)


def test_the_cdisc_pilot_without_configuration():
    """Third-party SDTM, no study configuration: 306 subjects in DM, 254 with RFSTDTC (52
    screen failures have none); their 591 doses, 3507 of the 3559 visits (the screen failures
    have the other 52) and 1191 AEs, of which 26 have neither AESTDY nor an AESTDTC a study day
    can be counted from.  The folder has no findings dataset with visits, so no trajectories."""
    from tests.conftest import reference

    datasets = sdtm_io.read_sdtm_folder(reference("sdtm", "cdiscpilot01"), IssueLog())
    swim = summary.swimmer(datasets, None)
    assert len(swim.lanes) == 254 and swim.relapse_variable is None
    assert Counter(la.arm for la in swim.lanes) == {"Placebo": 86, "Xanomeline High Dose": 84,
                                                    "Xanomeline Low Dose": 84}
    assert sum(len(la.doses) for la in swim.lanes) == 591
    assert sum(len(la.visits) for la in swim.lanes) == 3507
    assert sum(len(evs) for la in swim.lanes for evs in la.adverse_events.values()) == 1191 - 26
    assert swim.undated == {"AE": 26}
    enrol = summary.enrolment(datasets, None)
    assert enrol.total["subjects"] == 306 and enrol.total["treated"] == 254
    assert enrol.total["disposition"]["SCREEN FAILURE"] == 52 and enrol.total["disposition"]["COMPLETED"] == 110
    assert summary.trajectory_tests(datasets, None) == []
    root, counts = build_page(
        datasets, [], study=None, title="pilot", findings_source="none")
    # disposition bars of a nonzero count: Placebo 9 terms, Screen Failure 1, High 7, Low 7
    assert counts == {"plot-disposition": 24, "plot-swimmer": 254 + 591 + 3507 + 1165}
