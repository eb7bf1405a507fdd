"""Runs the bad-input corpus (``tests/corpus/**/*.yaml``): one case per file, collected as
data by ``tests/conftest.py``.

A case is ``{title, files, args, expect}``:

``files``
    what to lay out in a fresh folder before the run, ``name: content``.  A name may hold
    folders (``in/lb.csv``).  A content is a text (written as UTF-8), or a mapping with one
    of ``text`` / ``hex`` / ``copy`` (a repo-relative file) / ``build`` (a function of
    ``tests/corpus/builders.py`` that returns bytes), then optional transformations:
    ``replace`` (list of ``[old, new]`` on the text), ``encoding`` (``cp1252``,
    ``utf-16`` …), ``bom`` (prefix the UTF-8 BOM), ``newline`` (``"\\r\\n"``, ``"\\r"``),
    ``truncate`` (keep the first N bytes), ``gzip`` (compress), ``symlink`` (make the name a
    symlink to another laid-out name instead).
``args``
    the command line, as a list; ``{tmp}`` is the case's folder, ``{in}`` = ``{tmp}/in``,
    ``{out}`` = ``{tmp}/out``.  Default: ``[convert, "{in}", --to, sdtm, -o, "{out}"]``.
``expect``
    ``exit`` (the exit code), ``issues`` (each a mapping of Issue fields that one finding
    in ``out/issues.json`` must match: ``file`` matches the end of the finding's path),
    ``no_issues`` (codes that must not appear), ``stderr`` / ``stdout`` (fragments),
    ``outputs`` (files that must exist in ``out``), ``no_output`` (``out`` holds nothing
    but what was there before), ``rows`` (``{file: {read: N, converted: N, …}}``).
    ``expect_issue`` is short for ``expect.issues`` with one finding.

Every case also checks what holds for any input: no traceback and no internal error (exit
3), the laid-out input is byte-identical after the run, no temporary file is left, and in
``issues.json`` every input file's rows add up (read = converted + rejected + out of scope).
"""
from __future__ import annotations

import base64
import gzip as gzip_mod
import hashlib
import importlib.util
import os
import shlex
from pathlib import Path
from typing import Any

import orjson
import yaml

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).resolve().parent / "corpus"
DEFAULT_ARGS = ["convert", "{in}", "--to", "sdtm", "-o", "{out}"]
CASE_KEYS = {"title", "why", "files", "args", "expect", "expect_issue", "env", "skip"}
EXPECT_KEYS = {"exit", "issues", "no_issues", "stderr", "stdout", "outputs", "no_output", "rows", "not_stdout",
               "not_stderr"}


class _CaseLoader(yaml.SafeLoader):
    """YAML without timestamps: a date in a case is the text a site typed, kept as text."""


_CaseLoader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class CaseError(Exception):
    """The case file itself is malformed (a defect of the corpus, not of trialbridge)."""


def load_case(path: Path) -> dict[str, Any]:
    case = yaml.load(path.read_text(encoding="utf-8"), Loader=_CaseLoader)
    if not isinstance(case, dict) or "title" not in case:
        raise CaseError(f"{path}: a case is a mapping with a title")
    unknown = set(case) - CASE_KEYS
    if unknown:
        raise CaseError(f"{path}: unknown keys {sorted(unknown)}")
    expect = dict(case.get("expect") or {})
    if "expect_issue" in case:
        expect.setdefault("issues", []).append(case["expect_issue"])
    unknown = set(expect) - EXPECT_KEYS
    if unknown:
        raise CaseError(f"{path}: unknown expect keys {sorted(unknown)}")
    if "exit" not in expect:
        raise CaseError(f"{path}: every case names the exit code it expects")
    case["expect"] = expect
    return case


def _builders():
    spec = importlib.util.spec_from_file_location("corpus_builders", CORPUS / "builders.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _content(spec: Any) -> bytes:
    if isinstance(spec, str):
        return spec.encode("utf-8")
    if not isinstance(spec, dict):
        raise CaseError(f"file content must be a text or a mapping, not {type(spec).__name__}")
    if "text" in spec:
        text = spec["text"]
    elif "copy" in spec:
        text = None
        data = (ROOT / spec["copy"]).read_bytes()
    elif "hex" in spec:
        text = None
        data = bytes.fromhex("".join(spec["hex"].split()))
    elif "base64" in spec:
        text = None
        data = base64.b64decode(spec["base64"])
    elif "build" in spec:
        text = None
        data = getattr(_builders(), spec["build"])(**spec.get("kwargs", {}))
    else:
        raise CaseError(f"file content needs text, copy, hex, base64 or build: {sorted(spec)}")
    if text is None and ("replace" in spec or "newline" in spec or "encoding" in spec):
        text = data.decode("utf-8")
    if text is not None:
        for old, new in spec.get("replace", []):
            if old not in text:
                raise CaseError(f"replace: {old!r} is not in the content")
            text = text.replace(old, new)
        if "newline" in spec:
            text = text.replace("\r\n", "\n").replace("\n", spec["newline"])
        data = text.encode(spec.get("encoding", "utf-8"))
    if spec.get("bom"):
        data = b"\xef\xbb\xbf" + data
    if "truncate" in spec:
        data = data[: int(spec["truncate"])]
    if spec.get("gzip"):
        data = gzip_mod.compress(data, mtime=0)
    return data


def lay_out(case: dict[str, Any], tmp: Path) -> None:
    links = []
    (tmp / "in").mkdir(parents=True, exist_ok=True)
    for name, spec in (case.get("files") or {}).items():
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(spec, dict) and "symlink" in spec:
            links.append((path, tmp / spec["symlink"]))
            continue
        if isinstance(spec, dict) and spec.get("folder"):
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.write_bytes(_content(spec))
        if isinstance(spec, dict) and "mode" in spec:
            os.chmod(path, int(str(spec["mode"]), 8))
    for path, target in links:
        path.symlink_to(target, target_is_directory=target.is_dir())


def snapshot(folder: Path, skip: Path | None = None) -> dict[str, str]:
    """Digest of every file under ``folder`` (not following symlinks), ``skip`` left out."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if skip is not None and (p == skip or skip in p.parents):
            continue
        if p.is_symlink():
            out[str(p.relative_to(folder))] = "-> " + os.readlink(p)
        elif p.is_file():
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _matches(issue: dict[str, Any], want: dict[str, Any]) -> bool:
    for key, value in want.items():
        have = issue.get(key)
        if key == "file":
            if have is None or not str(have).replace("\\", "/").endswith(str(value)):
                return False
        elif key == "message":
            if str(value) not in str(have or ""):
                return False
        elif str(have) != str(value):
            return False
    return True


def run_case(path: Path, tmp: Path) -> None:
    from click.testing import CliRunner

    from trialbridge.cli import main

    case = load_case(path)
    lay_out(case, tmp)
    out = tmp / "out"
    before_out = snapshot(out) if out.exists() else None
    before = snapshot(tmp, skip=out)
    args = [str(a).replace("{tmp}", str(tmp)).replace("{in}", str(tmp / "in")).replace("{out}", str(out))
            for a in (case.get("args") or DEFAULT_ARGS)]
    env = {k: str(v).replace("{tmp}", str(tmp)) for k, v in (case.get("env") or {}).items()}
    result = CliRunner().invoke(main, args, env=env, catch_exceptions=True)
    stdout, stderr = result.stdout, result.stderr
    shown = f"\n$ trialbridge {shlex.join(args)}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    expect = case["expect"]
    # what holds for any input
    assert result.exit_code != 3 and "Traceback" not in stdout + stderr and "internal error" not in stderr, \
        f"internal error{shown}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"uncaught {type(result.exception).__name__}: {result.exception}{shown}")
    after = snapshot(tmp, skip=out)
    assert after == before, f"the input changed: {sorted(k for k in set(after) | set(before) if after.get(k) != before.get(k))}{shown}"
    leftovers = [p for p in tmp.rglob("*") if p.name.endswith(".tmp") or ".staging" in p.name or ".partial" in p.name]
    assert not leftovers, f"temporary files left: {leftovers}{shown}"
    assert result.exit_code == expect["exit"], f"exit {result.exit_code}, expected {expect['exit']}{shown}"
    for fragment in _as_list(expect.get("stderr")):
        assert str(fragment) in stderr, f"stderr lacks {fragment!r}{shown}"
    for fragment in _as_list(expect.get("stdout")):
        assert str(fragment) in stdout, f"stdout lacks {fragment!r}{shown}"
    for fragment in _as_list(expect.get("not_stderr")):
        assert str(fragment) not in stderr, f"stderr holds {fragment!r}{shown}"
    for fragment in _as_list(expect.get("not_stdout")):
        assert str(fragment) not in stdout, f"stdout holds {fragment!r}{shown}"
    if expect.get("no_output"):
        now = snapshot(out) if out.exists() else None
        assert now == before_out, f"output folder changed: {now}{shown}"
    for name in _as_list(expect.get("outputs")):
        assert (out / name).is_file(), f"no {name} in the output{shown}"
    report = out / "issues.json"
    doc = orjson.loads(report.read_bytes()) if report.is_file() else None
    wanted = list(expect.get("issues") or [])
    if wanted or expect.get("no_issues") or expect.get("rows"):
        assert doc is not None, f"no issues.json in the output{shown}"
    if doc is not None:
        for file, counts in doc.get("rows", {}).items():
            read = counts.get("read", 0)
            done = sum(counts.get(k, 0) for k in ("converted", "rejected", "out_of_scope"))
            assert read == done, f"{file}: {read} read but {counts} accounted{shown}"
        issues = doc.get("issues", [])
        listing = "\n".join(f"  {i['severity']} {i['code']} {i.get('file')}:{i.get('record')} {i.get('field')} "
                            f"[{i.get('value')}]" for i in issues[:60])
        for want in wanted:
            assert any(_matches(i, want) for i in issues), f"no finding matches {want}; found:\n{listing}{shown}"
        codes = {i["code"] for i in issues}
        for code in _as_list(expect.get("no_issues")):
            assert code not in codes, f"finding {code} should not be raised:\n{listing}{shown}"
        for file, counts in (expect.get("rows") or {}).items():
            have = next((c for f, c in doc.get("rows", {}).items() if f.replace("\\", "/").endswith(file)), None)
            assert have is not None, f"no row counts for {file}: {doc.get('rows')}{shown}"
            for key, value in counts.items():
                assert have.get(key, 0) == value, f"{file}: {key} {have.get(key, 0)}, expected {value}{shown}"


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]
