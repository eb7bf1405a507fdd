"""The arrows of docs/architecture.md, checked on the code's own imports: the hub imports
nothing of ours but itself, mapping modules import only the hub and mappings/, and nothing
imports the command line."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text("utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in out if m.startswith("trialbridge")}


def _ours(folder: str) -> dict[str, set[str]]:
    return {str(p.relative_to(ROOT)): _imports(p) for p in sorted((ROOT / folder).rglob("*.py"))}


def test_the_hub_imports_nothing_of_ours():
    bad = {f: sorted(m for m in mods if not m.startswith("trialbridge.converters.core"))
           for f, mods in _ours("converters/core").items()}
    assert not {f: m for f, m in bad.items() if m}


def test_mapping_modules_depend_on_the_hub_and_mappings_only():
    allowed = ("trialbridge.converters.core", "trialbridge.mappings")
    bad = {f: sorted(m for m in mods if not m.startswith(allowed)) for f, mods in _ours("mappings").items()}
    assert not {f: m for f, m in bad.items() if m}


def test_nothing_imports_the_command_line():
    users = {f for folder in ("converters", "mappings") for f, mods in _ours(folder).items()
             if any(m == "trialbridge.cli" or m.startswith("trialbridge.cli.") for m in mods)}
    assert users == set()
