"""``trialbridge --help`` wall time over several runs, beside ``python -c pass`` (issue 7:
target < 0.3 s).

    python benchmarks/cli_help.py              # 10 runs each (+1 warm-up)
    python benchmarks/cli_help.py --runs 20

Each run is a fresh child process timed from start to exit; min and median are printed.
``python -X importtime`` of the same command lists the heaviest imports of one run, so a
slow start can be traced to the module that pulls in too much.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import (clean_up_on_termination, log, machine, min_median, repeat, table,  # noqa: E402
                      trialbridge_command)

TARGET_SECONDS = 0.3
IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")


def heaviest_imports(top: int) -> list[tuple[str, float]]:
    """(module, cumulative seconds) of the imports of ``trialbridge --help`` two levels deep
    (what the command imports and what those import), largest first."""
    code = "import sys; sys.argv = ['trialbridge', '--help']; from trialbridge.cli import main; main()"
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True)
    found = []
    for line in done.stderr.splitlines():
        m = IMPORT_LINE.match(line)
        if m and len(m.group(3)) <= 3:  # indent 1: imported by the command, 3: by those
            found.append(("  " * (len(m.group(3)) // 2) + m.group(4), int(m.group(2)) / 1e6))
    return sorted(found, key=lambda x: -x[1])[:top]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    ap.add_argument("--runs", type=int, default=10, help="runs of each command (default 10)")
    ap.add_argument("--top", type=int, default=8, help="heaviest imports to list (default 8)")
    args = ap.parse_args(argv)
    clean_up_on_termination()
    print(f"trialbridge --help; {machine()}")
    commands = [("python -c pass", [sys.executable, "-c", "pass"]),
                ("python -c 'import click'", [sys.executable, "-c", "import click"]),
                ("trialbridge --help", trialbridge_command() + ["--help"])]
    rows = []
    results = {}
    for name, cmd in commands:
        log(f"{name}: {args.runs} runs")
        repeat(cmd, 1)  # warm-up: disk cache
        lo, med = min_median(repeat(cmd, args.runs))
        results[name] = med
        rows.append([name, f"{lo:.3f}", f"{med:.3f}"])
    print()
    print(table(["command", "min s", "median s"], rows))
    help_median = results["trialbridge --help"]
    print(f"\ntarget (issue 7): trialbridge --help < {TARGET_SECONDS} s: median {help_median:.3f} s "
          f"{'MET' if help_median < TARGET_SECONDS else 'NOT MET'}")
    heavy = heaviest_imports(args.top)
    if heavy:
        print("\nheaviest imports of one run, two levels deep (python -X importtime, cumulative):")
        print(table(["module", "seconds"], [[m, f"{s:.3f}"] for m, s in heavy]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
