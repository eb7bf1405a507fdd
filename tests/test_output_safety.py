"""Output safety (issue 9, guarantees 4 and 6): the output folder appears whole or not at all,
a killed run leaves the previous output, nothing of anyone else's is overwritten or deleted,
no name from the input becomes a path unchecked, and terminals see control characters escaped.

What a YAML corpus case cannot express is here: a real `trialbridge convert` killed midway,
states a killed run leaves at each step of the swap, and the hub functions themselves.
The cases a command line shows are in tests/corpus/output/."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from trialbridge.cli import main
from trialbridge.converters.core import files
from trialbridge.converters.core.files import MANIFEST, MARKER, OutputStage, output_file, printable
from trialbridge.converters.core.issues import TrialbridgeError
from trialbridge.converters.formats.fhir.io import write_ndjson
from tests.conftest import SAMPLE


def snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".staging." in p.name or ".previous." in p.name
                  or p.name.endswith(".tmp"))


def cli(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


# ----------------------------------------------------------------------------- a killed run


def test_a_killed_run_leaves_the_previous_output_and_the_next_run_clears_its_leftovers(tmp_path):
    out = tmp_path / "out"
    assert cli("convert", SAMPLE, "--to", "sdtm", "-o", out, "-q").exit_code == 0
    before = snapshot(out)
    assert "dm.xpt" in before and MANIFEST in before
    killed_while_writing = False
    for _attempt in range(5):  # killed once a dataset file is being written into the staging folder
        proc = subprocess.Popen([sys.executable, "-m", "trialbridge.cli", "convert", str(SAMPLE), "--to", "sdtm",
                                 "--format", "csv", "-o", str(out), "-q"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while proc.poll() is None:
                staged = [p for s in tmp_path.glob(".out.trialbridge.staging.*") for p in s.iterdir()
                          if p.name != MARKER]
                if staged:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    killed_while_writing = True
                    break
                time.sleep(0.002)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if killed_while_writing:
            break
        # the run finished before it could be caught: put the XPT output back and try again
        assert cli("convert", SAMPLE, "--to", "sdtm", "-o", out, "-q").exit_code == 0
        before = snapshot(out)
    assert killed_while_writing, "the conversion always finished before it could be killed"
    # the previous complete output is there, byte for byte; the killed run's staging folder too
    assert snapshot(out) == before
    assert len(leftovers(tmp_path)) == 1
    # the next run removes it, says so, and publishes its own output whole
    result = cli("convert", SAMPLE, "--to", "sdtm", "--format", "csv", "-o", out, "-q")
    assert result.exit_code == 0, result.output
    assert leftovers(tmp_path) == [] and leftovers(out) == []
    names = set(snapshot(out))
    assert "dm.csv" in names and "dm.xpt" not in names
    issues = json.loads((out / "issues.json").read_text())["issues"]
    removed = [i for i in issues if i["code"] == "OUT-STAGING-REMOVED"]
    assert [(i["severity"], i["value"]) for i in removed] == [("info", 1)]


def _complete_output(folder: Path, content: bytes = b"old\n") -> None:
    """A folder as a finished run leaves it: one file and the manifest listing it."""
    folder.mkdir()
    (folder / "dm.csv").write_bytes(content)
    (folder / MANIFEST).write_text(json.dumps({"files": {"dm.csv": {
        "size": len(content), "sha256": hashlib.sha256(content).hexdigest()}}}))


def test_killed_after_the_manifest_before_the_swap_leaves_a_staging_folder_the_next_run_removes(tmp_path):
    out = tmp_path / "out"
    _complete_output(out)
    _complete_output(tmp_path / ".out.trialbridge.staging.k1ll3d", b"new\n")  # marker gone, manifest written
    with OutputStage(out) as stage:
        assert stage.cleaned == 1
        output_file(stage.path, "dm.csv").write_bytes(b"newest\n")
        stage.commit()
    assert (out / "dm.csv").read_bytes() == b"newest\n"
    assert leftovers(tmp_path) == []


def test_killed_between_the_two_renames_of_a_system_without_exchange_gets_its_output_back(tmp_path):
    out = tmp_path / "out"
    _complete_output(tmp_path / ".out.trialbridge.previous.k1ll3d")  # moved aside; the new one never came
    with OutputStage(out) as stage:
        assert stage.cleaned == 1 and (out / "dm.csv").read_bytes() == b"old\n"
        stage.abort()
    assert (out / "dm.csv").read_bytes() == b"old\n" and leftovers(tmp_path) == []


def test_a_staging_folder_of_a_running_process_is_left_alone(tmp_path):
    out = tmp_path / "out"
    first = OutputStage(out)  # holds its lock, as a run still writing does
    try:
        second = OutputStage(out)
        assert second.cleaned == 0 and first.path.is_dir()
        second.abort()
    finally:
        first.abort()
    assert leftovers(tmp_path) == []


def test_a_folder_named_like_ours_without_our_marker_or_manifest_is_not_deleted(tmp_path):
    theirs = tmp_path / ".out.trialbridge.staging.mine"
    theirs.mkdir()
    (theirs / "thesis.txt").write_text("chapter 1")
    with OutputStage(tmp_path / "out") as stage:
        assert stage.cleaned == 0
        stage.abort()
    assert (theirs / "thesis.txt").read_text() == "chapter 1"


def test_a_failed_run_publishes_nothing_and_leaves_no_staging_folder(tmp_path):
    out = tmp_path / "out"
    _complete_output(out)
    with pytest.raises(RuntimeError):
        with OutputStage(out) as stage:
            output_file(stage.path, "dm.csv").write_bytes(b"half")
            raise RuntimeError("a failure midway")
    assert (out / "dm.csv").read_bytes() == b"old\n" and leftovers(tmp_path) == []


@pytest.mark.parametrize("exchange", [True, False], ids=["atomic-exchange", "two-renames"])
def test_commit_replaces_a_previous_output_of_ours_whole(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(files, "_exchange", lambda a, b: False)
    out = tmp_path / "out"
    _complete_output(out)
    (out / "lb.csv").write_bytes(b"x")  # not in its manifest: someone else's
    with pytest.raises(TrialbridgeError, match=r"holds files trialbridge did not write \(lb.csv\)"):
        OutputStage(out)
    (out / "lb.csv").unlink()
    with OutputStage(out) as stage:
        output_file(stage.path, "ae.csv").write_bytes(b"ae\n")
        stage.commit()
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "ae.csv"]
    listed = json.loads((out / MANIFEST).read_text())["files"]
    assert listed == {"ae.csv": {"sha256": hashlib.sha256(b"ae\n").hexdigest(), "size": 3}}
    assert leftovers(tmp_path) == []


def test_the_manifest_is_the_same_bytes_for_the_same_input(tmp_path):
    for name in ("a", "b"):
        assert cli("convert", SAMPLE, "--to", "records", "-o", tmp_path / name, "-q").exit_code == 0
    assert (tmp_path / "a" / MANIFEST).read_bytes() == (tmp_path / "b" / MANIFEST).read_bytes()
    assert len(json.loads((tmp_path / "a" / MANIFEST).read_text())["files"]) == 9  # 8 record files, issues.json


def test_an_output_folder_given_through_a_symlink_is_written_where_it_points(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    assert cli("convert", SAMPLE, "--to", "records", "-o", tmp_path / "link", "-q").exit_code == 0
    assert (tmp_path / "link").is_symlink() and (real / "subjects.csv").is_file()
    assert leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- names and paths


@pytest.mark.parametrize("name", ["../x.xpt", "a/b.csv", "..", ".hidden", "", "con.xpt", "NUL", "x\x1b[2J.csv",
                                  "x y.csv", "dm.xpt/", "C:x.csv", "a\\b.csv"])
def test_a_file_name_that_is_not_a_plain_name_is_refused(tmp_path, name):
    with pytest.raises(TrialbridgeError, match="not a safe file name"):
        output_file(tmp_path, name)


def test_a_file_name_that_resolves_outside_the_folder_through_a_symlink_is_refused(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "dm.xpt").symlink_to(tmp_path / "elsewhere.xpt")
    with pytest.raises(TrialbridgeError, match="does not resolve inside"):
        output_file(folder, "dm.xpt")
    assert output_file(folder, "lb.xpt") == folder.resolve() / "lb.xpt"


def test_a_resource_type_that_is_a_path_is_never_written(tmp_path):
    out = tmp_path / "a" / "b"
    with pytest.raises(TrialbridgeError, match="not a safe file name"):
        write_ndjson(iter([{"resourceType": "Patient", "id": "1"}, {"resourceType": "../../Evil", "id": "2"}]), out)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["a", "a/b"]


def test_a_dataset_name_from_input_is_checked_before_it_becomes_a_file_name():
    from trialbridge.converters.formats.sdtm import file_name

    assert file_name("SUPPAE", "xpt") == "suppae.xpt"
    for bad in ("../X", "A B", "AE\x00", "A" * 65, "CON"):
        with pytest.raises(TrialbridgeError, match="not a safe dataset name"):
            file_name(bad, "xpt")


def test_terminal_text_has_control_characters_escaped():
    assert printable("a\x1b[31mb\x07c\nd\te\x7f\u202ef") == "a\\x1b[31mb\\x07c\\nd\\te\\x7f\\u202ef"
    assert printable("Ünïcode ok — 1.30") == "Ünïcode ok — 1.30"


def test_the_permissions_of_an_existing_output_folder_are_kept(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o750)
    assert cli("convert", SAMPLE, "--to", "records", "-o", out, "-q").exit_code == 0
    assert out.stat().st_mode & 0o7777 == 0o750 and (out / "subjects.csv").is_file()


def test_validate_finds_a_fresh_output_as_its_manifest_lists_it_and_names_an_edit(tmp_path):
    from trialbridge.converters.pipeline import validate

    out = tmp_path / "out"
    assert cli("convert", SAMPLE, "--to", "sdtm", "-o", out, "-q").exit_code == 0

    def mismatches():
        return [(Path(i.file).name, i.value) for i in validate(out).log.issues if i.code == "OUT-MANIFEST-MISMATCH"]

    assert mismatches() == []
    with open(out / "ae.xpt", "r+b") as fh:  # one byte of the file changed, same size
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 1]))
    assert mismatches() == [("ae.xpt", "changed")]
