"""Inputs too big or too binary to write inline in a corpus case: each function returns the
bytes of one file, built the same way every time."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "nct04387942"


def sample_file(name: str, rows: int | None = None) -> bytes:
    """A sample CSV, optionally cut to its header and first ``rows`` rows."""
    lines = (SAMPLE / name).read_bytes().splitlines(keepends=True)
    return b"".join(lines if rows is None else lines[: rows + 1])


def deep_json(depth: int = 100_000) -> bytes:
    """A JSON document nested ``depth`` arrays deep."""
    return b"[" * depth + b"]" * depth
