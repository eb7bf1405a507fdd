"""Writing SDTM datasets in every requested format."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

from trialbridge.converters.core.datasets import Dataset
from trialbridge.converters.core.issues import IssueLog, TrialbridgeError
from trialbridge.converters.formats.sdtm.csv import write_csv
from trialbridge.converters.formats.sdtm.dataset_json import write_dataset_json
from trialbridge.converters.formats.sdtm.values import DEFAULT_CREATED, FORMATS, file_name
from trialbridge.converters.formats.sdtm.xpt import write_xpt


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
            target = outdir / file_name(ds.name, fmt)
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
