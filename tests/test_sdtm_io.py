"""Round trips of SDTM datasets through XPT v5, Dataset-JSON v1.1 and CSV, checked with the real
third-party readers, plus FDA XPT rules and reading the public pilot studies."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pandas as pd
import pyreadstat
import pytest

from trialbridge.converters.core.datasets import Dataset
from trialbridge.converters.core.issues import IssueLog
from trialbridge.converters.formats.sdtm import (
    format_number,
    read_dataset,
    read_sdtm_folder,
    to_ascii,
    write_csv,
    write_dataset_json,
    write_datasets,
    write_xpt,
)
from trialbridge.converters.core.sdtm_spec import make_dataset

REPO = Path(__file__).resolve().parents[1]
from tests.conftest import REFERENCE  # --reference / TRIALBRIDGE_REFERENCE / ../shared/reference
DSJ_SCHEMA = REPO / "schemas" / "dataset-json" / "dataset.schema.json"


def lb_dataset() -> Dataset:
    rows = [
        {"STUDYID": "NCT04387942", "DOMAIN": "LB", "USUBJID": "NCT04387942-001", "LBSEQ": 1,
         "LBTESTCD": "CD4", "LBTEST": "CD4 Cells", "LBORRES": "1.30", "LBORRESU": "10^9/L",
         "LBSTRESC": "1.3", "LBSTRESN": 1.3, "LBSTRESU": "10^9/L", "LBSPEC": "BLOOD",
         "VISITNUM": 1, "LBDTC": "2020-06-01T08:30", "LBDY": 1},
        {"STUDYID": "NCT04387942", "DOMAIN": "LB", "USUBJID": "NCT04387942-001", "LBSEQ": 2,
         "LBTESTCD": "IGE", "LBTEST": "Immunoglobulin E", "LBORRES": "", "LBSTAT": "NOT DONE",
         "LBREASND": "Sample hemolysed", "LBSPEC": "SERUM", "VISITNUM": 2.5,
         "LBDTC": "2020-06-08", "LBDY": None, "LBSTRESN": 0.1 + 0.2},
        {"STUDYID": "NCT04387942", "DOMAIN": "LB", "USUBJID": "NCT04387942-002", "LBSEQ": 1,
         "LBTESTCD": "CD8", "LBTEST": "CD8 Cells", "LBORRES": "123456789.125", "LBSTRESN": 123456789.125,
         "LBSPEC": "BLOOD", "VISITNUM": 1, "LBDTC": "2020-06", "LBDY": -3},
    ]
    return make_dataset("LB", rows)


def normalised(ds: Dataset) -> list[dict]:
    """Rows as the contract defines them after a read: Char str, Num float/None."""
    out = []
    for row in ds.rows:
        out.append({v.name: (None if row[v.name] is None else float(row[v.name])) if v.type == "Num"
                    else row[v.name] for v in ds.variables})
    return out


@pytest.mark.parametrize("fmt", ["xpt", "dataset-json", "csv"])
def test_round_trip_is_exact(tmp_path, fmt):
    ds = lb_dataset()
    log = IssueLog()
    [path] = write_datasets([ds], tmp_path, [fmt], log, study_oid="NCT04387942")
    assert path.name == {"xpt": "lb.xpt", "dataset-json": "lb.json", "csv": "lb.csv"}[fmt]
    back = read_dataset(path, log)
    assert back is not None
    assert back.name == "LB"
    assert back.names == ds.names
    assert [v.type for v in back.variables] == [v.type for v in ds.variables]
    assert back.rows == normalised(ds)
    for row in back.rows:
        for v in back.variables:
            assert isinstance(row[v.name], str) if v.type == "Char" else (
                row[v.name] is None or isinstance(row[v.name], float))
    assert not log.issues, log.issues


def test_xpt_readable_by_pyreadstat_and_pandas(tmp_path):
    ds = lb_dataset()
    log = IssueLog()
    assert write_xpt(ds, tmp_path / "lb.xpt", log)
    df, meta = pyreadstat.read_xport(str(tmp_path / "lb.xpt"))
    assert meta.table_name == "LB"
    assert meta.file_label == "Laboratory Test Results"
    assert meta.column_names == ds.names
    assert meta.column_labels[ds.names.index("USUBJID")] == "Unique Subject Identifier"
    # Char storage width is the longest value, not 200
    assert meta.variable_storage_width["USUBJID"] == len("NCT04387942-001")
    assert meta.variable_storage_width["LBORRES"] == len("123456789.125")
    assert meta.readstat_variable_types["LBSTRESN"] == "double"
    assert df["LBSTRESN"].tolist()[:1] == [1.3]
    sas = pd.read_sas(str(tmp_path / "lb.xpt"), format="xport", encoding="ascii")
    assert list(sas.columns) == ds.names
    assert sas["LBTESTCD"].tolist() == ["CD4", "IGE", "CD8"]
    assert sas["LBSTRESN"].tolist()[2] == 123456789.125


def test_xpt_non_ascii_is_transliterated_with_warning(tmp_path):
    ds = make_dataset("DM", [{"STUDYID": "S1", "DOMAIN": "DM", "USUBJID": "S1-001", "SUBJID": "001",
                              "SITEID": "01", "SEX": "F", "COUNTRY": "CHN",
                              "INVNAM": "Zoë Müller 李"}])
    log = IssueLog()
    assert write_xpt(ds, tmp_path / "dm.xpt", log)
    [issue] = log.issues
    assert (issue.severity, issue.code, issue.record, issue.field) == ("warning", "XPT-NONASCII", 1, "INVNAM")
    assert issue.value == "Zoë Müller 李" and issue.file == "dm.xpt"
    df, _ = pyreadstat.read_xport(str(tmp_path / "dm.xpt"))
    assert df["INVNAM"].tolist() == ["Zoe Muller ?"]
    assert to_ascii("Ångström") == "Angstrom"
    # the other formats keep the original text
    write_dataset_json(ds, tmp_path / "dm.json", study_oid="S1")
    assert read_dataset(tmp_path / "dm.json", log).rows[0]["INVNAM"] == "Zoë Müller 李"


def test_xpt_value_over_200_bytes_is_error_and_truncated(tmp_path):
    long_term = "A" * 250
    ds = make_dataset("AE", [{"STUDYID": "S1", "DOMAIN": "AE", "USUBJID": "S1-001", "AESEQ": 1,
                              "AETERM": long_term, "AEDECOD": "Rash"}])
    log = IssueLog()
    assert write_xpt(ds, tmp_path / "ae.xpt", log)
    [issue] = log.issues
    assert (issue.severity, issue.code, issue.field, issue.record) == ("error", "XPT-LENGTH-200", "AETERM", 1)
    assert issue.usubjid == "S1-001"
    df, meta = pyreadstat.read_xport(str(tmp_path / "ae.xpt"))
    assert df["AETERM"][0] == "A" * 200
    assert meta.variable_storage_width["AETERM"] == 200
    write_csv(ds, tmp_path / "ae.csv")  # CSV keeps the full value
    assert read_dataset(tmp_path / "ae.csv", IssueLog()).rows[0]["AETERM"] == long_term


def test_dataset_json_valid_and_deterministic(tmp_path):
    ds = lb_dataset()
    write_dataset_json(ds, tmp_path / "a.json", study_oid="NCT04387942")
    write_dataset_json(ds, tmp_path / "b.json", study_oid="NCT04387942")
    raw = (tmp_path / "a.json").read_bytes()
    assert raw == (tmp_path / "b.json").read_bytes()
    obj = json.loads(raw)
    jsonschema.Draft201909Validator(json.loads(DSJ_SCHEMA.read_text())).validate(obj)
    assert obj["datasetJSONCreationDateTime"] == "2026-01-01T00:00:00Z"  # SOURCE_DATE_EPOCH of conftest
    assert obj["records"] == 3 and obj["itemGroupOID"] == "IG.LB"
    cols = {c["name"]: c for c in obj["columns"]}
    assert cols["LBTESTCD"]["itemOID"] == "IT.LB.LBTESTCD"
    assert cols["USUBJID"]["keySequence"] == 2 and cols["LBTESTCD"]["keySequence"] == 3
    assert cols["LBSEQ"]["dataType"] == "integer"
    assert cols["LBSTRESN"]["dataType"] == "double"
    assert cols["VISITNUM"]["dataType"] == "double"  # 2.5 present
    assert cols["LBORRES"]["length"] == len("123456789.125")
    assert cols["LBREASND"]["length"] == len("Sample hemolysed")
    assert "length" not in cols["LBSEQ"]
    created = tmp_path / "c.json"
    write_dataset_json(ds, created, study_oid="X", created="2026-01-02T03:04:05")
    assert json.loads(created.read_bytes())["datasetJSONCreationDateTime"] == "2026-01-02T03:04:05"


def test_invalid_dataset_json_is_reported_not_raised(tmp_path):
    bad = tmp_path / "ae.json"
    bad.write_text(json.dumps({"name": "AE", "columns": [
        {"itemOID": "IT.AE.USUBJID", "name": "USUBJID", "label": "Unique Subject Identifier",
         "dataType": "string"}], "rows": [["S1-001"]]}))
    log = IssueLog()
    ds = read_dataset(bad, log)
    assert ds is not None and ds.rows == [{"USUBJID": "S1-001"}]
    assert {i.code for i in log.issues} == {"DSJ-SCHEMA"}
    broken = tmp_path / "dm.json"
    broken.write_text("{not json")
    log = IssueLog()
    assert read_dataset(broken, log) is None
    assert [i.code for i in log.issues] == ["IO-READ"]


def test_csv_numbers_shortest_form(tmp_path):
    ds = lb_dataset()
    write_csv(ds, tmp_path / "lb.csv")
    lines = (tmp_path / "lb.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0].split(",") == ds.names
    first = dict(zip(ds.names, lines[1].split(",")))
    assert first["LBSEQ"] == "1" and first["VISITNUM"] == "1" and first["LBSTRESN"] == "1.3"
    assert dict(zip(ds.names, lines[2].split(",")))["LBSTRESN"] == repr(0.1 + 0.2)
    assert format_number(2.0) == "2" and format_number(None) == "" and format_number(1e-7) == "1e-07"
    # a non-number in a Num column is an issue, not an exception
    (tmp_path / "lb.csv").write_text("STUDYID,LBSEQ\nS1,one\n", encoding="utf-8")
    log = IssueLog()
    back = read_dataset(tmp_path / "lb.csv", log)
    assert back.rows == [{"STUDYID": "S1", "LBSEQ": None}]
    assert [i.code for i in log.issues] == ["CSV-NUM"]


def test_read_folder_prefers_xpt(tmp_path):
    ds = lb_dataset()
    log = IssueLog()
    write_datasets({"LB": ds}, tmp_path, ["csv", "dataset-json", "xpt"], log, study_oid="S")
    (tmp_path / "report.json").write_text("{\"issues\": []}")
    out = read_sdtm_folder(tmp_path, log)
    assert list(out) == ["LB"]
    assert out["LB"].source.endswith("lb.xpt")
    codes = [i.code for i in log.issues]
    assert codes.count("SDTM-DUPLICATE-FORMAT") == 1 and "SDTM-NOT-DATASET" in codes


@pytest.mark.parametrize("study", ["cdiscpilot01", "phuse-tdf-sdtm-v1.0"])
def test_read_public_pilot_xpts(study):
    folder = REFERENCE / "sdtm" / study
    if not folder.is_dir():
        pytest.skip(f"reference material {folder} is not on this machine (give --reference DIR or TRIALBRIDGE_REFERENCE)")
    log = IssueLog()
    files = sorted(folder.glob("*.xpt"))
    assert files
    for path in files:
        ds = read_dataset(path, log)
        assert ds is not None, path
        assert ds.rows and ds.variables
        df, _ = pyreadstat.read_xport(str(path), encoding="cp1252" if path.name == "ts.xpt" else None)
        assert len(ds.rows) == len(df)
    assert not [i for i in log.issues if i.severity == "error"]
    folder_read = read_sdtm_folder(folder, IssueLog())
    assert "DM" in folder_read and folder_read["DM"].var("USUBJID").label == "Unique Subject Identifier"
    if study == "cdiscpilot01":
        assert any(i.code == "XPT-ENCODING" for i in log.issues)  # ts.xpt is cp1252
