"""Duplicate checks: a row against the earlier rows of its subject.

Rows come grouped by USUBJID in trialbridge's own output, so each check keeps the keys of
the current subject run only and forgets them when USUBJID changes
(:class:`~.stores.FirstSeen`).  When a USUBJID comes back after another (a third-party file
not grouped by subject), the keys of its earlier runs are read back from the scratch
database: the duplicate is still found.  A dataset whose keys do not include USUBJID (trial
design) is one run; beyond ``max_run`` keys that run moves to SQLite.
"""
from __future__ import annotations

from operator import getitem
from typing import Any

from trialbridge.converters.validation.engine import Check, DatasetInfo, RowFn, is_null, key_text, key_texts, run_value
from trialbridge.converters.validation.stores import FirstSeen

CELL_BUDGET = 1_000_000  # key cells held for one subject run before it moves to SQLite
MIN_RUN = 1_000  # keys of a run held in memory, however wide the key


class _Duplicates(Check):
    """One :class:`FirstSeen` per dataset, closed at the dataset's end."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._index: FirstSeen | None = None

    def _new_index(self, width: int) -> FirstSeen:
        self._index = FirstSeen(self.ctx.scratch, max_run=max(MIN_RUN, CELL_BUDGET // max(width, 1)))
        return self._index

    def end(self, ds: DatasetInfo) -> None:
        self.close()

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None


class KeyDuplicates(_Duplicates):
    """SDTM-KEY-DUPLICATE: two rows share the natural keys (``Dataset.keys``, else the spec's)."""

    def begin(self, ds: DatasetInfo) -> RowFn | None:
        keys = list(ds.meta.keys)
        if not keys and ds.spec is not None:
            keys = list(getattr(ds.spec, "keys", None) or [])
        keys = [k for k in keys if k in ds.present]
        if not keys:
            return None
        index = self._new_index(len(keys))
        first_seen = index.first
        field = ", ".join(keys)
        # the run is the subject as the key holds it; without USUBJID the whole dataset is one run
        subject = keys.index("USUBJID") if "USUBJID" in keys else None
        texts, bound = key_texts(len(keys))

        def row_fn(row_no: int, row: dict) -> None:
            bound(row_no)
            key = tuple(map(getitem, texts, map(row.get, keys)))
            first = first_seen(None if subject is None else key[subject], key, row_no)
            if first is not None:
                self.report(ds, f"Duplicate record over keys ({field}): same as record {first}",
                            row_no, row, field, " | ".join(key))
        return row_fn


class SeqDuplicates(_Duplicates):
    """SDTM-SEQ-DUPLICATE: --SEQ unique within USUBJID (POOLID; TSSEQ within TSPARMCD, CDISC CG0028;
    in a device-level dataset without USUBJID, such as DI, within SPDEVID: SDTMIG for Medical
    Devices)."""

    def begin(self, ds: DatasetInfo) -> RowFn | None:
        seq = ds.seq
        if seq is None:
            return None
        group = next((g for g in ("USUBJID", "POOLID", "SPDEVID", "TSPARMCD") if g in ds.present), None)
        index = self._new_index(2)
        first_seen = index.first

        def row_fn(row_no: int, row: dict) -> None:
            value = row.get(seq)
            if is_null(value):
                return
            run = row.get(group) if group else None
            key = (run, key_text(value))
            first = first_seen(run_value(run), key, row_no)
            if first is not None:
                self.report(ds, f"Duplicate {seq} {key[1]} within {group or 'dataset'} (first at record {first})",
                            row_no, row, seq, value)
        return row_fn


class DuplicateRecords(_Duplicates):
    """SDTM-DUPLICATE-RECORD: a row identical to an earlier one in every variable but --SEQ."""

    def begin(self, ds: DatasetInfo) -> RowFn | None:
        seq = ds.seq
        names = [n for n in ds.names if n != seq]
        if not names:
            return None
        index = self._new_index(len(names))
        first_seen = index.first
        subject = names.index("USUBJID") if "USUBJID" in names else None
        message = "Record is identical to record {}" + (f" except {seq}" if seq else "")
        texts, bound = key_texts(len(names))

        def row_fn(row_no: int, row: dict) -> None:
            bound(row_no)
            key = tuple(map(getitem, texts, map(row.get, names)))
            first = first_seen(None if subject is None else key[subject], key, row_no)
            if first is not None:
                self.report(ds, message.format(first), row_no, row, seq)
        return row_fn


class OneDmRecordPerSubject(Check):
    """SDTM-DM-ONE-PER-SUBJECT: a USUBJID in one DM row only (index: one entry per subject)."""

    def begin(self, ds: DatasetInfo) -> RowFn | None:
        if ds.name != "DM" or "USUBJID" not in ds.present:
            return None
        first: dict[Any, int] = {}

        def row_fn(row_no: int, row: dict) -> None:
            u = row.get("USUBJID")
            if is_null(u):
                return
            if u in first:
                self.report(ds, f"USUBJID {u} already in DM at record {first[u]}", row_no, row, "USUBJID", u)
            else:
                first[u] = row_no
        return row_fn
