"""SDTM datasets as CSV: a header of variable names, then one line per row; UTF-8.

Issue code: ``CSV-NUM`` (reading); see :mod:`converters.formats.sdtm`.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from trialbridge.converters.core.datasets import Dataset, Variable
from trialbridge.converters.core.files import atomic_open
from trialbridge.converters.core.issues import IssueLog
from trialbridge.converters.core.sdtm_spec import load_spec
from trialbridge.converters.formats.sdtm.values import _char, _keys_for, format_number


def write_csv(ds: Dataset, path: str | Path) -> None:
    """Header of variable names, then one line per row; UTF-8; numbers in shortest form."""
    with atomic_open(path) as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(ds.names)
        kinds = [v.type for v in ds.variables]
        for row in ds.rows:
            w.writerow([format_number(row.get(v.name)) if k == "Num" else _char(row.get(v.name))
                        for v, k in zip(ds.variables, kinds)])


def read_csv(path: Path, log: IssueLog) -> Dataset:
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
