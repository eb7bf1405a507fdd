"""benchmarks/make_fhir_corpus.py: exact counts per file and references that resolve."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "make_fhir_corpus.py"
from trialbridge.mappings.fhir import SUBJECT_ID_SYSTEM as SUBJECT_ID  # noqa: E402


def _references(node, out: list[str]) -> list[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                out.append(value)
            else:
                _references(value, out)
    elif isinstance(node, list):
        for item in node:
            _references(item, out)
    return out


def test_corpus_counts_and_references(tmp_path):
    # 2,000 Observations: the sample has 1,617, so two copies, the second cut to 383
    # Observations; every other copied type twice its sample count; ResearchStudy once.
    subprocess.run([sys.executable, str(SCRIPT), "--observations", "2000", "-o", str(tmp_path)],
                   check=True, capture_output=True, text=True)
    expected = {"AdverseEvent": 2 * 16, "Encounter": 2 * 110, "MedicationAdministration": 2 * 216,
                "Observation": 2000, "Patient": 2 * 24, "ResearchStudy": 2, "ResearchSubject": 2 * 24}
    resources = {}
    for rtype, count in expected.items():
        lines = (tmp_path / f"{rtype}.ndjson").read_text("utf-8").splitlines()
        assert len(lines) == count, rtype
        resources[rtype] = [json.loads(line) for line in lines]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{t}.ndjson" for t in expected)

    ids = [f"{t}/{r['id']}" for t, rows in resources.items() for r in rows]
    assert len(ids) == len(set(ids)), "resource ids repeat"
    known = set(ids)
    refs = [ref for rows in resources.values() for r in rows for ref in _references(r, [])
            if not ref.startswith("#")]  # contained resources
    assert refs and not [ref for ref in refs if ref not in known]

    for rtype in ("Patient", "ResearchSubject"):  # 48 distinct subjects, not 24 twice
        numbers = [i["value"] for r in resources[rtype] for i in r["identifier"] if i["system"] == SUBJECT_ID]
        assert len(numbers) == len(set(numbers)) == 48, rtype
