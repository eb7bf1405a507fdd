"""The jobs the CLI runs: detect what an input is, convert it, validate, write
``issues.json``.  Nothing here prints; the CLI reports the returned summary.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from trialbridge.converters.formats import define as define_xml
from trialbridge.converters.formats.fhir import io as fhir_io
from trialbridge.converters.formats import odm as odm_io
from trialbridge.converters.formats import records as records_io
from trialbridge.converters.formats import sdtm as sdtm_io
from trialbridge.converters.formats.fhir.validate import validate_resources
from trialbridge.converters.core.datasets import Dataset
from trialbridge.converters.core.files import atomic_open
from trialbridge.converters.core.issues import IssueLog, TrialbridgeError
from trialbridge.converters.core.records import Records
from trialbridge.converters.validation.rules import validate_datasets
from trialbridge.converters.spokes import records_to_sdtm, sdtm_to_records
from trialbridge.converters.formats.fhir import versions as r5
from trialbridge.mappings.study import Study, load_study, study_from_sdtm

TARGETS = ("sdtm", "records", "fhir")
SDTM_FORMATS = {"xpt": "xpt", "dataset-json": "dataset-json", "json": "dataset-json", "csv": "csv"}
FHIR_FORMATS = ("ndjson", "bundle")
FHIR_VERSIONS = ("R4", "R5")


@dataclass
class RunResult:
    log: IssueLog
    written: list[Path] = field(default_factory=list)
    kind: str = ""
    study_id: str = ""

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
        if path.suffix.lower() in (".ndjson", ".json") and _is_fhir_json(path):
            return "fhir"
    elif records_io.is_records_folder(path):
        return "records"
    else:
        files = [p for p in path.iterdir() if p.is_file() and p.name != "issues.json"]
        if any(p.suffix.lower() in (".ndjson", ".json") and _is_fhir_json(p) for p in files):
            return "fhir"
        if any(p.suffix.lower() in (".xpt", ".json", ".csv") for p in files):
            return "sdtm"
    raise TrialbridgeError(f"{path}: not a records folder (subjects.csv …), an SDTM folder (dm.xpt …) "
                           "an ODM export (.xml) nor FHIR (Bundle .json, .ndjson)")


def _is_fhir_json(path: Path) -> bool:
    """A .json / .ndjson file whose (first) object has a resourceType — not Dataset-JSON,
    whose NDJSON form also exists (read only the first bytes)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return b'"resourceType"' in head and not b'"datasetJSONVersion"' in head


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
            link_subjects: Path | None = None) -> RunResult:
    """Read any input (records, SDTM, FHIR), convert through the canonical records, validate
    what is written, write it and ``issues.json`` into ``output``."""
    if to not in TARGETS:
        raise TrialbridgeError(f"--to must be one of {', '.join(TARGETS)}")
    log = IssueLog()
    kind = detect_input(input_path)
    if output.exists() and not output.is_dir():
        raise TrialbridgeError(f"{output}: exists and is not a folder")
    sdtm_formats = parse_formats(formats or "xpt") if to == "sdtm" else []
    if to == "fhir":
        if (formats or "ndjson") not in FHIR_FORMATS:
            raise TrialbridgeError(f"FHIR output format must be one of {', '.join(FHIR_FORMATS)}, not {formats!r}")
        if fhir_version not in FHIR_VERSIONS:
            raise TrialbridgeError(f"--fhir-version {fhir_version} is not supported yet; supported: "
                                   f"{', '.join(FHIR_VERSIONS)}")
    result = RunResult(log=log, kind=kind)
    records: Records | None = None
    datasets: dict[str, Dataset] | None = None
    study: Study | None = None
    if kind == "records":
        records = records_io.read_records(input_path, log)
        study = _study(study_ref, records.study_id, log, required=True)
    elif kind == "odm":
        records = odm_io.read_odm(input_path, log)
        if not records.rows["subject"] and log.has_errors:
            write_issues(log, output / "issues.json")
            first = next(i for i in log.sorted() if i.severity == "error")
            raise TrialbridgeError(f"{input_path}: {first.code}: {first.message}", exit_code=1)
        study = _study(study_ref, records.study_id, log, required=True)
    elif kind == "fhir":
        # R5 input is detected from the resources' shape (or named by the user) and read
        # through its R4 form
        resources = list(fhir_io.read_fhir(input_path, log))
        version = r5.detect_versions(resources, log) if input_fhir_version == "auto" else input_fhir_version
        # every resource read is validated too: the R4 schema (models for precise messages on
        # the ones it rejects), or the R5 models; references are checked by the reader
        if version == "R5":
            r5.validate_r5(resources, log)
        else:
            validate_resources(resources, log, model_check="failed", check_references=False)
        if input_fhir_version == "auto":
            resources = r5.normalise_to_r4(resources)
        elif input_fhir_version == "R5":
            resources = [r5.to_r4(r) for r in resources]
        study = _study(study_ref, _fhir_study_id(resources), log, required=True)
        links = None
        if link_subjects is not None:
            folder = link_subjects if link_subjects.is_dir() else link_subjects.parent
            links = fhir_io.mrn_index(records_io.read_records(folder, IssueLog())["subject"])
            if not links:
                raise TrialbridgeError(f"{link_subjects}: no subject with a medical_record_number to link by")
        records = fhir_io.fhir_to_records(resources, study, log, links=links)
        del resources
    else:
        datasets = sdtm_io.read_sdtm_folder(input_path, log)
        named = _studyid(datasets)
        study = _study(study_ref, named, log, required=False)
        if study is None and to == "fhir":
            study = study_from_sdtm(datasets)
            log.warning("STUDY-FROM-SDTM", f"no configuration for study {named!r}: study facts for FHIR "
                        "(ResearchStudy, arms, sites) taken from the folder's own TS/TA/TE/TV/DM")
        if to != "sdtm":
            records = sdtm_to_records(datasets, study, log)
    result.study_id = study.study_id if study else (_studyid(datasets or {}) or "")
    if to == "records":
        result.written = records_io.write_records(records, output, log)
    elif to == "sdtm":
        if datasets is None:
            datasets = records_to_sdtm(records, study, log)
        validate_datasets(datasets, log)
        result.written = sdtm_io.write_datasets(datasets, output, sdtm_formats, log, result.study_id or "UNKNOWN")
        # define.xml describing exactly what was written, validated against the XSD and
        # read back to check it agrees with the datasets (lengths, labels, variables)
        dpath = define_xml.write_define(datasets, study, output / "define.xml", log, formats=sdtm_formats)
        result.written.append(dpath)
        meta = define_xml.read_define(dpath, log)
        if meta is not None:
            define_xml.check_define_against_datasets(meta, datasets, log, exact_lengths=True)
    else:
        resources = list(fhir_io.records_to_fhir(records, study, log))
        validate_resources(resources, log)  # R4 schema + models on what the mappings made
        if fhir_version == "R5":
            resources = [r5.to_r5(r) for r in resources]
            r5.validate_r5(resources, log)
        if (formats or "ndjson") == "bundle":
            result.written = [fhir_io.write_bundle(resources, output / "bundle.json", bundle_type)]
        else:
            result.written = fhir_io.write_ndjson(resources, output)
    if kind in ("records", "fhir", "odm"):
        _account_converted(log)
    _report_stale(output, result.written, log)
    _report_unmapped(log)
    log.run = run_metadata(command="convert", input=str(input_path), input_kind=kind, to=to, study=result.study_id)
    result.written.append(write_issues(log, output / "issues.json"))
    return result


OUTPUT_SUFFIXES = (".xpt", ".json", ".csv", ".ndjson", ".xml")


def _report_stale(output: Path, written: list[Path], log: IssueLog) -> None:
    """Files of an earlier run left in the output folder would be read with this run's
    output (validate, a later convert): they are named, never deleted."""
    fresh = {p.resolve() for p in written} | {(output / "issues.json").resolve()}
    for p in sorted(output.iterdir()) if output.is_dir() else ():
        if p.is_file() and p.suffix.lower() in OUTPUT_SUFFIXES and p.resolve() not in fresh:
            log.warning("OUT-STALE-FILE", "file in the output folder was not written by this run (an earlier run's "
                        "output?); it would be read together with this output — remove it or use a new folder",
                        file=str(p))


def _fhir_study_id(resources: list[dict]) -> str | None:
    from trialbridge.mappings.fhir import research_study

    for res in resources:
        if res.get("resourceType") == "ResearchStudy":
            found = research_study.from_fhir(res, None).get("study_id")
            if found:
                return found
    return None


def validate(path: Path, report: Path | None = None) -> RunResult:
    log = IssueLog()
    kind = detect_input(path)
    if kind == "fhir":
        resources = list(fhir_io.read_fhir(path, log))
        if r5.detect_versions(resources, log) == "R5":
            counts = r5.validate_r5(resources, log)
        else:
            counts = validate_resources(resources, log)
        result = RunResult(log=log, kind=kind)
        log.run = run_metadata(command="validate", input=str(path), input_kind=kind, resources=counts)
        if report is not None:
            result.written.append(_write_report(log, report, title=f"{path.name} — FHIR validation"))
        return result
    if kind != "sdtm":
        raise TrialbridgeError(f"{path}: validate takes an SDTM folder (dm.xpt …) or FHIR; convert records first")
    datasets = sdtm_io.read_sdtm_folder(path, log)
    if not datasets:
        raise TrialbridgeError(f"{path}: no SDTM datasets found")
    validate_datasets(datasets, log)
    define_status = _check_define(path / "define.xml", datasets, log)
    result = RunResult(log=log, kind=kind, study_id=_studyid(datasets) or "")
    log.run = run_metadata(command="validate", input=str(path), study=result.study_id)
    if report is not None:
        result.written.append(_write_report(log, report, title=f"{result.study_id or path.name} — SDTM validation",
                                            rows={name: len(ds.rows) for name, ds in datasets.items()},
                                            define_status=define_status))
    return result


def _check_define(path: Path, datasets: dict[str, Dataset], log: IssueLog) -> str:
    """XSD-validate and read the folder's define.xml and check the datasets against it."""
    if not path.exists():
        log.warning("DEFINE-ABSENT", "the folder has no define.xml; datasets not checked against metadata",
                    file=str(path))
        return "no define.xml in the folder"
    before = len(log.issues)
    valid = define_xml.validate_define_xsd(path, log)
    meta = define_xml.read_define(path, log)
    if meta is not None:
        define_xml.check_define_against_datasets(meta, datasets, log)
    found = len(log.issues) - before
    schema = "valid against its XSD" if valid else "NOT valid against its XSD (or not Define-XML 2.0/2.1)"
    return f"define.xml {schema}; {found} finding(s) from the define.xml checks"


def _write_report(log: IssueLog, report: Path, *, title: str, rows: dict | None = None,
                  define_status: str | None = None) -> Path:
    """--report: a browsable HTML page for .html/.htm, else JSON (issues.json plus rule texts)."""
    from trialbridge.converters.validation.report import write_html_report, write_json_report

    log_json = log.to_json_obj()
    if report.suffix.lower() in (".html", ".htm"):
        return write_html_report(log_json, report, title=title, datasets_summary=rows, define_status=define_status)
    return write_json_report(log_json, report, datasets_summary=rows, define_status=define_status)


def _studyid(datasets: dict[str, Dataset]) -> str | None:
    for name in ("DM", *sorted(datasets)):
        ds = datasets.get(name)
        if ds is not None and ds.rows and ds.rows[0].get("STUDYID"):
            return str(ds.rows[0]["STUDYID"])
    return None


def _account_converted(log: IssueLog) -> None:
    for counter in log.accounting.values():
        counter["converted"] = counter.get("read", 0) - counter.get("rejected", 0)


def _report_unmapped(log: IssueLog) -> None:
    for table, counts in sorted(log.unmapped.items()):
        for value, n in sorted(counts.items()):
            log.info("TERM-UNMAPPED-COUNT", f"{n} value(s) {value!r} not mapped by table {table}", field=table,
                     value=value)


def run_metadata(**extra) -> dict:
    from trialbridge.converters import __version__
    from trialbridge.mappings.terminology.ct import CT_VERSION

    return {"trialbridge": __version__, "sdtmig": "3.3 (CP: 3.4)", "controlled_terminology": f"NCI EVS SDTM CT {CT_VERSION}",
            **extra}


def write_issues(log: IssueLog, path: Path) -> Path:
    with atomic_open(path, "wb") as fh:
        fh.write(orjson.dumps(log.to_json_obj(), option=orjson.OPT_INDENT_2) + b"\n")
    return path
