"""The command line behaves like the tools people know (issue 12, part 3): -h and --help,
--version, examples in every command's help, the help on stdout with exit 0 when nothing is
asked, no colour with NO_COLOR, one line saying what to do next, --output-format json."""
from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from trialbridge.cli import main

DIRTY = Path(__file__).resolve().parents[1] / "samples" / "nct04387942-dirty"
COMMANDS = [[], ["convert"], ["validate"], ["report"], ["init-study"], ["sync"], ["sync", "push"], ["sync", "pull"],
            ["sync", "export"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "trialbridge")
def test_every_command_has_examples_and_short_help(command):
    long = CliRunner().invoke(main, [*command, "--help"])
    short = CliRunner().invoke(main, [*command, "-h"])
    assert long.exit_code == 0 and short.exit_code == 0 and long.output == short.output
    assert "Example" in long.output and "trialbridge " in long.output.split("Example", 1)[1]


def test_version_and_bare_command():
    from importlib.metadata import version

    got = CliRunner().invoke(main, ["--version"])
    assert got.exit_code == 0 and got.output == f"trialbridge {version('trialbridge')}\n"
    bare = CliRunner().invoke(main, [], prog_name="trialbridge")
    assert bare.exit_code == 0 and bare.stdout.startswith("Usage: trialbridge") and bare.stderr == ""
    assert "Exit codes: 0 ok; 1 findings at or above --fail-on" in bare.stdout


def test_no_colour_with_no_color(tmp_path):
    """An error line is red on a terminal (click colours it: color=True stands for one), and
    plain when NO_COLOR is set, whatever the terminal."""
    red = CliRunner().invoke(main, ["convert", str(tmp_path / "missing"), "--to", "sdtm", "-o", str(tmp_path / "o")],
                             color=True)
    assert red.exit_code == 2 and "\x1b[31m" in red.stderr
    plain = CliRunner().invoke(main, ["convert", str(tmp_path / "missing"), "--to", "sdtm", "-o", str(tmp_path / "o")],
                               color=True, env={"NO_COLOR": "1"})
    assert plain.exit_code == 2 and "\x1b[" not in plain.stderr and "no such file or folder" in plain.stderr


def test_next_step_and_json_output(tmp_path):
    out = tmp_path / "sdtm"
    done = CliRunner().invoke(main, ["convert", str(DIRTY), "--to", "sdtm", "-o", str(out), "--quiet"])
    assert done.exit_code == 1  # the dirty sample's planted errors
    suggested = f"trialbridge validate {out} --report {tmp_path / 'sdtm-report.html'}"
    assert done.stdout.splitlines()[-1] == f"next: {suggested} (and fix the errors above first)"
    # the command it suggests works as given (a report inside the folder would be refused)
    ran = CliRunner().invoke(main, suggested.split()[1:])
    assert ran.exit_code == 0 and (tmp_path / "sdtm-report.html").is_file()
    checked = CliRunner().invoke(main, ["validate", str(out), "--output-format", "json"])
    assert checked.exit_code == 0  # the written SDTM has one warning (the planted unit mq/dL) and no error
    doc = orjson.loads(checked.stdout)
    assert doc["summary"]["error"] == 0 and doc["summary"]["warning"] == 1 and doc["failed"] is False
    assert {r["status"] for r in doc["rules_run"]} <= {"ran", "issues", "skipped"} and len(doc["rules_run"]) == 27
    text = CliRunner().invoke(main, ["validate", str(out), "--fail-on", "warning"])
    assert text.exit_code == 1 and text.stdout.splitlines()[-1].startswith("next: fix the findings at or above warning")


def test_reference_data_can_be_pointed_at_and_its_absence_is_said(tmp_path):
    """pytest --reference DIR (or TRIALBRIDGE_REFERENCE) names the reference data folder; when
    it is absent the summary says how many tests did not run and why (a pytest run of its own)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--reference",
                           str(tmp_path / "absent"), "tests/test_validation_calibration.py"], cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:]
    assert f"5 test(s) did not run: the reference data folder {tmp_path / 'absent'} is not on this machine" \
        in done.stdout
