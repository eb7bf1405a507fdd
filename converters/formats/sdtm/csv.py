"""SDTM datasets as CSV: a header of variable names, then one line per row; UTF-8; numbers in
shortest form (:func:`format_number`).  Written and read row by row.

A CSV carries no labels or types: reading takes them from the specification of the dataset
named by the file (unknown variables are Char).

Issue codes (reading): ``CSV-NUM``, ``SDTM-NUM-RANGE``, ``CSV-ENCODING``, ``CSV-ROW-LENGTH``,
``SDTM-DUPLICATE-COLUMN``; see :mod:`converters.formats.sdtm`.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import IO, Any, Iterator

from trialbridge.converters.core.datasets import Dataset, Variable
from trialbridge.converters.core.issues import IssueLog
from trialbridge.converters.core.sdtm_spec import load_spec
from trialbridge.converters.formats.records import csv_encoding
from trialbridge.converters.formats.sdtm.values import (
    PLAIN_DECIMAL, SMALLEST_NORMAL, RowBatch, _keys_for, format_number, read_num, report_repeated_column)


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
    """The dataset's metadata (from the header and the spec) and an iterator over its rows.

    UTF-8 (with or without BOM, any line ending); a file that is not UTF-8 is read as
    Windows-1252 (CSV-ENCODING).  A column name given twice is read once, from its first
    column (SDTM-DUPLICATE-COLUMN).  A row with more or fewer values than the header is not
    read (CSV-ROW-LENGTH): its values cannot be placed in their columns.  A Num value must be
    a plain decimal number a float holds (CSV-NUM, SDTM-NUM-RANGE; read as missing).  Each
    row is counted read, and rejected when not read."""
    encoding = csv_encoding(path)
    if encoding != "utf-8-sig":
        log.warning("CSV-ENCODING", f"{path.name} is not UTF-8; read as Windows-1252 (what spreadsheets save) - "
                    "check accented characters", file=path.name, value=encoding)
    with open(path, encoding=encoding, newline="") as fh:
        header = [h.strip() for h in next(csv.reader(fh), None) or []]
    name = path.stem.upper()
    spec = load_spec(name)
    variables, places, seen = [], [], {}
    for index, col in enumerate(header):
        if col in seen:
            report_repeated_column(log, path, col, index, seen[col])
            continue
        seen[col] = index
        sv = spec.var(col)
        variables.append(sv if sv is not None else Variable(name=col, label=col, type="Char"))
        places.append(index)
    meta = Dataset(name=name, label=spec.label, label_given=False, variables=variables, rows=[],
                   keys=_keys_for(name, list(seen)), source=str(path))
    account = str(path)

    columns = [(var.name, index, var.type == "Num") for var, index in zip(variables, places)]
    plain = PLAIN_DECIMAL

    def rows() -> Iterator[dict[str, Any]]:
        n = 0
        try:
            with open(path, encoding=encoding, newline="") as fh:
                reader = csv.reader(fh)
                next(reader, None)
                for rec in reader:
                    if not rec or rec == [""] and len(header) > 1:
                        continue  # a blank line is no row
                    n += 1
                    if len(rec) != len(header):
                        log.error("CSV-ROW-LENGTH", f"{path.name} row {n}: {len(rec)} values for {len(header)} "
                                  "columns; the values cannot be placed in their columns, row not read",
                                  file=path.name, record=n, value=len(rec))
                        log.count_row(account, "rejected")
                        continue
                    row = {}
                    for name, index, num in columns:
                        v = rec[index]
                        if num:
                            t = v.strip()
                            if not t:
                                v = None
                            elif plain(t) and SMALLEST_NORMAL <= abs(x := float(t)) < math.inf:
                                v = x  # the common case, decided here; the rest by read_num
                            else:
                                v = read_num(v, path.name, n, name, log, "CSV-NUM")
                        row[name] = v
                    yield row
        finally:
            log.count_row(account, "read", n)  # once, when the reading ends (a row broken off included)

    return meta, rows()
