"""The Node.js tools the tests run (Medplum's validator, the FHIR test server), installed
where they live by ``npm ci`` from their committed lock files when they are missing, so
the README's test command is all a fresh machine needs."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def node_installed(folder: Path, marker: str, what: str) -> str:
    """``node``'s path, after ``npm ci`` in ``folder`` if ``node_modules/<marker>`` is absent."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.fail(f"Node.js 20.19+ and npm are needed for the {what} test ({folder.name})")
    if not (folder / "node_modules" / marker / "package.json").exists():
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=folder, capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, f"npm ci failed in {folder}:\n{done.stdout}\n{done.stderr}"
    return node
