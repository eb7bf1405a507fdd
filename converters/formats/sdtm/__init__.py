"""SDTM dataset files: SAS XPORT v5, CDISC Dataset-JSON v1.1 and CSV, written and read.

One file per dataset, named ``<domain>.xpt`` / ``<domain>.json`` / ``<domain>.csv`` (lower case).
Every output goes through :mod:`converters.core.files` (atomic rename).  Data problems become
issues in the :class:`~converters.core.issues.IssueLog`; readers never raise on bad data.

Modules, one concept each:

* :mod:`.values` - value conventions (missing, Char/Num, XPT ASCII), formats, FDA limits.
* :mod:`.stats` - :class:`ColumnStats`, gathered while rows pass: everything the writers and
  define.xml need to describe a dataset, so none is rescanned; :func:`dataset_meta`.
* :mod:`.xpt`, :mod:`.dataset_json`, :mod:`.csv` - one file format each, writer and reader.
* :mod:`.writers` - :func:`write_datasets`, every dataset in every requested format.
* :mod:`.folder` - :func:`read_dataset`, :func:`read_sdtm_folder` (format by suffix, detection).

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

from trialbridge.converters.formats.sdtm.csv import read_csv, write_csv
from trialbridge.converters.formats.sdtm.dataset_json import (
    _num_data_type, dataset_json_obj, dataset_json_schema, read_dataset_json, write_dataset_json)
from trialbridge.converters.formats.sdtm.folder import read_dataset, read_sdtm_folder
from trialbridge.converters.formats.sdtm.stats import ColumnStats, VarStats, dataset_meta
from trialbridge.converters.formats.sdtm.values import (
    DATASET_JSON_VERSION, DEFAULT_CREATED, FORMATS, READ_PREFERENCE, SUFFIX, XPT_MAX_CHAR, XPT_MAX_LABEL,
    XPT_MAX_NAME, _char, _missing_num, _num, _version, format_number, to_ascii)
from trialbridge.converters.formats.sdtm.writers import write_datasets
from trialbridge.converters.formats.sdtm.xpt import XPT_FIXED_STAMP, read_xpt, write_xpt

__all__ = [
    "DATASET_JSON_VERSION", "DEFAULT_CREATED", "FORMATS", "READ_PREFERENCE", "SUFFIX", "XPT_FIXED_STAMP",
    "XPT_MAX_CHAR", "XPT_MAX_LABEL", "XPT_MAX_NAME", "ColumnStats", "VarStats", "_char", "_missing_num", "_num", "_num_data_type",
    "_version", "dataset_json_obj", "dataset_json_schema", "dataset_meta", "format_number", "read_csv", "read_dataset",
    "read_dataset_json", "read_sdtm_folder", "read_xpt", "to_ascii", "write_csv", "write_dataset_json",
    "write_datasets", "write_xpt",
]
