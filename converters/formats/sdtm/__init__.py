"""SDTM dataset files: SAS XPORT v5, CDISC Dataset-JSON v1.1 (JSON and NDJSON) and CSV, written
and read as streams: memory does not depend on the number of rows.

One file per dataset, named ``<domain>.xpt`` / ``.json`` / ``.ndjson`` / ``.csv`` (lower case).
Every output goes to a temporary sibling renamed into place (:mod:`converters.core.files`).
Data problems become issues in the :class:`~converters.core.issues.IssueLog`; readers never
raise on bad data.

Writing a dataset takes two steps, so that no dataset is held or read back whole:

1. while its rows are produced, gather :class:`ColumnStats` (``add(row)``; chunks gathered by
   several workers ``merge``); :func:`dataset_meta` then picks its variables;
2. replay the rows through :func:`open_dataset_writers` (``.write(row)``, ``.close()``), which
   writes every requested format in one pass: the XPT headers and the Dataset-JSON metadata
   take their lengths and types from the statistics.

define.xml is built from the same statistics (:mod:`converters.formats.define`).
:func:`write_datasets` does both steps for whole in-memory datasets.  Reading:
:func:`iter_dataset` (metadata + row iterator), :func:`read_dataset`, :func:`read_sdtm_folder`.

Modules, one concept each:

* :mod:`.values` - value conventions (missing, Char/Num, XPT ASCII), formats, FDA limits.
* :mod:`.stats` - :class:`ColumnStats`, :func:`dataset_meta`.
* :mod:`.xpt` - our streaming XPORT v5 writer and front-to-back reader (IBM 370 doubles),
  metadata through pyreadstat.
* :mod:`.dataset_json` - Dataset-JSON v1.1 streamed as JSON or NDJSON, and read.
* :mod:`.csv` - CSV written and read row by row.
* :mod:`.writers` - :func:`open_dataset_writers` (all formats of one dataset in one pass),
  :func:`write_datasets`, single-format :func:`write_xpt` / :func:`write_dataset_json` / :func:`write_csv`.
* :mod:`.folder` - :func:`iter_dataset`, :func:`read_dataset`, :func:`read_sdtm_folder` (format by suffix).

Issue codes raised here:

* ``XPT-NONASCII`` (warning) - a Char value is not ASCII; transliterated in the XPT only
  (NFKD, combining marks dropped, anything still non-ASCII becomes ``?``).
* ``XPT-LENGTH-200`` (error) - a Char value is longer than 200 bytes (FDA Technical Conformance
  Guide; P21 SD1096-style); truncated in the XPT only.
* ``XPT-LABEL-40`` (warning) - a dataset or variable label longer than 40 characters; truncated.
* ``XPT-NAME-8`` (error) - a dataset or variable name longer than 8 characters; file not written.
* ``XPT-NUM-RANGE`` (error / warning) - a number outside the range of XPORT (IBM 370) doubles:
  too large or infinite (error, written as missing) or too small (warning, written as 0); XPT only.
* ``XPT-ENCODING`` (info) - an XPT was not UTF-8 and was decoded as cp1252 or latin1.
* ``DSJ-SCHEMA`` (error) - a Dataset-JSON file does not validate against the v1.1 schema.
* ``CSV-NUM`` (error) - a CSV value of a Num variable is not a number; read as missing.
* ``IO-READ`` (error) - a file could not be read at all (skipped), or broke off part way.
* ``SDTM-DUPLICATE-FORMAT`` (info) - a domain exists in several formats; xpt > json > ndjson > csv wins.
* ``SDTM-NOT-DATASET`` (info) - a ``.json``/``.ndjson`` file in an SDTM folder is not Dataset-JSON; skipped.
* ``XPT-NOT-XPORT`` (error) - an ``.xpt`` that is not SAS transport (noise, a SAS7BDAT renamed); not read.
* ``XPT-V8`` (warning) - SAS transport version 8; read (FDA takes version 5).
* ``XPT-TRUNCATED`` (error) - an XPT cut short (size not whole 80-byte records, a row cut); rows before it read.
* ``CSV-ROW-LENGTH`` / ``DSJ-ROW-LENGTH`` (error) - a row with another number of values than columns; not read.
* ``CSV-ENCODING`` (warning) - an SDTM CSV that is not UTF-8, read as Windows-1252.
* ``SDTM-DUPLICATE-COLUMN`` (error) - a column name given twice; the first is read.
* ``SDTM-NUM-RANGE`` (error) - a number a float cannot hold (1e400, 1e-400); read as missing, never inf or 0.
* ``SDTM-EMPTY-DATASET`` (warning) - a dataset with no rows.

Every row a reader reads is counted ``read`` under its file (``IssueLog.count_row``), and
``rejected`` when the reader could not place it; the pipeline counts the rest.

Determinism: Dataset-JSON ``datasetJSONCreationDateTime`` and the XPT header stamps are
the ``created`` argument, by default the run's creation time: the real time, or
``SOURCE_DATE_EPOCH`` when set (:mod:`trialbridge.converters.core.clock`), so with it the same
datasets give the same bytes.
"""
from __future__ import annotations

import importlib

# name -> the module of this package that defines it, imported on first use (PEP 562), so
# that importing one module (``stats`` in a worker process) does not import them all:
# ``xpt`` brings numpy and pyreadstat, some 30 MiB, which mapping a subject never needs.
_WHERE = {
    "CsvWriter": "csv", "iter_csv": "csv",
    "DatasetJsonWriter": "dataset_json", "DatasetNdjsonWriter": "dataset_json",
    "dataset_json_header": "dataset_json", "dataset_json_obj": "dataset_json",
    "dataset_json_schema": "dataset_json", "iter_dataset_json": "dataset_json",
    "iter_dataset_ndjson": "dataset_json", "num_data_type": "dataset_json",
    "read_dataset_json": "dataset_json",
    "iter_dataset": "folder", "read_dataset": "folder", "read_sdtm_folder": "folder", "sdtm_files": "folder",
    "ColumnStats": "stats", "VarStats": "stats", "dataset_meta": "stats",
    "DATASET_JSON_VERSION": "values", "DEFAULT_CREATED": "values", "FORMATS": "values",
    "READ_PREFERENCE": "values", "SUFFIX": "values", "XPT_MAX_CHAR": "values", "XPT_MAX_LABEL": "values",
    "XPT_MAX_NAME": "values", "_char": "values", "_missing_num": "values", "_num": "values",
    "_version": "values", "file_name": "values", "format_number": "values", "to_ascii": "values",
    "DatasetWriters": "writers", "open_dataset_writers": "writers", "write_csv": "writers",
    "write_dataset_json": "writers", "write_datasets": "writers", "write_xpt": "writers",
    "XptWriter": "xpt", "ibm_from_ieee": "xpt", "ieee_from_ibm": "xpt",
    "iter_xpt": "xpt",
}


_MODULES = frozenset(_WHERE.values())


def __getattr__(name: str):
    if name in _MODULES:  # ``sdtm.xpt``: the submodule itself
        return importlib.import_module(f"{__name__}.{name}")
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE, *_MODULES})


__all__ = [
    "DATASET_JSON_VERSION", "DEFAULT_CREATED", "FORMATS", "READ_PREFERENCE", "SUFFIX",
    "XPT_MAX_CHAR", "XPT_MAX_LABEL", "XPT_MAX_NAME", "ColumnStats", "CsvWriter", "DatasetJsonWriter",
    "DatasetNdjsonWriter", "DatasetWriters", "VarStats", "XptWriter", "_char", "_missing_num", "_num", "_version", "dataset_json_header", "dataset_json_obj", "dataset_json_schema",
    "dataset_meta", "file_name", "format_number", "ibm_from_ieee", "ieee_from_ibm", "iter_csv", "iter_dataset",
    "iter_dataset_json", "iter_dataset_ndjson", "iter_xpt", "num_data_type", "open_dataset_writers",
    "read_dataset", "read_dataset_json", "read_sdtm_folder", "sdtm_files", "to_ascii", "write_csv",
    "write_dataset_json", "write_datasets", "write_xpt",
]
