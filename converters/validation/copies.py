"""A dataset shipped in several formats (``dm.xpt`` beside ``dm.json``): the one validated is
read first (xpt > json > ndjson > csv); every further copy is read and compared with it,
value by value, so a copy edited by hand cannot pass unseen (``validate``).

Agreement: the same variables, the same number of rows, and in each row the same values —
text without trailing blanks (XPT pads), numbers by value to 12 significant digits.
"""
from __future__ import annotations

import math
from pathlib import Path

from trialbridge.converters.core.datasets import Dataset
from trialbridge.converters.core.issues import IssueLog
from trialbridge.converters.formats import sdtm as sdtm_io


MAX_COPY_DIFFERENCES = 20


def compare_copies(datasets: dict[str, Dataset], copies: dict[str, list[Path]], log: IssueLog) -> None:
    """A dataset given in several formats is validated from one file (xpt > json > ndjson >
    csv); every other copy is read and compared with it, value by value (numbers by value,
    text without trailing blanks), so an edited copy does not pass unseen: SDTM-COPY-DIFFERS
    (an error: a gate must not pass a package whose copies disagree)
    names each differing row and variable (the first 20 per copy, then a count), or
    SDTM-COPY-UNREAD when the copy cannot be read."""
    for name, paths in sorted(copies.items()):
        chosen = datasets.get(name)
        for path in paths:
            scratch = IssueLog()
            copy = sdtm_io.read_dataset(path, scratch)
            if chosen is None or copy is None:
                log.warning("SDTM-COPY-UNREAD", f"{path.name} (a copy of {name}) could not be compared: "
                            f"{'it' if copy is None else 'the file validated'} could not be read; it is not validated",
                            file=path.name, value=name)
                continue
            log.info("SDTM-DUPLICATE-FORMAT", f"{path.name} is not validated itself: it was compared with "
                     f"{Path(chosen.source or '').name}, which was", file=path.name, value=name)
            differences = 0
            names = [n for n in chosen.names if n in set(copy.names)]
            for var in sorted(set(chosen.names) ^ set(copy.names)):
                differences += 1
                log.error("SDTM-COPY-DIFFERS", f"{path.name}: variable {var} is only in "
                            f"{path.name if var in copy.names else Path(chosen.source or '').name}",
                            file=path.name, field=var)
            if len(chosen.rows) != len(copy.rows):
                differences += 1
                log.error("SDTM-COPY-DIFFERS", f"{path.name} has {len(copy.rows)} row(s), "
                            f"{Path(chosen.source or '').name} {len(chosen.rows)}", file=path.name,
                            value=len(copy.rows))
            for row_no, (a, b) in enumerate(zip(chosen.rows, copy.rows), start=1):
                for var in names:
                    if not _same_cell(a.get(var), b.get(var)):
                        differences += 1
                        if differences <= MAX_COPY_DIFFERENCES:
                            log.error("SDTM-COPY-DIFFERS", f"{path.name} row {row_no} {var}: {b.get(var)!r} where "
                                        f"{Path(chosen.source or '').name} (validated) has {a.get(var)!r}",
                                        file=path.name, record=row_no, field=var, value=_cell(b.get(var)))
            if differences > MAX_COPY_DIFFERENCES:
                log.error("SDTM-COPY-DIFFERS", f"{path.name}: {differences - MAX_COPY_DIFFERENCES} more "
                            "difference(s) not listed", file=path.name, value=differences)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.rstrip()
    return sdtm_io.format_number(value)


def _same_cell(a, b) -> bool:
    """Two copies' values agree: text without trailing blanks; numbers by value to 12
    significant digits, since an XPT written by SAS holds IBM floats (8.549999999999999 for
    the 8.55 its Dataset-JSON copy says — the MSG example has 42 such)."""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        return a == b or math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)
    return _cell(a) == _cell(b)
