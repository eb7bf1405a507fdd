"""Streaming SDTM writers and readers (converters/formats/sdtm): our own XPT v5 writer checked
byte for byte against the ReadStat-based writer it replaces and value for value with two
independent readers (pyreadstat, pandas); Dataset-JSON byte-identical to the whole-object
writer it replaces and valid against the v1.1 schema; NDJSON; atomic output; chunked reading."""
from __future__ import annotations

import json
import math
import random
import re
import struct
from pathlib import Path

import jsonschema
import numpy as np
import orjson
import pandas as pd
import pyreadstat
import pytest

from trialbridge.converters.core.clock import xpt_stamp
from trialbridge.converters.core.datasets import Dataset, Variable
from trialbridge.converters.core.issues import IssueLog, TrialbridgeError
from trialbridge.converters.core.sdtm_spec import make_dataset
from trialbridge.converters.formats.sdtm import (
    ColumnStats, _char, _missing_num, dataset_json_header, dataset_meta, ibm_from_ieee, ieee_from_ibm,
    iter_dataset, iter_xpt, open_dataset_writers, read_dataset, to_ascii, write_dataset_json, write_datasets,
    write_xpt)
from trialbridge.converters.formats.sdtm.values import INTEGER_NAME, _version

from tests.conftest import reference

REPO = Path(__file__).resolve().parents[1]
DSJ_SCHEMA = json.loads((REPO / "schemas" / "dataset-json" / "dataset.schema.json").read_text())
PANDAS_ZERO = 16.0 ** -65  # pandas reads an IBM zero as 16**-65 (pandas-dev/pandas#50670, open)


# ------------------------------------------------------------------ the writers being replaced
def readstat_xpt(ds: Dataset, path: Path) -> bytes:
    """What trialbridge wrote before its own writer: pyreadstat.write_xport of a DataFrame,
    created/modified stamps fixed afterwards (values already ASCII and at most 200 bytes)."""
    columns = {}
    for var in ds.variables:
        if var.type == "Num":
            columns[var.name] = pd.Series([None if _missing_num(r.get(var.name)) else float(r.get(var.name))
                                           for r in ds.rows], dtype="float64")
        else:
            columns[var.name] = pd.Series([to_ascii(_char(r.get(var.name)))[:200] for r in ds.rows], dtype="object")
    pyreadstat.write_xport(pd.DataFrame(columns, columns=ds.names), str(path), file_label=to_ascii(ds.label)[:40],
                           column_labels=[to_ascii(v.label)[:40] for v in ds.variables], table_name=ds.name,
                           file_format_version=5)
    data = path.read_bytes()
    end = data.find(b"HEADER RECORD*******OBS     HEADER RECORD")
    return re.sub(rb"\d\d[A-Z]{3}\d\d:\d\d:\d\d:\d\d", xpt_stamp(), data[:end]) + data[end:]


def old_dataset_json_obj(ds: Dataset, study_oid: str) -> dict:
    """The whole-object Dataset-JSON builder trialbridge used before streaming (verbatim logic)."""
    key_seq = {k: n for n, k in enumerate(ds.keys, start=1)}
    columns, kinds = [], []
    for var in ds.variables:
        col = {"itemOID": f"IT.{ds.name}.{var.name}", "name": var.name, "label": var.label}
        if var.type == "Num":
            integral = INTEGER_NAME.search(var.name) and all(
                _missing_num(r.get(var.name)) or float(r.get(var.name)).is_integer() for r in ds.rows)
            col["dataType"] = "integer" if integral else "double"
            kinds.append(col["dataType"])
        else:
            col["dataType"] = "string"
            col["length"] = max([1] + [len(_char(r.get(var.name)).encode("utf-8")) for r in ds.rows])
            kinds.append("string")
        if var.name in key_seq:
            col["keySequence"] = key_seq[var.name]
        columns.append(col)
    rows = []
    for row in ds.rows:
        out = []
        for name, kind in zip(ds.names, kinds):
            v = row.get(name)
            out.append(_char(v) if kind == "string" else None if _missing_num(v) else
                       int(float(v)) if kind == "integer" else float(v))
        rows.append(out)
    return {"datasetJSONCreationDateTime": "2026-01-01T00:00:00Z", "datasetJSONVersion": "1.1.0",
            "fileOID": f"{study_oid}/{ds.name}", "originator": "trialbridge",
            "sourceSystem": {"name": "trialbridge", "version": _version()}, "studyOID": study_oid,
            "metaDataVersionOID": "MDV.TRIALBRIDGE", "metaDataRef": "define.xml", "itemGroupOID": f"IG.{ds.name}",
            "records": len(rows), "name": ds.name, "label": ds.label, "columns": columns, "rows": rows}


def synthetic_lb(n: int, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    tests = [("ALT", "Alanine Aminotransferase", "U/L"), ("CD4", "CD4 Cells", "10^9/L"),
             ("IL6", "Interleukin 6", "pg/mL"), ("HIV", "HIV Antibody", "")]
    rows = []
    for i in range(n):
        code, test, unit = tests[i % len(tests)]
        value = rng.choice([rng.uniform(0, 500), rng.randint(0, 90), 1e-5 * rng.random()])
        result = "NEGATIVE" if code == "HIV" else format(value, ".6g")
        rows.append({"STUDYID": "S1", "DOMAIN": "LB", "USUBJID": f"S1-{i // 40:04d}", "LBSEQ": i % 40 + 1,
                     "LBTESTCD": code, "LBTEST": test, "LBORRES": result, "LBORRESU": unit,
                     "LBSTRESC": result, "LBSTRESN": None if code == "HIV" else float(result),
                     "LBSTRESU": unit, "VISITNUM": (i % 7) + (0.5 if i % 11 == 0 else 0),
                     "LBDTC": f"2020-{1 + i % 12:02d}-{1 + i % 28:02d}T08:{i % 60:02d}", "LBDY": i % 30 - 3,
                     "LBNAM": "Lab é" if i % 97 == 0 else "Central lab"})
    return rows


# ------------------------------------------------------------------------------------ XPT
def test_ibm_370_conversion_by_hand():
    values = np.array([1.0, -1.5, 100.0, 0.1, 0.0, -0.0, 2.0 ** 53, 16.0 ** -65, np.nan])
    ibm, too_large, too_small = ibm_from_ieee(values)
    # 1 = 0x0.1 * 16**1; -1.5 = -0x0.18 * 16**1; 100 = 0x0.64 * 16**2; 0.1 = 0x0.1999999999999A * 16**0;
    # 2**53 = 0x0.2 * 16**14; 16**-65 = 0x0.1 * 16**-64 (exponent byte 0); NaN -> SAS missing "."
    assert [f"{x:016X}" for x in ibm] == [
        "4110000000000000", "C118000000000000", "4264000000000000", "401999999999999A", "0000000000000000",
        "0000000000000000", "4E20000000000000", "0010000000000000", "2E00000000000000"]
    ibm, too_large, too_small = ibm_from_ieee(np.array([1e300, math.inf, -math.inf, 16.0 ** 63,
                                                        np.nextafter(16.0 ** 63, 0), 1e-300, -5e-324]))
    assert too_large.tolist() == [True, True, True, True, False, False, False]
    assert too_small.tolist() == [False, False, False, False, False, True, True]
    assert f"{ibm[4]:016X}" == "7FFFFFFFFFFFFFF8"  # the largest double below 16**63: 53 of 56 bits
    assert [f"{x:016X}" for x in ibm[[0, 5]]] == ["2E00000000000000", "0000000000000000"]


def test_xpt_record_layout_by_hand(tmp_path):
    ds = Dataset("XX", "Tiny", [Variable("A", "Alpha", "Char"), Variable("N", "Number", "Num")],
                 [{"A": "ab", "N": 1.0}, {"A": "", "N": None}])
    assert write_xpt(ds, tmp_path / "xx.xpt", IssueLog())
    data = (tmp_path / "xx.xpt").read_bytes()
    stamp = b"01JAN26:00:00:00"  # SOURCE_DATE_EPOCH of conftest: 2026-01-01T00:00:00Z

    def header(kind, counts=b"0" * 30):
        return b"HEADER RECORD*******" + kind + b"HEADER RECORD!!!!!!!" + counts + b"  "

    def namestr(ntype, length, number, name, label, just, pos):
        return struct.pack(">hhhh8s40s8shhh2s8shhi52s", ntype, 0, length, number, name.ljust(8), label.ljust(40),
                           b" " * 8, 0, 0, just, b"\0\0", b" " * 8, 0, 0, pos, b"\0" * 52)

    expected = (header(b"LIBRARY ")
                + b"SAS     SAS     SASLIB  6.06    bsd4.2  " + b" " * 24 + stamp + stamp + b" " * 64
                + header(b"MEMBER  ", b"00000000000000000160000000014000"[:30]) + header(b"DSCRPTR ")
                + b"SAS     XX      SASDATA 6.06    bsd4.2  " + b" " * 24 + stamp
                + stamp + b" " * 16 + b"Tiny".ljust(40) + b" " * 8
                + header(b"NAMESTR ", b"000000000200000000000000000000")
                + namestr(2, 2, 1, b"A", b"Alpha", 0, 0) + namestr(1, 8, 2, b"N", b"Number", 1, 2) + b" " * 40
                + header(b"OBS     ")
                + b"ab" + bytes.fromhex("4110000000000000") + b"  " + bytes.fromhex("2E00000000000000") + b" " * 60)
    assert len(data) == 1120 and data == expected
    df, meta = pyreadstat.read_xport(str(tmp_path / "xx.xpt"))
    assert df["A"].tolist() == ["ab", ""] and df["N"].tolist()[0] == 1.0 and math.isnan(df["N"].tolist()[1])
    assert (meta.table_name, meta.file_label, meta.column_labels) == ("XX", "Tiny", ["Alpha", "Number"])


def test_xpt_bytes_equal_the_readstat_writer_for_the_sample(sample_sdtm, tmp_path):
    datasets, _ = sample_sdtm
    for name, ds in [*datasets.items(), ("EMPTY", make_dataset("AE", []))]:
        assert write_xpt(ds, tmp_path / f"{name}.xpt", IssueLog())
        assert (tmp_path / f"{name}.xpt").read_bytes() == readstat_xpt(ds, tmp_path / f"{name}.rs.xpt"), name


def test_xpt_edge_values_read_back_by_pyreadstat_and_pandas(tmp_path):
    numbers = [0, -0.0, -1.5, 1e-300, 1e300, 2 ** 53, -(2 ** 53), 2 ** 53 - 1, 0.1 + 0.2, 123456789.125, None,
               math.inf, 5e-324, 16.0 ** -65, np.nextafter(16.0 ** 63, 0), -7.2e75, 1e-78, 42]
    texts = ["", "A" * 200, "B" * 250, "Zoë", "x", " lead", "", "李", "ﬁ", "", "", "", "", "", "", "", "", "end"]
    ds = Dataset("EDGE", "Edge values", [Variable("X", "Number", "Num"), Variable("C", "Text", "Char")],
                 [{"X": x, "C": c} for x, c in zip(numbers, texts)])
    log = IssueLog()
    assert write_xpt(ds, tmp_path / "edge.xpt", log)
    expected = [None if x is None or x == math.inf or abs(x) >= 16.0 ** 63 else
                0.0 if 0 < abs(x) < 16.0 ** -65 else float(x) for x in numbers]
    expected_text = [to_ascii(t)[:200] for t in texts]
    assert expected_text[8] == "fi" and expected_text[7] == "?"
    df, meta = pyreadstat.read_xport(str(tmp_path / "edge.xpt"))
    got = [None if math.isnan(x) else x for x in df["X"].tolist()]
    assert got == expected and df["C"].tolist() == expected_text
    assert meta.variable_storage_width["C"] == 200
    sas = pd.read_sas(str(tmp_path / "edge.xpt"), format="xport", encoding="ascii")
    got = [None if math.isnan(x) else 0.0 if x == PANDAS_ZERO else x for x in sas["X"].tolist()]
    assert got == [0.0 if x == PANDAS_ZERO else x for x in expected]  # 16**-65 itself reads as zero there
    assert sas["C"].tolist() == expected_text
    found = sorted((i.code, i.severity, i.record, i.field) for i in log.issues)
    assert found == [("XPT-LENGTH-200", "error", 3, "C"), ("XPT-NONASCII", "warning", 4, "C"),
                     ("XPT-NONASCII", "warning", 8, "C"), ("XPT-NONASCII", "warning", 9, "C"),
                     ("XPT-NUM-RANGE", "error", 5, "X"), ("XPT-NUM-RANGE", "error", 12, "X"),  # 1e300, inf
                     ("XPT-NUM-RANGE", "warning", 4, "X"), ("XPT-NUM-RANGE", "warning", 13, "X")]  # 1e-300, 5e-324


def test_xpt_random_doubles_read_back_exactly(tmp_path):
    rng = random.Random(5)
    values = [rng.uniform(-1, 1) * 10.0 ** rng.randint(-78, 75) for _ in range(3000)]
    values += [float(rng.randint(-2 ** 53, 2 ** 53)) for _ in range(1000)]
    values += [struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0] for _ in range(3000)]
    values = [v for v in values if 16.0 ** -65 <= abs(v) < 16.0 ** 63]
    ds = Dataset("RND", "Random", [Variable("X", "X", "Num")], [{"X": v} for v in values])
    log = IssueLog()
    assert write_xpt(ds, tmp_path / "rnd.xpt", log) and not log.issues
    df, _ = pyreadstat.read_xport(str(tmp_path / "rnd.xpt"))
    assert df["X"].tolist() == values
    assert pd.read_sas(str(tmp_path / "rnd.xpt"), format="xport")["X"].tolist() == values


def test_xpt_name_too_long_skips_only_the_xpt(tmp_path):
    ds = Dataset("LB", "Lab", [Variable("LBTOOLONGX", "x", "Char")], [{"LBTOOLONGX": "a"}])
    log = IssueLog()
    written = write_datasets([ds], tmp_path, ["xpt", "dataset-json"], log, "S")
    assert [p.name for p in written] == ["lb.json"] and sorted(p.name for p in tmp_path.iterdir()) == ["lb.json"]
    assert [(i.code, i.field) for i in log.issues] == [("XPT-NAME-8", "LBTOOLONGX")]


# ------------------------------------------------------------------------------ Dataset-JSON
def test_dataset_json_bytes_equal_the_whole_object_writer(sample_sdtm, tmp_path):
    datasets, _ = sample_sdtm
    validator = jsonschema.Draft201909Validator(DSJ_SCHEMA)
    for name, ds in datasets.items():
        write_dataset_json(ds, tmp_path / "x.json", study_oid="NCT04387942")
        raw = (tmp_path / "x.json").read_bytes()
        assert raw == orjson.dumps(old_dataset_json_obj(ds, "NCT04387942")), name
        validator.validate(json.loads(raw))
    empty = make_dataset("AE", [])
    write_dataset_json(empty, tmp_path / "ae.json", study_oid="S")
    assert (tmp_path / "ae.json").read_bytes() == orjson.dumps(old_dataset_json_obj(empty, "S"))
    validator.validate(json.loads((tmp_path / "ae.json").read_bytes()))


def test_ndjson_is_the_json_object_line_by_line(tmp_path):
    ds = make_dataset("LB", synthetic_lb(50))
    write_dataset_json(ds, tmp_path / "lb.json", study_oid="S")
    write_dataset_json(ds, tmp_path / "lb.ndjson", study_oid="S")
    obj = orjson.loads((tmp_path / "lb.json").read_bytes())
    lines = (tmp_path / "lb.ndjson").read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 52
    head = orjson.loads(lines[0])
    assert head == {k: v for k, v in obj.items() if k != "rows"} and head["records"] == 50
    assert [orjson.loads(line) for line in lines[1:-1]] == obj["rows"]
    jsonschema.Draft201909Validator(DSJ_SCHEMA).validate({**head, "rows": []})
    log = IssueLog()
    assert read_dataset(tmp_path / "lb.ndjson", log).rows == read_dataset(tmp_path / "lb.json", log).rows
    assert not log.issues


def test_cdisc_ndjson_examples_read_as_their_json():
    folder = reference("dataset-json", "examples", "sdtm")
    for path in sorted(folder.glob("*.ndjson")):
        log = IssueLog()
        streamed, whole = read_dataset(path, log), read_dataset(path.with_suffix(".json"), log)
        assert streamed.rows == whole.rows and streamed.variables == whole.variables, path.name
        assert streamed.label == whole.label and not log.issues, path.name


def test_cdisc_examples_through_our_xpt_equal_their_xpt(tmp_path):
    """CDISC's Dataset-JSON examples written with our XPT writer read back exactly as the JSON
    says, and as the SAS-written XPTs shipped beside them: the same character values and labels,
    the same numbers up to the 15 significant digits the JSON was printed with (their LB has
    8.549999999999999 in the XPT and 8.55 in the JSON)."""
    folder = reference("dataset-json", "examples", "sdtm")
    checked = 0
    for path in sorted(folder.glob("*.json")):
        if not (path.with_suffix(".xpt")).exists() or path.name == "define.json":
            continue
        ds = read_dataset(path, IssueLog())
        if ds is None or any(len(n) > 8 for n in [ds.name, *ds.names]):
            continue
        assert write_xpt(ds, tmp_path / path.with_suffix(".xpt").name, IssueLog())
        ours, ours_meta = pyreadstat.read_xport(str(tmp_path / path.with_suffix(".xpt").name))
        theirs, their_meta = pyreadstat.read_xport(str(path.with_suffix(".xpt")), encoding="latin1")
        assert list(ours.columns) == list(theirs.columns), path.name
        for col in ours.columns:
            a, b = ours[col].tolist(), theirs[col].tolist()
            if ours_meta.readstat_variable_types[col] == "double":
                a = [None if math.isnan(x) else x for x in a]
                assert a == [r[col] for r in ds.rows], (path.name, col)
                assert all(x == y or (x is not None and y is not None and math.isclose(x, y, rel_tol=1e-14))
                           for x, y in zip(a, [None if math.isnan(x) else x for x in b])), (path.name, col)
            else:
                assert a == [to_ascii(x) for x in b], (path.name, col)
        assert ours_meta.column_labels == [to_ascii(x)[:40] for x in their_meta.column_labels], path.name
        checked += 1
    assert checked >= 20


# ------------------------------------------------------------------------------ streaming
def test_streaming_pass_equals_whole_dataset_writer_and_readers_agree(tmp_path):
    rows = synthetic_lb(5000)  # more than two write batches
    stats = ColumnStats("LB")
    for row in rows:
        stats.add(row)
    meta = dataset_meta("LB", stats)
    formats = ["xpt", "dataset-json", "dataset-ndjson", "csv"]
    log = IssueLog()
    with open_dataset_writers(meta, stats, tmp_path / "stream", formats, log, "S1") as out:
        for row in rows:
            out.write(row)  # rows without the variables make_dataset would add
    assert [p.name for p in out.paths] == ["lb.xpt", "lb.json", "lb.ndjson", "lb.csv"]
    whole = make_dataset("LB", rows)
    written = write_datasets([whole], tmp_path / "whole", formats, IssueLog(), "S1")
    for path in written:
        assert (tmp_path / "stream" / path.name).read_bytes() == path.read_bytes(), path.name
    nonascii = [i for i in log.issues if i.code == "XPT-NONASCII"]
    assert [i.record for i in nonascii] == list(range(1, 5001, 97)) and {i.field for i in nonascii} == {"LBNAM"}
    df, xmeta = pyreadstat.read_xport(str(tmp_path / "stream" / "lb.xpt"))
    assert len(df) == 5000 and xmeta.column_names == whole.names
    assert df["LBSTRESN"].tolist()[:3] == [r["LBSTRESN"] for r in rows[:3]]
    assert df["VISITNUM"].tolist() == [r["VISITNUM"] for r in rows]
    assert xmeta.variable_storage_width["LBTEST"] == len("Alanine Aminotransferase")
    sas = pd.read_sas(str(tmp_path / "stream" / "lb.xpt"), format="xport", encoding="ascii")
    assert sas["USUBJID"].tolist() == [r["USUBJID"] for r in rows]
    assert [0.0 if x == PANDAS_ZERO else x for x in sas["LBDY"].tolist()] == [r["LBDY"] for r in rows]
    reads = {p.suffix: read_dataset(p, IssueLog()) for p in out.paths}
    assert reads[".json"].rows == reads[".ndjson"].rows == reads[".csv"].rows
    assert [{k: v for k, v in r.items() if k != "LBNAM"} for r in reads[".xpt"].rows] == [
        {k: v for k, v in r.items() if k != "LBNAM"} for r in reads[".json"].rows]
    jsonschema.Draft201909Validator(DSJ_SCHEMA).validate(json.loads((tmp_path / "stream" / "lb.json").read_bytes()))


def test_header_describes_stats(tmp_path):
    stats = ColumnStats("LB")
    stats.add_rows(synthetic_lb(10))
    head = dataset_json_header(dataset_meta("LB", stats), stats, study_oid="S1")
    cols = {c["name"]: c for c in head["columns"]}
    assert head["records"] == 10 and cols["LBSEQ"]["dataType"] == "integer"
    assert cols["VISITNUM"]["dataType"] == "double"  # row 1 (i = 0) has visit 0.5
    assert cols["LBTESTCD"]["length"] == 3 and cols["LBNAM"]["length"] == len("Central lab")


def test_failed_pass_leaves_no_file(tmp_path):
    rows = synthetic_lb(3000)
    stats = ColumnStats("LB")
    stats.add_rows(rows)
    meta = dataset_meta("LB", stats)
    formats = ["xpt", "dataset-json", "csv"]
    with pytest.raises(RuntimeError, match="boom"):
        with open_dataset_writers(meta, stats, tmp_path, formats, IssueLog(), "S1") as out:
            for n, row in enumerate(rows):
                out.write(row)
                if n == 2500:  # after one batch went to the temporary files
                    raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="2999 rows written but the statistics counted 3000"):
        with open_dataset_writers(meta, stats, tmp_path, formats, IssueLog(), "S1") as out:
            out.write_rows(rows[:-1])
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="statistics do not describe"):
        with open_dataset_writers(meta, stats, tmp_path, formats, IssueLog(), "S1") as out:
            out.write_rows([dict(rows[0], LBTESTCD="LONGER")] + rows[1:])
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="integer column"):
        with open_dataset_writers(meta, stats, tmp_path, ["dataset-json"], IssueLog(), "S1") as out:
            out.write_rows([dict(rows[0], LBSEQ=1.5)] + rows[1:])
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(TrialbridgeError, match="unknown output format"):
        open_dataset_writers(meta, stats, tmp_path, ["sas7bdat"], IssueLog(), "S1")


def test_iter_dataset_reads_xpt_in_chunks(tmp_path):
    ds = make_dataset("LB", synthetic_lb(2500))
    write_datasets([ds], tmp_path, ["xpt"], IssueLog(), "S1")
    whole = read_dataset(tmp_path / "lb.xpt", IssueLog())
    meta, rows = iter_xpt(tmp_path / "lb.xpt", IssueLog(), chunksize=300)
    assert meta.rows == [] and meta.names == ds.names and meta.label == "Laboratory Test Results"
    assert list(rows) == whole.rows and len(whole.rows) == 2500
    meta, rows = iter_dataset(tmp_path / "lb.xpt", IssueLog())
    assert next(rows) == whole.rows[0]


def _pyreadstat_rows(path: Path) -> list[dict]:
    try:
        df, meta = pyreadstat.read_xport(str(path), disable_datetime_conversion=True)
    except UnicodeDecodeError:
        df, meta = pyreadstat.read_xport(str(path), encoding="cp1252", disable_datetime_conversion=True)
    kinds = [(c, meta.readstat_variable_types[c] == "double") for c in meta.column_names]
    return [{c: (None if math.isnan(x) else x) if num else x for (c, num), x in zip(kinds, rec)}
            for rec in df.itertuples(index=False, name=None)]


def test_sequential_xpt_reader_reads_sas_files_as_pyreadstat_does():
    """Every SAS-written XPT of the reference studies and CDISC examples, read front to back by
    our reader (chunks of 777 rows), gives exactly pyreadstat's whole-file values."""
    files = sorted(reference("sdtm").rglob("*.xpt")) + sorted(reference("dataset-json").rglob("*.xpt"))
    assert len(files) >= 50
    for path in files:
        meta, rows = iter_xpt(path, IssueLog(), chunksize=777)
        assert list(rows) == _pyreadstat_rows(path), path


def test_ibm_370_decoding_by_hand():
    stored = np.array([[0x41, 0x10, 0, 0, 0, 0, 0, 0], [0xC1, 0x18, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0],
                       [0x2E, 0, 0, 0, 0, 0, 0, 0], [0x41, 0, 0, 0, 0, 0, 0, 0], [0x5F, 0, 0, 0, 0, 0, 0, 0],
                       [0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], [0x41] + [0xFF] * 7,
                       [0x42, 0x64, 0, 0, 0, 0, 0, 0]], dtype=np.uint8)
    values, missing = ieee_from_ibm(stored)
    assert missing.tolist() == [False, False, False, True, True, True, False, False, False]
    # 0x41FFFFFFFFFFFFFF is 16 * (1 - 16**-14): 56 fraction bits, truncated to 53: 16 - 2**-49
    assert [values[i] for i in (0, 1, 2, 6, 7, 8)] == [1.0, -1.5, 0.0, math.inf, 16 - 2.0 ** -49, 100.0]
    short, _ = ieee_from_ibm(np.array([[0x42, 0x64, 0]], dtype=np.uint8))  # a 3-byte number
    assert short.tolist() == [100.0]


def test_blank_rows_count_only_before_a_non_blank_one(tmp_path):
    """An observation of blanks only is ambiguous with the last record's padding: like ReadStat,
    such rows are kept when a later row is not blank, dropped at the end; chunk borders do not
    matter."""
    ds = Dataset("BL", "Blanks", [Variable("A", "A", "Char"), Variable("B", "B", "Char")],
                 [{"A": "x", "B": ""}, {"A": "", "B": ""}, {"A": "", "B": ""}, {"A": "", "B": "y"},
                  {"A": "", "B": ""}, {"A": "", "B": ""}])
    assert write_xpt(ds, tmp_path / "bl.xpt", IssueLog())
    expected = ds.rows[:4]
    assert _pyreadstat_rows(tmp_path / "bl.xpt") == expected
    for chunksize in (1, 2, 3, 100):
        assert list(iter_xpt(tmp_path / "bl.xpt", IssueLog(), chunksize=chunksize)[1]) == expected


def test_pyreadstat_chunks_when_the_observations_cannot_be_located(tmp_path, monkeypatch):
    ds = make_dataset("LB", synthetic_lb(30))
    write_datasets([ds], tmp_path, ["xpt"], IssueLog(), "S1")
    from trialbridge.converters.formats.sdtm import xpt as xpt_module

    monkeypatch.setattr(xpt_module, "_observations_at", lambda path: None)
    assert list(iter_xpt(tmp_path / "lb.xpt", IssueLog(), chunksize=7)[1]) == _pyreadstat_rows(tmp_path / "lb.xpt")


def test_cp1252_xpt_switches_encoding_where_utf8_fails():
    path = reference("sdtm", "cdiscpilot01", "ts.xpt")
    log = IssueLog()
    meta, rows = iter_xpt(path, log, chunksize=5)  # the first chunk is ASCII, a later one cp1252
    got = list(rows)
    df, _ = pyreadstat.read_xport(str(path), encoding="cp1252")
    assert got == read_dataset(path, IssueLog()).rows and len(got) == len(df)
    assert [(i.code, i.value) for i in log.issues] == [("XPT-ENCODING", "cp1252")]


def test_file_breaking_off_midway_is_reported_with_last_row(tmp_path):
    path = tmp_path / "lb.csv"
    # row 5003 holds a field longer than the csv module reads (131,072 characters)
    path.write_bytes(b"STUDYID,LBSEQ\nS1,1\nS1,2\n" + b"S1,3\n" * 5000 + b'"' + b"x" * 140_000 + b'",4\n')
    log = IssueLog()
    meta, rows = iter_dataset(path, log)
    assert len(list(rows)) == 5002  # the rows before the one that cannot be read come through
    [issue] = log.issues
    assert issue.code == "IO-READ" and "after row 5002" in issue.message and issue.record == 5003
    log = IssueLog()
    assert read_dataset(path, log) is None and [i.code for i in log.issues] == ["IO-READ"]
    assert iter_dataset(tmp_path / "lb.sas7bdat", log) is None


def test_csv_not_utf8_is_read_as_cp1252_whole(tmp_path):
    path = tmp_path / "dm.csv"
    path.write_bytes(b"STUDYID,USUBJID,ETHNIC\nS1,S1-1,A\nS1,S1-2,Z\xe9\n")
    log = IssueLog()
    ds = read_dataset(path, log)
    assert [r["ETHNIC"] for r in ds.rows] == ["A", "Z\u00e9"]  # 0xE9 is e acute in Windows-1252
    assert [(i.code, i.file, i.value) for i in log.issues] == [("CSV-ENCODING", "dm.csv", "cp1252")]
