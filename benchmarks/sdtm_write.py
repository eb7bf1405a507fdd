"""Throughput and peak memory of the streaming SDTM writers on a synthetic LB-like dataset
(26 variables), beside pyreadstat's whole-DataFrame ``write_xport`` as the baseline.

Ours, as the engine runs it: rows come from a generator (standing in for the per-domain spill),
pass 1 gathers ColumnStats, pass 2 writes XPT + Dataset-JSON + CSV in one go through
``open_dataset_writers``, then define.xml is built from the statistics alone.  Peak RSS must not
grow with the number of rows.  The baseline builds a pandas DataFrame of the same rows and
writes it with ``pyreadstat.write_xport`` (what trialbridge did before; it needs every row in
memory).  The floor is generating the rows and nothing else.  Last, the files are read back row
by row (``iter_dataset``; its peak includes writing them first).  One process per line, so each
peak RSS is that run's own.

    python benchmarks/sdtm_write.py [ROWS ...]     # default: 200000 1000000 (baseline: 200000)
"""
from __future__ import annotations

import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from trialbridge.converters.core.issues import IssueLog
from trialbridge.converters.formats.define import write_define_from_stats
from trialbridge.converters.formats.sdtm import ColumnStats, dataset_meta, iter_dataset, open_dataset_writers

TESTS = [("ALT", "Alanine Aminotransferase", "CHEMISTRY", "U/L", 7.0, 56.0, "1742-6"),
         ("AST", "Aspartate Aminotransferase", "CHEMISTRY", "U/L", 10.0, 40.0, "1920-8"),
         ("CREAT", "Creatinine", "CHEMISTRY", "umol/L", 45.0, 90.0, "14682-9"),
         ("CD4", "CD4 Cells", "IMMUNOLOGY", "10^9/L", 0.5, 1.5, "24467-3"),
         ("IL6", "Interleukin 6", "IMMUNOLOGY", "pg/mL", 0.0, 7.0, "26881-3"),
         ("HGB", "Hemoglobin", "HEMATOLOGY", "g/L", 120.0, 160.0, "718-7")]
VISITS = [(1.0, "SCREENING", "SCREENING"), (2.0, "DAY 1", "TREATMENT"), (3.0, "DAY 7", "TREATMENT"),
          (4.0, "DAY 28", "FOLLOW-UP")]


def lb_rows(n: int) -> Iterator[dict]:
    """``n`` LB rows, deterministic, about 24 per subject."""
    for i in range(n):
        code, test, cat, unit, lo, hi, loinc = TESTS[i % 6]
        visitnum, visit, epoch = VISITS[(i // 6) % 4]
        value = round(lo + (hi - lo) * ((i * 7919) % 1000) / 800.0, 2)
        text = f"{value:g}"
        yield {"STUDYID": "NCT04387942", "DOMAIN": "LB", "USUBJID": f"NCT04387942-01-{i // 24:06d}",
               "LBSEQ": i % 24 + 1, "LBREFID": f"A{i:09d}", "LBTESTCD": code, "LBTEST": test, "LBCAT": cat,
               "LBORRES": text, "LBORRESU": unit, "LBORNRLO": f"{lo:g}", "LBORNRHI": f"{hi:g}",
               "LBSTRESC": text, "LBSTRESN": value, "LBSTRESU": unit, "LBSTNRLO": lo, "LBSTNRHI": hi,
               "LBNRIND": "LOW" if value < lo else "HIGH" if value > hi else "NORMAL", "LBLOINC": loinc,
               "LBSPEC": "BLOOD", "LBBLFL": "Y" if visitnum == 1.0 else "", "VISITNUM": visitnum, "VISIT": visit,
               "EPOCH": epoch, "LBDTC": f"2020-{1 + (i // 24) % 12:02d}-{1 + i % 28:02d}T08:{i % 60:02d}",
               "LBDY": (i // 6) % 4 * 7 - 6}


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class Clock:
    """Wall and CPU seconds since the last lap (CPU time is what a busy shared machine
    does not distort)."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        self.start = (self.wall, self.cpu)

    def lap(self) -> float:
        wall, cpu = time.perf_counter(), time.process_time()
        self.wall, seconds, self.cpu = wall, cpu - self.cpu, cpu
        return seconds

    def total(self) -> tuple[float, float]:
        return time.perf_counter() - self.start[0], time.process_time() - self.start[1]


def line(label: str, n: int, first: float | None, second: float | None, define: float | None,
         total: tuple[float, float], size: float | None = None) -> str:
    rate = lambda s: f"{n / s:>10.0f}" if s else f"{'':>10}"  # noqa: E731
    return (f"{label:<22} {n:>9} {rate(first)} {rate(second)} "
            f"{(f'{define:>9.2f}' if define is not None else ''):>9} {n / total[0]:>10.0f} {n / total[1]:>10.0f} "
            f"{peak_mib():>9.1f} {(f'{size:>9.1f}' if size is not None else ''):>9}")


def ours(n: int, out: Path) -> str:
    log = IssueLog()
    clock = Clock()
    stats = ColumnStats("LB")
    for row in lb_rows(n):
        stats.add(row)
    meta = dataset_meta("LB", stats)
    first = clock.lap()
    with open_dataset_writers(meta, stats, out, ["xpt", "dataset-json", "csv"], log, "NCT04387942") as writers:
        for row in lb_rows(n):
            writers.write(row)
    second = clock.lap()
    write_define_from_stats({"LB": meta}, {"LB": stats}, None, out / "define.xml", log,
                            formats=["xpt", "dataset-json", "csv"])
    define = clock.lap()
    size = sum(p.stat().st_size for p in out.iterdir()) / 2 ** 20
    return line("streaming (ours)", n, first, second, define, clock.total(), size)


def baseline(n: int, out: Path) -> str:
    import pandas as pd
    import pyreadstat

    clock = Clock()
    df = pd.DataFrame(list(lb_rows(n)))
    first = clock.lap()
    pyreadstat.write_xport(df, str(out / "lb.xpt"), table_name="LB", file_format_version=5)
    second = clock.lap()
    return line("pyreadstat write_xport", n, first, second, None, clock.total(), (out / "lb.xpt").stat().st_size / 2 ** 20)


def floor(n: int, out: Path) -> str:
    clock = Clock()
    for _ in lb_rows(n):
        pass
    return line("rows generated only", n, None, None, None, clock.total())


def read_back(n: int, out: Path) -> str:
    """Reading what the writers wrote, row by row (iter_dataset): XPT, NDJSON, CSV."""
    stats = ColumnStats("LB")
    for row in lb_rows(n):
        stats.add(row)
    with open_dataset_writers(dataset_meta("LB", stats), stats, out, ["xpt", "dataset-ndjson", "csv"], IssueLog(),
                              "NCT04387942") as writers:
        for row in lb_rows(n):
            writers.write(row)
    rates = []
    for name in ("lb.xpt", "lb.ndjson", "lb.csv"):
        clock = Clock()
        _, rows = iter_dataset(out / name, IssueLog())
        count = sum(1 for _ in rows)
        assert count == n
        rates.append(f"{name.split('.')[1]} {n / clock.lap():.0f}")
    return f"{'read back (ours)':<22} {n:>9}   rows per CPU second: {', '.join(rates)}; peak {peak_mib():.1f} MiB"


RUNS = {"ours": ours, "baseline": baseline, "floor": floor, "read": read_back}


def main(args: list[str]) -> int:
    if args[:1] == ["--one"]:
        out = Path(tempfile.mkdtemp(prefix="tb-sdtm-bench-"))
        try:
            print(RUNS[args[1]](int(args[2]), out), flush=True)
        finally:
            shutil.rmtree(out)
        return 0
    sizes = [int(a) for a in args] or [200_000, 1_000_000]
    print("LB-like dataset, 26 variables, one process per line.  Pass rates are rows per CPU second:\n"
          "  ours: pass 1 = ColumnStats, pass 2 = XPT + Dataset-JSON + CSV in one pass, then define.xml;\n"
          "  baseline: pass 1 = building the DataFrame, pass 2 = pyreadstat.write_xport (XPT only);\n"
          "  both passes include generating the rows (see the floor).  Totals: rows per wall / CPU second.")
    print(f"{'':<22} {'rows':>9} {'pass1 r/s':>10} {'pass2 r/s':>10} {'define s':>9} {'wall r/s':>10} "
          f"{'cpu r/s':>10} {'peak MiB':>9} {'out MiB':>9}", flush=True)
    for n in sizes:
        subprocess.run([sys.executable, __file__, "--one", "floor", str(n)], check=True)
        subprocess.run([sys.executable, __file__, "--one", "ours", str(n)], check=True)
    subprocess.run([sys.executable, __file__, "--one", "baseline", str(min(sizes))], check=True)
    for n in sizes:
        subprocess.run([sys.executable, __file__, "--one", "read", str(n)], check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
