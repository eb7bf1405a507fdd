"""The jobs the CLI runs: detect what an input is, convert it, validate, write
``issues.json``.  Nothing here prints; the CLI reports the returned summary.
"""
from __future__ import annotations

import dataclasses
import errno
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import orjson

from trialbridge.converters import engine, spokes
from trialbridge.converters.core.datasets import Dataset
from trialbridge.converters.core import iso8601, jsoncodec, privacy
from trialbridge.converters.core.clock import creation_datetime
from trialbridge.converters.core.files import OutputStage, atomic_open, check_file_target, manifest_differences, output_file, printable
from trialbridge.converters.core.issues import IssueLog, TrialbridgeError
from trialbridge.converters.core.records import RECORD_ORDER, record_type_for_file
from trialbridge.converters.core.sdtm_spec import IG_VERSIONS, SHIPPED_IG
from trialbridge.converters.core.spill import SortedSpill
from trialbridge.converters.formats import define as define_xml
from trialbridge.converters.formats import odm as odm_io
from trialbridge.converters.formats import records as records_io
from trialbridge.converters.formats import sdtm as sdtm_io
from trialbridge.converters.formats.sdtm.stats import ColumnStats, dataset_meta
from trialbridge.converters.formats.sdtm.writers import open_dataset_writers
from trialbridge.converters.formats.fhir import io as fhir_io
from trialbridge.converters.formats.fhir import validate as fhir_validate
from trialbridge.converters.formats.fhir import versions as r5
from trialbridge.converters.formats.fhir.validate import validate_resources
from trialbridge.converters.validation.copies import compare_copies
from trialbridge.converters.validation.rules import StreamingValidator, feeding_order, validate_datasets
from trialbridge.mappings.study import Study, load_study, study_from_sdtm

TARGETS = ("sdtm", "records", "fhir")
SDTM_FORMATS = {"xpt": "xpt", "dataset-json": "dataset-json", "json": "dataset-json", "csv": "csv"}
FHIR_FORMATS = ("ndjson", "bundle")
FHIR_VERSIONS = ("R4", "R5")
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG)  # the disk, not us
AUTO_WORKERS_FROM = 20_000  # input items from which --workers defaults to one process per core


@dataclass
class RunResult:
    log: IssueLog
    written: list[Path] = field(default_factory=list)
    kind: str = ""
    study_id: str = ""
    rules: list[dict] = field(default_factory=list)  # validate: what happened to every rule

    @property
    def counts(self) -> Counter:
        return self.log.counts()


def detect_input(path: Path) -> str:
    """records (subjects.csv …), sdtm (dm.xpt …), odm (an EDC's ODM 1.3.2 .xml export),
    fhir (a Bundle / resource .json, .ndjson files or a folder of them)."""
    if not path.exists():
        raise TrialbridgeError(f"{path}: no such file or folder")
    if path.is_file():
        if odm_io.is_odm(path):
            return "odm"
        if (path.suffix.lower() == ".json" or fhir_io.is_ndjson(path)) and _is_fhir_json(path):
            return "fhir"
        if path.suffix.lower() == ".json" or fhir_io.is_ndjson(path):
            raise TrialbridgeError(f"{path}: {_not_fhir_reason(path)}")
    elif records_io.is_records_folder(path):
        return "records"
    else:
        files = [p for p in path.iterdir() if p.is_file() and p.name != "issues.json"]
        if any((p.suffix.lower() == ".json" or fhir_io.is_ndjson(p)) and _is_fhir_json(p) for p in files):
            return "fhir"
        ndjson = [p for p in files if fhir_io.is_ndjson(p)]
        if ndjson and all(not fhir_io.ndjson_head(p).strip(b"\xef\xbb\xbf \t\r\n") for p in ndjson):
            return "fhir"  # a Bulk Data export with nothing in it: said so by the FHIR intake
        if any(p.suffix.lower() in sdtm_io.READ_PREFERENCE for p in files):
            return "sdtm"
    if path.is_file() and path.suffix.lower() in records_io.SUFFIXES and record_type_for_file(path.stem):
        raise TrialbridgeError(f"{path}: one record file of a records folder; give the folder that holds it "
                               f"({path.parent}) as the input")
    raise TrialbridgeError(f"{path}: not a records folder (subjects.csv …), an SDTM folder (dm.xpt …) "
                           "an ODM export (.xml) nor FHIR (Bundle .json, .ndjson)")


def _is_fhir_json(path: Path) -> bool:
    """A .json / .ndjson file whose (first) object has a resourceType — not Dataset-JSON,
    whose NDJSON form also exists (read only the first bytes)."""
    head = fhir_io.ndjson_head(path)
    return b'"resourceType"' in head and not b'"datasetJSONVersion"' in head


def _not_fhir_reason(path: Path) -> str:
    """Why a .json / .ndjson file given as the input is not read as FHIR, in words."""
    head = fhir_io.ndjson_head(path).lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head:
        return "the file is empty (or unreadable): no FHIR resources to convert"
    if head[:1] not in (b"{", b"["):
        shown = head[:40].decode("utf-8", "replace").splitlines()[0]
        return f"not JSON (it begins {shown!r}): a FHIR Bundle (.json) or NDJSON (.ndjson) is expected"
    if head[:1] == b"[":
        return ("a JSON array at top level is not FHIR: give a Bundle (an object with resourceType Bundle and "
                "its resources in entry[].resource) or NDJSON (one resource per line)")
    return "a JSON object with no resourceType near its start: neither a FHIR Bundle nor a resource"


def parse_formats(text: str) -> list[str]:
    out = []
    for part in (p.strip().lower() for p in text.split(",") if p.strip()):
        if part not in SDTM_FORMATS:
            raise TrialbridgeError(f"unknown format {part!r}: choose from xpt, dataset-json, csv")
        if SDTM_FORMATS[part] not in out:
            out.append(SDTM_FORMATS[part])
    if not out:
        raise TrialbridgeError("no output format given")
    return out


def _study(ref: str | None, named: str | None, log: IssueLog, required: bool) -> Study | None:
    if ref:
        return load_study(ref)
    if named:
        try:
            return load_study(named)
        except TrialbridgeError as exc:
            if required:
                raise TrialbridgeError(f"the input names study {named!r}, which has no bundled configuration; "
                                       "give --study with a configuration file") from exc
            log.warning("STUDY-NO-CONFIG", f"no configuration for study {named!r}; trial design and visit "
                        "mappings that need it are skipped")
            return None
    if required:
        raise TrialbridgeError("the input names no study; give --study")
    return None


def convert(input_path: Path, to: str, output: Path, *, formats: str | None = None, study_ref: str | None = None,
            bundle_type: str = "collection", fhir_version: str = "R4", input_fhir_version: str = "auto",
            link_subjects: Path | None = None, workers: int | None = 1, engine_name: str = "local",
            scheduler: str | None = None, progress: bool = False, pseudonymise_key_file: Path | None = None,
            ct_package: str | None = None, meddra: Path | None = None, meddra_version: str | None = None) -> RunResult:
    """Read any input (records, SDTM, FHIR), convert through the canonical records, validate
    what is written, write it and ``issues.json`` into ``output``.

    The input streams into a spill grouped by subject; subjects are mapped one at a time
    (``workers`` processes, or Dask with ``engine_name="dask"``); outputs are written from
    sorted sinks (:mod:`trialbridge.converters.engine`).

    ``pseudonymise_key_file``: USUBJID and SUBJID become keyed pseudonyms
    (:func:`converters.core.privacy.pseudonym`) under the secret in that file; records, ODM
    or FHIR to SDTM only."""
    if to not in TARGETS:
        raise TrialbridgeError(f"--to must be one of {', '.join(TARGETS)}")
    log = IssueLog()
    _select_ct(ct_package)
    kind = detect_input(input_path)
    if link_subjects is not None:
        if kind != "fhir":
            raise TrialbridgeError(f"--link-subjects links FHIR Patients to trial subjects; the input is {kind}, "
                                   "not FHIR")
        records_io.check_subjects_path(link_subjects)
    if formats is not None and to == "records":
        raise TrialbridgeError(f"--format {formats} applies to --to sdtm (xpt, dataset-json, csv) and --to fhir "
                               "(ndjson, bundle); records are written as CSV")
    key = None
    if pseudonymise_key_file is not None:
        if to != "sdtm" or kind == "sdtm":
            raise TrialbridgeError("pseudonymised USUBJIDs are made when records, ODM or FHIR are converted to SDTM "
                                   f"(this run: {kind} to {to})")
        key = privacy.read_key(pseudonymise_key_file)  # before anything is written
    sdtm_formats = parse_formats(formats or "xpt") if to == "sdtm" else []
    dictionary = _meddra(meddra, meddra_version)  # a bad folder stops the run before any reading
    if to == "fhir":
        if (formats or "ndjson") not in FHIR_FORMATS:
            raise TrialbridgeError(f"FHIR output format must be one of {', '.join(FHIR_FORMATS)}, not {formats!r}")
        if fhir_version not in FHIR_VERSIONS:
            raise TrialbridgeError(f"--fhir-version {fhir_version} is not supported yet; supported: "
                                   f"{', '.join(FHIR_VERSIONS)}")
    # the output folder is checked before any work: never the input, never a folder holding
    # files of someone else; everything is written into a staging folder beside it and
    # published whole by commit() (converters/core/files.py)
    with OutputStage(output, [input_path, link_subjects]) as stage:
        if stage.cleaned:
            log.info("OUT-STAGING-REMOVED", f"{stage.cleaned} unfinished output folder(s) of an interrupted run "
                     "removed", value=stage.cleaned)
        try:
            result = _convert(input_path, kind, to, stage, log, sdtm_formats=sdtm_formats, formats=formats,
                              study_ref=study_ref, bundle_type=bundle_type, fhir_version=fhir_version,
                              input_fhir_version=input_fhir_version, link_subjects=link_subjects, workers=workers,
                              engine_name=engine_name, scheduler=scheduler, progress=progress, key=key,
                              dictionary=dictionary, meddra_version=meddra_version)
        except OSError as exc:
            if exc.errno not in WRITE_ERRNOS:  # anything else is a bug of ours and stays one
                raise
            raise TrialbridgeError(f"{output}: cannot write the output: {exc.strerror}; nothing was published") \
                from exc
        stage.commit()
    result.written = [stage.final_path(p) for p in result.written]
    return result


def _convert(input_path: Path, kind: str, to: str, stage: OutputStage, log: IssueLog, *, sdtm_formats: list[str],
             formats: str | None, study_ref: str | None, bundle_type: str, fhir_version: str,
             input_fhir_version: str, link_subjects: Path | None, workers: int | None, engine_name: str,
             scheduler: str | None, progress: bool, key: bytes | None = None, dictionary=None,
             meddra_version: str | None = None) -> RunResult:
    """The conversion itself, every file written into the staging folder ``stage.path``."""
    output = stage.path
    result = RunResult(log=log, kind=kind)
    reporter = _Progress(progress)
    with SortedSpill("input") as spill:
        job = engine.Job(source="fhir" if kind == "fhir" else ("sdtm" if kind == "sdtm" else "records"), target=to,
                         ct_package=_ct_version(), meddra=dictionary.folder if dictionary else None,
                         meddra_version=meddra_version)
        version = dictionary.version if dictionary else meddra_version
        groups: set[str] = set()  # one key per subject: the number of subjects to map
        if kind == "sdtm":
            datasets = sdtm_io.read_sdtm_folder(input_path, log)
            named = _studyid(datasets)
            study = _study(study_ref, named, log, required=False)
            design_read = False
            if study is None and to == "fhir":
                study = study_from_sdtm(datasets)
                design_read = True
                log.warning("STUDY-FROM-SDTM", f"no configuration for study {named!r}: study facts for FHIR "
                            "(ResearchStudy, arms, sites) taken from the folder's own TS/TA/TE/TV/DM")
            result.study_id = study.study_id if study else (named or "")
            if to == "sdtm":  # a change of format: the datasets themselves are the output
                result.written = _write_sdtm(datasets, study, output, sdtm_formats, log, result.study_id,
                                             meddra_version=version)
                _account_sdtm_written(datasets, result.written, sdtm_formats, log)
                return _finish(result, log, output, input_path, kind, to)
            _spill_sdtm(datasets, spill, job, groups, log, result.study_id, design_read)
            del datasets
        elif kind == "fhir":
            study = _spill_fhir(input_path, spill, job, groups, log, study_ref, input_fhir_version, link_subjects, reporter)
        else:
            study = _spill_records(input_path, kind, stage, spill, groups, log, study_ref, reporter)
        if key is not None:
            study = dataclasses.replace(study, pseudonym_key=key)
        job.study = study
        result.study_id = result.study_id or (study.study_id if study else "")
        reporter.phase("map", len(groups))
        del groups
        if workers is None:  # worker processes pay off on large inputs only
            workers = engine.default_workers() if len(spill) >= AUTO_WORKERS_FROM else 1
        sinks = engine.run(job, spill, log, workers=workers, engine=engine_name, scheduler=scheduler,
                           progress=reporter.advance)
    reporter.phase("write", None)
    _report_meddra(sinks.meddra, dictionary, log)
    try:
        if job.source == "sdtm":
            spokes.report_unread([sinks.unread], job.sdtm_variables, job.sdtm_sources, log)
        if job.source == "fhir":
            from trialbridge.mappings.fhir import assemble

            _report_fhir_versions(sinks, log)
            _report_fhir_unmapped_codes(log)
            assemble.report_scope(log)
            if not any(name in sinks.tables for name in ("DM", "subject", "Patient")) and \
                    not any(i.code == "FHIR-EMPTY-INPUT" for i in log.issues):
                log.warning("FHIR-NO-SUBJECTS", f"no subject of study {study.study_id} in the input: no ResearchSubject "
                            "in it (nor a Patient linked by medical record number with --link-subjects); nothing "
                            "was converted", file=str(input_path))
        if to == "records":
            result.written = _write_records(sinks, output)
        elif to == "sdtm":
            result.written = _write_sdtm_stream(sinks, study, output, sdtm_formats, log, result.study_id,
                                                meddra_version=version)
        else:
            result.written = _write_fhir(sinks, study, log, output, formats or "ndjson", bundle_type, fhir_version)
    finally:
        sinks.close()
        reporter.close()
    if kind in ("records", "odm"):
        _account_converted(log)
    elif kind == "fhir":
        _account_fhir(log)
    return _finish(result, log, output, input_path, kind, to,
                   usubjid="pseudonymised (HMAC-SHA256, keyed)" if key is not None else None)


def _finish(result: RunResult, log: IssueLog, output: Path, input_path: Path, kind: str, to: str,
            usubjid: str | None = None) -> RunResult:
    _report_unmapped(log)
    log.run = run_metadata(command="convert", input=str(input_path), input_kind=kind, to=to, study=result.study_id,
                           **({"usubjid": usubjid} if usubjid else {}))
    result.written.append(write_issues(log, output_file(output, "issues.json")))
    return result


# ----------------------------------------------------------------------------- MedDRA


def _meddra(folder: Path | None, version: str | None):
    """The --meddra dictionary (loaded once per process; a folder that is not a MedDRA ASCII
    distribution is a usage error, one line), or None."""
    if folder is None:
        return None
    from trialbridge.mappings.terminology import meddra

    return meddra.load(str(Path(folder).resolve()), version)


MEDDRA_HOW = ("give the licensed dictionary with --meddra DIR (its MedAscii folder), or the codes in the input "
              "(adverse_events llt_code/pt_code columns, or a FHIR AdverseEvent.event coding with system "
              "http://terminology.hl7.org/CodeSystem/mdr)")


def _report_meddra(tally: Counter, dictionary, log: IssueLog) -> None:
    """One line per input file of adverse events: how many have MedDRA codes, and how to
    give them."""
    for file in sorted({f for f, _ in tally}):
        coded, missing = tally[(file, "coded")], tally[(file, "not coded")]
        total, where_ = coded + missing, {"file": file or None}
        if dictionary is not None:
            log.info("MEDDRA-CODED", f"{coded} of {total} adverse event(s) coded with MedDRA {dictionary.version} "
                     f"({dictionary.folder}); {missing} not coded (their MEDDRA-TERM-* / MEDDRA-CODE-* findings "
                     "say why)", value=missing, **where_)
        elif missing:
            log.warning("MEDDRA-NOT-CODED", f"{missing} of {total} adverse event(s) have no MedDRA codes: AELLTCD, "
                        "AEPTCD, AEHLTCD, AEHLGTCD, AEBDSYCD and AESOCCD stay empty (CDISC CORE-000024); "
                        + MEDDRA_HOW, value=missing, **where_)
    if dictionary is not None and tally and dictionary.version == "unspecified":
        log.warning("MEDDRA-NO-VERSION", "the MedDRA folder has no meddra_release.asc: define.xml gives the "
                    "version as unspecified; give --meddra-version", file=dictionary.folder)


# ----------------------------------------------------------------------------- readers -> spill


def _spill_records(input_path: Path, kind: str, stage: OutputStage, spill: SortedSpill, groups: set[str],
                   log: IssueLog, study_ref: str | None, reporter: "_Progress") -> Study:
    """Records (a records folder, or an ODM export read into records) into the spill by subject."""
    if kind == "odm":
        records = odm_io.read_odm(input_path, log)
        if not records.rows["subject"] and log.has_errors:  # nothing to convert: the findings alone
            write_issues(log, stage.file("issues.json"))
            stage.commit()
            first = next(i for i in log.sorted() if i.severity == "error")
            raise TrialbridgeError(f"{input_path}: {first.code}: {first.message}", exit_code=1)
        stream = ((name, row) for name, rows in records.items() for row in rows)
        study_id = records.study_id
    else:
        records_stream = records_io.RecordStream(input_path, log, dedupe=False)
        stream = records_stream
        study_id = None
    n = 0
    try:
        for name, row in stream:
            group = row.get("subject_id", "")
            groups.add(group)
            spill.add((group, n), engine.pack(name, orjson.dumps(row)))
            n += 1
            reporter.advance_read()
    except records_io.NoSubjects:  # a data problem: the findings are the answer (as for ODM)
        write_issues(log, stage.file("issues.json"))
        stage.commit()
        raise
    if kind != "odm":
        study_id = records_stream.study_id
    return _study(study_ref, study_id, log, required=True)


def _spill_sdtm(datasets: dict[str, Dataset], spill: SortedSpill, job: engine.Job, groups: set[str],
                log: IssueLog, study_id: str = "", design_read: bool = False) -> None:
    """SDTM rows into the spill by USUBJID; trial design datasets stay out (rebuilt from the
    study, or read as the study's facts when ``design_read``), datasets with no mapping are
    reported.  A row goes to no subject when its dataset has no USUBJID or its USUBJID is
    empty (SDTM-NO-USUBJID), nor when it names another study than ``study_id``
    (SDTM-OTHER-STUDY): such rows are rejected, named.  Every row is accounted for under its
    file: converted, rejected or out of scope."""
    job.sdtm_variables = {name: ds.names for name, ds in datasets.items()}
    job.sdtm_sources = {name: ds.source or name for name, ds in datasets.items()}
    n = 0
    for name, ds in sorted(datasets.items()):
        account = ds.source or name
        fname = Path(account).name
        if name in spokes.DESIGN_DATASETS:
            if design_read:
                log.count_row(account, "converted", len(ds.rows))
            else:
                log.count_row(account, "out_of_scope", len(ds.rows))
                if ds.rows:
                    log.info("SDTM-DESIGN-NOT-READ", f"trial design dataset {name}: its {len(ds.rows)} row(s) are "
                             "not converted; the trial design comes from the study configuration", file=account,
                             value=len(ds.rows))
            continue
        if name not in spokes.mapped_datasets() and name not in spokes.DERIVED_DATASETS:
            log.warning("SDTM-NOT-MAPPED", f"dataset {name} has no mapping to records; its {len(ds.rows)} row(s) "
                        "were not converted", file=account)
            log.count_row(account, "out_of_scope", len(ds.rows))
            continue
        if "USUBJID" not in ds.names:
            if ds.rows:
                log.error("SDTM-NO-USUBJID", f"{fname} has no USUBJID variable: its rows cannot be given to a "
                          f"subject; none of its {len(ds.rows)} row(s) converted", file=account, field="USUBJID",
                          value=len(ds.rows))
            log.count_row(account, "rejected", len(ds.rows))
            continue
        other: dict[str, list[int]] = {}
        dates = [v.name for v in ds.variables if v.type == "Char" and v.name.endswith("DTC")]
        for row_no, row in enumerate(ds.rows, start=1):
            for var in dates:  # carried to records as given: an impossible date must not pass unseen
                value = row.get(var)
                if isinstance(value, str) and value.strip() and not iso8601.is_valid(value.strip()):
                    log.error("SDTM-DTC-ISO8601", f"{fname} row {row_no} {var}: {value!r} is not an ISO 8601 date "
                              "(SDTM grammar, calendar-checked); carried to the records as given", file=account,
                              record=row_no, field=var, value=value, usubjid=_key_text(row.get("USUBJID") or "") or None)
            group = row.get("USUBJID")
            group = "" if group is None else _key_text(group)
            if not group:
                log.error("SDTM-NO-USUBJID", f"{fname} row {row_no}: USUBJID is empty; the row belongs to no "
                          "subject and is not converted", file=account, record=row_no, field="USUBJID")
                log.count_row(account, "rejected")
                continue
            given = row.get("STUDYID")
            given = "" if given is None else _key_text(given)
            if study_id and given and given != study_id:
                other.setdefault(given, []).append(row_no)
                log.count_row(account, "rejected")
                continue
            groups.add(group)
            spill.add((group, n), engine.pack(name, orjson.dumps(row)))
            log.count_row(account, "converted")
            n += 1
        for given, rows in sorted(other.items()):
            log.error("SDTM-OTHER-STUDY", f"{fname}: {len(rows)} row(s) name study {given!r}, not {study_id!r} (the "
                      f"study converted; first at row {rows[0]}); not converted", file=account, record=rows[0],
                      field="STUDYID", value=given)


def _key_text(value) -> str:
    """A key value read from any SDTM format as text: numbers without a trailing .0."""
    if isinstance(value, str):
        return value.strip()
    return sdtm_io.format_number(value)


def _account_sdtm_written(datasets: dict[str, Dataset], written: list[Path], formats: list[str],
                          log: IssueLog) -> None:
    """SDTM -> SDTM: a dataset's rows are converted when it was written in every format asked
    for, else rejected (the writer said why, e.g. XPT-NAME-8)."""
    names = {p.name for p in written}
    for name, ds in sorted(datasets.items()):
        done = all(sdtm_io.file_name(name, fmt) in names for fmt in formats)
        log.count_row(ds.source or name, "converted" if done else "rejected", len(ds.rows))


def _spill_fhir(input_path: Path, spill: SortedSpill, job: engine.Job, groups: set[str], log: IssueLog,
                study_ref: str | None,
                input_fhir_version: str, link_subjects: Path | None, reporter: "_Progress") -> Study:
    """FHIR resources into the spill by the Patient they belong to.

    Only what grouping needs is read here (a fast parse: type, id, the Patient reference);
    the exact parse, the schema checks and R5 -> R4 run per person in the workers.  A
    reference to the Patient may take any form (``Patient/1``, an absolute URL, a version,
    the ``urn:uuid`` fullUrl of its Bundle entry): all give one key, ``Patient/<id>``.  The
    index that makes that possible holds one entry per Patient (its fullUrl); resources that
    name a Patient by a fullUrl not seen yet wait in a second spill until the input is read.
    Resources that belong to no person (ResearchStudy, Medication, Organization …) go to
    check groups.  Kept in memory, all small: the ResearchStudy and Medication resources,
    the identifier systems seen, the shapes of ResearchSubject identifiers."""
    from trialbridge.mappings.fhir import assemble, dialect as dialects, references

    study_level: list[tuple[str | None, dict]] = []
    study_files: dict[str, str] = {}
    medications: dict[str, dict] = {}
    survey = assemble.InputSurvey()
    aliases: dict[str, str] = {}  # fullUrl of a Patient's entry -> its key: one per Patient
    files: dict[str, int] = {}
    ids = SortedSpill("ids")  # (type/id, file, n) -> content digest: repeats found by sorting
    waiting = SortedSpill("waiting")  # resources naming a Patient by a fullUrl not seen yet
    n = 0
    try:
        for entry in fhir_io.read_fhir_entries(input_path, log):
            reporter.advance_read()
            file_no = files.setdefault(entry.file, len(files))
            raw = entry.raw
            try:
                res = orjson.loads(raw)
            except orjson.JSONDecodeError:
                try:
                    res = jsoncodec.loads(raw)  # numbers orjson refuses (integers beyond 64 bits)
                except jsoncodec.JsonError as exc:
                    log.error("FHIR-JSON", f"line is not JSON: {exc}", file=entry.file, record=entry.record)
                    log.count_row(entry.file, "rejected")
                    continue
            if not isinstance(res, dict):
                kind = {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(res), "number")
                log.error("FHIR-JSON", f"line is not a resource: a JSON {kind}", file=entry.file, record=entry.record,
                          value=kind)
                log.count_row(entry.file, "rejected")
                continue
            rtype = res.get("resourceType")
            if not isinstance(rtype, str) or not rtype:
                log.error("FHIR-JSON", "resource has no resourceType: what it is cannot be known; not converted",
                          file=entry.file, record=_entry_name(res, entry), field="resourceType", value=rtype)
                log.count_row(entry.file, "rejected")
                continue
            if rtype == "Patient" and not res.get("id") and not entry.full_url:
                log.error("FHIR-PATIENT-NO-ID", "Patient has no id (and no fullUrl): no resource can name it, so "
                          "neither it nor anything of its person is converted", file=entry.file, record=entry.record,
                          field="id")
                log.count_row(entry.file, "rejected")
                continue
            survey.take(res)
            if rtype == "ResearchStudy":
                study_level.append((entry.full_url, jsoncodec.loads(raw)))
                study_files[references.resource_key(res, entry.full_url)] = entry.file
            elif rtype == "Medication":
                key = references.resource_key(res, entry.full_url)
                medications[key] = {k: res[k] for k in ("resourceType", "id", "code", "form", "batch") if k in res}
                if entry.full_url:
                    medications[entry.full_url] = medications[key]
            if rtype == "Patient":
                group = references.resource_key(res, entry.full_url)
                if entry.full_url and entry.full_url != group:
                    aliases[entry.full_url] = group
            else:
                ref = references.person_reference(res)
                group = references.key_of(ref, aliases) if ref else None
                if ref and group is None:  # a urn: fullUrl not seen yet: resolved once all is read
                    waiting.add((ref, file_no, n), engine.pack("fhir", raw))
                    ids.add((f"{rtype}/{res.get('id')}", file_no, n), references.content_digest(raw, res) + b"p")
                    n += 1
                    continue
            kind = "fhir" if group else "fhir-check"
            group = group or f"\x00check{n // 1000:09d}"
            if res.get("id") is not None:
                ids.add((f"{rtype}/{res['id']}", file_no, n), references.content_digest(raw, res)
                        + (b"p" if kind == "fhir" else b"c"))
            groups.add(group)
            spill.add((group, file_no, n), engine.pack(kind, raw))
            n += 1
        for (ref, file_no, number), payload in waiting:
            group = aliases.get(ref, ref)  # a fullUrl no Patient had: the group of that reference alone
            groups.add(group)
            spill.add((group, file_no, number), payload)
        _report_repeats(ids, list(files), log)
    finally:
        ids.close()
        waiting.close()
    job.input_fhir_version = input_fhir_version
    if not n and not study_level and not medications:  # nothing but entries that are no resources
        entries = sum(c.get("read", 0) for c in log.accounting.values())
        what = (f"{entries} entr{'y' if entries == 1 else 'ies'}, none of them a resource" if entries else
                "no entry" if input_path.is_file() and not fhir_io.is_ndjson(input_path) else "no lines")
        if not study_ref:
            raise TrialbridgeError(f"{input_path}: the input holds no FHIR resources ({what}); nothing to convert")
        log.error("FHIR-EMPTY-INPUT", f"the input holds no FHIR resources ({what}); nothing was converted",
                  file=str(input_path), value=entries)
    study = _study(study_ref, assemble.study_id_named(study_level), log, required=True)
    job.files = list(files)
    dialect = dialects.choose(study, survey.systems)
    if dialect.site_id is not None:  # a site file fitted the input
        log.info("FHIR-DIALECT", f"read with the FHIR dialect of {dialect.name} ({dialect.source})",
                 file=str(input_path), value=dialect.name)
    job.facts = assemble.read_study(study_level, study, log, dialect=dialect, survey=survey, medications=medications,
                                    files=study_files, source=str(input_path))
    if link_subjects is not None:
        link_log = IssueLog()  # its findings are the user's to see; its rows are not this run's input rows
        job.links = assemble.mrn_index(records_io.read_subjects(link_subjects, link_log))
        log.extend(link_log.issues)
        if not job.links:
            raise TrialbridgeError(f"{link_subjects}: no subject with a medical_record_number to link by")
    return study


def _entry_name(res: dict, entry) -> str | int:
    """How a finding names an input resource that cannot be called Type/id: its id, else its
    place in the file."""
    return f"id {res['id']}" if isinstance(res.get("id"), str) and res.get("id") else entry.record


def _report_repeats(ids: SortedSpill, files: list[str], log: IssueLog) -> None:
    """A resource given more than once (same type and id; found by sorting, bounded memory):
    identical copies are merged silently and counted per file (one info each); a copy that
    differs is a finding — a warning for a resource of a person (the first copy is read, this
    one is not), info for one that belongs to no person (nothing of it is converted)."""
    merged: Counter = Counter()
    previous, first = None, None
    for (rid, file_no, _n), payload in ids:
        digest, kind = payload[:-1], payload[-1:]
        if rid != previous:
            previous, first = rid, (file_no, digest)
            continue
        if digest == first[1]:
            merged[files[file_no]] += 1
            continue
        message = (f"a different {rid} came earlier in the input ({files[first[0]]}); "
                   + ("the first is read, this one is not converted" if kind == b"p" else
                      "it belongs to no trial subject, nothing of either is converted"))
        log.add("warning" if kind == b"p" else "info", "FHIR-DUPLICATE-DIFFERS", message, file=files[file_no],
                record=rid, field="id", value=rid.split("/", 1)[1])
    for file, count in sorted(merged.items()):
        log.info("FHIR-DUPLICATE-MERGED", f"{count} resource(s) repeat one read earlier, identically: read once",
                 file=file, value=count)


def _report_fhir_versions(sinks: engine.Sinks, log: IssueLog) -> None:
    versions = sinks.versions
    if versions["R4"] and versions["R5"]:
        log.warning("FHIR-VERSION-MIXED", f"input mixes FHIR versions: {versions['R4']} resource(s) look R4, "
                    f"{versions['R5']} look R5; resources that show neither are read as R4",
                    value=f"R4:{versions['R4']} R5:{versions['R5']}")


def _report_fhir_unmapped_codes(log: IssueLog) -> None:
    """One summary line per distinct code that did not map, with its count."""
    unmapped = Counter((i.field, str(i.value)) for i in log.issues if i.code == "FHIR-UNMAPPED-CODE")
    for (field_name, value), count in sorted(unmapped.items()):
        log.info("FHIR-UNMAPPED-COUNT", f"{count} resource(s) with {field_name} {value!r} not mapped",
                 field=field_name, value=value)


# ----------------------------------------------------------------------------- sinks -> writers


def _write_records(sinks: engine.Sinks, output: Path) -> list[Path]:
    written = []
    for name in RECORD_ORDER:
        if name in sinks.tables or name == "subject":
            written.append(records_io.write_record_file(name, sinks.rows(name), output))
    return written


def _write_sdtm(datasets: dict[str, Dataset], study: Study | None, output: Path, sdtm_formats: list[str],
                log: IssueLog, study_id: str, meddra_version: str | None = None) -> list[Path]:
    validate_datasets(datasets, log)
    created = creation_datetime()  # one creation time for every file of the run
    written = sdtm_io.write_datasets(datasets, output, sdtm_formats, log, study_id or "UNKNOWN", created=created)
    # define.xml describing exactly what was written, validated against the XSD and read back
    # to check it agrees with the datasets (lengths, labels, variables)
    dpath = define_xml.write_define(datasets, study, output_file(output, "define.xml"), log, formats=sdtm_formats,
                                    created=created, meddra_version=meddra_version)
    written.append(dpath)
    written.append(define_xml.write_stylesheet(output))
    meta = define_xml.read_define(dpath, log)
    if meta is not None:
        define_xml.check_define_against_datasets(meta, datasets, log, exact_lengths=True)
    return written


def _write_sdtm_stream(sinks: engine.Sinks, study: Study, output: Path, sdtm_formats: list[str], log: IssueLog,
                       study_id: str, meddra_version: str | None = None) -> list[Path]:
    """Every dataset streamed from its sink into its writers (all formats in one pass), the
    trial design datasets from the study; define.xml from the column statistics the workers
    gathered; nothing read back but define.xml itself."""
    stats = dict(sinks.stats)
    # TS counts the subjects and finds the study's end from DM: one pass over DM's sink, a
    # row at a time, before any dataset is written (define.xml needs TS's statistics)
    design = spokes.trial_design_rows(study, log, spokes.subject_tally(sinks.rows("DM")))
    for name, rows in design.items():
        stats[name] = ColumnStats(name)
        stats[name].add_rows(rows)
    stats.setdefault("DM", ColumnStats("DM"))
    metas = {name: dataset_meta(name, stats[name]) for name in sorted(stats)}

    def rows_of(name: str) -> Iterator[dict]:
        return iter(design[name]) if name in design else sinks.rows(name)

    written: list[Path] = []
    # one pass per dataset: each row goes to every format's writer and through every rule;
    # the rules keep only compact indexes between rows (DM first, SE second: their order)
    rules = StreamingValidator(log)
    named_by = "xpt" if "xpt" in sdtm_formats else sdtm_formats[0]  # the file the rules' findings name
    created = creation_datetime()  # one creation time for every file of the run
    for name in feeding_order(metas):
        meta = metas[name]
        meta.source = meta.source or sdtm_io.file_name(name, named_by)
        visitor = rules.begin(meta)
        with open_dataset_writers(meta, stats[name], output, sdtm_formats, log, study_id or "UNKNOWN",
                                  created=created) as writers:
            for row_no, row in enumerate(rows_of(name), start=1):
                writers.write(row)
                visitor.row(row_no, {v.name: row.get(v.name, None if v.type == "Num" else "") for v in meta.variables})
            written.extend(writers.close())
        visitor.end()
    rules.finish()
    dpath = define_xml.write_define_from_stats(metas, stats, study, output_file(output, "define.xml"), log,
                                               formats=sdtm_formats, created=created, meddra_version=meddra_version)
    written.append(dpath)
    written.append(define_xml.write_stylesheet(output))
    meta_read = define_xml.read_define(dpath, log)
    if meta_read is not None:
        define_xml.check_define_against_stats(meta_read, metas, stats, log, exact_lengths=True)
    return written


def _write_fhir(sinks: engine.Sinks, study: Study, log: IssueLog, output: Path, fmt: str, bundle_type: str,
                fhir_version: str) -> list[Path]:
    """Study-level resources, then every resource type in its order; every resource checked
    (R4 schema, models for the rejected; R5 models), references resolved across the output."""
    from trialbridge.mappings.fhir import assemble

    def resources() -> Iterator[dict]:
        yield from assemble.study_resources(study, log)
        for rtype in assemble.resource_order():
            if rtype == "ResearchStudy":
                continue
            for payload in sinks.payloads(rtype):
                yield fhir_io.loads(payload)

    def checked() -> Iterator[dict]:
        stream = resources()
        validate = _OutputCheck(log)
        for res in stream:
            validate(res)
            if fhir_version == "R5":
                res = r5.to_r5(res)
                r5.validate_r5([res], log)
            yield res
        validate.finish()

    if fmt == "bundle":
        return [fhir_io.write_bundle(checked(), output_file(output, "bundle.json"), bundle_type)]
    return fhir_io.write_ndjson(checked(), output)


class _OutputCheck:
    """Schema and model check of every written resource as it streams by; ids and references
    go to sorted spills and are matched at the end, so nothing is held per resource."""

    def __init__(self, log: IssueLog):
        self.log = log
        self.refs = SortedSpill("refs")

    def __call__(self, res: dict) -> None:
        rid = f"{res.get('resourceType')}/{res.get('id')}"
        validate_resources([res], self.log, model_check="failed", check_references=False, check_ids=False)
        self.refs.add((rid, 0), b"")
        contained = {f"#{c.get('id')}" for c in res.get("contained", []) or []}
        for ref in fhir_validate.references(res):
            if ref.startswith("#"):
                if ref not in contained:
                    self.log.error("FHIR-REF-UNRESOLVED", f"reference {ref!r} names no contained resource",
                                   record=rid, field="reference", value=ref)
            else:
                self.refs.add((ref, 1), rid.encode())

    def finish(self) -> None:
        try:
            current, known, seen = None, False, set()
            for (target, kind), source in self.refs:
                if target != current:
                    current, known = target, False
                if kind == 0:
                    if known:
                        self.log.error("FHIR-DUPLICATE-ID", "a resource with this type and id came earlier in the "
                                       "output", record=target, field="id", value=target.split("/", 1)[-1])
                    known = True
                elif not known and (source, target) not in seen:
                    seen.add((source, target))
                    self.log.error("FHIR-REF-UNRESOLVED", f"reference {target!r} names no resource in the input",
                                   record=source.decode(), field="reference", value=target)
        finally:
            self.refs.close()


class _Progress:
    """A progress bar on a terminal (records read, subjects mapped, records/s, ETA); silent
    when output is not a terminal or the user asked for quiet."""

    def __init__(self, enabled: bool):
        self.bar = None
        self.enabled = enabled
        self.read = 0
        if enabled:
            from tqdm import tqdm

            self._tqdm = tqdm
            self.bar = tqdm(desc="read", unit=" rec", dynamic_ncols=True, leave=False, file=sys.stderr)

    def advance_read(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def phase(self, name: str, total: int | None) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = self._tqdm(desc=name, total=total, unit=" subj" if name == "map" else " it",
                                  dynamic_ncols=True, leave=False, file=sys.stderr)

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _select_ct(package: str | None) -> None:
    """--ct: the CT package of this run (a bundled extract's date; default 2025-03-28)."""
    from trialbridge.mappings.terminology import ct

    try:
        ct.select(package)
    except ValueError as exc:
        raise TrialbridgeError(f"--ct {package}: {exc}") from None


def _ct_version() -> str:
    from trialbridge.mappings.terminology import ct

    return ct.version()


def _ig_version(choice: str | None, define: Path, datasets: dict[str, Dataset], log: IssueLog) -> tuple[str | None, str]:
    """The SDTMIG version to check a folder against, and where it came from: ``--sdtmig``,
    else what define.xml says (Define-XML 2.1 ``def:Standard Type="IG"``, 2.0/1.0
    ``def:StandardVersion``), else TS SDTIGVER, else the shipped 3.3.  A version without
    metadata here is checked against the nearest one that has it, with an info finding."""
    version, source = choice, "--sdtmig"
    if version is None and define.is_file():
        try:
            from trialbridge.converters.core import safexml

            root = safexml.parse(define).getroot()
            for el in root.iter():
                if not isinstance(el.tag, str):
                    continue
                if el.tag.endswith("}Standard") and el.get("Type") == "IG" and "MD" not in (el.get("Name") or ""):
                    version, source = el.get("Version"), "define.xml"
                    break
                std = next((v for k, v in el.attrib.items() if k.endswith("}StandardVersion")), None)
                if std:
                    version, source = std, "define.xml"
                    break
        except Exception:  # an unreadable define is the define checks' finding; the version falls back
            version = None
    if version is None:
        ts = datasets.get("TS")
        for row in (ts.rows if ts is not None else []):
            if str(row.get("TSPARMCD") or "").upper() == "SDTIGVER" and row.get("TSVAL"):
                version, source = str(row["TSVAL"]), "TS SDTIGVER"
                break
    if version is None:
        return None, "default"
    wanted = version.strip().lstrip("vV")
    if wanted in IG_VERSIONS:
        return wanted, source
    try:
        key = tuple(int(x) for x in wanted.split("."))
    except ValueError:
        log.warning("SDTM-IG-UNKNOWN", f"SDTMIG version {version!r} ({source}) is not a version; checked against "
                    f"the shipped SDTMIG {SHIPPED_IG}", value=version)
        return None, f"{source} unreadable"
    def rank(parts: tuple[int, ...]) -> int:  # 3.1.2 -> 30102
        parts = (parts + (0, 0, 0))[:3]
        return parts[0] * 10_000 + parts[1] * 100 + parts[2]

    nearest = min(IG_VERSIONS, key=lambda v: abs(rank(tuple(int(x) for x in v.split("."))) - rank(key)))
    log.info("SDTM-IG-APPROXIMATED", f"the data say SDTMIG {version} ({source}), which has no metadata here "
             f"(3.2, 3.3, 3.4): checked against SDTMIG {nearest}", value=version)
    return nearest, f"{source}: {version}, nearest with metadata"


def validate(path: Path, report: Path | None = None, *, rules: list[str] | None = None,
             exclude: list[str] | None = None, sdtmig: str | None = None, ct_package: str | None = None,
             meddra: Path | None = None, meddra_version: str | None = None) -> RunResult:
    """Check an SDTM folder (every rule of the catalogue, or those ``rules`` names less
    ``exclude``; its define.xml; every further copy of a dataset against the one validated)
    or FHIR output.  ``report``: .html, .json or .xlsx."""
    from trialbridge.converters.validation.rules import RULES_BY_ID, rule_statuses

    log = IssueLog()
    _select_ct(ct_package)
    kind = detect_input(path)
    if report is not None:  # checked before the work: never a validated file, never someone else's file
        check_file_target(report, [path], ours=b"trialbridge", source="data being validated")
    if path.is_dir():
        _check_manifest(path, log)
    dictionary = _meddra(meddra, meddra_version)
    if kind == "fhir":
        resources = list(fhir_io.read_fhir(path, log))
        if r5.detect_versions(resources, log) == "R5":
            counts = r5.validate_r5(resources, log)
        else:
            counts = validate_resources(resources, log)
        # a schema message may quote a Patient's name or phone: not in the report (docs/privacy.md)
        from trialbridge.mappings.fhir.patient import identifying_values

        privacy.scrub_log(log, [v for res in resources if isinstance(res, dict) and res.get("resourceType") == "Patient"
                                for v in identifying_values(res)])
        result = RunResult(log=log, kind=kind)
        log.run = run_metadata(command="validate", input=str(path), input_kind=kind, resources=counts)
        if report is not None:
            result.written.append(_write_report(log, report, title=f"{path.name} — FHIR validation"))
        return result
    if kind != "sdtm":
        raise TrialbridgeError(f"{path}: validate takes an SDTM folder (dm.xpt …) or FHIR; convert records first")
    unknown = sorted((set(rules or []) | set(exclude or [])) - set(RULES_BY_ID))
    if unknown:
        raise TrialbridgeError(f"unknown rule id(s) {', '.join(unknown)}; the rules are listed in docs/rules.md")
    only = None
    if rules or exclude:
        only = [r for r in (rules or list(RULES_BY_ID)) if r not in set(exclude or [])]
    copies: dict[str, list[Path]] = {}
    datasets = sdtm_io.read_sdtm_folder(path, log, copies)
    if not datasets:
        raise TrialbridgeError(f"{path}: no SDTM datasets found")
    for name, ds in sorted(datasets.items()):  # validated: every row read is checked
        log.count_row(ds.source or name, "converted", len(ds.rows))
    compare_copies(datasets, copies, log)
    compared = sorted(str(p) for paths in copies.values() for p in paths)
    ig, ig_source = _ig_version(sdtmig, path / "define.xml", datasets, log)
    validator = validate_datasets(datasets, log, only, ig)
    if dictionary is not None and "AE" in datasets:
        _check_ae_meddra(datasets["AE"], dictionary, log)
    define_status = _check_define(path / "define.xml", datasets, log)
    result = RunResult(log=log, kind=kind, study_id=_studyid(datasets) or "")
    statuses = rule_statuses(validator, log, only, exclude or [])
    log.run = run_metadata(command="validate", input=str(path), study=result.study_id,
                           sdtmig_checked=f"{ig or SHIPPED_IG} ({ig_source})",
                           datasets=sorted(str(ds.source or name) for name, ds in datasets.items()),
                           copies_compared=compared,
                           rules={s: sum(1 for r in statuses if r["status"] == s) for s in ("issues", "ran", "skipped")})
    result.rules = statuses
    if report is not None:
        result.written.append(_write_report(log, report, title=f"{result.study_id or path.name} — SDTM validation",
                                            rows={name: len(ds.rows) for name, ds in datasets.items()},
                                            define_status=define_status, rules=statuses))
    return result


_MANIFEST_SAYS = {"missing": "is listed in the folder's trialbridge manifest but is not there",
                  "changed": "has changed since trialbridge wrote it (its digest differs from the manifest's)",
                  "not listed": "was not written by trialbridge with the rest of the folder (not in its manifest)"}


def _check_manifest(folder: Path, log: IssueLog) -> None:
    """A folder trialbridge wrote lists its files with their digests (written last): what
    differs is named, so a validated folder is known to be the output as it was made."""
    for name, how in manifest_differences(folder) or ():
        log.warning("OUT-MANIFEST-MISMATCH", f"{printable(name)} {_MANIFEST_SAYS[how]}", file=str(folder / name),
                    value=how)


def _check_ae_meddra(ae: Dataset, dictionary, log: IssueLog) -> None:
    """Each AE row's MedDRA variables against the dictionary: the row is coded again from
    its LLT and PT codes (or, without them, its terms) and its body system's name, and every
    MedDRA variable that comes out otherwise is MEDDRA-SDTM-DIFFERS."""
    from trialbridge.mappings.sdtm import ae as ae_mapping
    from trialbridge.mappings.terminology import meddra

    fields = (*(f for f in ae_mapping.FIELDS if f.record in (*meddra.CODE_FIELDS, *meddra.NAME_FIELDS)),
              *ae_mapping.SOC_FIELDS)
    kept = ("llt_code", "pt_code", "decoded_term", "body_system")  # what the rest is derived from
    file = ae.source or "AE"
    for row_no, row in enumerate(ae.rows, start=1):
        given = {f.record: derive_text(row.get(f.variable)) for f in fields}
        rec = {k: given[k] for k in kept if given.get(k)}
        rec["term"] = derive_text(row.get("AETERM"))
        rec["_where"] = {"file": file, "record": row_no}
        meddra.code_event(rec, dictionary, log)
        if not rec.get("soc") and not rec.get("soc_code"):
            rec["soc"], rec["soc_code"] = rec.get("body_system", ""), rec.get("body_system_code", "")
        for f in fields:
            have, want = given.get(f.record, ""), rec.get(f.record, "")
            if meddra.normalise(have) != meddra.normalise(want):
                log.warning("MEDDRA-SDTM-DIFFERS", f"{f.variable} is not what MedDRA {dictionary.version} gives "
                            f"({want!r})", file=file, record=row_no, field=f.variable, value=have)


def derive_text(value) -> str:
    from trialbridge.mappings.derive import format_number

    return format_number(value) if isinstance(value, (int, float)) else str(value or "").strip()


def _check_define(path: Path, datasets: dict[str, Dataset], log: IssueLog) -> str:
    """XSD-validate and read the folder's define.xml and check the datasets against it."""
    if not path.exists():
        log.warning("DEFINE-ABSENT", "the folder has no define.xml; datasets not checked against metadata",
                    file=str(path))
        return "no define.xml in the folder"
    before = len(log.issues)
    tree = define_xml.parse_define(path, log)  # parsed once: one finding for a file that is not XML
    if tree is None:
        return f"define.xml NOT read; {len(log.issues) - before} finding(s) from the define.xml checks"
    version, declared = define_xml.define_version(tree)
    if version not in ("2.0", "2.1"):
        log.warning("DEFINE-VERSION-UNSUPPORTED", f"define.xml is Define-XML {declared or version or '(version unknown)'}: "
                    "neither validated nor read (2.0 and 2.1 are), so the datasets are NOT checked against it",
                    file=str(path), value=declared or version)
        return f"define.xml is Define-XML {declared or version or '(version unknown)'}: not checked"
    valid = define_xml.validate_define_xsd(tree, log, name=path.name)
    meta = define_xml.read_define(path, log, tree=tree)
    if meta is not None:
        define_xml.check_define_against_datasets(meta, datasets, log)
    found = len(log.issues) - before
    schema = "valid against its XSD" if valid else "NOT valid against its XSD (or not Define-XML 2.0/2.1)"
    return f"define.xml {schema}; {found} finding(s) from the define.xml checks"


def _write_report(log: IssueLog, report: Path, *, title: str, rows: dict | None = None,
                  define_status: str | None = None, rules: list[dict] | None = None) -> Path:
    """--report: a browsable HTML page for .html/.htm, an Excel workbook with Pinnacle 21's
    sheets for .xlsx, else JSON (issues.json plus rule texts and the rules run)."""
    from trialbridge.converters.validation.report import write_html_report, write_json_report

    log_json = log.to_json_obj()
    suffix = report.suffix.lower()
    if suffix in (".html", ".htm"):
        return write_html_report(log_json, report, title=title, datasets_summary=rows, define_status=define_status)
    if suffix == ".xlsx":
        from trialbridge.converters.validation.excel import write_excel_report

        return write_excel_report(log_json, report, title=title, rules=rules or [], datasets_summary=rows)
    return write_json_report(log_json, report, datasets_summary=rows, define_status=define_status, rules_run=rules)


def _studyid(datasets: dict[str, Dataset]) -> str | None:
    for name in ("DM", *sorted(datasets)):
        ds = datasets.get(name)
        if ds is not None and ds.rows and ds.rows[0].get("STUDYID"):
            return str(ds.rows[0]["STUDYID"])
    return None


def _account_converted(log: IssueLog) -> None:
    for counter in log.accounting.values():
        counter["converted"] = counter.get("read", 0) - counter.get("rejected", 0) - counter.get("out_of_scope", 0)


def _account_fhir(log: IssueLog) -> None:
    """FHIR input counts each resource as it ends (converted, rejected, out of scope; the
    readers count what is read).  A converted resource whose record the SDTM mapping then
    rejected was counted twice: it is taken off converted.  Anything else that does not add
    up is a bug of ours, reported as such."""
    for file, counter in log.accounting.items():
        over = sum(counter.get(s, 0) for s in ("converted", "rejected", "out_of_scope")) - counter.get("read", 0)
        if over > 0 and counter.get("converted", 0) >= over:
            counter["converted"] -= over
        elif over:
            log.error("FHIR-ACCOUNTING", f"{counter.get('read', 0)} resource(s) read but {dict(counter)} accounted "
                      "(please report)", file=file, value=over)
        counter.setdefault("converted", 0)
        counter.setdefault("rejected", 0)
        counter.setdefault("out_of_scope", 0)


def _report_unmapped(log: IssueLog) -> None:
    for table, counts in sorted(log.unmapped.items()):
        for value, n in sorted(counts.items()):
            log.info("TERM-UNMAPPED-COUNT", f"{n} value(s) {value!r} not mapped by table {table}", field=table,
                     value=value)


def run_metadata(**extra) -> dict:
    from trialbridge.converters import __version__
    from trialbridge.mappings.terminology import ct

    return {"trialbridge": __version__, "sdtmig": "3.3 (CP: 3.4)", "controlled_terminology": f"CDISC SDTM CT {ct.version()}",
            **extra}


def write_issues(log: IssueLog, path: Path) -> Path:
    with atomic_open(path, "wb") as fh:
        fh.write(orjson.dumps(log.to_json_obj(), option=orjson.OPT_INDENT_2) + b"\n")
    return path


DRAFT_HEADER = """\
# Study configuration drafted by trialbridge init-study from {source} ({what}),
# checked against schemas/config/study.schema.json.  What the input did not say is generic here
# and listed under todo: at the end: check each line, fill in the fact, delete the line.
"""


@dataclass
class DraftResult:
    path: Path
    study_id: str
    todo: list[str]


def init_study(source: Path, output: Path) -> DraftResult:
    """Draft a study configuration (``mappings/study.py`` :func:`draft_study`) from an SDTM
    folder (its define.xml too when it has one) or from a define.xml alone, and write it as
    YAML to ``output``; the draft is loaded back through :func:`load_study` before this returns."""
    import yaml

    from trialbridge.converters.formats.define import define_facts
    from trialbridge.mappings.study import draft_study

    log = IssueLog()
    if source.is_dir():
        define = source / "define.xml"
        datasets = sdtm_io.read_sdtm_folder(source, log)
        if not datasets:
            raise TrialbridgeError(f"{source}: no SDTM datasets found")
        what = "SDTM folder" + (" and its define.xml" if define.exists() else "")
    elif source.is_file() and source.suffix.lower() == ".xml":
        define, datasets, what = source, {}, "define.xml"
    else:
        raise TrialbridgeError(f"{source}: give an SDTM folder or a define.xml")
    check_file_target(output, [source], ours=b"trialbridge init-study", what="study configuration",
                      source="input")
    facts = define_facts(define, log) if define.exists() else {}
    if define.exists() and not facts:
        raise TrialbridgeError(f"{define}: cannot read define.xml: "
                               f"{next((i.message for i in log.issues if i.severity == 'error'), 'not XML')}")
    config = draft_study(datasets, facts)
    text = DRAFT_HEADER.format(source=source.name, what=what) + yaml.safe_dump(
        config, sort_keys=False, allow_unicode=True, width=100, default_flow_style=False)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(output, "w") as fh:
        fh.write(text)
    load_study(output)
    return DraftResult(output, config["study_id"], config.get("todo", []))
