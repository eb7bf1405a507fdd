"""The bounded stores of the streaming rules, on hand-made keys: FirstSeen holds one subject
run, clears it when the run changes, reads a run back when it returns (input not grouped),
and moves a run too large for memory to SQLite."""
from __future__ import annotations

from trialbridge.converters.validation.stores import Deferred, FirstSeen, Scratch


def test_first_seen_holds_one_subject_run_and_clears_it_when_usubjid_changes():
    index = FirstSeen(Scratch())
    assert [index.first("A", ("A", "ALT"), 1), index.first("A", ("A", "AST"), 2)] == [None, None]
    assert index.in_memory == 2
    assert index.first("B", ("A", "ALT"), 3) is None  # the same key under another run: new
    assert index.in_memory == 1 and index.came_back == 0
    assert index.first("B", ("B", "ALT"), 4) is None and index.first("B", ("B", "ALT"), 5) == 4


def test_first_seen_reads_back_a_run_that_comes_back():
    index = FirstSeen(Scratch())
    index.first("A", "k1", 1), index.first("A", "k2", 2), index.first("B", "k3", 3)
    assert index.first("A", "k2", 4) == 2  # across the gap, the first row
    assert index.first("A", "k4", 5) is None
    assert index.first("B", "k3", 6) == 3 and index.first("A", "k4", 7) == 5
    assert index.came_back == 3


def test_first_seen_moves_a_large_run_to_sqlite():
    index = FirstSeen(Scratch(), max_run=2)
    assert [index.first(None, k, n) for n, k in enumerate(["a", "b", "c", "a", "c", "d"], start=1)] == \
        [None, None, None, 1, 3, None]
    assert index.in_memory == 0


def test_deferred_reads_back_in_the_order_added_beyond_one_chunk():
    deferred = Deferred("test", chunk=3)
    items = [(n, f"row {n}", None) for n in range(10, 0, -1)]
    for item in items:
        deferred.add(item)
    assert list(deferred) == items and len(deferred) == 10
    deferred.close()
