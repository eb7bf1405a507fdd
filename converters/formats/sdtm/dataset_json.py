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

Issue codes (reading): ``DSJ-SCHEMA``, ``DSJ-ROW-LENGTH`` (a row with another number of values
than columns: not read), ``SDTM-DUPLICATE-COLUMN``, ``SDTM-NUM-RANGE`` (a number a float cannot
hold: read as missing, never as inf or 0), ``DSJ-RECORD-COUNT`` (the rows found differ from the
``records`` declared: a file cut short); see :mod:`converters.formats.sdtm`.
"""
from __future__ import annotations

import json
import math
import re
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
    DATASET_JSON_VERSION, DEFAULT_CREATED, INTEGER_NAME, RowBatch, _char, _enrich, _keys_for, _num, _version,
    report_repeated_column)
from trialbridge.mappings.derive import number_problem, to_number

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


class _OutOfRange:
    """A JSON number a float cannot hold (1e400, 1e-400), kept as its text for the finding."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text


def _exact_float(text: str) -> float | _OutOfRange:
    value = to_number(text)
    return _OutOfRange(text) if value is None else value


def _exact_int(text: str) -> int | _OutOfRange:
    return int(text) if len(text.lstrip("-")) <= 308 else _OutOfRange(text)  # over 309 digits: beyond a float


# an exponent of three digits or more: the only way a JSON number orjson reads can underflow to 0
_TINY = re.compile(rb"[eE]-0*[1-9][0-9]{2,}")


def _loads(data: bytes) -> Any:
    """JSON with every number checked: orjson, and where a number could be out of a float's
    range (orjson refuses infinities and turns 1e-400 into 0.0) the standard parser with each
    non-integral number read by :func:`_exact_float`."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "infinity" not in str(exc):
            raise
    else:
        if not _TINY.search(data):
            return obj
    return json.loads(data, parse_float=_exact_float, parse_int=_exact_int)


def _meta(obj: dict, path: Path, log: IssueLog) -> tuple[Dataset, list[int]]:
    """The dataset's metadata and, for each of its variables, the place of its value in a row
    array (a column name given twice is read from its first place: SDTM-DUPLICATE-COLUMN)."""
    name = str(obj.get("name") or path.stem).upper()
    variables, places, seen = [], [], {}
    columns = obj.get("columns")
    for n, col in enumerate(columns if isinstance(columns, list) else []):
        if not isinstance(col, dict):
            continue
        cname = str(col.get("name") or f"COL{n + 1}")
        if cname in seen:
            report_repeated_column(log, path, cname, n, seen[cname])
            continue
        seen[cname] = n
        typ = "Char" if col.get("dataType", "string") in _CHAR_TYPES else "Num"
        variables.append(_enrich(cname, str(col.get("label") or ""), typ, name))
        places.append(n)
    meta = Dataset(name=name, label=str(obj.get("label") or load_spec(name).label),
                   label_given=bool(obj.get("label")), variables=variables, rows=[],
                   keys=_keys_for(name, [v.name for v in variables]), source=str(path))
    return meta, places


def _width(obj: dict) -> int:
    columns = obj.get("columns")
    return len(columns) if isinstance(columns, list) else 0


def _row(meta: Dataset, places: list[int], width: int, rec: Any, n: int, path: Path,
         log: IssueLog) -> dict[str, Any] | None:
    account = str(path)
    log.count_row(account, "read")
    if not isinstance(rec, list):
        log.error("DSJ-SCHEMA", f"{path.name}: row {n} is not an array; skipped", file=path.name, record=n)
        log.count_row(account, "rejected")
        return None
    if len(rec) != width:
        log.error("DSJ-ROW-LENGTH", f"{path.name} row {n}: {len(rec)} values for {width} columns; the values "
                  "cannot be placed in their columns, row not read", file=path.name, record=n, value=len(rec))
        log.count_row(account, "rejected")
        return None
    row = {}
    for var, place in zip(meta.variables, places):
        v = rec[place]
        if var.type == "Num":
            if isinstance(v, _OutOfRange):
                problem = number_problem(v.text)
                log.error("SDTM-NUM-RANGE", f"{path.name} row {n} {var.name}: {v.text} is "
                          f"{problem[1] if problem else 'not a number a float holds'}; read as missing",
                          file=path.name, record=n, field=var.name, value=v.text)
                row[var.name] = None
                continue
            try:
                if isinstance(v, bool) or isinstance(v, (list, dict)):
                    raise TypeError(type(v).__name__)
                number = _num(v)
                if number is not None and not math.isfinite(number):
                    raise ValueError("not finite")
                row[var.name] = number
            except (TypeError, ValueError, OverflowError):
                log.error("DSJ-SCHEMA", f"{path.name} row {n} {var.name}: {v!r} is not a number; read as "
                          "missing", file=path.name, record=n, field=var.name, value=str(v))
                row[var.name] = None
        else:
            if isinstance(v, _OutOfRange):
                v = v.text
            if v is not None and not isinstance(v, str):
                log.error("DSJ-SCHEMA", f"{path.name} row {n} {var.name}: {v!r} in a {var.type} (string) column; "
                          "read as its text", file=path.name, record=n, field=var.name, value=str(v))
                v = orjson.dumps(v).decode() if isinstance(v, (bool, list, dict)) else _number_text(v)
            row[var.name] = _char(v)
    return row


def _number_text(value: Any) -> str:
    """A JSON number's text: integers as written, floats in shortest form."""
    return str(value) if isinstance(value, int) else repr(value)


def iter_dataset_json(path: Path, log: IssueLog) -> tuple[Dataset, Iterator[dict[str, Any]]]:
    """Metadata and rows of a ``.json`` Dataset-JSON file (parsed whole, then row by row)."""
    obj = _loads(path.read_bytes())
    _schema_issues(obj, path, log)
    if not isinstance(obj, dict):
        obj = {}
    meta, places = _meta(obj, path, log)
    width = _width(obj)
    records = obj.get("rows")
    if not isinstance(records, list):
        records = []  # the schema finding says what it is

    def rows() -> Iterator[dict[str, Any]]:
        n = 0
        for n, rec in enumerate(records, start=1):
            row = _row(meta, places, width, rec, n, path, log)
            if row is not None:
                yield row
        _check_count(obj, n, path, log)

    return meta, rows()


def _check_count(obj: Any, n: int, path: Path, log: IssueLog) -> None:
    """The rows found against the ``records`` the file declares: fewer is a file cut short or
    rows lost on the way (DSJ-RECORD-COUNT)."""
    declared = obj.get("records") if isinstance(obj, dict) else None
    if isinstance(declared, int) and not isinstance(declared, bool) and declared != n:
        log.error("DSJ-RECORD-COUNT", f"{path.name} declares {declared} records but holds {n} row(s)"
                  + (": rows are missing (a file cut short?)" if n < declared else ""), file=path.name,
                  field="records", value=n)


def iter_dataset_ndjson(path: Path, log: IssueLog) -> tuple[Dataset, Iterator[dict[str, Any]]]:
    """Metadata and rows of a ``.ndjson`` Dataset-JSON file, one line at a time.  A line that
    is not JSON (a file cut or damaged part way) is reported and skipped; the lines after it
    are read."""
    with open(path, "rb") as fh:
        first = fh.readline()
    obj = _loads(first) if first.strip() else None
    _schema_issues({**obj, "rows": []} if isinstance(obj, dict) and "rows" not in obj else obj, path, log)
    meta, places = _meta(obj if isinstance(obj, dict) else {}, path, log)
    width = _width(obj if isinstance(obj, dict) else {})

    def rows() -> Iterator[dict[str, Any]]:
        with open(path, "rb") as fh:
            fh.readline()
            n = 0
            for line in fh:
                if not line.strip():
                    continue
                n += 1
                try:
                    rec = _loads(line)
                except ValueError as exc:  # orjson's and json's decode errors are ValueErrors
                    log.count_row(str(path), "read")
                    log.count_row(str(path), "rejected")
                    log.error("DSJ-SCHEMA", f"{path.name}: row {n} (line {n + 1}) is not JSON ({exc}); skipped",
                              file=path.name, record=n)
                    continue
                row = _row(meta, places, width, rec, n, path, log)
                if row is not None:
                    yield row
        _check_count(obj, n, path, log)

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

