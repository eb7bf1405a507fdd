"""Issue 9, guarantee 1: on every run, per input file, records in = converted + rejected + out
of scope.  The corpus checks it on every bad input (tests/corpus_runner.py); this checks it on
every bundled sample, each input file named, with the counts worked out from the files."""
from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from trialbridge.cli import main

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"


def _lines(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


@pytest.mark.parametrize("sample, to", [
    ("nct04387942", "sdtm"), ("nct04387942-dirty", "sdtm"), ("nct04387942-odm/edc-export.xml", "sdtm"),
    ("nct04387942-fhir/bundle.json", "sdtm"), ("nct04387942-fhir/ndjson", "records"),
    ("hospital-export-handwritten/export.json", "sdtm"),
])
def test_every_record_is_accounted_for(sample, to, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["convert", str(SAMPLES / sample), "--to", to, "-o", str(out), "--quiet",
                                       "--study", "NCT04387942"])
    assert result.exit_code in (0, 1), result.output
    rows = orjson.loads((out / "issues.json").read_bytes())["rows"]
    assert rows, "no input file counted"
    for file, counts in rows.items():
        done = sum(counts.get(k, 0) for k in ("converted", "rejected", "out_of_scope"))
        assert counts["read"] == done, (file, counts)
    if sample in ("nct04387942", "nct04387942-dirty"):  # every CSV row of every record file is read
        for csv in sorted((SAMPLES / sample).glob("*.csv")):
            got = next(c for f, c in rows.items() if f.endswith(csv.name))
            assert got["read"] == _lines(csv) - 1, csv.name  # the header is not a record
    if sample == "nct04387942-fhir/ndjson":  # every NDJSON line is a resource read
        for nd in sorted((SAMPLES / sample).glob("*.ndjson")):
            got = next(c for f, c in rows.items() if f.endswith(nd.name))
            assert got["read"] == _lines(nd), nd.name
