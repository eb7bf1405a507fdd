"""SDTM XPT -> FHIR NDJSON: trialbridge beside a floor, in one run (issue 7).

    python benchmarks/sdtm_to_fhir.py                          # SDTM of a 20,000-Observation FHIR corpus
    python benchmarks/sdtm_to_fhir.py --observations 50000 200000
    python benchmarks/sdtm_to_fhir.py --source records --copies 4 16   # the records sample replicated
    python benchmarks/sdtm_to_fhir.py --sdtm DIR               # an existing SDTM folder (.xpt)
    python benchmarks/sdtm_to_fhir.py -- --fhir-version R5     # args after -- go to trialbridge convert

First an SDTM folder is made (not timed) in a temp folder: the scaled FHIR corpus of
``make_fhir_corpus.py`` (default), or the records sample replicated as in
``convert_records.py``, converted with ``trialbridge convert … --to sdtm --format xpt``.
Then, each as its own child process timed from start to exit with its peak RSS:

floor        every .xpt read with ``pyreadstat.read_xport`` and each row ``orjson.dumps``-ed as
             a dict, keeping nothing.
trialbridge  ``trialbridge convert SDTM --to fhir -o OUT`` (reading, SDTM -> records, mapping,
             validating every resource, NDJSON).

Rates are SDTM rows read per second (the same input for both); the FHIR resources written
are shown beside.  Target (issue 7): trialbridge >= 0.7x the floor.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import (check, clean_up_on_termination, count_lines, log, machine, measure, scratch,  # noqa: E402
                      table, trialbridge_command)

TARGET_FLOOR = 0.7


def floor(folder: str) -> None:
    """Read every XPT, serialise every row as a JSON object, keep nothing."""
    import orjson
    import pyreadstat

    n = 0
    for path in sorted(Path(folder).glob("*.xpt")):
        df, _ = pyreadstat.read_xport(str(path))
        names = [str(c) for c in df.columns]
        for values in zip(*(df[c].tolist() for c in df.columns)):
            orjson.dumps(dict(zip(names, values)))
            n += 1
    print(n)


def make_sdtm(args, n: int, work: Path) -> Path:
    """The SDTM folder to convert (made by trialbridge from a FHIR corpus or replicated records)."""
    if args.source == "records":
        from convert_records import replicate

        source = work / "records"
        source.mkdir()
        log(f"replicating the records sample {n} times")
        replicate(n, source)
    else:
        from make_fhir_corpus import make_corpus

        source = work / "corpus"
        log(f"making a FHIR corpus of {n:,} Observations")
        make_corpus(n, source)
    sdtm = work / "sdtm"
    log("  converting it to SDTM XPT (setup, not timed)")
    t0 = time.perf_counter()
    check(measure(trialbridge_command() + ["convert", str(source), "--to", "sdtm", "-o", str(sdtm), "--format", "xpt"],
                  label="setup"), "setup conversion to SDTM", ok=(0, 1))
    log(f"  SDTM made in {time.perf_counter() - t0:.1f} s")
    return sdtm


def one(sdtm: Path, work: Path, label: str, passthrough: list[str]) -> list[list]:
    me = [sys.executable, str(Path(__file__).resolve())]
    fl = check(measure(me + ["_floor", str(sdtm)], label="floor"), "floor")
    rows = int(fl.stdout.split()[-1])
    out = work / "fhir"
    tb = check(measure(trialbridge_command() + ["convert", str(sdtm), "--to", "fhir", "-o", str(out), *passthrough],
                       label="trialbridge"), "trialbridge convert", ok=(0, 1))
    resources = count_lines(out)
    floor_rate = rows / fl.seconds
    out_rows = []
    for tool, run, made in (("floor (pyreadstat + orjson.dumps)", fl, ""),
                            ("trialbridge convert" + (" " + " ".join(passthrough) if passthrough else ""), tb,
                             f"{resources:,}")):
        rate = rows / run.seconds
        out_rows.append([label, tool, f"{rows:,}", f"{run.seconds:.2f}", f"{rate:,.0f}", f"{rate / floor_rate:.4f}",
                         f"{run.peak_rss_mib:,.0f}", made])
    summary = [ln.strip() for ln in tb.stdout.splitlines() if "error(s)" in ln]
    log(f"  trialbridge exit {tb.returncode}; {summary[-1] if summary else ''}")
    return out_rows


def main(argv: list[str]) -> int:
    if argv[:1] == ["_floor"]:
        floor(argv[1])
        return 0
    own, rest = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                 epilog="Unknown options, and everything after --, go to trialbridge convert.")
    ap.add_argument("--source", choices=("fhir", "records"), default="fhir",
                    help="what the SDTM folder is made from (default fhir)")
    ap.add_argument("--observations", "-n", type=int, nargs="+", default=[20_000],
                    help="--source fhir: corpus sizes in Observations (default 20000)")
    ap.add_argument("--copies", type=int, nargs="+", default=[4],
                    help="--source records: how many times the 59-subject sample is replicated (default 4)")
    ap.add_argument("--sdtm", type=Path, help="an existing SDTM folder instead")
    args, unknown = ap.parse_known_args(own)
    clean_up_on_termination()
    passthrough = unknown + rest
    print(f"SDTM XPT -> FHIR R4 NDJSON; {machine()}")
    lines: list[list] = []
    if args.sdtm:
        with scratch("tb-bench-sdtm-") as work:
            lines += one(args.sdtm, work, args.sdtm.name, passthrough)
    else:
        sizes = args.copies if args.source == "records" else args.observations
        for n in sizes:
            with scratch("tb-bench-sdtm-") as work:
                label = f"{n} copies of records" if args.source == "records" else f"{n:,} Obs FHIR"
                lines += one(make_sdtm(args, n, work), work, label, passthrough)
    print()
    print(table(["SDTM from", "tool", "SDTM rows", "seconds", "rows/s", "x floor", "peak RSS MiB", "FHIR resources"],
                lines, align="llrrrrrr"))
    print("\ntargets (issue 7):")
    for k in range(0, len(lines), 2):
        ratio = float(lines[k + 1][5])
        print(f"  {lines[k][0]}: trialbridge >= {TARGET_FLOOR}x floor: {ratio:.4f}x "
              f"{'MET' if ratio >= TARGET_FLOOR else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
