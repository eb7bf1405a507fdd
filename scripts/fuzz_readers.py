"""Coverage-guided fuzzing of the JSON and XML readers with atheris (libFuzzer for Python).

Not part of the test run: the property tests (``tests/test_fuzz_properties.py``) are the
bounded, repeatable check; this script explores for as long as it is let run.

    pip install atheris
    nice python scripts/fuzz_readers.py json -max_total_time=600 -rss_limit_mb=2048 -max_len=65536 fuzz-out/json
    nice python scripts/fuzz_readers.py xml  -max_total_time=600 -rss_limit_mb=2048 -max_len=65536 fuzz-out/xml

The first argument picks the target; the rest goes to libFuzzer (the last one is the corpus
folder: seeds from ``samples/`` are written there when it is empty, and what the fuzzer finds
interesting is kept there).  A crash is any exception other than our own error types
(``TrialbridgeError``; ``JsonError`` from the JSON codec; ``XMLRefusedError`` from the safe
XML policy): libFuzzer stops, prints the traceback and writes the input as ``crash-<sha1>``
in the working folder.  Replay one with ``python scripts/fuzz_readers.py json crash-<sha1>``.

Targets
    ``json``  one input as: the hub's JSON codec; a FHIR Bundle / resource ``.json`` file; an
              NDJSON file of resources; a records folder's ``subjects.json``; a Dataset-JSON
              file.  Readers must report bad data as findings and account for every row.
    ``xml``   one input as: an ODM 1.3.2 export (``read_odm``); a define.xml
              (``read_define`` and the XSD check).
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parents[1]

with atheris.instrument_imports(include=["trialbridge"]):
    from trialbridge.converters.core import jsoncodec, safexml
    from trialbridge.converters.core.issues import IssueLog, TrialbridgeError
    from trialbridge.converters.formats import define as define_xml
    from trialbridge.converters.formats import odm as odm_io
    from trialbridge.converters.formats import records as records_io
    from trialbridge.converters.formats.fhir import io as fhir_io
    from trialbridge.converters.formats.sdtm import read_dataset

OURS = (TrialbridgeError, jsoncodec.JsonError, safexml.XMLRefusedError)
WORK = Path(tempfile.mkdtemp(prefix="trialbridge-fuzz-"))


def _write(name: str, data: bytes) -> Path:
    path = WORK / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _accounted(log: IssueLog) -> None:
    """Readers count every row read; what they reject is counted too, never more than read."""
    for file, counts in log.accounting.items():
        if counts.get("rejected", 0) > counts.get("read", 0):
            raise AssertionError(f"{file}: {dict(counts)}: more rows rejected than read")


def _quiet(call, *args) -> None:
    try:
        result = call(*args)
        if hasattr(result, "__iter__") and not isinstance(result, (dict, str, bytes)):
            for _ in result:
                pass
    except OURS:
        pass


def target_json(data: bytes) -> None:
    _quiet(jsoncodec.loads, data)
    log = IssueLog()
    _quiet(fhir_io.read_fhir_located, _write("bundle.json", data), log)
    _quiet(fhir_io.read_fhir_located, _write("ndjson/Observation.ndjson", data), log)
    _accounted(log)
    log = IssueLog()
    folder = WORK / "records"
    _write("records/subjects.json", data)
    _write("records/adverse_events.ndjson", data)
    _quiet(lambda: list(records_io.RecordStream(folder, log)))
    _accounted(log)
    log = IssueLog()
    _quiet(read_dataset, _write("sdtm/ae.json", data), log)


def target_xml(data: bytes) -> None:
    path = _write("in.xml", data)
    log = IssueLog()
    _quiet(odm_io.read_odm, path, log)
    _accounted(log)
    log = IssueLog()
    _quiet(define_xml.read_define, path, log)
    _quiet(define_xml.validate_define_xsd, path, log)


def _seeds(kind: str) -> list[bytes]:
    """Small, valid inputs to start from: the fuzzer mutates these."""
    if kind == "json":
        ndjson = ROOT / "samples" / "nct04387942-fhir" / "ndjson"
        lines = [(ndjson / f"{t}.ndjson").read_bytes().splitlines()[0]
                 for t in ("Patient", "ResearchSubject", "AdverseEvent", "Observation", "ResearchStudy")]
        bundle = b'{"resourceType":"Bundle","type":"collection","entry":[' + b",".join(
            b'{"fullUrl":"urn:uuid:%d","resource":%s}' % (n, line) for n, line in enumerate(lines)) + b"]}"
        subject = (b'[{"study_id":"NCT04387942","site_id":"01","subject_id":"001","sex":"F",'
                   b'"consent_date":"2021-03-04","height_cm":130.50}]')
        return [bundle, b"\n".join(lines), subject, lines[2]]
    from lxml import etree

    tree = etree.parse(str(ROOT / "samples" / "nct04387942-odm" / "edc-export.xml"))
    ns = {"o": odm_io.ODM_NS}
    for mdv in tree.getroot().findall(".//o:MetaDataVersion", ns):  # the reader maps by its own tables
        mdv.getparent().remove(mdv)
    subjects = tree.getroot().findall(".//o:SubjectData", ns)
    for extra in subjects[1:]:
        extra.getparent().remove(extra)
    for event in subjects[0].findall("o:StudyEventData", ns)[3:]:
        event.getparent().remove(event)
    return [etree.tostring(tree, xml_declaration=True, encoding="UTF-8"), _small_define(),
            b'<?xml version="1.0"?><ODM xmlns="http://www.cdisc.org/ns/odm/v1.3" ODMVersion="1.3.2"/>']


def _small_define() -> bytes:
    """define.xml of one subject's SDTM (DM, AE and the trial design)."""
    from trialbridge.converters.pipeline import convert

    records = WORK / "seed-records"
    records.mkdir(exist_ok=True)
    for name, rows in (("subjects.csv", 2), ("adverse_events.csv", 1)):
        lines = (ROOT / "samples" / "nct04387942" / name).read_bytes().splitlines(keepends=True)
        keep = [lines[0]] + [line for line in lines[1:] if line.startswith(b"002,") or line.startswith(b"NCT04387942,01,002,")]
        (records / name).write_bytes(b"".join(keep[:rows]))
    convert(records, "sdtm", WORK / "seed-sdtm", formats="csv")
    return (WORK / "seed-sdtm" / "define.xml").read_bytes()


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("json", "xml"):
        sys.exit(__doc__)
    kind = sys.argv.pop(1)
    corpus = [a for a in sys.argv[1:] if not a.startswith("-")]
    if corpus and os.path.isdir(corpus[-1]) and not os.listdir(corpus[-1]):
        for n, seed in enumerate(_seeds(kind)):
            Path(corpus[-1], f"seed-{n}").write_bytes(seed)
    target = target_json if kind == "json" else target_xml
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
