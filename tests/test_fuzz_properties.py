"""Property-based tests (hypothesis) over every reader and the records model.

* Arbitrary input — random bytes, random JSON, and valid files with bytes flipped, cut or
  inserted — to each reader (records CSV / JSON / NDJSON, ODM XML, FHIR Bundle / NDJSON, XPT,
  Dataset-JSON, SDTM CSV, define.xml) raises nothing but our own usage error
  (``TrialbridgeError``) and never loses accounting: every row or resource read is either
  yielded or counted rejected, with a finding.
* Records generated from the record schemas (``schemas/internal``: enum, pattern, ISO 8601,
  free text; coded values from the terminology the study uses) are accepted by the records
  model, and survive records -> SDTM -> records and records -> FHIR -> records field for field.

Examples are bounded (``settings`` below) so all of these take seconds; the coverage-guided
run without bounds is ``scripts/fuzz_readers.py``.
"""
from __future__ import annotations

import csv
import os
import tempfile
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from trialbridge.converters.core import jsoncodec
from trialbridge.converters.core.issues import IssueLog, TrialbridgeError
from trialbridge.converters.core.records import Records, public, record_types
from trialbridge.converters.formats import define as define_xml
from trialbridge.converters.formats import odm as odm_io
from trialbridge.converters.formats import records as records_io
from trialbridge.converters.formats.fhir import io as fhir_io
from trialbridge.converters.formats.sdtm import iter_dataset
from trialbridge.converters.spokes import records_to_sdtm, sdtm_to_records
from trialbridge.mappings.fhir import assemble
from trialbridge.mappings.study import load_study

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "nct04387942"
# The default run is bounded and derandomised (the same examples every run, nothing written to
# a .hypothesis folder); TRIALBRIDGE_FUZZ_EXAMPLES=2000 explores afresh with that many per test.
_EXPLORE = int(os.environ.get("TRIALBRIDGE_FUZZ_EXAMPLES", "0"))
_COMMON = dict(deadline=None, database=None, derandomize=not _EXPLORE,
               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
FAST = settings(max_examples=_EXPLORE or 40, **_COMMON)
SLOW = settings(max_examples=_EXPLORE or 20, **_COMMON)


def _workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="tb-prop-"))


def mutated(seed: bytes) -> st.SearchStrategy[bytes]:
    """``seed`` cut short, with bytes overwritten and runs inserted: mostly valid structure,
    broken somewhere — what reaches deep into a parser."""
    size = len(seed)

    @st.composite
    def build(draw) -> bytes:
        data = bytearray(seed[: draw(st.integers(0, size))] if draw(st.booleans()) else seed)
        for _ in range(draw(st.integers(0, 6))):
            if not data:
                break
            pos = draw(st.integers(0, len(data) - 1))
            if draw(st.booleans()):
                data[pos] = draw(st.integers(0, 255))
            else:
                data[pos:pos] = draw(st.binary(min_size=1, max_size=12))
        return bytes(data)

    return build()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20)
fhir_like = st.fixed_dictionaries(
    {"resourceType": st.sampled_from(["Patient", "Bundle", "Observation", "AdverseEvent", "ResearchSubject", "X"])},
    optional={"id": st.text(max_size=8) | st.integers(), "entry": st.lists(st.dictionaries(
        st.sampled_from(["resource", "fullUrl", "request"]), json_values, max_size=3), max_size=3),
        "subject": json_values, "type": st.sampled_from(["collection", "searchset", "transaction"]) | json_values})


def _accounted_exactly(log: IssueLog, yielded: dict[str, int]) -> None:
    for file, counts in log.accounting.items():
        assert counts.get("read", 0) == counts.get("rejected", 0) + yielded.get(file, 0), (file, dict(counts))
        if counts.get("rejected"):
            assert any(i.severity == "error" for i in log.issues), "a row rejected without a finding"


# ----------------------------------------------------------------------------- records readers


def _read_records_folder(files: dict[str, bytes]) -> tuple[IssueLog, dict[str, int]]:
    folder = _workdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    log = IssueLog()
    yielded: dict[str, int] = {}
    try:
        for name, row in records_io.RecordStream(folder, log):
            file = row["_where"]["file"]
            yielded[file] = yielded.get(file, 0) + 1
    except TrialbridgeError as exc:
        assert str(exc)
        return log, None
    return log, yielded


SUBJECTS_CSV = (SAMPLE / "subjects.csv").read_bytes().splitlines(keepends=True)
AE_CSV = (SAMPLE / "adverse_events.csv").read_bytes()


@FAST
@given(subjects=mutated(b"".join(SUBJECTS_CSV[:4])), aes=mutated(AE_CSV[:1500]))
def test_records_csv_reader_survives_anything(subjects, aes):
    log, yielded = _read_records_folder({"subjects.csv": subjects, "adverse_events.csv": aes})
    if yielded is not None:
        _accounted_exactly(log, yielded)


@FAST
@given(subjects=st.lists(st.dictionaries(st.sampled_from(record_types()["subject"].fields + ["extra"]),
                                         json_values, max_size=8), max_size=4) | json_values,
       aes=st.lists(json_values, max_size=4))
def test_records_json_and_ndjson_readers_survive_anything(subjects, aes):
    ndjson = b"\n".join(jsoncodec.dumps(a) for a in aes)
    log, yielded = _read_records_folder({"subjects.json": jsoncodec.dumps(subjects), "adverse_events.ndjson": ndjson})
    if yielded is not None:
        _accounted_exactly(log, yielded)


@FAST
@given(data=st.binary(max_size=300) | mutated(b"".join(SUBJECTS_CSV[:3])))
def test_records_ndjson_reader_on_raw_bytes(data):
    log, yielded = _read_records_folder({"subjects.ndjson": data})
    if yielded is not None:
        _accounted_exactly(log, yielded)


# ----------------------------------------------------------------------------- ODM, define.xml


def _small_odm() -> bytes:
    from lxml import etree

    tree = etree.parse(str(ROOT / "samples" / "nct04387942-odm" / "edc-export.xml"))
    subjects = tree.getroot().findall(".//{%s}SubjectData" % odm_io.ODM_NS)
    for extra in subjects[1:]:
        extra.getparent().remove(extra)
    return etree.tostring(tree, xml_declaration=True, encoding="UTF-8")


ODM_SEED = _small_odm()


@SLOW
@given(data=mutated(ODM_SEED) | st.binary(max_size=200))
def test_odm_reader_survives_anything(data):
    path = _workdir() / "export.xml"
    path.write_bytes(data)
    log = IssueLog()
    records = odm_io.read_odm(path, log)
    yielded: dict[str, int] = {}
    for name, rows in records.items():
        account = f"{path}#{record_types()[name].file}"
        yielded[account] = yielded.get(account, 0) + len(rows)
    _accounted_exactly(log, yielded)


@pytest.fixture(scope="module")
def define_seed(sample_xpt_folder) -> bytes:
    return (sample_xpt_folder / "define.xml").read_bytes() if (sample_xpt_folder / "define.xml").exists() else b""


@SLOW
@given(data=st.data())
def test_define_reader_survives_anything(define_seed, tmp_path, data):
    seed = define_seed or b'<?xml version="1.0"?><ODM xmlns="http://www.cdisc.org/ns/odm/v1.3"/>'
    blob = data.draw(mutated(seed[:6000]) | st.binary(max_size=200))
    path = _workdir() / "define.xml"
    path.write_bytes(blob)
    log = IssueLog()
    define_xml.read_define(path, log)
    define_xml.validate_define_xsd(path, log)


# ----------------------------------------------------------------------------- FHIR


@FAST
@given(resources=st.lists(fhir_like | json_values, max_size=5), raw=st.lists(st.binary(max_size=40), max_size=3))
def test_fhir_ndjson_reader_accounts_for_every_line(resources, raw):
    path = _workdir() / "Observation.ndjson"
    lines = [jsoncodec.dumps(r) for r in resources] + [r.replace(b"\n", b" ") for r in raw]
    path.write_bytes(b"\n".join(lines))
    log = IssueLog()
    got = list(fhir_io.read_fhir_located(path, log))
    _accounted_exactly(log, {str(path): len(got)})


@FAST
@given(bundle=fhir_like | json_values)
def test_fhir_bundle_reader_survives_anything(bundle):
    path = _workdir() / "bundle.json"
    path.write_bytes(jsoncodec.dumps(bundle))
    log = IssueLog()
    try:
        got = list(fhir_io.read_fhir_located(path, log))
    except TrialbridgeError as exc:
        assert str(path) in str(exc)
        return
    counts = log.accounting.get(str(path), {})
    assert counts.get("read", 0) >= len(got)


# ----------------------------------------------------------------------------- SDTM readers


@pytest.fixture(scope="module")
def sdtm_seeds(sample_xpt_folder) -> dict[str, bytes]:
    return {s: (sample_xpt_folder / f"ae.{s}").read_bytes() for s in ("xpt", "json", "csv")}


@SLOW
@given(data=st.data(), suffix=st.sampled_from(["xpt", "json", "csv"]))
def test_sdtm_readers_survive_anything(sdtm_seeds, data, suffix):
    blob = data.draw(mutated(sdtm_seeds[suffix][:4000]) | st.binary(max_size=200))
    path = _workdir() / f"ae.{suffix}"
    path.write_bytes(blob)
    log = IssueLog()
    stream = iter_dataset(path, log)
    if stream is None:
        assert any(i.code == "IO-READ" for i in log.issues)
        return
    _meta, rows = stream
    for row in rows:
        assert isinstance(row, dict)


# ----------------------------------------------------------------------------- the records model

STUDY = load_study("NCT04387942")
_ASCII = st.characters(min_codepoint=32, max_codepoint=126)
free_text = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=40).map(
    str.strip).filter(bool)


@lru_cache(maxsize=None)
def _sample_values(name: str) -> dict[str, list[str]]:
    path = SAMPLE / f"{record_types()[name].file}.csv"
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {k: sorted({r[k] for r in rows if r[k]}) for k in rows[0]}


def iso_dates(earliest: int = 2020) -> st.SearchStrategy[str]:
    full = st.dates(min_value=__import__("datetime").date(earliest, 7, 1),
                    max_value=__import__("datetime").date(earliest + 1, 6, 30))
    return st.one_of(full.map(lambda d: d.isoformat()),
                     st.tuples(full, st.integers(0, 23), st.integers(0, 59)).map(
                         lambda t: f"{t[0].isoformat()}T{t[1]:02d}:{t[2]:02d}"))


def field_strategy(name: str, field: str, coded: dict[str, list[str]]) -> st.SearchStrategy[str]:
    """A value of one field from its schema: enum, pattern (ASCII), ISO 8601 date, or free
    text; fields mapped through a terminology table take the values the study's sample uses."""
    prop = record_types()[name].schema["properties"][field]
    if "enum" in prop:
        return st.sampled_from([v for v in prop["enum"] if v] or [""])
    if prop.get("x-iso8601"):
        return iso_dates()
    if field in coded:
        return st.sampled_from(coded[field])
    if "pattern" in prop:
        return st.from_regex(prop["pattern"], fullmatch=True, alphabet=_ASCII).filter(lambda v: v.strip() == v)
    return free_text


# fields drawn from the sample's values: mapped by terminology tables or keyed to the study design
CODED = {
    "adverse_event": ("severity", "serious", "serious_criteria", "relatedness", "action_taken", "outcome"),
    "disposition": ("event", "category"),
    "exposure": ("treatment", "dose_unit", "route", "dose_form", "frequency", "course"),
    "lab_result": ("test", "unit", "specimen"),
}
VARIED = {
    "adverse_event": ("term", "decoded_term", "body_system", "category", "start", "end", "grade"),
    "disposition": ("verbatim",),
    "exposure": ("lot_number", "adjustment_reason", "dose"),
    "lab_result": ("result", "accession"),
}


@lru_cache(maxsize=1)
def _sample() -> Records:
    return records_io.read_records(SAMPLE, IssueLog())


@st.composite
def one_subject(draw) -> Records:
    """Subject 001 of the sample with generated adverse events, dispositions and doses."""
    base = _sample()
    records = Records(study_id=base.study_id)
    records.rows["subject"] = [{k: v for k, v in s.items() if k != "_where"} for s in base["subject"]
                               if s["subject_id"] == "001"]
    for name in VARIED:
        samples = [r for r in base[name] if r["subject_id"] == "001"] or [r for r in base[name]][:1]
        coded = {k: v for k, v in _sample_values(name).items() if k in CODED[name]}  # cached
        rows = []
        for n in range(draw(st.integers(1, 3))):
            row = {k: v for k, v in dict(samples[n % len(samples)]).items() if k != "_where"}
            row["subject_id"] = "001"
            for f in VARIED[name]:
                if f == "dose":
                    row[f] = draw(st.decimals(1, 10**6, places=2).map(str))
                elif f == "result":  # as reported: exact decimal text, a comparator, or words
                    row[f] = draw(st.decimals(0, 10**5, places=3).map(str) | st.sampled_from(["<0.5", ">100", "NEGATIVE"]))
                elif f == "end":
                    row.pop(f, None)
                else:
                    row[f] = draw(field_strategy(name, f, coded))
            if name == "adverse_event":
                row["ae_number"] = str(n + 1)
            if name == "disposition":
                assume(row["verbatim"] != row["event"])  # DSTERM = DSDECOD reads back as no verbatim
            rows.append(row)
        if name == "exposure":  # one dose per start time (the natural key)
            rows = list({r["start"]: r for r in rows}.values())
        if name == "disposition":
            rows = list({(r["event"], r["date"]): r for r in rows}.values())
        if name == "lab_result":
            rows = list({(r["collected"], r["test"]): r for r in rows}.values())
        records.rows[name] = rows
    # the records model: every generated row passes the schema check as a reader applies it
    for name, rows in records.items():
        check = IssueLog()
        accepted = list(records_io.accept_rows(((n, r) for n, r in enumerate(rows, 1)), record_types()[name], check,
                                               f"{name}.csv", None))
        assert len(accepted) == len(rows), [i.message for i in check.issues]
        records.rows[name] = accepted
    return records


def _comparable(name: str, rows: list[dict], fields: tuple[str, ...]) -> list[tuple]:
    """The key and the varied fields of each row; a dose as its number (EXDOSE is numeric:
    "1.00" comes back as "1", as ex.py says)."""
    key = record_types()[name].key

    def value(r: dict, f: str) -> object:
        v = public(r).get(f, "")
        return Decimal(v).normalize() if f == "dose" and v else v

    return sorted((tuple(value(r, f) for f in (*key, *fields)) for r in rows), key=repr)


@SLOW
@given(records=one_subject())
def test_generated_records_survive_records_to_sdtm_to_records(records):
    log = IssueLog()
    datasets = records_to_sdtm(records, STUDY, log)
    assert not [i for i in log.issues if i.severity == "error"], [i.message for i in log.issues]
    back = sdtm_to_records(datasets, STUDY, IssueLog())
    for name in VARIED:
        fields = tuple(f for f in VARIED[name] if f != "end")
        assert _comparable(name, back[name], fields) == _comparable(name, records[name], fields), name


@SLOW
@given(records=one_subject())
def test_generated_records_survive_records_to_fhir_to_records(records):
    log = IssueLog()
    resources = list(assemble.records_to_fhir(records, STUDY, log))
    path = _workdir() / "bundle.json"
    fhir_io.write_bundle(iter(resources), path)
    read_log = IssueLog()
    back = assemble.fhir_to_records(list(fhir_io.read_fhir(path, read_log)), STUDY, read_log)
    for name in VARIED:
        fields = tuple(f for f in VARIED[name] if f != "end")
        assert _comparable(name, back[name], fields) == _comparable(name, records[name], fields), name
