"""FHIR R4 reader and writer of the canonical records (hub and spoke: never FHIR -> SDTM directly).

* :func:`records_to_fhir` — records -> resources (mapping modules in ``mappings/fhir``), in a
  fixed order: ResearchStudy, then per record type sorted by its key.  Same input, same bytes.
* :func:`write_ndjson` — one ``<ResourceType>.ndjson`` per type (atomic).
* :func:`write_bundle` — one Bundle, ``collection`` or ``transaction`` (entries with
  ``request: PUT <Type>/<id>``, so loading twice is idempotent).
* :func:`read_fhir` — resources from a Bundle ``.json``, a ``.ndjson`` file or a folder of them;
  numbers are parsed losslessly by the hub's codec (:mod:`converters.core.jsoncodec`): floats
  where a float reproduces the text, ``Decimal`` where it would not, so ``1.30`` stays
  ``1.30`` (design rule 5a).
* :func:`fhir_to_records` — resources -> records; subject references are resolved within the
  input; resource types and codes we do not map are reported with counts, never dropped
  silently.

Numbers made by the mapping modules are ``Decimal``; :func:`dumps` serialises them with their
exact text.
All seven record types are mapped: visits are Encounters (results and doses reference the
Encounter of their visit, :mod:`mappings.fhir.encounter`); disposition records live on the
subject's ResearchSubject (status + one extension per record,
:mod:`mappings.fhir.research_subject`).  A disposition record whose subject has no subject
record has no ResearchSubject to go to: reported (FHIR-DISPOSITION-NO-SUBJECT), not written.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator

from trialbridge.converters.core import jsoncodec
from trialbridge.converters.core.files import atomic_open
from trialbridge.converters.core.issues import IssueLog, TrialbridgeError
from trialbridge.converters.core.records import Records, public, record_types, where
from trialbridge.mappings.fhir import FhirContext, adverse_event, encounter, medication_administration, observation, patient
from trialbridge.mappings.fhir import research_study, research_subject

RESOURCE_ORDER = ("ResearchStudy", "Patient", "ResearchSubject", "Encounter", "MedicationAdministration",
                  "Observation", "AdverseEvent")


# --------------------------------------------------------------------------- serialisation
# The hub's one JSON codec (converters/core/jsoncodec.py): numbers keep their exact text.


def dumps(resource: Any) -> str:
    """Compact JSON text; Decimal numbers written exactly as their text (see :mod:`jsoncodec`)."""
    return jsoncodec.dumps(resource).decode("utf-8")


def loads(data: str | bytes) -> Any:
    """One JSON document, numbers lossless (fast path orjson, exact path Decimal)."""
    return jsoncodec.loads(data)


# --------------------------------------------------------------------------- records -> FHIR


def _sorted(name: str, rows: list[dict]) -> list[dict]:
    key = record_types()[name].key
    return sorted(rows, key=lambda r: tuple(r.get(k, "") for k in key))


def records_to_fhir(records: Records, study, log: IssueLog, include_identifiers: bool = False) -> Iterator[dict]:
    """Resources for all records, in a fixed order (deterministic ids and order)."""
    ctx = FhirContext(study, log, include_identifiers)
    sponsor_study = research_study.to_fhir(study.config, ctx)
    yield sponsor_study
    for site in sorted(study.config.get("sites", []), key=lambda s: s["site_id"]):
        yield research_study.site_to_fhir(study.config, site, sponsor_study["status"])
    subjects = _sorted("subject", records["subject"])
    dispositions: dict[str, list[dict]] = {}
    for row in _sorted("disposition", records["disposition"]):
        dispositions.setdefault(row.get("subject_id", ""), []).append(row)
    for row in subjects:
        ctx.where = _where(row)
        yield patient.to_fhir(public(row), ctx)
    for row in subjects:
        ctx.where = _where(row)
        yield research_subject.to_fhir(public(row), ctx,
                                       [public(d) for d in dispositions.pop(row["subject_id"], [])])
    for rows in dispositions.values():  # subjects with no subject record
        for row in rows:
            log.warning("FHIR-DISPOSITION-NO-SUBJECT", f"disposition record of subject {row.get('subject_id')!r}, "
                        "who has no subject record: no ResearchSubject to carry it; not written",
                        **_where(row), field="subject_id", value=row.get("subject_id"))
    visits = _sorted("visit", records["visit"])
    for row in visits:
        ctx.where = _where(row)
        yield encounter.to_fhir(public(row), ctx)
    encounters = encounter.index(study.study_id, visits)
    for row in _sorted("exposure", records["exposure"]):
        ctx.where = _where(row)
        res = medication_administration.to_fhir(public(row), ctx)
        encounter.link(res, "context", encounters.for_dose(row, row.get("start")))
        yield res
    for name in ("lab_result", "cell_phenotype"):
        for row in _sorted(name, records[name]):
            ctx.where = _where(row)
            res = observation.to_fhir(public(row), ctx, kind=name)
            encounter.link(res, "encounter", encounters.for_result(row, row.get("collected")))
            yield res
    for row in _sorted("adverse_event", records["adverse_event"]):
        ctx.where = _where(row)
        yield adverse_event.to_fhir(public(row), ctx)
    ctx.where = {}


def _where(row: dict) -> dict:
    loc = where(row)
    return {k: loc[k] for k in ("file", "record") if k in loc}


# --------------------------------------------------------------------------- writers


def write_ndjson(resources: Iterable[dict], folder: Path) -> list[Path]:
    """One ``<ResourceType>.ndjson`` per resource type in ``folder``; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    handles: dict[str, Any] = {}
    managers: dict[str, Any] = {}
    try:
        for res in resources:
            rtype = res["resourceType"]
            if rtype not in handles:
                managers[rtype] = atomic_open(folder / f"{rtype}.ndjson", "wb")
                handles[rtype] = managers[rtype].__enter__()
            handles[rtype].write(jsoncodec.dumps(res) + b"\n")
    except BaseException as exc:
        for m in managers.values():
            m.__exit__(type(exc), exc, exc.__traceback__)
        raise
    for m in managers.values():
        m.__exit__(None, None, None)
    return [folder / f"{t}.ndjson" for t in sorted(handles)]


def write_bundle(resources: Iterable[dict], path: Path, bundle_type: str = "collection") -> Path:
    """One Bundle (``collection`` or ``transaction``) written to ``path``."""
    if bundle_type not in ("collection", "transaction"):
        raise TrialbridgeError(f"bundle type must be collection or transaction, not {bundle_type!r}")
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        fh.write(b'{"resourceType":"Bundle","type":' + jsoncodec.dumps(bundle_type) + b',"entry":[')
        for n, res in enumerate(resources):
            entry: dict = {"fullUrl": f"urn:uuid:{res['id']}" if _is_uuid(res["id"]) else
                           f"{res['resourceType']}/{res['id']}", "resource": res}
            if bundle_type == "transaction":
                entry["request"] = {"method": "PUT", "url": f"{res['resourceType']}/{res['id']}"}
            fh.write((b"," if n else b"") + b"\n" + jsoncodec.dumps(entry))
        fh.write(b"\n]}\n")
    return path


def _is_uuid(text: str) -> bool:
    import uuid

    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


# --------------------------------------------------------------------------- readers


def read_fhir(path: Path, log: IssueLog) -> Iterator[dict]:
    """Resources from a Bundle (.json), an .ndjson file or a folder of .ndjson/.json files."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".ndjson", ".json") and not p.name.startswith(".")
                       and p.name != "issues.json")  # our own findings file beside the output
        if not files:
            raise TrialbridgeError(f"{path}: no .ndjson or .json files")
        for p in files:
            yield from read_fhir(p, log)
        return
    try:
        if path.suffix == ".ndjson":
            with open(path, "rb") as fh:
                for n, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    log.count_row(str(path), "read")
                    try:
                        obj = jsoncodec.loads_object(line)
                    except jsoncodec.JsonNotObjectError as exc:
                        log.error("FHIR-JSON", f"line is not a resource: {exc}", file=str(path), record=n)
                        log.count_row(str(path), "rejected")
                        continue
                    except jsoncodec.JsonError as exc:
                        log.error("FHIR-JSON", f"line is not JSON: {exc}", file=str(path), record=n)
                        log.count_row(str(path), "rejected")
                        continue
                    yield obj
            return
        data = jsoncodec.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise TrialbridgeError(f"{path}: cannot read: {exc}") from exc
    if isinstance(data, dict) and data.get("resourceType") == "Bundle":
        for n, entry in enumerate(data.get("entry") or [], start=1):
            log.count_row(str(path), "read")
            if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                yield entry["resource"]
            else:
                log.error("FHIR-JSON", "Bundle entry has no resource", file=str(path), record=n)
                log.count_row(str(path), "rejected")
    elif isinstance(data, dict) and data.get("resourceType"):
        log.count_row(str(path), "read")
        yield data
    else:
        raise TrialbridgeError(f"{path}: neither a FHIR Bundle nor a resource")


# --------------------------------------------------------------------------- FHIR -> records


def mrn_index(subjects: Iterable[dict]) -> dict[str, dict]:
    """Medical record number -> the trial's subject record, for linking EHR Patients that
    carry no trial identifier (``--link-subjects``).  Kept in memory only."""
    return {s["medical_record_number"]: s for s in subjects if s.get("medical_record_number")}


def _medical_record_numbers(resource: dict) -> list[str]:
    """Identifier values of type MR (HL7 v2-0203), else every identifier value."""
    idents = [i for i in resource.get("identifier", []) or [] if i.get("value")]
    mr = [i["value"] for i in idents if any(c.get("code") == "MR" for c in (i.get("type") or {}).get("coding", []))]
    return mr or [i["value"] for i in idents]


def _link(rec: dict, res: dict, links: dict[str, dict], log: IssueLog) -> dict:
    """A Patient without a trial subject id, matched to a trial subject by its medical
    record number: the subject's trial facts (not its identifying fields) fill the record;
    where the EHR and the trial records disagree, the EHR value is kept and the difference
    reported."""
    from trialbridge.converters.core.records import record_types

    linked = next((links[m] for m in _medical_record_numbers(res) if m in links), None)
    if linked is None:
        return rec
    identifying = set(record_types()["subject"].identifying)
    base = {k: v for k, v in public(linked).items() if k not in identifying}
    for k, v in rec.items():
        if v and base.get(k) and base[k] != v:
            log.warning("FHIR-LINK-CONFLICT", f"{k} differs between the EHR Patient ({v!r}) and the trial's subject "
                        f"record ({base[k]!r}); the EHR value is kept", record=_rid(res), field=k, value=v)
    log.info("FHIR-LINKED-BY-MRN", f"Patient has no trial subject id; linked to subject {base['subject_id']!r} by "
             "its medical record number", record=_rid(res), value=base["subject_id"])
    return {**base, **{k: v for k, v in rec.items() if v}, "subject_id": base["subject_id"]}


def fhir_to_records(resources: Iterable[dict], study, log: IssueLog, include_identifiers: bool = False,
                    links: dict[str, dict] | None = None) -> Records:
    """Canonical records from FHIR resources (references resolved within the input).

    Patients and ResearchSubjects are read first (they resolve the subject references of the
    rest); the input is held once as dicts, which suits bundles of one study.
    """
    ctx = FhirContext(study, log, include_identifiers)
    first_issue = len(log.issues)
    by_type: dict[str, list[dict]] = {}
    for res in resources:
        by_type.setdefault(str(res.get("resourceType")), []).append(res)
    records = Records(study_id=study.study_id)
    unmapped_types = Counter({t: len(v) for t, v in by_type.items() if t not in RESOURCE_ORDER})
    for rtype, count in sorted(unmapped_types.items()):
        log.warning("FHIR-UNMAPPED-RESOURCE", f"{count} {rtype} resource(s) have no mapping to records; not converted",
                    record=rtype, value=count)
    site_studies: dict[str, str] = {}  # "ResearchStudy/<id>" of a site-level study -> site id
    for res in by_type.get("ResearchStudy", []):
        site = research_study.site_of(res)
        if site:
            site_studies[f"ResearchStudy/{res.get('id')}"] = site
            continue
        found = research_study.from_fhir(res, _ctx_for(ctx, res)).get("study_id")
        if found and found != study.study_id:
            log.warning("FHIR-STUDY-MISMATCH", f"ResearchStudy {found!r} is not the study converted with "
                        f"({study.study_id!r})", record=_rid(res), value=found)
    # Patients: the person; ResearchSubject: the participation.  Joined by the Patient reference.
    persons: dict[str, dict] = {}
    for res in by_type.get("Patient", []):
        rec = patient.from_fhir(res, _ctx_for(ctx, res))
        if not rec.get("subject_id") and links:
            rec = _link(rec, res, links, log)
        ref = f"Patient/{res.get('id')}"
        persons[ref] = rec
        if rec.get("subject_id"):
            ctx.subjects[ref] = rec["subject_id"]
        else:
            log.error("FHIR-NO-SUBJECT-ID", "Patient has no subject-id identifier; its resources are not converted",
                      record=_rid(res))
    joined: set[str] = set()
    for res in by_type.get("ResearchSubject", []):
        c = _ctx_for(ctx, res)
        ref = (res.get("individual") or {}).get("reference")
        if ref not in persons:
            log.error("FHIR-REF-UNRESOLVED", f"ResearchSubject.individual {ref!r} names no Patient in the input; "
                      "not converted", record=_rid(res), field="individual", value=ref)
            continue
        rec = {**persons[ref], **research_subject.from_fhir(res, c)}
        if not rec.get("site_id") and (res.get("study") or {}).get("reference") in site_studies:
            rec["site_id"] = site_studies[res["study"]["reference"]]
        joined.add(ref)
        records["subject"].append(rec)
        if rec.get("subject_id"):
            records["disposition"].extend(research_subject.dispositions_from_fhir(res, rec["subject_id"], c))
    for ref, rec in persons.items():
        if ref not in joined and rec.get("subject_id") and rec.get("site_id") and rec.get("consent_date"):
            records["subject"].append({"study_id": study.study_id, **rec})  # linked: the trial facts are known
        elif ref not in joined and rec.get("subject_id"):
            log.warning("FHIR-NO-RESEARCHSUBJECT", "Patient has no ResearchSubject in the input; subject record has "
                        "no study facts (site, arm, consent date)", record=ref, value=rec["subject_id"])
            records["subject"].append({"study_id": study.study_id, **rec})
    for res in by_type.get("Encounter", []):
        rec = encounter.from_fhir(res, _ctx_for(ctx, res))
        if rec is not None:
            records["visit"].append(rec)
    labels = encounter.labels(by_type.get("Encounter", []))
    for res in by_type.get("MedicationAdministration", []):
        rec = medication_administration.from_fhir(res, _ctx_for(ctx, res))
        if rec is not None:
            records["exposure"].append(rec)
    for res in by_type.get("Observation", []):
        got = observation.from_fhir(encounter.fill_display(res, "encounter", labels), _ctx_for(ctx, res))
        if got is not None:
            records[got[0]].append(got[1])
    for res in by_type.get("AdverseEvent", []):
        rec = adverse_event.from_fhir(res, _ctx_for(ctx, res))
        if rec is not None:
            records["adverse_event"].append(rec)
    for name, rows in records.items():
        rows.sort(key=_record_order(name))
    # one summary line per distinct code that did not map, with its count
    unmapped = Counter((i.field, str(i.value)) for i in log.issues[first_issue:] if i.code == "FHIR-UNMAPPED-CODE")
    for (field_name, value), count in sorted(unmapped.items()):
        log.info("FHIR-UNMAPPED-COUNT", f"{count} resource(s) with {field_name} {value!r} not mapped",
                 field=field_name, value=value)
    return records


def _record_order(name: str):
    """Sort key for records read from FHIR: the record type's key; visits in date order per
    subject (the order a site writes them, and the one SV keeps for rows without --SEQ)."""
    key = ("subject_id", "start", "visit") if name == "visit" else record_types()[name].key
    return lambda r: tuple(r.get(k, "") for k in key)


def _rid(res: dict) -> str:
    return f"{res.get('resourceType')}/{res.get('id')}"


def _ctx_for(ctx: FhirContext, res: dict) -> FhirContext:
    ctx.where = {"record": _rid(res)}
    return ctx
