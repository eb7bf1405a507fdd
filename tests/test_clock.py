"""The creation time that define.xml, Dataset-JSON and XPT carry: the real time by default,
SOURCE_DATE_EPOCH when set (reproducible builds), a malformed value refused."""
from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from trialbridge.converters.core.clock import creation_datetime, creation_time, xpt_stamp
from trialbridge.converters.core.issues import TrialbridgeError

DIRTY = Path(__file__).resolve().parents[1] / "samples" / "nct04387942-dirty"


def test_source_date_epoch_fixes_the_time(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1591345800")  # 2020-06-05 08:30:00 UTC, worked out by hand
    assert creation_datetime() == "2020-06-05T08:30:00Z"
    assert xpt_stamp() == b"05JUN20:08:30:00"
    assert xpt_stamp("2026-12-06T20:41:07Z") == b"06DEC26:20:41:07"


def test_without_it_the_time_is_now(monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    before = int(time.time())
    when = creation_time()
    after = int(time.time())
    assert before <= when.timestamp() <= after and when.tzinfo == timezone.utc
    assert datetime.strptime(creation_datetime(when), "%Y-%m-%dT%H:%M:%SZ").year >= 2026


@pytest.mark.parametrize("bad", ["yesterday", "-5", "1.5", "99999999999999999999"])
def test_a_malformed_value_stops_the_run(monkeypatch, bad):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", bad)
    with pytest.raises(TrialbridgeError, match="SOURCE_DATE_EPOCH"):
        creation_time()


def test_the_sample_output_says_when_it_was_made(tmp_path, monkeypatch):
    """Without SOURCE_DATE_EPOCH, define.xml, every Dataset-JSON file and every XPT header
    carry today's date (not 1970), and all files of one run carry the same time."""
    import orjson
    from lxml import etree
    from click.testing import CliRunner

    from trialbridge.cli import main

    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["convert", str(DIRTY), "--to", "sdtm", "-o", str(out),
                                       "--format", "xpt,dataset-json", "--quiet"])
    assert result.exit_code in (0, 1), result.output
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    define_time = etree.parse(str(out / "define.xml")).getroot().get("CreationDateTime")
    assert define_time.startswith(today) and define_time.endswith("Z")
    times = {orjson.loads(p.read_bytes())["datasetJSONCreationDateTime"] for p in out.glob("*.json") if p.name != "issues.json"}
    assert times == {define_time}
    stamp = xpt_stamp(define_time)
    for xpt in out.glob("*.xpt"):
        head = xpt.read_bytes()[:640]  # the first 8 header records
        assert head.count(stamp) == 4, xpt.name  # library created + modified, member created + modified
