"""CDISC Dataset-JSON v1.1 files, written and read.

Issue code: ``DSJ-SCHEMA`` (reading); see :mod:`converters.formats.sdtm`.
"""
from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from trialbridge.converters.core.datasets import Dataset, Variable
from trialbridge.converters.core.files import atomic_open
from trialbridge.converters.core.issues import IssueLog
from trialbridge.converters.core.sdtm_spec import load_spec
from trialbridge.converters.formats.sdtm.values import (
    DATASET_JSON_VERSION, DEFAULT_CREATED, INTEGER_NAME, _char, _enrich, _keys_for, _missing_num, _num,
    _version)


@lru_cache(maxsize=1)
def dataset_json_schema() -> dict:
    text = resources.files("trialbridge.schemas").joinpath("dataset-json", "dataset.schema.json").read_text(
        encoding="utf-8")
    return orjson.loads(text)


@lru_cache(maxsize=1)
def _dsj_validator():
    import jsonschema_rs

    return jsonschema_rs.validator_for(dataset_json_schema())


def _num_data_type(var: Variable, ds: Dataset) -> str:
    if not INTEGER_NAME.search(var.name):
        return "double"
    for row in ds.rows:
        v = row.get(var.name)
        if not _missing_num(v) and not float(v).is_integer():
            return "double"
    return "integer"


def dataset_json_obj(ds: Dataset, *, study_oid: str, metadata_version_oid: str = "MDV.TRIALBRIDGE",
                     define_href: str = "define.xml", created: str = DEFAULT_CREATED) -> dict:
    """The Dataset-JSON v1.1 object for ``ds`` (plain dicts/lists, ready to serialise once)."""
    key_seq = {k: n for n, k in enumerate(ds.keys, start=1)}
    columns, kinds = [], []
    for var in ds.variables:
        col: dict[str, Any] = {"itemOID": f"IT.{ds.name}.{var.name}", "name": var.name,
                               "label": var.label}
        if var.type == "Num":
            col["dataType"] = _num_data_type(var, ds)
            kinds.append(col["dataType"])
        else:
            col["dataType"] = "string"
            col["length"] = max([1] + [len(_char(r.get(var.name)).encode("utf-8")) for r in ds.rows])
            kinds.append("string")
        if var.name in key_seq:
            col["keySequence"] = key_seq[var.name]
        columns.append(col)
    names = ds.names
    rows = []
    for row in ds.rows:
        out = []
        for name, kind in zip(names, kinds):
            v = row.get(name)
            if kind == "string":
                out.append(_char(v))
            elif _missing_num(v):
                out.append(None)
            elif kind == "integer":
                out.append(int(float(v)))
            else:
                out.append(float(v))
        rows.append(out)
    return {
        "datasetJSONCreationDateTime": created,
        "datasetJSONVersion": DATASET_JSON_VERSION,
        "fileOID": f"{study_oid}/{ds.name}",
        "originator": "trialbridge",
        "sourceSystem": {"name": "trialbridge", "version": _version()},
        "studyOID": study_oid,
        "metaDataVersionOID": metadata_version_oid,
        "metaDataRef": define_href,
        "itemGroupOID": f"IG.{ds.name}",
        "records": len(rows),
        "name": ds.name,
        "label": ds.label,
        "columns": columns,
        "rows": rows,
    }


def write_dataset_json(ds: Dataset, path: str | Path, *, study_oid: str,
                       metadata_version_oid: str = "MDV.TRIALBRIDGE",
                       define_href: str = "define.xml", created: str = DEFAULT_CREATED) -> None:
    """Write ``ds`` as Dataset-JSON v1.1.  ``created`` is written as
    ``datasetJSONCreationDateTime`` (fixed default keeps output byte-identical across runs)."""
    obj = dataset_json_obj(ds, study_oid=study_oid, metadata_version_oid=metadata_version_oid,
                           define_href=define_href, created=created)
    with atomic_open(path, "wb") as fh:
        fh.write(orjson.dumps(obj))


def read_dataset_json(path: Path, log: IssueLog, obj: dict | None = None) -> Dataset:
    if obj is None:
        obj = orjson.loads(path.read_bytes())
    errors = list(_dsj_validator().iter_errors(obj)) if isinstance(obj, dict) else []
    for err in errors[:20]:
        log.error("DSJ-SCHEMA", f"{path.name}: not valid Dataset-JSON v1.1: {err.message}",
                  file=path.name, field="/".join(str(p) for p in err.instance_path) or None)
    if not isinstance(obj, dict):
        log.error("DSJ-SCHEMA", f"{path.name}: top level is not an object", file=path.name)
        obj = {}
    name = str(obj.get("name") or path.stem).upper()
    variables = []
    for n, col in enumerate(c for c in obj.get("columns") or [] if isinstance(c, dict)):
        cname = str(col.get("name") or f"COL{n + 1}")
        typ = "Char" if col.get("dataType", "string") in ("string", "date", "datetime", "time",
                                                          "URI", "boolean") else "Num"
        variables.append(_enrich(cname, str(col.get("label") or ""), typ, name))
    rows = []
    for n, rec in enumerate(obj.get("rows") or [], start=1):
        if not isinstance(rec, list):
            log.error("DSJ-SCHEMA", f"{path.name}: row {n} is not an array; skipped",
                      file=path.name, record=n)
            continue
        row = {}
        for var, v in zip(variables, rec + [None] * (len(variables) - len(rec))):
            if var.type == "Num":
                try:
                    row[var.name] = _num(v)
                except (TypeError, ValueError):
                    log.error("DSJ-SCHEMA", f"{path.name} row {n} {var.name}: {v!r} is not a "
                              "number; read as missing", file=path.name, record=n,
                              field=var.name, value=str(v))
                    row[var.name] = None
            else:
                row[var.name] = _char(v)
        rows.append(row)
    return Dataset(name=name, label=str(obj.get("label") or load_spec(name).label), label_given=bool(obj.get("label")),
                   variables=variables, rows=rows, keys=_keys_for(name, [v.name for v in variables]),
                   source=str(path))
