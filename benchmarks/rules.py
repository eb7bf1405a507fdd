"""Throughput and peak memory of the streaming rules on a synthetic LB: the bundled sample's
LB rows copied under new USUBJIDs (with their DM and SE rows, so the DM and SE checks have
subjects to look up) until it holds N rows, fed one row at a time from a generator.
Printed side by side for each size, with a floor: the same rows made and handed to a
visitor that does nothing.  Memory should not grow with N: what the rules hold between rows
is the current subject's keys and one entry per subject (DM set, RFSTDTC, SE elements), and
here the subjects grow with N too (about 48 LB rows each), so a slight rise at large N is
those per-subject entries.

    python benchmarks/rules.py [N ...]      # default: 50000 200000
"""
from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]

from trialbridge.converters.core.datasets import Dataset  # noqa: E402
from trialbridge.converters.core.issues import IssueLog  # noqa: E402
from trialbridge.converters.formats import records as records_io  # noqa: E402
from trialbridge.converters.spokes import records_to_sdtm  # noqa: E402
from trialbridge.converters.validation.rules import StreamingValidator, feeding_order  # noqa: E402
from trialbridge.mappings.study import load_study  # noqa: E402


def sample_datasets() -> dict[str, Dataset]:
    records = records_io.read_records(ROOT / "samples" / "nct04387942", IssueLog())
    return records_to_sdtm(records, load_study("NCT04387942"), IssueLog())


def by_subject(ds: Dataset) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in ds.rows:
        out.setdefault(row["USUBJID"], []).append(row)
    return out


def copies_needed(lb: dict[str, list[dict]], rows: int) -> int:
    per_copy = sum(len(r) for r in lb.values())
    return -(-rows // per_copy)


def copied(template: dict[str, list[dict]], copies: int, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Each subject's rows under new USUBJIDs, copy after copy, grouped by subject as
    trialbridge writes them; at most ``limit`` rows."""
    n = 0
    for k in range(copies):
        for usubjid, rows in template.items():
            new = f"{usubjid}-{k:05d}"
            for row in rows:
                if limit is not None and n >= limit:
                    return
                yield {**row, "USUBJID": new}
                n += 1


def meta(ds: Dataset) -> Dataset:
    return Dataset(ds.name, ds.label, ds.variables, [], keys=ds.keys, source=ds.source)


class _Nothing:
    def row(self, row_no: int, row: dict) -> None:
        pass

    def end(self) -> None:
        pass


def one(rows: int, floor: bool) -> None:
    datasets = sample_datasets()
    templates = {name: by_subject(datasets[name]) for name in ("DM", "SE", "LB")}
    copies = copies_needed(templates["LB"], rows)
    log = IssueLog()
    validator = StreamingValidator(log)
    t0 = time.perf_counter()
    fed = 0
    for name in feeding_order(["DM", "SE", "LB"]):
        visitor = _Nothing() if floor else validator.begin(meta(datasets[name]))
        for row_no, row in enumerate(copied(templates[name], copies, rows if name == "LB" else None), start=1):
            visitor.row(row_no, row)
            fed += 1
        visitor.end()
    if not floor:
        validator.finish()
    seconds = time.perf_counter() - t0
    validator.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    subjects = copies * len(templates["DM"])
    print(f"{'floor' if floor else 'rules':>6} {rows:>9} {subjects:>8} {fed:>10} {seconds:>8.2f} "
          f"{fed / seconds:>9.0f} {len(log.issues):>8} {peak:>13.1f}", flush=True)


def main(args: list[str]) -> int:
    if args[:1] == ["--one"]:
        one(int(args[1]), args[2:] == ["floor"])
        return 0
    sizes = [int(a) for a in args] or [50_000, 200_000]
    print("StreamingValidator over DM + SE + a synthetic LB (sample rows under new USUBJIDs), every rule;")
    print("floor = the same rows made and handed to a visitor that does nothing; one process per line")
    print(f"{'':>6} {'LB rows':>9} {'subjects':>8} {'rows fed':>10} {'seconds':>8} {'rows/s':>9} {'findings':>8} "
          f"{'peak RSS MiB':>13}", flush=True)
    for n in sizes:  # one process per size, so each peak RSS is that size's own
        for mode in ("floor", "rules"):
            subprocess.run([sys.executable, __file__, "--one", str(n)] + (["floor"] if mode == "floor" else []),
                           check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
