"""What the benchmark scripts share: run one command as a child process and measure its wall
time and peak memory, find the trialbridge command, keep temp folders from outliving a run,
print tables.  Standard library only.

Peak RSS is measured two ways and the larger is reported:

* the kernel's own figure for the child: ``os.wait4`` returns the child's rusage, whose
  ``ru_maxrss`` is the high-water mark of the child process (or of the largest process it
  waited for) — the number ``/usr/bin/time -v`` prints as "Maximum resident set size",
  since GNU time reads it the same way;
* the summed RSS of the child and all its descendants, sampled every 50 ms from /proc
  (Linux), so that a run with worker processes is charged for all of them together and not
  only for its largest process.  A single process peaks between samples, so there the
  kernel figure is the exact one.
"""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_CHILD_TMP: list[Path] = []  # the innermost scratch folder's tmp/, the children's TMPDIR


def log(message: str) -> None:
    """Progress goes to stderr, tables to stdout."""
    print(message, file=sys.stderr, flush=True)


@dataclass
class Run:
    seconds: float
    peak_rss_mib: float
    returncode: int
    stdout: str
    stderr: str


def _tree_rss(pid: int) -> int:
    """Bytes resident in ``pid`` and its descendants now (0 once it is gone)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/statm") as fh:
                total += int(fh.read().split()[1]) * PAGE
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except (OSError, ValueError):
            continue
    return total


def measure(cmd: list[str], *, env: dict | None = None, cwd: Path | None = None, label: str = "") -> Run:
    """Run ``cmd`` to its end; wall time from start to reaping, peak RSS (see module doc).
    Inside :func:`scratch`, the child's TMPDIR is a folder in it, so whatever temp files a
    child leaves (a killed run's spill files) go when the scratch folder goes."""
    if env is None and _CHILD_TMP:
        env = {**os.environ, "TMPDIR": str(_CHILD_TMP[-1])}
    shown = " ".join("<code>" if "\n" in str(c) else str(c) for c in cmd)
    log(f"  running {label or cmd[0]}: {shown}")
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen([str(c) for c in cmd], stdout=out, stderr=err, env=env, cwd=cwd)
        peak_tree = 0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak_tree
            while not done.is_set():
                peak_tree = max(peak_tree, _tree_rss(proc.pid))
                done.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True) if os.path.isdir("/proc") else None
        if sampler:
            sampler.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            done.set()
        seconds = time.perf_counter() - started
        if sampler:
            sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    kernel = usage.ru_maxrss * 1024  # KiB on Linux
    return Run(seconds, max(kernel, peak_tree) / 2**20, proc.returncode, stdout, stderr)


def check(run: Run, what: str, ok: tuple[int, ...] = (0,)) -> Run:
    if run.returncode not in ok:
        tail = "\n".join((run.stderr or run.stdout).strip().splitlines()[-15:])
        raise SystemExit(f"{what} failed with exit code {run.returncode}:\n{tail}")
    return run


def trialbridge_command() -> list[str]:
    """The installed ``trialbridge`` console script of the Python running this script (the
    command users run), else ``python -m trialbridge.cli``."""
    script = Path(sys.executable).with_name("trialbridge")
    if script.exists():
        return [str(script)]
    found = shutil.which("trialbridge")
    return [found] if found else [sys.executable, "-m", "trialbridge.cli"]


def _terminated(signum, frame):
    raise SystemExit(128 + signum)


def clean_up_on_termination() -> None:
    """SIGTERM (``kill PID``) ends the run the way Ctrl-C does: the child under way is killed
    and the temp folders are removed on the way out (by default SIGTERM kills Python without
    running ``finally`` blocks).  A run started in the background from a script has SIGINT
    ignored, so ``kill PID`` is the way to stop it there."""
    import signal

    signal.signal(signal.SIGTERM, _terminated)


@contextmanager
def scratch(prefix: str):
    """A temp folder removed on the way out, whatever happens (SIGTERM too, with
    :func:`clean_up_on_termination`); children measured inside it use its tmp/ as TMPDIR."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    (folder / "tmp").mkdir()
    _CHILD_TMP.append(folder / "tmp")
    try:
        yield folder
    finally:
        _CHILD_TMP.remove(folder / "tmp")
        shutil.rmtree(folder, ignore_errors=True)


def count_lines(folder: Path, pattern: str = "*.ndjson") -> int:
    n = 0
    for path in folder.glob(pattern):
        with open(path, "rb") as fh:
            n += sum(1 for line in fh if line.strip())
    return n


def repeat(cmd: list[str], runs: int, **kw) -> list[float]:
    return [check(measure(cmd, **kw), " ".join(cmd)).seconds for _ in range(runs)]


def min_median(values: list[float]) -> tuple[float, float]:
    return min(values), statistics.median(values)


def table(headers: list[str], rows: list[list], align: str | None = None) -> str:
    """A plain text table; ``align`` is one letter per column (l/r), numbers right by default."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    align = align or "l" + "r" * (len(headers) - 1)
    lines = []
    for k, r in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(r, widths, align)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def machine() -> str:
    import platform

    cores = os.cpu_count()
    text = f"{platform.python_implementation()} {platform.python_version()}, {cores} cores, {platform.machine()}"
    if hasattr(os, "getloadavg"):  # other work on the machine shows in every figure
        text += ", load average %.2f %.2f %.2f at start" % os.getloadavg()
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        text += "; PYTHONDONTWRITEBYTECODE is set (our modules are compiled from source on every start)"
    return text
