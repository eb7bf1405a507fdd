"""The streaming engine: the sorted spill, and the same bytes whatever runs the subjects
(one process, worker processes, a Dask LocalCluster on 127.0.0.1)."""
from __future__ import annotations

import filecmp
import random
import subprocess
import sys
from pathlib import Path

import pytest

from trialbridge.converters.core.spill import SortedSpill, sort_key, sortable

ROOT = Path(__file__).resolve().parents[1]
FHIR_SAMPLE = ROOT / "samples" / "nct04387942-fhir" / "ndjson"
SAMPLE = ROOT / "samples" / "nct04387942"


def test_spill_sorts_across_run_files_and_cleans_up():
    rng = random.Random(7)
    keys = [(rng.randrange(50), n) for n in range(1000)]
    spill = SortedSpill("t", chunk=64)  # 1000 items -> 16 run files
    for k in keys:
        spill.add(k, repr(k).encode())
    folder = spill._folder
    assert len(spill._runs) == 15 and len(spill) == 1000
    assert [k for k, _ in spill] == sorted(keys)
    groups = list(spill.groups())
    assert [g for g, _ in groups] == sorted({k[0] for k in keys})
    assert sum(len(items) for _, items in groups) == 1000
    spill.close()
    assert folder is not None and not folder.exists()


def test_spill_keeps_arrival_order_for_equal_keys():
    spill = SortedSpill("t", chunk=3)
    for n, key in enumerate(["b", "a", "b", "a", "b", "a", "a"]):
        spill.add((key,), str(n).encode())
    assert [p.decode() for _, p in spill] == ["1", "3", "5", "6", "0", "2", "4"]
    spill.close()


def test_spill_in_memory_when_small():
    with SortedSpill("t") as spill:
        spill.add((2,), b"x")
        spill.add((1,), b"y")
        assert list(spill.payloads()) == [b"y", b"x"] and spill._folder is None


def test_sortable_orders_missing_numbers_then_text():
    values = ["b", 3, None, 1.5, "", "a"]
    assert sorted(values, key=sortable) == [None, 1.5, 3, "", "a", "b"]
    assert sort_key(["USUBJ-1", 2]) < sort_key(["USUBJ-1", 10]) < sort_key(["USUBJ-2", 1])


def _convert(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trialbridge.cli", "convert", *map(str, args), "--quiet"],
                          capture_output=True, text=True, timeout=300)


def _same_tree(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    _match, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert not mismatch and not errors, (mismatch, errors)


def test_fhir_to_sdtm_same_bytes_with_worker_processes_and_on_dask(tmp_path):
    runs = {"one": ["--workers", "1"], "two": ["--workers", "2"], "dask": ["--engine", "dask", "--workers", "2"]}
    for name, extra in runs.items():
        done = _convert(FHIR_SAMPLE, "--to", "sdtm", "-o", tmp_path / name, "--format", "xpt,dataset-json", *extra)
        assert done.returncode == 0, done.stdout + done.stderr
    # 17 datasets in two formats, define.xml, its stylesheet, issues.json and the manifest written last
    assert len(list((tmp_path / "one").iterdir())) == 17 * 2 + 4
    _same_tree(tmp_path / "one", tmp_path / "two")
    _same_tree(tmp_path / "one", tmp_path / "dask")


def test_records_to_fhir_same_bytes_with_worker_processes(tmp_path):
    for name, workers in (("one", "1"), ("two", "2")):
        done = _convert(SAMPLE, "--to", "fhir", "-o", tmp_path / name, "--workers", workers)
        assert done.returncode == 0, done.stdout + done.stderr
    _same_tree(tmp_path / "one", tmp_path / "two")


@pytest.mark.parametrize("target", ["records", "fhir"])
def test_sdtm_input_same_bytes_with_worker_processes(tmp_path, target):
    assert _convert(SAMPLE, "--to", "sdtm", "-o", tmp_path / "sdtm").returncode == 0
    for name, workers in (("one", "1"), ("two", "2")):
        done = _convert(tmp_path / "sdtm", "--to", target, "-o", tmp_path / name, "--workers", workers)
        assert done.returncode == 0, done.stdout + done.stderr
    _same_tree(tmp_path / "one", tmp_path / "two")


def test_spill_flushes_by_payload_bytes_too():
    spill = SortedSpill("t", chunk=1000, chunk_bytes=100)
    for n in range(10):
        spill.add((9 - n,), b"x" * 40)  # 40 bytes each: a run file every 3 items
    assert len(spill._runs) == 3 and [k for k, _ in spill] == [(n,) for n in range(10)]
    spill.close()


def test_spill_with_more_runs_than_it_opens_at_once(monkeypatch):
    from trialbridge.converters.core import spill as spill_module

    monkeypatch.setattr(spill_module, "MAX_FAN_IN", 4)
    spill = SortedSpill("t", chunk=2)
    keys = [((n * 7) % 23, n) for n in range(23)]  # 12 runs, merged 4 at a time
    for k in keys:
        spill.add(k, b"")
    assert [k for k, _ in spill] == sorted(keys)
    assert len(spill._runs) == 3
    spill.close()


def test_sinks_kept_to_their_budget_give_the_same_bytes(tmp_path, monkeypatch):
    """Sinks over their shared budget write their largest buffer as a run: the output must
    not change (SDTM datasets of the FHIR sample, one process, a budget of 2 KB)."""
    from trialbridge.converters import engine, pipeline

    pipeline.convert(FHIR_SAMPLE, "sdtm", tmp_path / "default", formats="xpt,dataset-json")
    flushed = []
    original = SortedSpill.flush
    monkeypatch.setattr(engine, "SINKS_BUDGET", 2000)
    monkeypatch.setattr(SortedSpill, "flush", lambda self: (flushed.append(self.name), original(self))[1])
    pipeline.convert(FHIR_SAMPLE, "sdtm", tmp_path / "small", formats="xpt,dataset-json")
    assert len(flushed) > 50 and {"lb", "dm"} <= set(flushed)
    _same_tree(tmp_path / "default", tmp_path / "small")
