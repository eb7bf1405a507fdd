"""Bounded stores for the streaming rules: what a rule keeps between rows without holding a
dataset in memory.

- :class:`Scratch` — one private SQLite database in a temporary file (standard library
  ``sqlite3``; SQLite deletes the file on close), opened on first use.  Its page cache is the
  only part in memory.
- :class:`Deferred` — tuples kept for later and read back in the order they were added (AE
  rows whose reference date is known only at the end).  A hub :class:`SortedSpill`: one chunk
  in memory, the rest in run files.
- :class:`FirstSeen` — "has this key been seen, and at which row first?" for the duplicate
  checks, one subject run at a time, with an exact fallback when the input is not grouped.
"""
from __future__ import annotations

import pickle
import sqlite3
from array import array
from typing import Any, Hashable, Iterator

from trialbridge.converters.core.spill import SortedSpill

_START = object()  # no run yet


class Scratch:
    """A private on-disk SQLite database, opened on first use, deleted on :meth:`close`."""

    def __init__(self) -> None:
        self._db: sqlite3.Connection | None = None
        self._tables = 0

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            # "" = a temporary database in a file SQLite deletes when the connection closes
            self._db = sqlite3.connect("", isolation_level=None)
            self._db.execute("PRAGMA journal_mode = OFF")
            self._db.execute("PRAGMA synchronous = OFF")
            self._db.execute("PRAGMA cache_size = -2048")  # 2 MiB of pages in memory, the rest on disk
            self._db.execute("BEGIN")
        return self._db

    def new_table(self, prefix: str, columns: str, *, suffix: str = "") -> str:
        """Create a table named ``prefix_N`` with ``columns`` (SQL) and return its name."""
        self._tables += 1
        name = f"{prefix}_{self._tables}"
        self.db.execute(f"CREATE TABLE {name} ({columns}){suffix}")
        return name

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class Deferred:
    """Tuples read back in the order added; memory holds one chunk of them."""

    def __init__(self, name: str = "deferred", *, chunk: int = 20_000) -> None:
        self._spill = SortedSpill(name, chunk=chunk)
        self._count = 0

    def add(self, item: tuple) -> None:
        self._spill.add(self._count, pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL))
        self._count += 1

    def __iter__(self) -> Iterator[tuple]:
        for _n, payload in self._spill:
            yield pickle.loads(payload)

    def __len__(self) -> int:
        return self._count

    def close(self) -> None:
        self._spill.close()


class FirstSeen:
    """First row number of every key, fed row by row with the key's *run* (its USUBJID).

    Fast path, for input grouped by run (trialbridge's own output: rows come by USUBJID):
    the keys of the current run are held in a dict of exact keys, cleared when the run
    changes, so memory follows the largest subject, not the dataset.  Each run's keys leave
    behind one compact record in :class:`Scratch` — ``(hash(key), first row)`` pairs packed in
    a blob, 16 bytes a key — so that nothing is lost if the input turns out not to be grouped.

    Fallback, for input that is not grouped (third-party files may be unsorted): when a run
    value comes back after another, its earlier records are read back from the scratch
    database and the returning rows are checked against them as well — a duplicate planted
    across the gap is still found, with the row number of its first occurrence.  Memory
    stays bounded by one subject.  A single run that grows beyond ``max_run`` keys (a dataset
    with no USUBJID among its keys is one run) moves to an indexed SQLite table and is looked
    up row by row from then on.

    Keys of earlier runs are compared by their 64-bit hash: two different keys taken for
    the same one has a chance of about n²/2⁶⁵ over n keys (10⁻⁷ at five million).  Within a
    run, and for any input grouped by run, comparison is exact.
    """

    def __init__(self, scratch: Scratch, *, max_run: int = 100_000) -> None:
        self._scratch = scratch
        self._max_run = max(1, max_run)
        self._run: Any = _START
        self._cur: dict[Hashable, int] = {}
        self._prev: dict[int, int] | None = None  # hash(key) -> first row, earlier runs of this value
        self._closed: set[Any] = set()  # run values whose run has ended
        self._in_sql = False  # the current run is looked up in the SQLite table
        self._overflowed: set[int] = set()  # hash(run) of runs held in the SQLite table
        self._archive: str | None = None
        self._table: str | None = None
        self.came_back = 0  # runs that came back after another (input not grouped)

    def first(self, run: Any, key: Hashable, row_no: int) -> int | None:
        """The row where ``key`` was first seen, or None (and ``row_no`` is remembered)."""
        if run is not self._run and run != self._run:
            self._switch(run)
        if self._in_sql:
            return self._sql_first(key, row_no)
        first = self._cur.get(key)
        if first is not None:
            return first
        if self._prev is not None:
            first = self._prev.get(hash(key))
            if first is not None:
                return first
        self._cur[key] = row_no
        if len(self._cur) >= self._max_run:
            self._move_to_sql()
        return None

    @property
    def in_memory(self) -> int:
        """Keys held in memory now: the current run's (and its earlier runs' when it came back)."""
        return len(self._cur) + len(self._prev or ())

    def close(self) -> None:
        self._cur = {}
        self._prev = None
        self._closed = set()

    # -- runs -------------------------------------------------------------------------
    def _switch(self, run: Any) -> None:
        if self._run is not _START:
            self._close_run()
        self._run = run
        self._cur = {}
        self._prev = None
        self._in_sql = False
        if run in self._closed:
            self.came_back += 1
            if hash(run) in self._overflowed:
                self._in_sql = True
            else:
                self._prev = self._load(hash(run))

    def _close_run(self) -> None:
        self._closed.add(self._run)
        if self._in_sql or not self._cur:
            return
        packed = array("q")
        for key, row_no in self._cur.items():
            packed.append(hash(key))
            packed.append(row_no)
        db = self._scratch.db
        if self._archive is None:
            self._archive = self._scratch.new_table("runs", "run INTEGER, packed BLOB")
            db.execute(f"CREATE INDEX {self._archive}_run ON {self._archive} (run)")
        db.execute(f"INSERT INTO {self._archive} VALUES (?, ?)", (hash(self._run), packed.tobytes()))

    def _load(self, run_hash: int) -> dict[int, int]:
        out: dict[int, int] = {}
        if self._archive is None:
            return out
        rows = self._scratch.db.execute(
            f"SELECT packed FROM {self._archive} WHERE run = ? ORDER BY rowid", (run_hash,))
        for (blob,) in rows:
            packed = array("q")
            packed.frombytes(blob)
            for n in range(0, len(packed), 2):
                out.setdefault(packed[n], packed[n + 1])
        return out

    # -- one run larger than max_run: SQLite, row by row --------------------------------
    def _move_to_sql(self) -> None:
        db = self._scratch.db
        if self._table is None:
            self._table = self._scratch.new_table(
                "seen", "run INTEGER, key INTEGER, row_no INTEGER, PRIMARY KEY (run, key)", suffix=" WITHOUT ROWID")
        run_hash = hash(self._run)
        entries = dict(self._prev or {})
        for key, row_no in self._cur.items():
            entries.setdefault(hash(key), row_no)
        db.executemany(f"INSERT OR IGNORE INTO {self._table} VALUES (?, ?, ?)",
                       ((run_hash, h, r) for h, r in entries.items()))
        self._overflowed.add(run_hash)
        self._cur = {}
        self._prev = None
        self._in_sql = True

    def _sql_first(self, key: Hashable, row_no: int) -> int | None:
        db = self._scratch.db
        run_hash, key_hash = hash(self._run), hash(key)
        found = db.execute(f"SELECT row_no FROM {self._table} WHERE run = ? AND key = ?",
                           (run_hash, key_hash)).fetchone()
        if found is not None:
            return found[0]
        db.execute(f"INSERT INTO {self._table} VALUES (?, ?, ?)", (run_hash, key_hash, row_no))
        return None
