"""The commands a user types, run through click's CliRunner on real files, read back
with the real readers (pyreadstat, pandas.read_sas, jsonschema with the CDISC schema)."""
from __future__ import annotations

import json

import jsonschema
import pandas as pd
import pyreadstat
import pytest
from click.testing import CliRunner

from trialbridge.cli import main
from trialbridge.converters.formats.sdtm import dataset_json_schema
from tests.conftest import SAMPLE, reference


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def sdtm_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "sdtm"
    result = run("convert", SAMPLE, "--to", "sdtm", "-o", out, "--format", "xpt,dataset-json,csv")
    assert result.exit_code == 0, result.output
    return out


def test_convert_writes_one_file_per_dataset_in_lower_case(sdtm_out):
    names = {p.name for p in sdtm_out.iterdir()}
    for domain in ("dm", "ex", "lb", "cp", "ae", "ds", "sv", "se", "ta", "te", "tv", "ti", "ts", "vs",
                   "suppdm", "suppae", "suppex"):
        assert {f"{domain}.xpt", f"{domain}.json", f"{domain}.csv"} <= names, domain
    assert "issues.json" in names and "define.xml" in names
    report = json.loads((sdtm_out / "issues.json").read_text())
    assert report["summary"]["error"] == 0 and report["summary"]["warning"] == 1
    # the one warning: the sample's adverse events carry no MedDRA codes and no --meddra was given
    assert [i["code"] for i in report["issues"] if i["severity"] == "warning"] == ["MEDDRA-NOT-CODED"]


def test_xpt_meets_fda_rules_read_with_pyreadstat_and_pandas(sdtm_out):
    for path in sorted(sdtm_out.glob("*.xpt")):
        df, meta = pyreadstat.read_xport(str(path))
        assert meta.table_name == path.stem.upper()
        assert len(meta.table_name) <= 8 and len(meta.file_label or "") <= 40
        assert all(len(c) <= 8 for c in df.columns)
        assert all(len(lbl or "") <= 40 for lbl in meta.column_labels)
        for col, width in meta.variable_storage_width.items():
            if meta.readstat_variable_types[col] == "string":
                longest = max((len(str(v).encode()) for v in df[col]), default=0)
                assert width <= 200 and width == max(longest, 1), (path.name, col, width, longest)
    dm = pd.read_sas(sdtm_out / "dm.xpt", format="xport", encoding="ascii")
    assert len(dm) == 59 and dm["USUBJID"].is_unique


def test_dataset_json_valid_against_cdisc_schema(sdtm_out):
    schema = dataset_json_schema()
    for path in sorted(sdtm_out.glob("*.json")):
        if path.name == "issues.json":
            continue
        obj = json.loads(path.read_text())
        jsonschema.validate(obj, schema)
        assert obj["datasetJSONVersion"].startswith("1.1")
        assert obj["records"] == len(obj["rows"])
    lb = json.loads((sdtm_out / "lb.json").read_text())
    assert lb["name"] == "LB" and lb["records"] == 2827


def test_sdtm_back_to_records_and_validate(sdtm_out, tmp_path):
    result = run("convert", sdtm_out, "--to", "records", "-o", tmp_path / "records")
    assert result.exit_code == 0, result.output
    subjects = (tmp_path / "records" / "subjects.csv").read_text().splitlines()
    assert len(subjects) == 60  # header + 59
    assert "MRN" not in (tmp_path / "records" / "subjects.csv").read_text()
    result = run("validate", sdtm_out, "--report", tmp_path / "report.json")
    assert result.exit_code == 0, result.output
    assert "0 error(s), 0 warning(s)" in result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["define"] == "define.xml valid against its XSD; 0 finding(s) from the define.xml checks"


def test_validate_reports_errors_with_exit_1(sdtm_out, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    dm = pd.read_csv(sdtm_out / "dm.csv", dtype=str, keep_default_na=False)
    dm.loc[0, "SEX"] = "X"  # not in the non-extensible SEX codelist
    dm.to_csv(broken / "dm.csv", index=False)
    result = run("validate", broken, "--report", tmp_path / "report.json")
    assert result.exit_code == 1, result.output
    issues = json.loads((tmp_path / "report.json").read_text())["issues"]
    assert any(i["code"] == "SDTM-CT-INVALID" and i["field"] == "SEX" and i["record"] == 1 for i in issues)


@pytest.mark.parametrize("args, message", [
    (["convert", "no/such/folder", "--to", "sdtm", "-o", "x"], "no such file or folder"),
    (["convert", str(SAMPLE), "--to", "sdtm", "-o", "x", "--format", "sas7bdat"], "unknown format"),
    (["convert", str(SAMPLE), "--to", "sdtm", "-o", "x", "--study", "NCT00000000"], "unknown study"),
    (["validate", str(SAMPLE)], "validate takes an SDTM folder"),
])
def test_usage_errors_exit_2_with_one_line(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_bad_study_config_is_a_clear_message(tmp_path):
    bad = tmp_path / "study.yaml"
    bad.write_text("study_id: X\ntitle: t\n")
    result = run("convert", SAMPLE, "--to", "sdtm", "-o", tmp_path / "o", "--study", bad)
    assert result.exit_code == 2
    assert "study configuration invalid" in result.output


@pytest.mark.parametrize("folder", ["cdiscpilot01", "phuse-tdf-sdtm-v1.0"])
def test_pilot_sdtm_folders_convert_and_validate_without_traceback(folder, tmp_path):
    source = reference("sdtm", folder)
    result = run("validate", source, "--report", tmp_path / "report.json")
    assert result.exit_code == 1, result.output  # the pilot has real findings (see docs/real-world.md)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["summary"]["error"] > 0
    result = run("convert", source, "--to", "records", "-o", tmp_path / "records")
    assert result.exit_code in (0, 1), result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    subjects = (tmp_path / "records" / "subjects.csv").read_text().splitlines()
    assert len(subjects) > 100  # the pilot has 306 subjects in DM
    result = run("convert", source, "--to", "sdtm", "-o", tmp_path / "sdtm", "--format", "dataset-json")
    assert result.exit_code in (0, 1) and "internal error" not in result.output, result.output
    assert (tmp_path / "sdtm" / "dm.json").exists()


def test_fhir_r5_round_trip_through_the_cli(tmp_path):
    """records -> R5 NDJSON -> SDTM equals records -> SDTM (detected by shape and when named)."""
    assert run("convert", SAMPLE, "--to", "fhir", "-o", tmp_path / "r5", "--fhir-version", "R5").exit_code == 0
    dose = json.loads((tmp_path / "r5" / "MedicationAdministration.ndjson").open().readline())
    assert "occurencePeriod" in dose or "occurenceDateTime" in dose  # R5 spelling
    assert run("convert", SAMPLE, "--to", "sdtm", "-o", tmp_path / "direct", "--format", "csv").exit_code == 0
    for mode in ("auto", "R5"):
        out = tmp_path / f"via-{mode}"
        result = run("convert", tmp_path / "r5", "--to", "sdtm", "-o", out, "--format", "csv",
                     "--input-fhir-version", mode)
        assert result.exit_code == 0, result.output
        for name in ("dm.csv", "ex.csv", "lb.csv", "cp.csv", "ae.csv", "sv.csv", "ds.csv", "se.csv"):
            assert (out / name).read_bytes() == (tmp_path / "direct" / name).read_bytes(), (mode, name)


def test_dataset_json_msg_example_validates_with_its_define(tmp_path):
    folder = reference("dataset-json", "examples", "sdtm")
    result = run("validate", folder, "--report", tmp_path / "report.json")
    assert result.exit_code == 1 and "internal error" not in result.output, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["define"].startswith("define.xml valid against its XSD")
    assert report["summary"]["error"] > 0


def test_version_matches_pyproject():
    import tomllib

    from trialbridge.converters import __version__
    from tests.conftest import ROOT

    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"] == __version__


def test_subjects_only_folder_converts_with_valid_define(tmp_path):
    """A site that has sent only its subject list: DM, VS and trial design, and a define.xml
    that is still valid (no empty CodeList for variables without values)."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "subjects.csv").write_bytes((SAMPLE / "subjects.csv").read_bytes())
    result = run("convert", folder, "--to", "sdtm", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "issues.json").read_text())
    assert report["summary"]["error"] == 0
    assert run("validate", tmp_path / "out").exit_code == 0


def test_a_new_run_replaces_the_whole_output_of_an_earlier_one(tmp_path):
    """The output folder is published whole: an earlier run's CSV files (ours, by the
    manifest) are gone after an XPT run, so nothing stale is read with the new output."""
    out = tmp_path / "out"
    assert run("convert", SAMPLE, "--to", "sdtm", "-o", out, "--format", "csv").exit_code == 0
    assert (out / "dm.csv").is_file()
    assert run("convert", SAMPLE, "--to", "sdtm", "-o", out, "--format", "xpt").exit_code == 0
    names = sorted(p.name for p in out.iterdir())
    assert not [n for n in names if n.endswith(".csv")]
    assert names[:2] == [".trialbridge-manifest", "ae.xpt"] and "define.xml" in names and "issues.json" in names
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folder, no previous output left


def test_ci_runs_the_readme_test_command():
    from tests.conftest import ROOT

    readme = (ROOT / "README.md").read_text().split("```")[1].strip().splitlines()
    assert len(readme) == 2  # one command to set up and convert, one to set up and test
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == readme[1]
