"""Records <-> SDTM datasets, through the mapping modules in ``mappings/sdtm``.

Every module there with a ``DOMAIN`` is a subject-level domain: ``to_sdtm(ctx)`` gives
its rows, ``seq_key(row)`` orders them for --SEQ, an optional ``supplemental(ctx,
rows)`` adds SUPPQUAL rows, and an optional ``from_sdtm(datasets, study)`` maps back.
Modules are found by scanning the package, so a new domain is a new module — no
registry to edit.
"""
from __future__ import annotations

import importlib
from functools import lru_cache
import pkgutil
from collections import defaultdict
from types import ModuleType
from typing import Any, Iterable

from trialbridge.converters.core.datasets import Dataset
from trialbridge.converters.core.issues import IssueLog
from trialbridge.converters.core.records import Records
from trialbridge.converters.core.sdtm_spec import load_spec, make_dataset
from trialbridge.mappings import derive
import trialbridge.mappings.sdtm as sdtm_pkg
from trialbridge.mappings.sdtm import trial_design
from trialbridge.mappings.sdtm.context import Context
from trialbridge.mappings.study import Study


@lru_cache(maxsize=1)
def domain_modules() -> tuple[ModuleType, ...]:
    mods = []
    for info in pkgutil.iter_modules(sdtm_pkg.__path__):
        mod = importlib.import_module(f"{sdtm_pkg.__name__}.{info.name}")
        if hasattr(mod, "DOMAIN") and hasattr(mod, "to_sdtm"):
            mods.append(mod)
    return tuple(sorted(mods, key=lambda m: (getattr(m, "ORDER", 100), m.DOMAIN)))


def records_to_sdtm_rows(records: Records, study: Study, log: IssueLog) -> dict[str, list[dict[str, Any]]]:
    """Subject-level rows of every domain (SUPP-- included) for the records of one subject
    (or several): --SEQ assigned within each subject, rows in their final order within it,
    every spec variable the rows use with missing values normalised."""
    ctx = Context(records, study, log)
    out: dict[str, list[dict[str, Any]]] = {}
    for mod in domain_modules():
        rows = mod.to_sdtm(ctx)
        seq_var = f"{mod.DOMAIN}SEQ"
        spec = load_spec(mod.DOMAIN)
        if hasattr(mod, "seq_key") and seq_var in spec.names:
            derive.assign_seq(rows, seq_var, mod.seq_key)
        else:  # no --SEQ (SV, SE keys): sort by the natural keys so input order never shows
            rows.sort(key=lambda r: tuple(_sortable(r.get(k)) for k in spec.keys))
        if hasattr(mod, "supplemental"):
            mod.supplemental(ctx, rows)
        if rows:
            out[mod.DOMAIN] = [_fill(spec, r) for r in rows]
    for name, rows in _supp_rows(ctx).items():
        out[name] = rows
    return out


def subject_tally(dm_rows: Iterable[dict[str, Any]]) -> trial_design.SubjectTally:
    """What TS derives from the subjects (ACTSUB, SENDTC), gathered from DM rows as they pass."""
    return trial_design.SubjectTally.of(dm_rows)


def trial_design_rows(study: Study, log: IssueLog | None = None,
                      tally: trial_design.SubjectTally | None = None) -> dict[str, list[dict[str, Any]]]:
    """TA, TE, TV, TI, TS from the study configuration (TS's ACTSUB and SENDTC from ``tally``,
    DM gathered row by row), sorted by their keys; TS findings go to ``log``."""
    out = {}
    for name, rows in trial_design.design_rows(study, log, tally).items():
        spec = load_spec(name)
        rows.sort(key=lambda r: tuple(_sortable(r.get(k)) for k in spec.keys))
        if rows:
            out[name] = [_fill(spec, r) for r in rows]
    return out


def records_to_sdtm(records: Records, study: Study, log: IssueLog) -> dict[str, Dataset]:
    """Every dataset for a whole set of records held in memory (tests, small inputs); the
    engine calls :func:`records_to_sdtm_rows` one subject at a time instead."""
    tables = records_to_sdtm_rows(records, study, log)
    by_subject: dict[str, list[dict[str, Any]]] = {}
    for name, rows in tables.items():
        by_subject[name] = sorted(rows, key=lambda r: r["USUBJID"])  # stable: keeps the order within a subject
    out = {name: make_dataset(name, rows) for name, rows in by_subject.items()}
    if "DM" not in out:
        out["DM"] = make_dataset("DM", [])
    tally = subject_tally(out["DM"].rows)
    for name, rows in trial_design_rows(study, log, tally).items():
        out[name] = make_dataset(name, rows)
    return dict(sorted(out.items()))


def _fill(spec, row: dict[str, Any]) -> dict[str, Any]:
    """Every spec variable the row uses, missing values normalised ('' / None)."""
    out = {}
    for v in spec.variables:
        if v.name in row:
            value = row[v.name]
            out[v.name] = (value if value not in ("",) else None) if v.type == "Num" else ("" if value is None else value)
    unknown = set(row) - set(out)
    if unknown:
        raise ValueError(f"mapping for {spec.name} produced variables not in its spec: {sorted(unknown)}")
    return out


def _sortable(value: Any) -> tuple:
    if value is None:
        return (0, "")
    if isinstance(value, (int, float)):
        return (1, value)
    return (2, str(value))


def _supp_rows(ctx: Context) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in ctx.supp:
        grouped[f"SUPP{s.rdomain}"].append({
            "STUDYID": ctx.studyid, "RDOMAIN": s.rdomain, "USUBJID": s.usubjid, "IDVAR": s.idvar,
            "IDVARVAL": s.idvarval, "QNAM": s.qnam, "QLABEL": s.qlabel, "QVAL": s.qval, "QORIG": s.qorig,
            "QEVAL": s.qeval,
        })
    for rows in grouped.values():
        rows.sort(key=lambda r: (r["USUBJID"], r["IDVAR"], _idvarval_key(r["IDVARVAL"]), r["QNAM"]))
    return dict(grouped)


def _idvarval_key(v: str) -> tuple:
    n = derive.to_number(v)
    return (0, n, "") if n is not None else (1, 0, v)


DESIGN_DATASETS = frozenset({"TA", "TE", "TV", "TI", "TS"})  # rebuilt from the study configuration
DERIVED_DATASETS = frozenset({"SE"})  # read by the mappings (courses), derived again, never reported


def sdtm_subject_to_records(rows: dict[str, list[dict[str, Any]]], study: Study | None, log: IssueLog
                            ) -> tuple[Records, dict[str, dict[str, Any]]]:
    """Records from one subject's SDTM rows ({dataset: rows}); also what no mapping read:
    {dataset: {"read": set of variables, "counts": {variable: non-empty values},
    "supp": {QNAM: values}}} for the summary findings (:func:`report_unread`)."""
    datasets = {name: Dataset(name, name, [], [_Tracked(r) for r in rs]) for name, rs in rows.items()}
    records = Records()
    dm = datasets.get("DM")
    if dm is not None and dm.rows:
        records.study_id = str(dm.rows[0].get("STUDYID") or "")
    fills = []
    for mod in domain_modules():
        if not hasattr(mod, "from_sdtm") or not hasattr(mod, "RECORD_TYPE"):
            continue
        got = mod.from_sdtm(datasets, study)
        if getattr(mod, "FILLS_RECORDS", False):
            fills.append((mod.RECORD_TYPE, got))
        else:
            records.rows[mod.RECORD_TYPE] = got
    for name, partial in fills:  # e.g. VS height/weight back into the subject records
        by_subject = {r.get("subject_id", ""): r for r in partial}
        for r in records.rows[name]:
            r.update({k: v for k, v in by_subject.get(r.get("subject_id", ""), {}).items() if k != "subject_id"})
    unread: dict[str, dict[str, Any]] = {}
    for name, ds in datasets.items():
        if name in DESIGN_DATASETS or name in DERIVED_DATASETS or name not in mapped_datasets():
            continue
        info = unread.setdefault(name, {"read": set(), "counts": {}, "supp": {}})
        for r in ds.rows:
            if name.startswith("SUPP"):
                if r.get("QNAM") not in supp_read().get(name, set()) and r.get("QVAL") not in (None, ""):
                    info["supp"][r["QNAM"]] = info["supp"].get(r["QNAM"], 0) + 1
                continue
            info["read"] |= r.read
            for k, v in r.items():
                if v not in (None, ""):
                    info["counts"][k] = info["counts"].get(k, 0) + 1
    return records, unread


def merge_unread(merged: dict[str, dict[str, Any]], part: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Add one subject's unread-variable counts to ``merged`` (in place; order-free)."""
    for name, info in part.items():
        m = merged.setdefault(name, {"read": set(), "counts": {}, "supp": {}})
        m["read"] |= info["read"]
        for k, n in info["counts"].items():
            m["counts"][k] = m["counts"].get(k, 0) + n
        for k, n in info["supp"].items():
            m["supp"][k] = m["supp"].get(k, 0) + n
    return merged


def report_unread(unread_parts: Iterable[dict[str, dict[str, Any]]], variables: dict[str, list[str]],
                  sources: dict[str, str], log: IssueLog) -> None:
    """Every variable (or SUPP QNAM) with values that no mapping read, with its count, summed
    over subjects; datasets with no mapping at all are reported by the caller."""
    merged: dict[str, dict[str, Any]] = {}
    for part in unread_parts:
        merge_unread(merged, part)
    for name, info in sorted(merged.items()):
        source = sources.get(name) or name
        for qnam, n in sorted(info["supp"].items()):
            log.info("SDTM-VAR-NOT-MAPPED", f"{name} QNAM {qnam}: {n} value(s) have no record field and were "
                     "not carried to records", file=source, field=qnam, value=n)
        for var in variables.get(name, []):
            if var not in info["read"] and info["counts"].get(var) and var not in ("STUDYID", "DOMAIN"):
                log.info("SDTM-VAR-NOT-MAPPED", f"{name}.{var}: {info['counts'][var]} value(s) not carried to "
                         "records (derived again on conversion to SDTM, or no record field)", file=source,
                         field=var, value=info["counts"][var])


def sdtm_to_records(datasets: dict[str, Dataset], study: Study | None, log: IssueLog) -> Records:
    """Records from whole datasets held in memory (tests, small inputs); the engine calls
    :func:`sdtm_subject_to_records` one subject at a time instead."""
    by_subject: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for name, ds in datasets.items():
        if name in DESIGN_DATASETS:
            continue
        if name not in mapped_datasets() and name not in DERIVED_DATASETS:
            log.warning("SDTM-NOT-MAPPED", f"dataset {name} has no mapping to records; its {len(ds.rows)} row(s) "
                        "were not converted", file=ds.source or name)
            continue
        for r in ds.rows:
            by_subject.setdefault(str(r.get("USUBJID") or ""), {}).setdefault(name, []).append(r)
    records = Records()
    parts = []
    for usubjid in sorted(by_subject):
        got, unread = sdtm_subject_to_records(by_subject[usubjid], study, log)
        parts.append(unread)
        records.study_id = records.study_id or got.study_id
        for name, rows in got.items():
            records.rows[name].extend(rows)
    report_unread(parts, {n: ds.names for n, ds in datasets.items()},
                  {n: ds.source or n for n, ds in datasets.items()}, log)
    return records


class _Tracked(dict):
    """A row that remembers which variables a mapping read, so nothing is dropped unseen."""

    def __init__(self, *args):
        super().__init__(*args)
        self.read: set[str] = set()

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)


@lru_cache(maxsize=1)
def supp_read() -> dict[str, frozenset[str]]:
    """SUPP-- dataset -> the QNAMs its domain module reads back (``SUPP_QNAMS``)."""
    return {f"SUPP{m.DOMAIN}": frozenset(m.SUPP_QNAMS) for m in domain_modules() if getattr(m, "SUPP_QNAMS", ())}


@lru_cache(maxsize=1)
def mapped_datasets() -> frozenset[str]:
    """Datasets some domain module reads back to records (its own, and its SUPP--)."""
    return frozenset({m.DOMAIN for m in domain_modules() if hasattr(m, "from_sdtm") and hasattr(m, "RECORD_TYPE")}
                     | set(supp_read()))


# --------------------------------------------------------------------------- FHIR side


def fhir_dumps(resource: dict) -> bytes:
    from trialbridge.converters.formats.fhir.io import dumps

    return dumps(resource).encode("utf-8")


def records_to_fhir_rows(records: Records, study: Study, log: IssueLog, include_identifiers: bool = False):
    from trialbridge.mappings.fhir import assemble

    return assemble.subject_resources(records, study, log, include_identifiers)


def fhir_group_to_records(job, items, log: IssueLog, identifying: list | None = None
                          ) -> tuple[Records | None, dict[str, int]]:
    """One person's resources (spilled as the input's JSON, any FHIR version) -> canonical
    records, each resource parsed exactly and checked on the way: the R4 schema (models only
    for what it rejects) or the R5 schema; R5 resources are read through their R4 form.
    Items of kind ``fhir-check`` belong to no person: only checked and accounted.

    A resource repeated in the input (same type and id) is read once: an identical copy is
    accounted as its first copy was, a different one as rejected (the intake reported it).
    Every finding names the file its resource came from; each resource is counted under its
    file as converted, rejected or out of scope.  Schema findings on a resource that is out of
    scope anyway are info: nothing of it reaches the output.  Also returns the versions seen.
    The Patients' identifying values (names, telecom, identifiers, addresses) are added to
    ``identifying`` for the redaction of free text (:mod:`converters.core.privacy`)."""
    from trialbridge.converters.core import jsoncodec
    from trialbridge.converters.core.issues import Issue
    from trialbridge.converters.engine import unpack
    from trialbridge.converters.formats.fhir import versions as fhir_versions
    from trialbridge.converters.formats.fhir.validate import validate_resources
    from trialbridge.mappings.fhir import OUT_OF_SCOPE, assemble, references

    resources: list[dict] = []
    files: list[str] = []
    checks: list[list[Issue]] = []
    repeats: list[tuple[str, int, bool]] = []  # (file, index of the first copy, identical)
    first: dict[str, tuple[int, bytes]] = {}  # type/id -> (index, JSON bytes) of its first copy
    seen: dict[str, int] = {}
    person = True
    for key, payload in items:
        kind, data = unpack(payload)
        person = person and kind == "fhir"
        file = job.files[key[1]] if job.files else ""
        res = jsoncodec.loads(data)
        rid = f"{res.get('resourceType')}/{res.get('id')}"
        if res.get("id") is not None and rid in first:  # digests only for repeats: they are rare
            index, earlier = first[rid]
            repeats.append((file, index, references.content_digest(earlier) == references.content_digest(data)))
            continue
        found = fhir_versions.detect_version(res) if job.input_fhir_version == "auto" else job.input_fhir_version
        if found:
            seen[found] = seen.get(found, 0) + 1
        checked = IssueLog()
        if (found or "R4") == "R5":
            fhir_versions.validate_r5([res], checked)
            res = fhir_versions.to_r4(res)
        else:
            validate_resources([res], checked, check_references=False, check_ids=False)
        first[rid] = (len(resources), data)
        if identifying is not None and res.get("resourceType") == "Patient":
            from trialbridge.mappings.fhir.patient import identifying_values

            identifying.extend(identifying_values(res))
        resources.append(res)
        files.append(file)
        checks.append([replace_where(i, file) for i in checked.issues])
    if not resources:
        return None, seen
    outcomes: list[str] = []
    if person:
        records = assemble.subject_records(resources, job.study, log, job.facts, links=job.links,
                                           include_identifiers=job.include_identifiers, files=files, outcomes=outcomes)
    else:
        records = None
        assemble.check_resources(resources, job.study, log, job.facts, files=files, outcomes=outcomes)
    for issues, outcome in zip(checks, outcomes):
        for issue in issues:  # a resource out of scope: its schema problems reach no output
            # ... but a resourceType R4 does not define is a misspelt or foreign resource whose
            # content is lost: a warning, whatever it would have mapped to
            severity = "warning" if issue.code == "FHIR-UNKNOWN-TYPE" else "info"
            log.issues.append(issue if outcome != OUT_OF_SCOPE or issue.severity == "info" else
                              Issue(severity, issue.code, f"(resource out of scope) {issue.message}", issue.file,
                                    issue.record, issue.field, issue.value, issue.usubjid, issue.seq))
    for file, outcome in zip(files, outcomes):
        log.count_row(file, outcome)
    for file, index, identical in repeats:
        log.count_row(file, outcomes[index] if identical or outcomes[index] != "converted" else "rejected")
    return records, seen


def replace_where(issue, file: str):
    """The finding with the file of its resource (validators know only the resource)."""
    from dataclasses import replace

    return replace(issue, file=issue.file or file or None)
