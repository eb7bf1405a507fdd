"""SAS XPORT (transport) version 5 files, written and read.

Issue codes: ``XPT-NONASCII``, ``XPT-LENGTH-200``, ``XPT-LABEL-40``, ``XPT-NAME-8`` (writing),
``XPT-ENCODING`` (reading); see :mod:`converters.formats.sdtm`.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd
import pyreadstat

from trialbridge.converters.core.datasets import Dataset
from trialbridge.converters.core.files import atomic_path
from trialbridge.converters.core.issues import IssueLog
from trialbridge.converters.core.sdtm_spec import load_spec
from trialbridge.converters.formats.sdtm.values import (
    XPT_MAX_CHAR, XPT_MAX_LABEL, XPT_MAX_NAME, _char, _enrich, _keys_for, _num, to_ascii)


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


def read_xpt(path: Path, log: IssueLog) -> Dataset:
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
