"""Build samples/nct04387942-odm/edc-export.xml from the CSV sample samples/nct04387942.

    python scripts/build_odm_sample.py [--check]

Reads the records with ``records_io.read_records`` and writes them with
``odm_io.write_odm`` through ``mappings/odm/nct04387942.yaml``.  Identifying fields
(names, MRN, address, phone) are left out: an EDC does not hold them.  The export is
deterministic: ``CreationDateTime`` is the fixed ``odm_io.FIXED_CREATION_DATETIME``, so
re-running rewrites identical bytes.  ``--check`` writes to a temporary file and exits 1
when the committed file differs.  Exits 1 when reading or writing logged an error.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


from trialbridge.converters.formats import records as records_io  # noqa: E402
from trialbridge.converters.formats import odm as odm_io
from trialbridge.converters.core.issues import IssueLog  # noqa: E402
from trialbridge.mappings.study import load_study  # noqa: E402

SOURCE = ROOT / "samples" / "nct04387942"
TARGET = ROOT / "samples" / "nct04387942-odm" / "edc-export.xml"


def build(target: Path) -> IssueLog:
    log = IssueLog()
    records = records_io.read_records(SOURCE, log)
    study = load_study(records.study_id or "NCT04387942")
    odm_io.write_odm(records, study, target, log)
    return log


def main(argv: list[str]) -> int:
    check = "--check" in argv
    if check:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / TARGET.name
            log = build(out)
            same = TARGET.exists() and out.read_bytes() == TARGET.read_bytes()
        print(f"{TARGET.relative_to(ROOT)}: {'up to date' if same else 'DIFFERS from a fresh build'}")
        status = 0 if same else 1
    else:
        log = build(TARGET)
        print(f"wrote {TARGET.relative_to(ROOT)} ({TARGET.stat().st_size} bytes)")
        status = 0
    for issue in log.sorted():
        if issue.severity != "info" or issue.code.startswith("ODM-"):
            print(f"  {issue.severity} {issue.code}: {issue.message}")
    return 1 if log.has_errors else status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
