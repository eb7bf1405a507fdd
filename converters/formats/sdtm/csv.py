"""SDTM datasets as CSV: a header of variable names, then one line per row; UTF-8; numbers in
shortest form (:func:`format_number`).  Written and read row by row.

A CSV carries no labels or types: reading takes them from the specification of the dataset
named by the file (unknown variables are Char).

Issue code: ``CSV-NUM`` (reading); see :mod:`converters.formats.sdtm`.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import IO, Any, Iterator

from trialbridge.converters.core.datasets import Dataset, Variable
from trialbridge.converters.core.issues import IssueLog
from trialbridge.converters.core.sdtm_spec import load_spec
from trialbridge.converters.formats.sdtm.values import RowBatch, _keys_for, format_number


class CsvWriter:
    """One dataset as CSV into the text file ``fh`` (opened with ``newline=""``)."""

    def __init__(self, meta: Dataset, fh: IO[str]):
        self.writer = csv.writer(fh, lineterminator="\n")
        self.writer.writerow(meta.names)
        self.columns = [(v.name, v.type == "Num") for v in meta.variables]

    def write_batch(self, batch: RowBatch) -> None:
        columns = [[format_number(v) for v in batch.column(name)] if num else batch.texts(name)
                   for name, num in self.columns]
        if columns:
            self.writer.writerows(zip(*columns))
        else:
            self.writer.writerows([] for _ in batch.rows)

    def finish(self) -> None:
        pass


def iter_csv(path: Path, log: IssueLog) -> tuple[Dataset, Iterator[dict[str, Any]]]:
    """The dataset's metadata (from the header and the spec) and an iterator over its rows."""
    with open(path, encoding="utf-8-sig", newline="") as fh:
        header = next(csv.reader(fh), None) or []
    name = path.stem.upper()
    spec = load_spec(name)
    variables = []
    for col in header:
        sv = spec.var(col)
        variables.append(sv if sv is not None else Variable(name=col, label=col, type="Char"))
    meta = Dataset(name=name, label=spec.label, label_given=False, variables=variables, rows=[],
                   keys=_keys_for(name, header), source=str(path))

    def rows() -> Iterator[dict[str, Any]]:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            next(reader, None)
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
                yield row

    return meta, rows()
