"""A dataset shipped in several formats (``dm.xpt`` beside ``dm.json``): every copy is read
and checked to agree with the one validated, value by value, so a Dataset-JSON file edited
by hand (SEX changed to X) cannot pass behind its XPT.

Agreement: the same variables (names and types), the same number of rows, and in each row
the same values — Char compared without trailing blanks (XPT pads), Num as numbers (an XPT
float and a Dataset-JSON decimal of the same value agree), missing as missing.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable

from trialbridge.converters.core.datasets import Dataset
from trialbridge.converters.core.issues import IssueLog

CODE = "SDTM-COPY-DIFFERS"
SHOWN_PER_COPY = 20  # value differences named one by one per copy; the rest are counted


def _same(a: Any, b: Any) -> bool:
    if _missing(a) and _missing(b):
        return True
    if isinstance(a, (int, float)) or isinstance(b, (int, float)):
        try:
            x, y = float(a), float(b)
        except (TypeError, ValueError):
            return False
        return x == y or math.isclose(x, y, rel_tol=1e-12, abs_tol=0.0)
    return str(a).rstrip() == str(b).rstrip()


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and v.strip() == "")


def compare_copy(primary: Dataset, copy: Dataset, copy_file: str, log: IssueLog) -> int:
    """Findings for every way ``copy`` differs from ``primary``; returns how many."""
    found = 0
    pv = {v.name: v.type for v in primary.variables}
    cv = {v.name: v.type for v in copy.variables}
    for name in sorted(set(pv) | set(cv)):
        if name not in cv or name not in pv:
            where = primary.source if name not in cv else copy_file
            log.error(CODE, f"{name} is in {Path(where or '').name} only: the copies of {primary.name} do not have "
                      "the same variables", file=copy_file, field=name)
            found += 1
        elif pv[name] != cv[name]:
            log.error(CODE, f"{name} is {cv[name]} here but {pv[name]} in {Path(primary.source or '').name}",
                      file=copy_file, field=name)
            found += 1
    if len(primary.rows) != len(copy.rows):
        log.error(CODE, f"{len(copy.rows)} row(s) here, {len(primary.rows)} in {Path(primary.source or '').name}",
                  file=copy_file, value=len(copy.rows))
        found += 1
    common = [n for n in pv if n in cv]
    differences = 0
    for row_no, (a, b) in enumerate(zip(primary.rows, copy.rows), start=1):
        for name in common:
            if not _same(a.get(name), b.get(name)):
                differences += 1
                if differences <= SHOWN_PER_COPY:
                    u = b.get("USUBJID")
                    log.error(CODE, f"{name} is {b.get(name)!r} here but {a.get(name)!r} in "
                              f"{Path(primary.source or '').name}", file=copy_file, record=row_no, field=name,
                              value=b.get(name), usubjid=None if _missing(u) else str(u))
    if differences > SHOWN_PER_COPY:
        log.error(CODE, f"{differences - SHOWN_PER_COPY} more value(s) differ from {Path(primary.source or '').name}",
                  file=copy_file, value=differences - SHOWN_PER_COPY)
    return found + differences


def check_copies(datasets: dict[str, Dataset], copies: dict[str, list[Path]], log: IssueLog,
                 read: "callable") -> list[str]:
    """Read every further copy (``copies``: name -> files, the validated one first) and compare
    it with the dataset validated.  Returns the files compared."""
    compared = []
    for name, files in sorted(copies.items()):
        primary = datasets.get(name)
        if primary is None:
            continue
        for file in files[1:]:
            copy = read(file, log)
            if copy is None:
                continue  # unreadable: read() said why
            compare_copy(primary, copy, str(file), log)
            compared.append(str(file))
    return compared


__all__: Iterable[str] = ["CODE", "check_copies", "compare_copy"]
