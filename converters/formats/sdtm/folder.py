"""Reading SDTM dataset files one by one or a whole folder, choosing the format by suffix.

Issue codes: ``IO-READ``, ``SDTM-DUPLICATE-FORMAT``, ``SDTM-NOT-DATASET``; see
:mod:`converters.formats.sdtm`.
"""
from __future__ import annotations

import csv
from pathlib import Path

import orjson
import pyreadstat

from trialbridge.converters.core.datasets import Dataset
from trialbridge.converters.core.issues import IssueLog, TrialbridgeError
from trialbridge.converters.formats.sdtm.csv import read_csv
from trialbridge.converters.formats.sdtm.dataset_json import read_dataset_json
from trialbridge.converters.formats.sdtm.values import READ_PREFERENCE
from trialbridge.converters.formats.sdtm.xpt import read_xpt

# what a damaged or foreign file raises; anything else is our bug and propagates
_READ_ERRORS = (OSError, ValueError, csv.Error, pyreadstat.ReadstatError, pyreadstat.PyreadstatError)


def read_dataset(path: str | Path, log: IssueLog) -> Dataset | None:
    """Read one .xpt / .json (Dataset-JSON) / .csv file; None (and an IO-READ error) if unreadable."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".xpt":
            return read_xpt(path, log)
        if suffix == ".json":
            return read_dataset_json(path, log)
        if suffix == ".csv":
            return read_csv(path, log)
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
