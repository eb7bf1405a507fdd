"""SDTM dataset files: SAS XPORT v5, CDISC Dataset-JSON v1.1 and CSV, written and read.

One file per dataset, named ``<domain>.xpt`` / ``<domain>.json`` / ``<domain>.csv`` (lower case).
Every output goes through :mod:`converters.files` (atomic rename).  Data problems become issues
in the :class:`~converters.issues.IssueLog`; readers never raise on bad data.

Issue codes raised here:

* ``XPT-NONASCII`` (warning) - a Char value is not ASCII; transliterated in the XPT only
  (NFKD, combining marks dropped, anything still non-ASCII becomes ``?``).
* ``XPT-LENGTH-200`` (error) - a Char value is longer than 200 bytes (FDA Technical Conformance
  Guide; P21 SD1096-style); truncated in the XPT only.
* ``XPT-LABEL-40`` (warning) - a dataset or variable label longer than 40 characters; truncated.
* ``XPT-NAME-8`` (error) - a dataset or variable name longer than 8 characters; file not written.
* ``XPT-ENCODING`` (info) - an XPT was not UTF-8 and was decoded as cp1252 or latin1.
* ``DSJ-SCHEMA`` (error) - a Dataset-JSON file does not validate against the v1.1 schema.
* ``CSV-NUM`` (error) - a CSV value of a Num variable is not a number; read as missing.
* ``IO-READ`` (error) - a file could not be read at all; it is skipped.
* ``SDTM-DUPLICATE-FORMAT`` (info) - a domain exists in several formats; xpt > json > csv wins.
* ``SDTM-NOT-DATASET`` (info) - a ``.json`` file in an SDTM folder is not Dataset-JSON; skipped.

Determinism: Dataset-JSON ``datasetJSONCreationDateTime`` is the ``created`` argument
(default ``1970-01-01T00:00:00``), never the wall clock, so the same datasets give the same bytes.
"""
from __future__ import annotations

import csv
import io
import math
import re
import unicodedata
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import orjson
import pandas as pd
import pyreadstat

from trialbridge.converters.core.datasets import Dataset, Variable
from trialbridge.converters.core.files import atomic_open, atomic_path
from trialbridge.converters.core.issues import IssueLog, TrialbridgeError
from trialbridge.converters.core.sdtm_spec import load_spec
from trialbridge.mappings.derive import format_number

FORMATS = ("xpt", "dataset-json", "csv")
SUFFIX = {"xpt": ".xpt", "dataset-json": ".json", "csv": ".csv"}
READ_PREFERENCE = (".xpt", ".json", ".csv")
DEFAULT_CREATED = "1970-01-01T00:00:00"
DATASET_JSON_VERSION = "1.1.0"
XPT_MAX_CHAR = 200
XPT_MAX_LABEL = 40
XPT_MAX_NAME = 8
# what a damaged or foreign file raises; anything else is our bug and propagates
_READ_ERRORS = (OSError, ValueError, csv.Error, pyreadstat.ReadstatError, pyreadstat.PyreadstatError)
_INTEGER_NAME = re.compile(r"(SEQ|DY|AGE|TAETORD|VISITNUM|TPTNUM|NUM)$")


# --------------------------------------------------------------------------------------- helpers
def _missing_num(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def _num(value: Any) -> float | None:
    return None if _missing_num(value) else float(value)


def _char(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value if isinstance(value, str) else str(value)


def to_ascii(text: str) -> str:
    """NFKD transliteration: drop combining marks; any character still non-ASCII becomes '?'."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return stripped.encode("ascii", "replace").decode("ascii")


def _file_name(ds: Dataset, fmt: str) -> str:
    return ds.name.lower() + SUFFIX[fmt]


def _enrich(name: str, label: str, typ: str, domain: str) -> Variable:
    """Variable from file metadata, with Core/role/codelist from the spec where known."""
    spec_var = load_spec(domain).var(name)
    if spec_var is None:
        return Variable(name=name, label=label or name, type=typ)
    return Variable(name=name, label=label or spec_var.label, type=typ, core=spec_var.core,
                    role=spec_var.role, codelist=spec_var.codelist,
                    codelist_code=spec_var.codelist_code, order=spec_var.order)


def _keys_for(domain: str, names: list[str]) -> list[str]:
    present = set(names)
    return [k for k in load_spec(domain).keys if k in present]


# ------------------------------------------------------------------------------------------- XPT
def write_xpt(ds: Dataset, path: str | Path, log: IssueLog) -> bool:
    """Write ``ds`` as SAS XPORT v5 following the FDA rules; return False if it was not written."""
    path = Path(path)
    fname = path.name
    too_long = [n for n in [ds.name, *ds.names] if len(n) > XPT_MAX_NAME]
    if too_long:
        for n in too_long:
            log.error("XPT-NAME-8", f"{ds.name}: name {n!r} is longer than 8 characters; "
                      f"{fname} not written", file=fname, field=n, value=n)
        return False

    def label40(label: str, field: str | None) -> str:
        if len(label) > XPT_MAX_LABEL:
            log.warning("XPT-LABEL-40", f"{ds.name}: label longer than 40 characters truncated",
                        file=fname, field=field, value=label)
            return label[:XPT_MAX_LABEL]
        return label

    file_label = label40(to_ascii(ds.label), None)
    columns: dict[str, Any] = {}
    for var in ds.variables:
        if var.type == "Num":
            columns[var.name] = pd.Series([_num(r.get(var.name)) for r in ds.rows], dtype="float64")
            continue
        values = []
        for n, row in enumerate(ds.rows, start=1):
            value = _char(row.get(var.name))
            if not value.isascii():
                new = to_ascii(value)
                log.warning("XPT-NONASCII", f"{ds.name} row {n} {var.name}: non-ASCII value "
                            f"{value!r} written as {new!r} in the XPT", file=fname, record=n,
                            field=var.name, value=value, usubjid=row.get("USUBJID") or None)
                value = new
            if len(value.encode("ascii")) > XPT_MAX_CHAR:
                log.error("XPT-LENGTH-200", f"{ds.name} row {n} {var.name}: value of "
                          f"{len(value)} bytes exceeds 200; truncated in the XPT", file=fname,
                          record=n, field=var.name, value=value,
                          usubjid=row.get("USUBJID") or None)
                value = value[:XPT_MAX_CHAR]
            values.append(value)
        columns[var.name] = pd.Series(values, dtype="object")
    df = pd.DataFrame(columns, columns=ds.names)
    labels = [label40(to_ascii(v.label), v.name) for v in ds.variables]
    with atomic_path(path) as tmp:
        pyreadstat.write_xport(df, str(tmp), file_label=file_label, column_labels=labels,
                               table_name=ds.name, file_format_version=5)
        _fix_xpt_timestamps(tmp)
    return True


_XPT_STAMP = re.compile(rb"\d\d[A-Z]{3}\d\d:\d\d:\d\d:\d\d")
_XPT_OBS_HEADER = b"HEADER RECORD*******OBS     HEADER RECORD"
XPT_FIXED_STAMP = b"01JAN70:00:00:00"


def _fix_xpt_timestamps(path: Path) -> None:
    """Same datasets, same bytes: ReadStat stamps the library and member headers with the
    wall clock and has no option to set it, so the created/modified stamps (16 bytes each,
    only in the header records before the observation header) are set to a fixed value."""
    data = path.read_bytes()
    end = data.find(_XPT_OBS_HEADER)
    if end < 0:
        return
    head = _XPT_STAMP.sub(XPT_FIXED_STAMP, data[:end])
    path.write_bytes(head + data[end:])


def _read_xpt(path: Path, log: IssueLog) -> Dataset:
    try:
        df, meta = pyreadstat.read_xport(str(path), disable_datetime_conversion=True)
    except UnicodeDecodeError:
        for enc in ("cp1252", "latin1"):
            try:
                df, meta = pyreadstat.read_xport(str(path), encoding=enc,
                                                 disable_datetime_conversion=True)
            except UnicodeDecodeError:
                continue
            log.info("XPT-ENCODING", f"{path.name} is not UTF-8; decoded as {enc}",
                     file=path.name, value=enc)
            break
        else:  # pragma: no cover - latin1 decodes every byte
            raise
    name = (meta.table_name or path.stem).upper()
    labels = dict(zip(meta.column_names, meta.column_labels or [None] * len(meta.column_names)))
    variables = []
    for col in meta.column_names:
        typ = "Num" if meta.readstat_variable_types.get(col) == "double" else "Char"
        variables.append(_enrich(col, labels.get(col) or "", typ, name))
    rows = []
    converters = [(v.name, _num if v.type == "Num" else _char) for v in variables]
    for rec in df.itertuples(index=False, name=None):
        rows.append({n: conv(x) for (n, conv), x in zip(converters, rec)})
    label = meta.file_label or load_spec(name).label
    return Dataset(name=name, label=label, label_given=bool(meta.file_label), variables=variables, rows=rows,
                   keys=_keys_for(name, meta.column_names), source=str(path))


# ---------------------------------------------------------------------------------- Dataset-JSON
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
    if not _INTEGER_NAME.search(var.name):
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


def _version() -> str:
    from trialbridge.converters import __version__

    return __version__


def write_dataset_json(ds: Dataset, path: str | Path, *, study_oid: str,
                       metadata_version_oid: str = "MDV.TRIALBRIDGE",
                       define_href: str = "define.xml", created: str = DEFAULT_CREATED) -> None:
    """Write ``ds`` as Dataset-JSON v1.1.  ``created`` is written as
    ``datasetJSONCreationDateTime`` (fixed default keeps output byte-identical across runs)."""
    obj = dataset_json_obj(ds, study_oid=study_oid, metadata_version_oid=metadata_version_oid,
                           define_href=define_href, created=created)
    with atomic_open(path, "wb") as fh:
        fh.write(orjson.dumps(obj))


def _read_dataset_json(path: Path, log: IssueLog, obj: dict | None = None) -> Dataset:
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


# ------------------------------------------------------------------------------------------- CSV
def write_csv(ds: Dataset, path: str | Path) -> None:
    """Header of variable names, then one line per row; UTF-8; numbers in shortest form."""
    with atomic_open(path) as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(ds.names)
        kinds = [v.type for v in ds.variables]
        for row in ds.rows:
            w.writerow([format_number(row.get(v.name)) if k == "Num" else _char(row.get(v.name))
                        for v, k in zip(ds.variables, kinds)])


def _read_csv(path: Path, log: IssueLog) -> Dataset:
    text = path.read_text(encoding="utf-8-sig")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None) or []
    name = path.stem.upper()
    spec = load_spec(name)
    variables = []
    for col in header:
        sv = spec.var(col)
        variables.append(sv if sv is not None else Variable(name=col, label=col, type="Char"))
    rows = []
    for n, rec in enumerate(reader, start=1):
        row = {}
        for var, v in zip(variables, rec + [""] * (len(variables) - len(rec))):
            if var.type == "Num":
                try:
                    row[var.name] = None if v.strip() == "" else float(v)
                except ValueError:
                    log.error("CSV-NUM", f"{path.name} row {n} {var.name}: {v!r} is not a number; "
                              "read as missing", file=path.name, record=n, field=var.name, value=v)
                    row[var.name] = None
            else:
                row[var.name] = v
        rows.append(row)
    return Dataset(name=name, label=spec.label, label_given=False, variables=variables, rows=rows,
                   keys=_keys_for(name, header), source=str(path))


# --------------------------------------------------------------------------------- entry points
def write_datasets(datasets: Iterable[Dataset] | Mapping[str, Dataset], outdir: str | Path,
                   formats: list[str], log: IssueLog, study_oid: str, *,
                   created: str = DEFAULT_CREATED, metadata_version_oid: str = "MDV.TRIALBRIDGE",
                   define_href: str = "define.xml") -> list[Path]:
    """Write every dataset in every requested format; return the paths written."""
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise TrialbridgeError(f"unknown output format(s) {bad}; choose from {list(FORMATS)}")
    if isinstance(datasets, Mapping):
        datasets = datasets.values()
    outdir = Path(outdir)
    written = []
    for ds in datasets:
        for fmt in formats:
            target = outdir / _file_name(ds, fmt)
            if fmt == "xpt":
                if not write_xpt(ds, target, log):
                    continue
            elif fmt == "dataset-json":
                write_dataset_json(ds, target, study_oid=study_oid, created=created,
                                   metadata_version_oid=metadata_version_oid,
                                   define_href=define_href)
            else:
                write_csv(ds, target)
            written.append(target)
    return written


def read_dataset(path: str | Path, log: IssueLog) -> Dataset | None:
    """Read one .xpt / .json (Dataset-JSON) / .csv file; None (and an IO-READ error) if unreadable."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".xpt":
            return _read_xpt(path, log)
        if suffix == ".json":
            return _read_dataset_json(path, log)
        if suffix == ".csv":
            return _read_csv(path, log)
        log.error("IO-READ", f"{path.name}: not an SDTM dataset file (.xpt, .json, .csv)",
                  file=path.name)
        return None
    except _READ_ERRORS as exc:  # unreadable file: report and skip
        log.error("IO-READ", f"{path.name}: cannot read: {type(exc).__name__}: {exc}",
                  file=path.name)
        return None


def _is_dataset_json(path: Path) -> bool:
    try:
        obj = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return True  # let read_dataset report it
    return isinstance(obj, dict) and ("datasetJSONVersion" in obj or "columns" in obj)


def read_sdtm_folder(path: str | Path, log: IssueLog) -> dict[str, Dataset]:
    """Every dataset in ``path``, by upper-case name; xpt > json > csv when duplicated."""
    folder = Path(path)
    if not folder.is_dir():
        raise TrialbridgeError(f"{folder} is not a folder")
    by_domain: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.suffix.lower() not in READ_PREFERENCE or p.name == "issues.json":
            continue  # issues.json is trialbridge's own findings file written beside the datasets
        if p.suffix.lower() == ".json" and not _is_dataset_json(p):
            log.info("SDTM-NOT-DATASET", f"{p.name} is not Dataset-JSON; skipped", file=p.name)
            continue
        by_domain.setdefault(p.stem.upper(), []).append(p)
    out: dict[str, Dataset] = {}
    for domain in sorted(by_domain):
        files = sorted(by_domain[domain], key=lambda p: READ_PREFERENCE.index(p.suffix.lower()))
        if len(files) > 1:
            log.info("SDTM-DUPLICATE-FORMAT", f"{domain} found as {[f.name for f in files]}; "
                     f"reading {files[0].name}", file=files[0].name, value=domain)
        ds = read_dataset(files[0], log)
        if ds is not None:
            out[ds.name] = ds
    return out
