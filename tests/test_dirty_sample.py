"""The dirty sample produces exactly the findings its README documents — no more, no
fewer — and every input row is accounted for (converted, or rejected with a reason).
The expected findings are read from the README's two tables, which were written down
by hand from the mistakes planted in the data."""
from __future__ import annotations

import json
import re

from click.testing import CliRunner

from trialbridge.cli import main
from tests.conftest import DIRTY


def _readme_findings():
    text = (DIRTY / "README.md").read_text("utf-8")
    expected = set()
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 9 and re.fullmatch(r"\d+", cells[0]):  # table of planted mistakes
            _, file, row, _subject, field, value, code, severity, _ = cells
            field = None if field.startswith("(") else field
            expected.add((code, severity, file, int(row), field))
        elif len(cells) == 8 and re.fullmatch(r"\d+|—", cells[0]):  # consequential and run findings
            _, file, row, field, value, code, severity, _ = cells
            file = None if file.startswith("(") else file
            expected.add((code, severity, file, int(row) if row else None, field or None))
    return expected


def test_dirty_sample_gives_exactly_the_documented_findings(tmp_path):
    result = CliRunner().invoke(main, ["convert", str(DIRTY), "--to", "sdtm", "-o", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output  # error findings -> exit 1, no traceback
    assert "Traceback" not in result.output
    report = json.loads((tmp_path / "out" / "issues.json").read_text())
    found = {(i["code"], i["severity"], i["file"].rsplit("/", 1)[-1] if i["file"] else None, i["record"], i["field"])
             for i in report["issues"]}
    expected = _readme_findings()
    assert len(expected) == 14  # 8 planted, 4 consequential, 1 from the study configuration (TS DOSU), 1 MedDRA
    assert found == expected


def test_dirty_sample_accounts_for_every_row(tmp_path):
    CliRunner().invoke(main, ["convert", str(DIRTY), "--to", "sdtm", "-o", str(tmp_path / "out")])
    rows = json.loads((tmp_path / "out" / "issues.json").read_text())["rows"]
    by_file = {k.rsplit("/", 1)[-1]: v for k, v in rows.items()}
    assert by_file["lab_results.csv"] == {"read": 252, "rejected": 2, "converted": 250}
    assert by_file["visits.csv"] == {"read": 25, "rejected": 1, "converted": 24}
    assert by_file["adverse_events.csv"] == {"read": 8, "rejected": 1, "converted": 7}
    for counts in by_file.values():
        assert counts["read"] == counts["converted"] + counts.get("rejected", 0)


def test_valid_records_of_a_dirty_subject_still_convert(tmp_path):
    """Subject 103 has the pre-consent dose: its other 10 doses and all its labs convert."""
    from trialbridge.converters.formats.sdtm import read_sdtm_folder
    from trialbridge.converters.core.issues import IssueLog

    CliRunner().invoke(main, ["convert", str(DIRTY), "--to", "sdtm", "-o", str(tmp_path / "out")])
    datasets = read_sdtm_folder(tmp_path / "out", IssueLog())
    ex = [r for r in datasets["EX"].rows if r["USUBJID"].endswith("-103")]
    assert len(ex) == sum(1 for line in (DIRTY / "exposures.csv").read_text().splitlines()[1:]
                          if line.startswith("103,"))
    (dm,) = [r for r in datasets["DM"].rows if r["USUBJID"].endswith("-103")]
    assert dm["RFXSTDTC"] > "2020-06-22"  # the mistyped dose does not become the reference start
