"""The 59-subject records sample -> SDTM + define.xml: wall time of the CLI process and where
it goes (issue 7: target < 1.5 s wall).

    python benchmarks/records_to_sdtm.py              # 5 runs of each measurement
    python benchmarks/records_to_sdtm.py --runs 9 --format xpt,dataset-json
    python benchmarks/records_to_sdtm.py --profile    # also the top functions under cProfile

1. ``trialbridge convert samples/nct04387942 --to sdtm -o OUT`` as a child process, several
   runs: min and median wall time (``python -c pass`` beside it: the interpreter alone).
2. The split, in fresh child processes (one per run, medians shown; the runs of 1. and 2.
   alternate, so other work on the machine weighs on both alike): the time to
   ``import trialbridge.converters.pipeline``, then ``pipeline.convert`` with the engine's
   phase functions wrapped by timers at run time (nothing in the engine is edited):

   read      pipeline._spill_records (records read into the subject spill)
   map       engine.run (every subject mapped, workers=1, in this process; column
             statistics are gathered here too), and within it each SDTM mapping
             module's to_sdtm
   write     pipeline._write_sdtm_stream (rows from the sinks through the XPT /
             Dataset-JSON / CSV writers, kept for the rules) less what is timed inside
             it, and pipeline.write_issues
   design    spokes.trial_design_rows
   validate  validation.rules.validate_datasets
   define    formats.define.write_define_from_stats, read_define, check_define_against_stats

   Each phase gets its own time: a timed function called inside another is taken out of
   the caller's time; what ``convert`` spends outside them is "other".  The names of the
   engines before today's are listed too (PHASES); a phase none of whose functions exists
   any more is shown as "n/a (hook gone)" rather than failing.  The CLI's own rest (click,
   printing, exit) is the CLI median minus interpreter, import and convert; the same
   remainder is also measured inside the split's own processes (interpreter teardown).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import (ROOT, check, clean_up_on_termination, log, machine, measure, min_median,  # noqa: E402
                      scratch, table, trialbridge_command)

SAMPLE = ROOT / "samples" / "nct04387942"
TARGET_SECONDS = 1.5
# phase -> the (module, attribute) of functions pipeline.convert calls for records -> SDTM.
# Names of the engines before today's are listed too; a phase is "hook gone" only when none
# of its functions exists any more.  Each phase gets its own (exclusive) time: a timed
# function called inside another is taken out of the caller's time.
PHASES = {
    "read records into the subject spill": [("trialbridge.converters.pipeline", "_spill_records"),
                                            ("trialbridge.converters.formats.records", "read_records")],
    "map subjects (engine.run)": [("trialbridge.converters.engine", "run"),
                                  ("trialbridge.converters.pipeline", "records_to_sdtm")],
    "write SDTM files (sinks -> writers) + issues.json": [
        ("trialbridge.converters.pipeline", "_write_sdtm_stream"),
        ("trialbridge.converters.pipeline", "_write_sdtm"),
        ("trialbridge.converters.formats.sdtm", "write_datasets"),
        ("trialbridge.converters.pipeline", "write_issues")],
    "trial design (and datasets from sinks)": [("trialbridge.converters.spokes", "trial_design_rows"),
                                               ("trialbridge.converters.pipeline", "make_dataset")],
    "validate (conformance rules)": [("trialbridge.converters.pipeline", "validate_datasets")],
    "define.xml (build, XSD, read back, check)": [
        ("trialbridge.converters.formats.define", name)
        for name in ("write_define_from_stats", "write_define", "read_define", "check_define_against_stats",
                     "check_define_against_datasets")],
}


# --------------------------------------------------------------------------- the child

def phases(out: str, formats: str, profile: bool) -> None:
    """In this fresh process: import, then one timed convert; prints JSON."""
    import importlib

    t0 = time.perf_counter()
    import trialbridge.converters.pipeline as pipeline
    imported = time.perf_counter() - t0

    t_hooks = time.perf_counter()
    spent: dict[str, float] = {name: 0.0 for name in PHASES}
    missing: list[str] = []
    domains: dict[str, float] = {}
    stack: list[list[float]] = []  # per timed call under way: [start, time of timed calls inside it]

    def timed(phase: str, fn, bucket: dict):
        def wrapper(*a, **kw):
            entry = [time.perf_counter(), 0.0]
            stack.append(entry)
            try:
                return fn(*a, **kw)
            finally:
                stack.pop()
                elapsed = time.perf_counter() - entry[0]
                bucket[phase] = bucket.get(phase, 0.0) + elapsed - entry[1]
                if stack:
                    stack[-1][1] += elapsed
        return wrapper

    for phase, hooks in PHASES.items():
        found = 0
        for module_name, attr in hooks:
            module = importlib.import_module(module_name)
            if callable(getattr(module, attr, None)):
                setattr(module, attr, timed(phase, getattr(module, attr), spent))
                found += 1
        if not found:
            missing.append(phase)
    # inside map: each SDTM mapping module's to_sdtm, on its own clock (a part of map's time)
    try:
        from trialbridge.converters.spokes import domain_modules

        for mod in domain_modules():
            fn = mod.to_sdtm

            def per_domain(*a, _fn=fn, _name=mod.DOMAIN, **kw):
                start = time.perf_counter()
                try:
                    return _fn(*a, **kw)
                finally:
                    domains[_name] = domains.get(_name, 0.0) + time.perf_counter() - start
            mod.to_sdtm = per_domain
    except (ImportError, AttributeError):
        pass

    hooks = time.perf_counter() - t_hooks  # mostly importing the SDTM mapping modules
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
    t0 = time.perf_counter()
    if profiler:
        profiler.enable()
    result = pipeline.convert(SAMPLE, "sdtm", Path(out), formats=formats)
    if profiler:
        profiler.disable()
    total = time.perf_counter() - t0
    report = {"import": imported, "hooks": hooks, "convert": total, "phases": spent, "missing": sorted(set(missing)),
              "domains": domains, "errors": result.counts.get("error", 0)}
    if profiler:
        import io
        import pstats

        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(30)
        report["profile"] = text.getvalue()
    print(json.dumps(report))


# --------------------------------------------------------------------------- main

def main(argv: list[str]) -> int:
    if argv[:1] == ["_phases"]:
        phases(argv[1], argv[2], argv[3] == "1")
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    ap.add_argument("--runs", type=int, default=5, help="runs of each measurement (default 5)")
    ap.add_argument("--format", default="xpt", help="SDTM formats written (default xpt)")
    ap.add_argument("--profile", action="store_true", help="print the top functions under cProfile (one more run)")
    args = ap.parse_args(argv)
    clean_up_on_termination()
    rows_in = sum(max(0, sum(1 for _ in p.open(encoding="utf-8")) - 1) for p in SAMPLE.glob("*.csv"))
    print(f"records -> SDTM ({args.format} + define.xml), samples/nct04387942: 59 subjects, {rows_in:,} input rows; "
          f"{machine()}")
    me = [sys.executable, str(Path(__file__).resolve())]
    with scratch("tb-bench-records-") as work:
        cli = trialbridge_command() + ["convert", str(SAMPLE), "--to", "sdtm", "-o", str(work / "cli"),
                                       "--format", args.format]
        # one CLI run, one bare interpreter and one split process per round, so that other
        # work on the machine weighs on the three alike
        log(f"{args.runs} rounds of: CLI, python -c pass, phase split (+1 warm-up CLI run)")
        check(measure(cli, label="warm-up"), "trialbridge convert", ok=(0, 1))
        walls, bare, reports = [], [], []
        for k in range(args.runs):
            walls.append(check(measure(cli, label="trialbridge"), "trialbridge convert", ok=(0, 1)).seconds)
            bare.append(check(measure([sys.executable, "-c", "pass"], label="python -c pass"), "python").seconds)
            run = check(measure(me + ["_phases", str(work / f"split{k}"), args.format, "0"], label="split"), "split")
            reports.append({**json.loads(run.stdout.strip().splitlines()[-1]), "wall": run.seconds})
        profile_text = None
        if args.profile:
            run = check(measure(me + ["_phases", str(work / "profile"), args.format, "1"], label="cProfile"),
                        "profile")
            profile_text = json.loads(run.stdout.strip().splitlines()[-1]).get("profile")

    wall_min, wall_med = min_median(walls)
    bare_min, bare_med = min_median(bare)
    med = statistics.median
    imp = med([r["import"] for r in reports])
    conv = med([r["convert"] for r in reports])
    lines = [["CLI process, wall", f"{wall_min:.3f}", f"{wall_med:.3f}", "100%"],
             ["  interpreter start (python -c pass)", f"{bare_min:.3f}", f"{bare_med:.3f}",
              f"{bare_med / wall_med:.0%}"],
             ["  import trialbridge.converters.pipeline", f"{min(r['import'] for r in reports):.3f}", f"{imp:.3f}",
              f"{imp / wall_med:.0%}"],
             ["  import the SDTM mapping modules (the CLI does it inside convert)",
              f"{min(r['hooks'] for r in reports):.3f}", f"{med([r['hooks'] for r in reports]):.3f}",
              f"{med([r['hooks'] for r in reports]) / wall_med:.0%}"],
             ["  pipeline.convert", f"{min(r['convert'] for r in reports):.3f}", f"{conv:.3f}",
              f"{conv / wall_med:.0%}"]]
    missing = set().union(*(r["missing"] for r in reports))
    attributed = 0.0
    for phase in PHASES:
        values = [r["phases"].get(phase, 0.0) for r in reports]
        if phase in missing and not any(values):
            lines.append([f"    {phase}", "n/a (hook gone)", "", ""])
            continue
        attributed += med(values)
        lines.append([f"    {phase}", f"{min(values):.3f}", f"{med(values):.3f}", f"{med(values) / wall_med:.0%}"])
        if phase.startswith("map"):
            names = sorted({d for r in reports for d in r["domains"]},
                           key=lambda d: -med([r["domains"].get(d, 0.0) for r in reports]))
            in_modules = 0.0
            for d in names:
                v = med([r["domains"].get(d, 0.0) for r in reports])
                in_modules += v
                if v >= 0.001:
                    lines.append([f"      {d}.to_sdtm", "", f"{v:.3f}", f"{v / wall_med:.0%}"])
            rest = med(values) - in_modules
            lines.append(["      rest of map (spill read-back, --SEQ, SUPP, column stats, sinks)", "", f"{rest:.3f}",
                          f"{rest / wall_med:.0%}"])
    other = conv - attributed
    lines.append(["    other (in convert, not in a phase)", "", f"{other:.3f}", f"{other / wall_med:.0%}"])
    hooks = med([r["hooks"] for r in reports])
    cli_rest = wall_med - bare_med - imp - hooks - conv
    lines.append(["  CLI rest (click, output, exit; by difference)", "", f"{cli_rest:.3f}",
                  f"{cli_rest / wall_med:.0%}"])
    # the same remainder inside the split's own processes (no noise between different runs):
    # start-up of the script and the interpreter's teardown after convert returned
    child_rest = med([r["wall"] - r["import"] - r["hooks"] - r["convert"] for r in reports]) - bare_med
    lines.append(["    the same in the split's own processes (teardown)", "", f"{child_rest:.3f}",
                  f"{child_rest / wall_med:.0%}"])
    print()
    print(table(["", "min s", "median s", "of wall"], lines, align="lrrr"))
    print(f"\ntarget (issue 7): CLI wall < {TARGET_SECONDS} s: median {wall_med:.2f} s "
          f"{'MET' if wall_med < TARGET_SECONDS else 'NOT MET'}")
    if profile_text:
        print("\ncProfile of pipeline.convert (one run; cumulative):")
        print(profile_text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
