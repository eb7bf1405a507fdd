"""CDISC Dataset-JSON v1.1 files, streamed: ``.json`` (one object) and ``.ndjson`` (the
standard's NDJSON form: line 1 the metadata object, then one row array per line).

Writing: :class:`DatasetJsonWriter` writes the metadata (column ``dataType``/``length`` and
``records`` from the dataset's :class:`~.stats.ColumnStats`), then rows batch by batch, then
closes the object; the bytes equal ``orjson.dumps`` of the whole object (:func:`dataset_json_obj`),
which is what earlier versions wrote.  :class:`DatasetNdjsonWriter` writes the NDJSON form.

Reading: :func:`iter_dataset_json` parses a ``.json`` file whole (a JSON object has no row
boundaries a plain parser can stream on; the schema check needs the whole object anyway) and
then hands out its rows one by one; :func:`iter_dataset_ndjson` streams: it validates the
metadata line against the v1.1 schema (with an empty ``rows``) and reads one line per row.

Issue code: ``DSJ-SCHEMA`` (reading); see :mod:`converters.formats.sdtm`.
"""
from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

import orjson

from trialbridge.converters.core.datasets import Dataset
from trialbridge.converters.core.issues import IssueLog
from trialbridge.converters.core.sdtm_spec import load_spec
from trialbridge.converters.formats.sdtm.stats import ColumnStats, VarStats
from trialbridge.converters.core.clock import creation_datetime
from trialbridge.converters.formats.sdtm.values import (
    DATASET_JSON_VERSION, DEFAULT_CREATED, INTEGER_NAME, RowBatch, _char, _enrich, _keys_for, _num, _version)

MAX_SCHEMA_ISSUES = 20
_CHAR_TYPES = ("string", "date", "datetime", "time", "URI", "boolean")


@lru_cache(maxsize=1)
def dataset_json_schema() -> dict:
    text = resources.files("trialbridge.schemas").joinpath("dataset-json", "dataset.schema.json").read_text(
        encoding="utf-8")
    return orjson.loads(text)


@lru_cache(maxsize=1)
def _dsj_validator():
    import jsonschema_rs

    return jsonschema_rs.validator_for(dataset_json_schema())


# ------------------------------------------------------------------------------------ writing
def num_data_type(name: str, stats: VarStats) -> str:
    """Dataset-JSON dataType of Num variable ``name`` (values described by ``stats``): integer
    for counters and days (--SEQ, --DY, AGE, VISITNUM ...) whose values are all whole numbers,
    else double.  define.xml types the variable the same way."""
    return "integer" if INTEGER_NAME.search(name) and stats.integral else "double"


def dataset_json_header(meta: Dataset, stats: ColumnStats, *, study_oid: str,
                        metadata_version_oid: str = "MDV.TRIALBRIDGE", define_href: str = "define.xml",
                        created: str | None = DEFAULT_CREATED) -> dict:
    """Every top-level attribute of the Dataset-JSON object but ``rows``."""
    key_seq = {k: n for n, k in enumerate(meta.keys, start=1)}
    columns = []
    for var in meta.variables:
        col: dict[str, Any] = {"itemOID": f"IT.{meta.name}.{var.name}", "name": var.name, "label": var.label}
        if var.type == "Num":
            col["dataType"] = num_data_type(var.name, stats.var(var.name))
        else:
            col["dataType"] = "string"
            col["length"] = stats.var(var.name).length
        if var.name in key_seq:
            col["keySequence"] = key_seq[var.name]
        columns.append(col)
    return {
        "datasetJSONCreationDateTime": created or creation_datetime(),
        "datasetJSONVersion": DATASET_JSON_VERSION,
        "fileOID": f"{study_oid}/{meta.name}",
        "originator": "trialbridge",
        "sourceSystem": {"name": "trialbridge", "version": _version()},
        "studyOID": study_oid,
        "metaDataVersionOID": metadata_version_oid,
        "metaDataRef": define_href,
        "itemGroupOID": f"IG.{meta.name}",
        "records": stats.rows,
        "name": meta.name,
        "label": meta.label,
        "columns": columns,
    }


class _RowArrays:
    """Rows as Dataset-JSON row arrays, typed by the header's columns."""

    def __init__(self, header: dict):
        self.name = header["name"]
        self.columns = [(c["name"], c["dataType"]) for c in header["columns"]]

    def __call__(self, batch: RowBatch) -> list[list[Any]]:
        columns = []
        for name, kind in self.columns:
            if kind == "string":
                columns.append(batch.texts(name))
            elif kind == "integer":
                numbers = batch.numbers(name)
                bad = next((i for i, x in enumerate(numbers) if x is not None and not x.is_integer()), None)
                if bad is not None:
                    raise ValueError(f"{self.name} row {batch.first + bad} {name}: {numbers[bad]!r} in an integer "
                                     "column; the statistics do not describe these rows")
                columns.append([None if x is None else int(x) for x in numbers])
            else:
                columns.append(batch.numbers(name))
        if not columns:
            return [[] for _ in batch.rows]
        return [list(values) for values in zip(*columns)]


class DatasetJsonWriter:
    """One dataset as a Dataset-JSON v1.1 object into the binary file ``fh``."""

    def __init__(self, meta: Dataset, stats: ColumnStats, fh: IO[bytes], **header: Any):
        head = dataset_json_header(meta, stats, **header)
        self.fh, self.arrays, self.first = fh, _RowArrays(head), True
        fh.write(orjson.dumps(head)[:-1] + b',"rows":[')

    def write_batch(self, batch: RowBatch) -> None:
        if len(batch):
            body = orjson.dumps(self.arrays(batch))[1:-1]  # "[..],[..]": the list without brackets
            self.fh.write(body if self.first else b"," + body)
            self.first = False

    def finish(self) -> None:
        self.fh.write(b"]}")


class DatasetNdjsonWriter:
    """One dataset in the NDJSON form of Dataset-JSON v1.1 into the binary file ``fh``."""

    def __init__(self, meta: Dataset, stats: ColumnStats, fh: IO[bytes], **header: Any):
        head = dataset_json_header(meta, stats, **header)
        self.fh, self.arrays = fh, _RowArrays(head)
        fh.write(orjson.dumps(head) + b"\n")

    def write_batch(self, batch: RowBatch) -> None:
        self.fh.write(b"".join(orjson.dumps(r) + b"\n" for r in self.arrays(batch)))

    def finish(self) -> None:
        pass


def dataset_json_obj(ds: Dataset, *, study_oid: str, metadata_version_oid: str = "MDV.TRIALBRIDGE",
                     define_href: str = "define.xml", created: str | None = DEFAULT_CREATED) -> dict:
    """The whole Dataset-JSON v1.1 object for an in-memory ``ds`` (plain dicts/lists)."""
    head = dataset_json_header(ds, ColumnStats.of(ds), study_oid=study_oid, created=created,
                               metadata_version_oid=metadata_version_oid, define_href=define_href)
    return {**head, "rows": _RowArrays(head)(RowBatch(ds.rows))}


# ------------------------------------------------------------------------------------ reading
def _schema_issues(obj: Any, path: Path, log: IssueLog) -> None:
    errors = list(_dsj_validator().iter_errors(obj)) if isinstance(obj, dict) else []
    for err in errors[:MAX_SCHEMA_ISSUES]:
        log.error("DSJ-SCHEMA", f"{path.name}: not valid Dataset-JSON v1.1: {err.message}",
                  file=path.name, field="/".join(str(p) for p in err.instance_path) or None)
    if not isinstance(obj, dict):
        log.error("DSJ-SCHEMA", f"{path.name}: top level is not an object", file=path.name)


def _meta(obj: dict, path: Path) -> Dataset:
    name = str(obj.get("name") or path.stem).upper()
    variables = []
    for n, col in enumerate(c for c in obj.get("columns") or [] if isinstance(c, dict)):
        cname = str(col.get("name") or f"COL{n + 1}")
        typ = "Char" if col.get("dataType", "string") in _CHAR_TYPES else "Num"
        variables.append(_enrich(cname, str(col.get("label") or ""), typ, name))
    return Dataset(name=name, label=str(obj.get("label") or load_spec(name).label),
                   label_given=bool(obj.get("label")), variables=variables, rows=[],
                   keys=_keys_for(name, [v.name for v in variables]), source=str(path))


def _row(meta: Dataset, rec: Any, n: int, path: Path, log: IssueLog) -> dict[str, Any] | None:
    if not isinstance(rec, list):
        log.error("DSJ-SCHEMA", f"{path.name}: row {n} is not an array; skipped", file=path.name, record=n)
        return None
    row = {}
    for var, v in zip(meta.variables, rec + [None] * (len(meta.variables) - len(rec))):
        if var.type == "Num":
            try:
                row[var.name] = _num(v)
            except (TypeError, ValueError):
                log.error("DSJ-SCHEMA", f"{path.name} row {n} {var.name}: {v!r} is not a number; read as "
                          "missing", file=path.name, record=n, field=var.name, value=str(v))
                row[var.name] = None
        else:
            row[var.name] = _char(v)
    return row


def iter_dataset_json(path: Path, log: IssueLog) -> tuple[Dataset, Iterator[dict[str, Any]]]:
    """Metadata and rows of a ``.json`` Dataset-JSON file (parsed whole, then row by row)."""
    obj = orjson.loads(path.read_bytes())
    _schema_issues(obj, path, log)
    if not isinstance(obj, dict):
        obj = {}
    meta = _meta(obj, path)
    records = obj.get("rows") or []

    def rows() -> Iterator[dict[str, Any]]:
        for n, rec in enumerate(records, start=1):
            row = _row(meta, rec, n, path, log)
            if row is not None:
                yield row

    return meta, rows()


def iter_dataset_ndjson(path: Path, log: IssueLog) -> tuple[Dataset, Iterator[dict[str, Any]]]:
    """Metadata and rows of a ``.ndjson`` Dataset-JSON file, one line at a time."""
    with open(path, "rb") as fh:
        first = fh.readline()
    obj = orjson.loads(first) if first.strip() else None
    _schema_issues({**obj, "rows": []} if isinstance(obj, dict) and "rows" not in obj else obj, path, log)
    meta = _meta(obj if isinstance(obj, dict) else {}, path)

    def rows() -> Iterator[dict[str, Any]]:
        with open(path, "rb") as fh:
            fh.readline()
            n = 0
            for line in fh:
                if not line.strip():
                    continue
                n += 1
                try:
                    rec = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    log.error("DSJ-SCHEMA", f"{path.name}: row {n} is not JSON ({exc}); skipped",
                              file=path.name, record=n)
                    continue
                row = _row(meta, rec, n, path, log)
                if row is not None:
                    yield row

    return meta, rows()


def _collect(stream: tuple[Dataset, Iterable[dict[str, Any]]]) -> Dataset:
    meta, rows = stream
    meta.rows = list(rows)
    return meta


def read_dataset_json(path: Path, log: IssueLog) -> Dataset:
    """A whole ``.json`` or ``.ndjson`` Dataset-JSON file as a :class:`Dataset`."""
    path = Path(path)
    reader = iter_dataset_ndjson if path.suffix.lower() == ".ndjson" else iter_dataset_json
    return _collect(reader(path, log))

