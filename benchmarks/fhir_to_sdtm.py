"""FHIR NDJSON -> SDTM: trialbridge beside a floor, a naive pipeline and (optionally) fhiry,
in one run, for corpora of N Observations (issue 7, streaming core).

    python benchmarks/fhir_to_sdtm.py                              # 20,000 Observations
    python benchmarks/fhir_to_sdtm.py --observations 50000 200000
    python benchmarks/fhir_to_sdtm.py --corpus DIR                 # an existing NDJSON folder
    python benchmarks/fhir_to_sdtm.py --with-fhiry                 # add fhiry (installed on demand)
    python benchmarks/fhir_to_sdtm.py -- --workers 2               # args after -- go to trialbridge convert

Each row is one child process, timed from start to exit (interpreter start and imports
included), with its peak RSS (see ``_measure.py``):

floor        one Python process that reads every line of every file and ``orjson.loads`` it,
             keeping nothing: the fastest a Python reader of this input can be.
trialbridge  ``trialbridge convert DIR --to sdtm -o OUT --format xpt,dataset-json`` (reading,
             validating every resource, mapping, SDTM checks, XPT + Dataset-JSON + define.xml).
naive        the obvious script: every line parsed into a ``fhir.resources.R4B`` model
             (validating), lab fields of the Observations pulled into dicts, one pandas
             DataFrame, ``pyreadstat.write_xport`` of LB.
fhiry        ``fhiry.fhirndjson.Fhirndjson`` reading the folder into a DataFrame (a separate
             venv in the user's cache folder, made on first use; ``--with-fhiry``).

The corpus is made by ``make_fhir_corpus.py`` in a temp folder (removed at the end), unless
``--corpus`` names one.  Targets (issue 7) are printed under the table.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import (Run, check, clean_up_on_termination, count_lines, log, machine, measure,  # noqa: E402
                      scratch, table, trialbridge_command)

DEFAULT_SIZES = [20_000]
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trialbridge-bench"
FHIRY_VENV = CACHE / "fhiry-venv"
TARGET_FLOOR = 0.7
TARGET_NAIVE = 50.0
TARGET_RSS_MIB = 512
TARGET_RSS_SIZES = (1_000_000, 5_000_000)
TARGET_RSS_GROWTH = 0.10


# --------------------------------------------------------------------------- the children

def floor(folder: str) -> None:
    """Read and parse every line, keep nothing."""
    import orjson

    n = 0
    for path in sorted(Path(folder).glob("*.ndjson")):
        with open(path, "rb") as fh:
            for line in fh:
                if line.strip():
                    orjson.loads(line)
                    n += 1
    print(n)


def naive(folder: str, out: str) -> None:
    """FHIR -> LB the way one writes it first: validated models, a list of dicts, pandas, pyreadstat."""
    import pandas as pd
    import pyreadstat
    from fhir.resources.R4B import get_fhir_model_class

    rows: list[dict] = []
    subjects: dict[str, str] = {}
    n = 0
    for path in sorted(Path(folder).glob("*.ndjson")):
        model = get_fhir_model_class(path.stem)
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                res = model.model_validate_json(line)
                n += 1
                if path.stem == "Patient":
                    subjects[f"Patient/{res.id}"] = next(
                        (i.value for i in res.identifier or [] if i.system == "urn:trialbridge:fhir:subject-id"), None)
                elif path.stem == "Observation":
                    coding = res.code.coding[0] if res.code.coding else None
                    q = res.valueQuantity
                    rng = res.referenceRange[0] if res.referenceRange else None
                    rows.append({
                        "PATREF": res.subject.reference if res.subject else "",
                        "LBTESTCD": coding.code if coding else "",
                        "LBTEST": res.code.text or (coding.display if coding else "") or "",
                        "LBORRES": str(q.value) if q is not None and q.value is not None else (res.valueString or ""),
                        "LBORRESU": (q.unit or "") if q is not None else "",
                        "LBORNRLO": str(rng.low.value) if rng and rng.low else "",
                        "LBORNRHI": str(rng.high.value) if rng and rng.high else "",
                        "VISIT": (res.encounter.display or "") if res.encounter else "",
                        "LBDTC": str(res.effectiveDateTime or ""),
                    })
    df = pd.DataFrame(rows)
    df.insert(0, "USUBJID", df.pop("PATREF").map(subjects).fillna(""))
    df.insert(0, "STUDYID", "NCT04387942")
    df["LBSTRESN"] = pd.to_numeric(df["LBORRES"], errors="coerce")
    df = df.sort_values(["USUBJID", "LBTESTCD", "LBDTC"], kind="stable")
    df["LBSEQ"] = df.groupby("USUBJID").cumcount() + 1.0
    pyreadstat.write_xport(df, str(Path(out) / "lb.xpt"), table_name="LB", file_format_version=5)
    print(n)


FHIRY_CODE = """
import os, sys
os.environ["TQDM_DISABLE"] = "1"
from fhiry.fhirndjson import Fhirndjson
reader = Fhirndjson()
reader.folder = sys.argv[1]
reader.process_source()
print(len(reader.df))
"""


# --------------------------------------------------------------------------- fhiry on demand

def fhiry_python() -> tuple[Path | None, str]:
    """The fhiry venv's python (made on first use), or (None, why not)."""
    import subprocess

    python = FHIRY_VENV / "bin" / "python"
    if python.exists() and subprocess.run([python, "-c", "import fhiry"], capture_output=True).returncode == 0:
        return python, ""
    log(f"  installing fhiry into {FHIRY_VENV} (first use)")
    steps = [[sys.executable, "-m", "venv", "--clear", str(FHIRY_VENV)],
             [str(python), "-m", "pip", "install", "-q", "fhiry"]]
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"could not be installed: {exc}"
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
            return None, f"could not be installed: {last[0]}"
    return python, ""


# --------------------------------------------------------------------------- one size

def one_size(corpus: Path, work: Path, args, passthrough: list[str]) -> list[dict]:
    resources = count_lines(corpus)
    observations = count_lines(corpus, "Observation.ndjson")
    me = [sys.executable, str(Path(__file__).resolve())]
    rows: list[dict] = []

    def add(tool: str, run: Run | None, note: str = "") -> dict:
        row = {"observations": observations, "tool": tool, "resources": resources, "run": run, "note": note}
        rows.append(row)
        return row

    add("floor (orjson.loads)", check(measure(me + ["_floor", str(corpus)], label="floor"), "floor"))
    out = work / "sdtm"
    cmd = trialbridge_command() + ["convert", str(corpus), "--to", "sdtm", "-o", str(out),
                                   "--format", "xpt,dataset-json", *passthrough]
    run = check(measure(cmd, label="trialbridge"), "trialbridge convert", ok=(0, 1))
    summary = [ln for ln in run.stdout.splitlines() if "error(s)" in ln]
    add("trialbridge convert" + (" " + " ".join(passthrough) if passthrough else ""), run,
        f"exit {run.returncode}; {summary[-1].strip() if summary else ''}")
    if not args.skip_naive:
        (work / "naive").mkdir()
        add("naive (R4B models+pandas+pyreadstat)",
            check(measure(me + ["_naive", str(corpus), str(work / "naive")], label="naive"), "naive pipeline"))
    if args.with_fhiry:
        python, why = fhiry_python()
        if python is None:
            add("fhiry", None, why)
        else:
            fr = measure([str(python), "-c", FHIRY_CODE, str(corpus)], label="fhiry")
            add("fhiry (Fhirndjson -> DataFrame)", fr if fr.returncode == 0 else None,
                "" if fr.returncode == 0 else f"failed: {(fr.stderr.strip().splitlines() or ['?'])[-1]}")
    return rows


def report(rows: list[dict]) -> None:
    by_size: dict[int, dict[str, dict]] = {}
    for r in rows:
        by_size.setdefault(r["observations"], {})[r["tool"].split(" ")[0]] = r
    lines = []
    for r in rows:
        run, size = r["run"], by_size[r["observations"]]
        if run is None:
            lines.append([f"{r['observations']:,}", r["tool"], f"{r['resources']:,}", "-", "-", "-", "-", "-"])
            continue
        rate = r["resources"] / run.seconds
        floor_run = size["floor"]["run"]
        ratio = rate / (r["resources"] / floor_run.seconds)
        multiple = ""
        if r["tool"].startswith("trialbridge") and "naive" in size:
            multiple = f"{rate / (r['resources'] / size['naive']['run'].seconds):.2f}x"
        lines.append([f"{r['observations']:,}", r["tool"], f"{r['resources']:,}", f"{run.seconds:.2f}",
                      f"{rate:,.0f}", f"{ratio:.4f}", f"{run.peak_rss_mib:,.0f}", multiple])
    print(table(["Observations", "tool", "resources", "seconds", "resources/s", "x floor", "peak RSS MiB",
                 "x naive"], lines, align="rlrrrrrr"))
    notes = [f"  {r['tool']} at {r['observations']:,}: {r['note']}" for r in rows if r["note"]]
    if notes:
        print("notes:\n" + "\n".join(notes))
    print("\ntargets (issue 7):")
    tb = {n: s["trialbridge"] for n, s in by_size.items()}
    for n, r in sorted(tb.items()):
        size = by_size[n]
        rate = r["resources"] / r["run"].seconds
        floor_rate = r["resources"] / size["floor"]["run"].seconds
        print(f"  {n:>11,} Obs: trialbridge >= {TARGET_FLOOR}x floor: {rate / floor_rate:.4f}x "
              f"{'MET' if rate / floor_rate >= TARGET_FLOOR else 'NOT MET'}", end="")
        if "naive" in size:
            m = rate / (r["resources"] / size["naive"]["run"].seconds)
            print(f"; >= {TARGET_NAIVE:g}x naive: {m:.2f}x {'MET' if m >= TARGET_NAIVE else 'NOT MET'}", end="")
        print()
    for n in TARGET_RSS_SIZES:
        if n in tb:
            mib = tb[n]["run"].peak_rss_mib
            print(f"  peak RSS <= {TARGET_RSS_MIB} MiB at {n:,} Obs: {mib:,.0f} MiB "
                  f"{'MET' if mib <= TARGET_RSS_MIB else 'NOT MET'}")
        else:
            print(f"  peak RSS <= {TARGET_RSS_MIB} MiB at {n:,} Obs: not run (--observations {n})")
    if all(n in tb for n in TARGET_RSS_SIZES):
        small, large = (tb[n]["run"].peak_rss_mib for n in TARGET_RSS_SIZES)
        print(f"  peak RSS at 5M <= 1M + {TARGET_RSS_GROWTH:.0%}: {large:,.0f} vs {small:,.0f} MiB "
              f"{'MET' if large <= small * (1 + TARGET_RSS_GROWTH) else 'NOT MET'}")
    else:
        print(f"  peak RSS at 5M <= 1M + {TARGET_RSS_GROWTH:.0%}: needs both sizes")
    if len(tb) >= 2:
        (n0, r0), (n1, r1) = sorted(tb.items())[0], sorted(tb.items())[-1]
        growth = (r1["run"].peak_rss_mib - r0["run"].peak_rss_mib) * 1024 / (r1["resources"] - r0["resources"])
        print(f"  trialbridge memory growth {n0:,} -> {n1:,} Obs: {growth:.2f} KiB per resource "
              "(flat streaming: ~0)")


# --------------------------------------------------------------------------- main

def main(argv: list[str]) -> int:
    if argv[:1] == ["_floor"]:
        floor(argv[1])
        return 0
    if argv[:1] == ["_naive"]:
        naive(argv[1], argv[2])
        return 0
    own, rest = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                 epilog="Unknown options, and everything after --, go to trialbridge convert.")
    ap.add_argument("--observations", "-n", type=int, nargs="+", default=DEFAULT_SIZES,
                    help=f"corpus sizes in Observations (default {DEFAULT_SIZES[0]})")
    ap.add_argument("--corpus", type=Path, help="an existing NDJSON folder instead of generated corpora")
    ap.add_argument("--skip-naive", action="store_true", help="leave out the naive pipeline")
    ap.add_argument("--with-fhiry", action="store_true", help="add fhiry (installed into a cache venv on first use)")
    args, unknown = ap.parse_known_args(own)
    clean_up_on_termination()
    passthrough = unknown + rest
    from make_fhir_corpus import make_corpus

    print(f"FHIR NDJSON -> SDTM (xpt, dataset-json, define.xml); {machine()}")
    rows: list[dict] = []
    sizes = [None] if args.corpus else args.observations
    for n in sizes:
        with scratch("tb-bench-fhir-") as work:
            if args.corpus:
                corpus = args.corpus
            else:
                corpus = work / "corpus"
                log(f"making a corpus of {n:,} Observations")
                t0 = time.perf_counter()
                make_corpus(n, corpus)
                log(f"  corpus made in {time.perf_counter() - t0:.1f} s")
            rows += one_size(corpus, work, args, passthrough)
    print()
    report(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
