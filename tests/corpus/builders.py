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


def long_field_csv(length: int = 200_000) -> bytes:
    """visits.csv whose second row has a ``reason`` of ``length`` characters (one line)."""
    return ("subject_id,visit,start,end,status,reason\n"
            "101,SCREENING,2020-06-13,,DONE,\n"
            f"101,DAY 0,2020-06-18,,NOT DONE,{'x' * length}\n"
            "101,DAY 7,2020-06-25,,DONE,\n").encode("ascii")


def xml_attack(name: str) -> bytes:
    """One hostile ODM document of ``tests/xml_attacks.py`` (an XXE names /etc/hostname)."""
    import importlib.util

    from trialbridge.converters.core import safexml

    spec = importlib.util.spec_from_file_location("xml_attacks", ROOT / "tests" / "xml_attacks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.attack_documents("file:///etc/hostname", safexml.PROLOG_LIMIT)[name].encode("utf-8")


def long_csv_line(cells: int = 600_000) -> bytes:
    """visits.csv whose second row is one physical line of ``cells`` short cells (over 1 MiB)."""
    return ("subject_id,visit,start,end,status,reason\n"
            "101,SCREENING,2020-06-13,,DONE,\n"
            + "101,DAY 0,2020-06-18,,DONE," + ",x" * cells + "\n"
            "101,DAY 7,2020-06-25,,DONE,\n").encode("ascii")


def long_ndjson_line(length: int = 17 << 20) -> bytes:
    """visits.ndjson whose second line is a record with a ``reason`` of ``length`` characters."""
    return (b'{"subject_id": "101", "visit": "SCREENING", "start": "2020-06-13", "status": "DONE"}\n'
            b'{"subject_id": "101", "visit": "DAY 0", "start": "2020-06-18", "status": "DONE", "reason": "'
            + b"x" * length + b'"}\n'
            b'{"subject_id": "101", "visit": "DAY 7", "start": "2020-06-25", "status": "DONE"}\n')

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


def xpt(table: str, csv: str, numbers: tuple[str, ...] = (), version: int = 5) -> bytes:
    """A SAS transport file written by pyreadstat (ReadStat), not by trialbridge: dataset
    ``table`` from the CSV text ``csv`` (columns in ``numbers`` as doubles, the rest text),
    XPORT version 5 or 8 (8 allows names over 8 characters and values over 200 bytes)."""
    import io
    import tempfile

    import pandas as pd
    import pyreadstat

    frame = pd.read_csv(io.StringIO(csv), dtype=str, keep_default_na=False)
    for name in numbers:
        frame[name] = pd.to_numeric(frame[name].replace("", None)).astype(float)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{table.lower()}.xpt"
        pyreadstat.write_xport(frame, str(path), table_name=table, file_format_version=version)
        return path.read_bytes()


def sas7bdat_like(size: int = 1024) -> bytes:
    """The first bytes of a SAS7BDAT file (its 32-byte magic number, then zeros): what a
    .sas7bdat renamed to .xpt starts with."""
    magic = bytes.fromhex("000000000000000000000000c2ea8160b31411cfbd92080009c7318c181f1011")
    return magic + b"\0" * (size - len(magic))


def noise(size: int = 3000, seed: int = 9) -> bytes:
    """``size`` pseudo-random bytes, the same every time."""
    import random

    return random.Random(seed).randbytes(size)


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
