"""Reading SDTM dataset files one by one (streamed) or a whole folder, format by suffix.

:func:`iter_dataset` gives a file's metadata and an iterator over its rows without loading the
file whole where the format allows (XPT in chunks, CSV and Dataset-JSON NDJSON line by line; a
``.json`` Dataset-JSON object is parsed whole).  :func:`read_dataset` and
:func:`read_sdtm_folder` collect the rows into :class:`Dataset` objects.

A dataset's name (a Dataset-JSON ``name``, an XPT member name, a CSV file's stem) becomes a
file name when the dataset is written again: a name that is not letters, digits and ``_``
(``../../x``, ``A B``) is an ``SDTM-NAME-UNSAFE`` error and the file is not read.

Issue codes: ``IO-READ``, ``SDTM-DUPLICATE-FORMAT``, ``SDTM-NOT-DATASET``, ``SDTM-NAME-UNSAFE``; see
:mod:`converters.formats.sdtm`.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson
import pyreadstat

from trialbridge.converters.core.datasets import Dataset
from trialbridge.converters.core.files import printable, safe_name
from trialbridge.converters.core.issues import IssueLog, TrialbridgeError
from trialbridge.converters.formats.sdtm.csv import iter_csv
from trialbridge.converters.formats.sdtm.dataset_json import iter_dataset_json, iter_dataset_ndjson
from trialbridge.converters.formats.sdtm.values import READ_PREFERENCE
from trialbridge.converters.formats.sdtm.xpt import iter_xpt

# what a damaged or foreign file raises; anything else is our bug and propagates
_READ_ERRORS = (OSError, ValueError, csv.Error, pyreadstat.ReadstatError, pyreadstat.PyreadstatError)
Stream = tuple[Dataset, Iterator[dict[str, Any]]]
_READERS: dict[str, Callable[[Path, IssueLog], Stream]] = {
    ".xpt": iter_xpt, ".json": iter_dataset_json, ".ndjson": iter_dataset_ndjson, ".csv": iter_csv}


def _reader(path: Path, log: IssueLog) -> Callable[[Path, IssueLog], Stream] | None:
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        log.error("IO-READ", f"{path.name}: not an SDTM dataset file ({', '.join(READ_PREFERENCE)})",
                  file=path.name)
    return reader


def _cannot_read(path: Path, log: IssueLog, exc: BaseException, after: int | None = None) -> None:
    where = f" after row {after}" if after is not None else ""
    log.error("IO-READ", f"{path.name}: cannot read{where}: {type(exc).__name__}: {exc}", file=path.name,
              record=None if after is None else after + 1)


def _name_ok(meta: Dataset, path: Path, log: IssueLog) -> bool:
    if safe_name(meta.name):
        return True
    log.error("SDTM-NAME-UNSAFE", f"{printable(path.name)}: dataset name {printable(repr(meta.name))} is not a dataset "
              "name (letters, digits and _, at most 64) and would become a file name; the file is not read",
              file=path.name, field="name", value=meta.name)
    return False


def iter_dataset(path: str | Path, log: IssueLog) -> Stream | None:
    """(metadata with rows empty, iterator over the rows) of one .xpt / .json / .ndjson / .csv
    file; None (and an IO-READ error) if it cannot be opened.  A file that breaks off part way
    ends the iteration with an IO-READ error naming the last row read."""
    path = Path(path)
    reader = _reader(path, log)
    if reader is None:
        return None
    try:
        meta, rows = reader(path, log)
    except _READ_ERRORS as exc:  # unreadable file: report and skip
        _cannot_read(path, log, exc)
        return None
    if not _name_ok(meta, path, log):
        return None

    def guarded() -> Iterator[dict[str, Any]]:
        n = 0
        try:
            for row in rows:
                yield row
                n += 1
        except _READ_ERRORS as exc:
            _cannot_read(path, log, exc, n)

    return meta, guarded()


def read_dataset(path: str | Path, log: IssueLog) -> Dataset | None:
    """Read one .xpt / .json / .ndjson (Dataset-JSON) / .csv file whole; None (and an IO-READ
    error) if it cannot be read completely."""
    path = Path(path)
    reader = _reader(path, log)
    if reader is None:
        return None
    try:
        meta, rows = reader(path, log)
        if not _name_ok(meta, path, log):
            return None
        meta.rows = list(rows)
    except _READ_ERRORS as exc:  # unreadable file: report and skip
        _cannot_read(path, log, exc)
        return None
    return meta


def _is_dataset_json(path: Path) -> bool:
    try:
        if path.suffix.lower() == ".ndjson":
            with open(path, "rb") as fh:
                obj = orjson.loads(fh.readline())
        else:
            obj = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return True  # let read_dataset report it
    return isinstance(obj, dict) and ("datasetJSONVersion" in obj or "columns" in obj)


def sdtm_files(path: str | Path, log: IssueLog) -> dict[str, Path]:
    """The file to read for each dataset in folder ``path`` (upper-case name -> path), chosen
    xpt > json > ndjson > csv when a dataset is there in several formats."""
    folder = Path(path)
    if not folder.is_dir():
        raise TrialbridgeError(f"{folder} is not a folder")
    by_domain: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.suffix.lower() not in READ_PREFERENCE or p.name == "issues.json":
            continue  # issues.json is trialbridge's own findings file written beside the datasets
        if p.suffix.lower() in (".json", ".ndjson") and not _is_dataset_json(p):
            log.info("SDTM-NOT-DATASET", f"{p.name} is not Dataset-JSON; skipped", file=p.name)
            continue
        by_domain.setdefault(p.stem.upper(), []).append(p)
    out = {}
    for domain in sorted(by_domain):
        files = sorted(by_domain[domain], key=lambda p: READ_PREFERENCE.index(p.suffix.lower()))
        if len(files) > 1:
            log.info("SDTM-DUPLICATE-FORMAT", f"{domain} found as {[f.name for f in files]}; "
                     f"reading {files[0].name}", file=files[0].name, value=domain)
        out[domain] = files[0]
    return out


def read_sdtm_folder(path: str | Path, log: IssueLog) -> dict[str, Dataset]:
    """Every dataset in ``path``, by upper-case name; xpt > json > ndjson > csv when duplicated."""
    out: dict[str, Dataset] = {}
    for file in sdtm_files(path, log).values():
        ds = read_dataset(file, log)
        if ds is not None:
            out[ds.name] = ds
    return out
