"""Sorted spill: items go in in any order and come out sorted by key, in bounded memory.

Everything that must be grouped or ordered on the way through trialbridge goes through one
of these: the input records grouped by subject, and every output table (SDTM domain,
record type, FHIR resource type) put in its final row order.  Items are held in memory up
to ``chunk`` of them or ``chunk_bytes`` of payload; each full chunk is sorted and written to a run file in a temporary
folder; reading merges the runs (``heapq.merge``).  Memory therefore depends on the chunk
size and the number of runs, never on the input size.  A spill that never filled a chunk
never touches the disk.

Keys are tuples of text, numbers and None; :func:`sortable` makes mixed tuples comparable
(None < numbers < text, as the SDTM writers always ordered them).  Ties keep the order in
which the items were added (the sort and the merge are both stable), so a key that is not
unique still gives the same output for the same input — callers that add items from
several workers make their keys unique (a row's subject plus its index in that subject).

Payloads are ``bytes``: each caller chooses its encoding (orjson for rows, the original
line for FHIR resources) so nothing is parsed or serialised here, and memory is counted
by their length (see :func:`right_sized`).
"""
from __future__ import annotations

import heapq
import os
import pickle
import shutil
import tempfile
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any, Iterable, Iterator

DEFAULT_CHUNK = 50_000  # items held before a run file is written …
DEFAULT_CHUNK_BYTES = 8 << 20  # … or this many payload bytes, whichever comes first
MAX_FAN_IN = 200  # run files merged at once; more are first merged into longer runs
_KEY = itemgetter(0)


def sortable(value: Any) -> tuple:
    """One key component made comparable with any other: None < numbers < text."""
    if value is None:
        return (0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, value)
    return (2, str(value))


def sort_key(values: Iterable[Any]) -> tuple:
    return tuple(sortable(v) for v in values)


def right_sized(data: bytes) -> bytes:
    """A copy of ``data`` in an allocation of its own length.  ``orjson.dumps`` hands back
    every document in an allocation of at least 4 KiB whatever its length, so a spill buffer
    of short rows held as returned takes several times the bytes it counts.  Bytes read from
    a file, unpickled, joined or sliced are right-sized already and need no copy."""
    return bytes(memoryview(data))


class SortedSpill:
    """Items ``(key, payload)`` added in any order, read back sorted by key."""

    def __init__(self, name: str = "spill", *, chunk: int = DEFAULT_CHUNK, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 folder: str | os.PathLike | None = None):
        self.name = name
        self.chunk = chunk
        self.chunk_bytes = chunk_bytes
        self._bytes = 0
        self._folder = Path(folder) if folder is not None else None
        self._own_folder = False
        self._buffer: list[tuple[Any, bytes]] = []
        self._runs: list[Path] = []
        self.count = 0
        self._closed = False

    # -- writing ----------------------------------------------------------------------
    def add(self, key: Any, payload: bytes) -> None:
        """Keep ``payload`` as given: its memory is counted as its length, so a caller whose
        bytes come straight from ``orjson.dumps`` passes them through :func:`right_sized`."""
        self._buffer.append((key, payload))
        self.count += 1
        self._bytes += len(payload)
        if len(self._buffer) >= self.chunk or self._bytes >= self.chunk_bytes:
            self._flush()

    def extend(self, items: Iterable[tuple[Any, bytes]]) -> None:
        for key, payload in items:
            self.add(key, payload)

    def _run_folder(self) -> Path:
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="trialbridge-spill-"))
            self._own_folder = True
        return self._folder

    @property
    def buffered_bytes(self) -> int:
        """Payload bytes held in memory now (the chunk not yet written as a run)."""
        return self._bytes

    def flush(self) -> None:
        """Write the items held in memory as a run file now (a caller holding several spills
        keeps their sum bounded so); the order items come back in does not change."""
        self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        self._buffer.sort(key=_KEY)
        path = self._run_folder() / f"{self.name}.{len(self._runs):05d}.run"
        with open(path, "wb") as fh:
            pickler = _pickler(fh)
            for item in self._buffer:
                pickler.dump(item)
        self._runs.append(path)
        self._buffer = []
        self._bytes = 0

    # -- reading ----------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple[Any, bytes]]:
        """Every item, sorted by key (stable)."""
        if not self._runs:
            self._buffer.sort(key=_KEY)
            yield from self._buffer
            return
        self._flush()
        while len(self._runs) > MAX_FAN_IN:  # keep open files bounded: merge runs into longer runs
            merged = []
            for start in range(0, len(self._runs), MAX_FAN_IN):
                batch = self._runs[start:start + MAX_FAN_IN]
                path = self._run_folder() / f"{self.name}.m{len(self._runs):05d}.{start:07d}.run"
                with open(path, "wb") as fh:
                    pickler = _pickler(fh)
                    for item in heapq.merge(*(_read_run(p) for p in batch), key=_KEY):
                        pickler.dump(item)
                for p in batch:
                    p.unlink(missing_ok=True)
                merged.append(path)
            self._runs = merged
        yield from heapq.merge(*(_read_run(p) for p in self._runs), key=_KEY)

    def payloads(self) -> Iterator[bytes]:
        for _key, payload in self:
            yield payload

    def groups(self, group_of=lambda key: key[0]) -> Iterator[tuple[Any, list[tuple[Any, bytes]]]]:
        """Consecutive items whose keys share ``group_of(key)``: one group per subject."""
        for group, items in groupby(self, key=lambda item: group_of(item[0])):
            yield group, list(items)

    def __len__(self) -> int:
        return self.count

    # -- cleaning up ------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._buffer = []
        for p in self._runs:
            p.unlink(missing_ok=True)
        self._runs = []
        if self._own_folder and self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> "SortedSpill":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # a spill dropped without close still leaves no files behind
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _pickler(fh) -> pickle.Pickler:
    """A pickler that writes no memo opcodes ("fast" mode: items are flat tuples of text,
    numbers and bytes, never self-referencing), so the reader's memo stays empty — with memo
    opcodes an unpickler keeps every item it has read alive until the end of the run."""
    pickler = pickle.Pickler(fh, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.fast = True
    return pickler


def _read_run(path: Path) -> Iterator[tuple[Any, bytes]]:
    with open(path, "rb") as fh:
        unpickler = pickle.Unpickler(fh)
        while True:
            try:
                item = unpickler.load()
            except EOFError:
                return
            yield item
