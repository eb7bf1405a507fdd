"""Throughput and peak memory of records -> SDTM (XPT + Dataset-JSON + define.xml) and
records -> FHIR R4 NDJSON (every resource validated: R4 JSON schema with jsonschema-rs and
the fhir.resources R4B models) on the bundled sample replicated N times (subjects
renumbered), printed as a table.

    python benchmarks/convert_records.py [N ...]      # default: 1 4 16
"""
from __future__ import annotations

import csv
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


from trialbridge.converters.pipeline import convert  # noqa: E402

SAMPLE = ROOT / "samples" / "nct04387942"


def replicate(n: int, folder: Path) -> int:
    rows_total = 0
    for src in sorted(SAMPLE.glob("*.csv")):
        with open(src, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            fields = reader.fieldnames
        with open(folder / src.name, "w", newline="", encoding="utf-8") as out:
            writer = csv.DictWriter(out, fieldnames=fields)
            writer.writeheader()
            for k in range(n):
                for row in rows:
                    row = dict(row)
                    row["subject_id"] = f"{k:03d}{row['subject_id']}" if n > 1 else row["subject_id"]
                    writer.writerow(row)
                    rows_total += 1
    return rows_total


def one(n: int) -> None:
    """Run one size in this (fresh) process and print its row of the table."""
    work = Path(tempfile.mkdtemp(prefix="tb-bench-"))
    try:
        (work / "in").mkdir()
        rows = replicate(n, work / "in")
        t0 = time.perf_counter()
        convert(work / "in", "sdtm", work / "out", formats="xpt,dataset-json")
        seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        convert(work / "in", "fhir", work / "fhir")
        fhir_seconds = time.perf_counter() - t0
        resources = sum(sum(1 for _ in p.open()) for p in (work / "fhir").glob("*.ndjson"))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        print(f"{n:>6} {rows:>10} {seconds:>8.2f} {rows / seconds:>8.0f} {fhir_seconds:>8.2f} "
              f"{resources / fhir_seconds:>10.0f} {peak:>12.1f}", flush=True)
    finally:
        shutil.rmtree(work)


def main(args: list[str]) -> int:
    if args[:1] == ["--one"]:
        one(int(args[1]))
        return 0
    sizes = [int(a) for a in args] or [1, 4, 16]
    print("whole runs including reading, mapping, validation and writing; one process per size")
    print(f"{'copies':>6} {'input rows':>10} {'SDTM s':>8} {'rows/s':>8} {'FHIR s':>8} {'resources/s':>10} "
          f"{'peak RSS MiB':>12}", flush=True)
    for n in sizes:  # one process per size, so peak RSS is that size's own
        subprocess.run([sys.executable, __file__, "--one", str(n)], check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
