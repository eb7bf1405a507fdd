"""Writing SDTM datasets: one object per dataset writes every requested format in one pass.

Streaming use (the engine): gather the dataset's :class:`~.stats.ColumnStats` while its rows are
produced, choose its variables (:func:`~.stats.dataset_meta`), then replay the rows::

    with open_dataset_writers(meta, stats, outdir, ["xpt", "dataset-json"], log, study_oid) as out:
        for row in rows:          # dicts holding some or all variables; absent -> ""/None
            out.write(row)
    out.paths                     # what was written

Every file is written to a temporary sibling (:func:`converters.core.files.atomic_path`) and
renamed into place by ``close()``; an exception inside the ``with`` block (or :meth:`abort`)
removes the temporary files, so no half-written dataset is left.  ``close()`` checks that as many
rows were written as the statistics counted (statistics of other rows would give wrong widths).
Rows are copied into a batch of :data:`BATCH` rows, which each format then writes at once.

:func:`write_datasets` (whole in-memory datasets) computes each dataset's statistics from its
rows and writes it through the same objects; :func:`write_xpt`, :func:`write_dataset_json` and
:func:`write_csv` write one format to an explicit path.
"""
from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Iterable, Mapping

from trialbridge.converters.core.datasets import Dataset
from trialbridge.converters.core.files import atomic_path, output_file
from trialbridge.converters.core.issues import IssueLog, TrialbridgeError
from trialbridge.converters.formats.sdtm.csv import CsvWriter
from trialbridge.converters.formats.sdtm.dataset_json import DatasetJsonWriter, DatasetNdjsonWriter
from trialbridge.converters.formats.sdtm.stats import ColumnStats
from trialbridge.converters.formats.sdtm.values import DEFAULT_CREATED, FORMATS, RowBatch, file_name
from trialbridge.converters.formats.sdtm.xpt import XptWriter, xpt_names_ok

BATCH = 2048


class DatasetWriters:
    """Writers of one dataset, one per (format, path) target; see the module docstring."""

    def __init__(self, meta: Dataset, stats: ColumnStats, targets: Iterable[tuple[str, Path]],
                 log: IssueLog, *, study_oid: str = "", created: str = DEFAULT_CREATED,
                 metadata_version_oid: str = "MDV.TRIALBRIDGE", define_href: str = "define.xml"):
        self.meta, self.stats, self.log = meta, stats, log
        self.paths: list[Path] = []  # targets being written (final names)
        self.rows = 0
        self._pending: list[dict[str, Any]] = []
        self._writers: list[Any] = []
        self._stack = ExitStack()
        self._open = True
        header = {"study_oid": study_oid, "created": created, "metadata_version_oid": metadata_version_oid,
                  "define_href": define_href}
        try:
            for fmt, path in targets:
                path = Path(path)
                if fmt not in FORMATS:
                    raise TrialbridgeError(f"unknown output format {fmt!r}; choose from {list(FORMATS)}")
                if fmt == "xpt" and not xpt_names_ok(meta, log, path.name):
                    continue
                tmp = self._stack.enter_context(atomic_path(path))
                if fmt == "csv":
                    fh = self._stack.enter_context(open(tmp, "w", encoding="utf-8", newline=""))
                    writer: Any = CsvWriter(meta, fh)
                else:
                    fh = self._stack.enter_context(open(tmp, "wb"))
                    if fmt == "xpt":
                        writer = XptWriter(meta, stats, fh, log, path.name)
                    elif fmt == "dataset-json":
                        writer = DatasetJsonWriter(meta, stats, fh, **header)
                    else:
                        writer = DatasetNdjsonWriter(meta, stats, fh, **header)
                self._writers.append(writer)
                self.paths.append(path)
        except BaseException:
            self._stack.__exit__(*sys.exc_info())  # temporary files of the formats opened so far go
            raise

    def write(self, row: Mapping[str, Any]) -> None:
        """Write one row (a dict; variables it lacks are missing)."""
        self._pending.append(dict(row))
        if len(self._pending) >= BATCH:
            self._flush()

    def write_rows(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            self.write(row)

    def _flush(self) -> None:
        if not self._pending:
            return
        batch = RowBatch(self._pending, self.rows + 1)
        self._pending = []
        try:
            for writer in self._writers:
                writer.write_batch(batch)
        except BaseException:
            self.abort()
            raise
        self.rows += len(batch)

    def close(self) -> list[Path]:
        """Finish every file and move it into place; returns the paths written."""
        if not self._open:
            return self.paths
        try:
            self._flush()
            if self.rows != self.stats.rows:
                raise ValueError(f"{self.meta.name}: {self.rows} rows written but the statistics counted "
                                 f"{self.stats.rows}; the statistics do not describe these rows")
            for writer in self._writers:
                writer.finish()
        except BaseException:
            self.abort()
            raise
        self._open = False
        self._stack.close()
        return self.paths

    def abort(self) -> None:
        """Drop every temporary file; nothing is written."""
        if self._open:
            self._open = False
            self.paths = []
            # each atomic_path sees an exception, so it removes its temporary file
            self._stack.__exit__(RuntimeError, RuntimeError(f"{self.meta.name}: writing aborted"), None)

    def __enter__(self) -> DatasetWriters:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def open_dataset_writers(meta: Dataset, stats: ColumnStats, outdir: str | Path, formats: Iterable[str],
                         log: IssueLog, study_oid: str, *, created: str = DEFAULT_CREATED,
                         metadata_version_oid: str = "MDV.TRIALBRIDGE",
                         define_href: str = "define.xml") -> DatasetWriters:
    """Writers of ``meta`` (variables, labels, keys; rows ignored) in every format of ``formats``
    (:data:`FORMATS`) into ``outdir/<name>.<suffix>``; ``stats`` describes the rows to come.

    An XPT whose dataset or variable names are longer than 8 characters is not written
    (``XPT-NAME-8``); the other formats are.
    """
    formats = list(formats)
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise TrialbridgeError(f"unknown output format(s) {bad}; choose from {list(FORMATS)}")
    # the dataset's name may come from input data: checked before it becomes a path
    return DatasetWriters(meta, stats, [(fmt, output_file(outdir, file_name(meta.name, fmt))) for fmt in formats], log,
                          study_oid=study_oid, created=created, metadata_version_oid=metadata_version_oid,
                          define_href=define_href)


def _write_one(ds: Dataset, fmt: str, path: str | Path, log: IssueLog, **header: Any) -> list[Path]:
    with DatasetWriters(ds, ColumnStats.of(ds), [(fmt, Path(path))], log, **header) as out:
        out.write_rows(ds.rows)
    return out.paths


def write_datasets(datasets: Iterable[Dataset] | Mapping[str, Dataset], outdir: str | Path,
                   formats: list[str], log: IssueLog, study_oid: str, *,
                   created: str = DEFAULT_CREATED, metadata_version_oid: str = "MDV.TRIALBRIDGE",
                   define_href: str = "define.xml") -> list[Path]:
    """Write every in-memory dataset in every requested format; return the paths written."""
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise TrialbridgeError(f"unknown output format(s) {bad}; choose from {list(FORMATS)}")
    if isinstance(datasets, Mapping):
        datasets = datasets.values()
    written = []
    for ds in datasets:
        with open_dataset_writers(ds, ColumnStats.of(ds), outdir, formats, log, study_oid, created=created,
                                  metadata_version_oid=metadata_version_oid, define_href=define_href) as out:
            out.write_rows(ds.rows)
        written += out.paths
    return written


def write_xpt(ds: Dataset, path: str | Path, log: IssueLog) -> bool:
    """Write ``ds`` as SAS XPORT v5 following the FDA rules; False if it was not written."""
    return bool(_write_one(ds, "xpt", path, log))


def write_dataset_json(ds: Dataset, path: str | Path, *, study_oid: str,
                       metadata_version_oid: str = "MDV.TRIALBRIDGE",
                       define_href: str = "define.xml", created: str = DEFAULT_CREATED) -> None:
    """Write ``ds`` as Dataset-JSON v1.1 (``.ndjson``: the NDJSON form).  ``created`` is written
    as ``datasetJSONCreationDateTime`` (the fixed default keeps output byte-identical)."""
    fmt = "dataset-ndjson" if str(path).lower().endswith(".ndjson") else "dataset-json"
    _write_one(ds, fmt, path, IssueLog(), study_oid=study_oid, created=created,
               metadata_version_oid=metadata_version_oid, define_href=define_href)


def write_csv(ds: Dataset, path: str | Path) -> None:
    """Header of variable names, then one line per row; UTF-8; numbers in shortest form."""
    _write_one(ds, "csv", path, IssueLog())
