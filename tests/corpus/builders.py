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


def fhir_name_in_ae_text(family: str = "Okonkwo") -> bytes:
    """One subject of the FHIR sample as a Bundle (the study, the Patient, its ResearchSubject
    and AdverseEvents), the Patient named ``family`` and that name typed into the first
    AdverseEvent's text, as a hospital's EHR would send it."""
    import json

    folder = ROOT / "samples" / "nct04387942-fhir" / "ndjson"

    def lines(kind: str) -> list[dict]:
        return [json.loads(line) for line in (folder / f"{kind}.ndjson").read_text("utf-8").splitlines() if line]

    ae = lines("AdverseEvent")
    patient_ref = ae[0]["subject"]["reference"]
    patient = next(p for p in lines("Patient") if f"Patient/{p['id']}" == patient_ref)
    patient["name"] = [{"family": family, "given": ["Adaeze"], "use": "official"}]
    subject = [r for r in lines("ResearchSubject") if r["individual"]["reference"] == patient_ref]
    events = [a for a in ae if a["subject"]["reference"] == patient_ref]
    events[0]["event"]["text"] = f"rash on arm ({family.upper()}'s mother reports)"
    entries = [*lines("ResearchStudy"), patient, *subject, *events]
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in entries]}
    return json.dumps(bundle, indent=1).encode("utf-8")


def deep_bundle(depth: int = 100_000) -> bytes:
    """A FHIR Bundle whose one entry holds an element nested ``depth`` arrays deep."""
    return (b'{"resourceType": "Bundle", "type": "collection", "entry": [{"resource": '
            b'{"resourceType": "Basic", "id": "deep", "extension": ' + b"[" * depth + b"]" * depth + b"}}]}")


def gzip_bomb(spaces: int = 4 * 2**20) -> bytes:
    """The one-subject NDJSON export, gzip-compressed, followed by one line of ``spaces``
    blanks: a few KiB that unpack to megabytes (a decompression bomb's shape)."""
    import gzip

    text = (ROOT / "tests" / "corpus" / "fhir" / "inputs" / "one-subject.ndjson").read_bytes()
    return gzip.compress(text + b" " * spaces + b"\n", mtime=0)


def gzip_cut(keep: int = 600) -> bytes:
    """The one-subject NDJSON export, gzip-compressed, cut after ``keep`` compressed bytes (a
    download interrupted)."""
    import gzip

    text = (ROOT / "tests" / "corpus" / "fhir" / "inputs" / "one-subject.ndjson").read_bytes()
    return gzip.compress(text, mtime=0)[:keep]
