"""One subject's records <-> that subject's FHIR resources, and the study-level resources.

The engine hands these functions one subject at a time (records grouped by subject, FHIR
resources grouped by the Patient they belong to), so memory follows one subject, never the
input.  What is study-wide — the sponsor and site ResearchStudy resources, which site each
site-level study stands for — is built once (:func:`study_resources`, :func:`read_study`).

Order of the written resources: ResearchStudy (sponsor, then sites), then per type in
:func:`resource_order` (the resource modules' ``ORDER``), each type sorted by its record's natural key; the sort keys are
returned with the resources so that the engine's sorted sinks give the same order whatever
the order subjects were processed in.  Same input, same bytes.

Visits are Encounters (results and doses reference the Encounter of their visit,
:mod:`.encounter`); disposition records live on the subject's ResearchSubject (status plus one
extension per record, :mod:`.research_subject`).  A disposition record whose subject has no
subject record has no ResearchSubject to go to: reported (FHIR-DISPOSITION-NO-SUBJECT), not
written.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from functools import lru_cache
from types import ModuleType
from typing import Iterable, Iterator

import trialbridge.mappings.fhir as fhir_pkg
from trialbridge.converters.core.records import Records, public, record_types, where
from trialbridge.mappings.fhir import FhirContext, encounter, patient, research_study, research_subject

# Resources that make up trial membership: built from the study configuration (ResearchStudy)
# or joined here (Patient + ResearchSubject = one subject record); every other resource module
# maps one resource to one record on its own.
MEMBERSHIP = ("ResearchStudy", "Patient", "ResearchSubject")


@lru_cache(maxsize=1)
def resource_modules() -> tuple[ModuleType, ...]:
    """Every module of this package that declares ``RESOURCE_TYPE``, ``RECORD_TYPES`` and
    ``ORDER`` (and ``to_fhir``/``from_fhir``), in ``ORDER``: found by scanning the package, as
    the SDTM domain modules are, so a new resource is a new module — no list to edit."""
    mods = []
    for info in pkgutil.iter_modules(fhir_pkg.__path__):
        mod = importlib.import_module(f"{fhir_pkg.__name__}.{info.name}")
        if hasattr(mod, "RESOURCE_TYPE") and hasattr(mod, "to_fhir") and hasattr(mod, "from_fhir"):
            mods.append(mod)
    return tuple(sorted(mods, key=lambda m: (m.ORDER, m.RESOURCE_TYPE, m.__name__)))


def resource_order() -> tuple[str, ...]:
    """Resource types in the order they are written."""
    out: list[str] = []
    for mod in resource_modules():
        if mod.RESOURCE_TYPE not in out:
            out.append(mod.RESOURCE_TYPE)
    return tuple(out)


def _natural_key(name: str, row: dict) -> tuple:
    return tuple(row.get(k, "") for k in record_types()[name].key)


def _loc(row: dict) -> dict:
    loc = where(row)
    return {k: loc[k] for k in ("file", "record") if k in loc}


# --------------------------------------------------------------------------- records -> FHIR


def study_resources(study, log, include_identifiers: bool = False) -> list[dict]:
    """The sponsor ResearchStudy and one site-level ResearchStudy per configured site."""
    ctx = FhirContext(study, log, include_identifiers)
    sponsor = research_study.to_fhir(study.config, ctx)
    sites = [research_study.site_to_fhir(study.config, site, sponsor["status"])
             for site in sorted(study.config.get("sites", []), key=lambda s: s["site_id"])]
    return [sponsor, *sites]


def subject_resources(records: Records, study, log, include_identifiers: bool = False
                      ) -> Iterator[tuple[str, tuple, dict]]:
    """``(resourceType, sort key, resource)`` for the records of one subject (or several);
    the sort key orders resources of one type across all subjects.  Each resource module
    writes one resource per record of its ``RECORD_TYPES``."""
    ctx = FhirContext(study, log, include_identifiers)
    subject_ids = {r.get("subject_id") for r in records["subject"]}
    # the site of each subject: its local times are written with that site's UTC offset
    ctx.subject_sites = {r["subject_id"]: r["site_id"] for r in records["subject"]
                         if r.get("subject_id") and r.get("site_id")}
    for row in sorted(records["disposition"], key=lambda r: _natural_key("disposition", r)):
        if row.get("subject_id") in subject_ids:
            ctx.dispositions.setdefault(row["subject_id"], []).append(public(row))
        else:  # no subject record: no ResearchSubject to carry it
            log.warning("FHIR-DISPOSITION-NO-SUBJECT", f"disposition record of subject {row.get('subject_id')!r}, "
                        "who has no subject record: no ResearchSubject to carry it; not written",
                        **_loc(row), field="subject_id", value=row.get("subject_id"))
    visits = sorted(records["visit"], key=lambda r: _natural_key("visit", r))
    ctx.encounters = encounter.index(study.study_id, visits)
    for mod in resource_modules():
        for n, name in enumerate(mod.RECORD_TYPES):
            ctx.record_type = name
            for row in sorted(records[name], key=lambda r: _natural_key(name, r)):
                ctx.where = _loc(row)
                yield mod.RESOURCE_TYPE, (n, *_natural_key(name, row)), mod.to_fhir(public(row), ctx)
    ctx.where, ctx.record_type = {}, None


# --------------------------------------------------------------------------- FHIR -> records


@dataclass
class StudyFacts:
    """What the study-level resources of an input say, read once: which site each site-level
    ResearchStudy stands for ("ResearchStudy/<id>" -> site id)."""

    site_studies: dict[str, str] = field(default_factory=dict)


def rid(res: dict) -> str:
    return f"{res.get('resourceType')}/{res.get('id')}"


def _ctx_for(ctx: FhirContext, res: dict) -> FhirContext:
    ctx.where = {**ctx.base_where, "record": rid(res)}
    return ctx


def read_study(resources: Iterable[dict], study, log) -> StudyFacts:
    """Site-level ResearchStudy resources give the site map; any other ResearchStudy must be
    the study converted with (FHIR-STUDY-MISMATCH otherwise)."""
    ctx = FhirContext(study, log)
    facts = StudyFacts()
    for res in resources:
        if res.get("resourceType") != "ResearchStudy":
            continue
        site = research_study.site_of(res)
        if site:
            facts.site_studies[f"ResearchStudy/{res.get('id')}"] = site
            continue
        found = research_study.from_fhir(res, _ctx_for(ctx, res)).get("study_id")
        if found and found != study.study_id:
            log.warning("FHIR-STUDY-MISMATCH", f"ResearchStudy {found!r} is not the study converted with "
                        f"({study.study_id!r})", record=rid(res), value=found)
    return facts


def study_id_named(resources: Iterable[dict]) -> str | None:
    """The study id the first sponsor-level ResearchStudy names, if any."""
    for res in resources:
        if res.get("resourceType") == "ResearchStudy" and not research_study.site_of(res):
            found = research_study.from_fhir(res, None).get("study_id")
            if found:
                return found
    return None


def mrn_index(subjects: Iterable[dict]) -> dict[str, dict]:
    """Medical record number -> the trial's subject record, for linking EHR Patients that
    carry no trial identifier (``--link-subjects``).  Kept in memory only."""
    return {s["medical_record_number"]: s for s in subjects if s.get("medical_record_number")}


def _medical_record_numbers(resource: dict) -> list[str]:
    """Identifier values of type MR (HL7 v2-0203), else every identifier value."""
    idents = [i for i in resource.get("identifier", []) or [] if i.get("value")]
    mr = [i["value"] for i in idents if any(c.get("code") == "MR" for c in (i.get("type") or {}).get("coding", []))]
    return mr or [i["value"] for i in idents]


def _link(rec: dict, res: dict, links: dict[str, dict], log) -> dict:
    """A Patient without a trial subject id, matched to a trial subject by its medical
    record number: the subject's trial facts (not its identifying fields) fill the record;
    where the EHR and the trial records disagree, the EHR value is kept and the difference
    reported."""
    linked = next((links[m] for m in _medical_record_numbers(res) if m in links), None)
    if linked is None:
        return rec
    identifying = set(record_types()["subject"].identifying)
    base = {k: v for k, v in public(linked).items() if k not in identifying}
    for k, v in rec.items():
        if v and base.get(k) and base[k] != v:
            log.warning("FHIR-LINK-CONFLICT", f"{k} differs between the EHR Patient ({v!r}) and the trial's subject "
                        f"record ({base[k]!r}); the EHR value is kept", record=rid(res), field=k, value=v)
    log.info("FHIR-LINKED-BY-MRN", f"Patient has no trial subject id; linked to subject {base['subject_id']!r} by "
             "its medical record number", record=rid(res), value=base["subject_id"])
    return {**base, **{k: v for k, v in rec.items() if v}, "subject_id": base["subject_id"]}


def subject_records(resources: list[dict], study, log, facts: StudyFacts, *, links: dict[str, dict] | None = None,
                    include_identifiers: bool = False, where: dict | None = None) -> Records:
    """Canonical records from the resources of one person (their Patient, ResearchSubject(s)
    and the resources referencing the Patient); references resolve within the group.

    ``where`` (the input file) is added to every finding of the group."""
    ctx = FhirContext(study, log, include_identifiers)
    ctx.base_where = dict(where or {})
    by_type: dict[str, list[dict]] = {}
    for res in resources:
        by_type.setdefault(str(res.get("resourceType")), []).append(res)
    records = Records(study_id=study.study_id)
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
                      **ctx.base_where, record=rid(res))
    joined: set[str] = set()
    for res in by_type.get("ResearchSubject", []):
        c = _ctx_for(ctx, res)
        ref = (res.get("individual") or {}).get("reference")
        if ref not in persons:
            log.error("FHIR-REF-UNRESOLVED", f"ResearchSubject.individual {ref!r} names no Patient in the input; "
                      "not converted", **ctx.base_where, record=rid(res), field="individual", value=ref)
            continue
        rec = {**persons[ref], **research_subject.from_fhir(res, c)}
        if not rec.get("site_id") and (res.get("study") or {}).get("reference") in facts.site_studies:
            rec["site_id"] = facts.site_studies[res["study"]["reference"]]
        joined.add(ref)
        records["subject"].append(rec)
        if rec.get("subject_id"):
            records["disposition"].extend(research_subject.dispositions_from_fhir(res, rec["subject_id"], c))
    for ref, rec in persons.items():
        if ref not in joined and rec.get("subject_id") and rec.get("site_id") and rec.get("consent_date"):
            records["subject"].append({"study_id": study.study_id, **rec})  # linked: the trial facts are known
        elif ref not in joined and rec.get("subject_id"):
            log.warning("FHIR-NO-RESEARCHSUBJECT", "Patient has no ResearchSubject in the input; subject record has "
                        "no study facts (site, arm, consent date)", **ctx.base_where, record=ref,
                        value=rec["subject_id"])
            records["subject"].append({"study_id": study.study_id, **rec})
    ctx.encounter_labels = encounter.labels(by_type.get("Encounter", []))
    for mod in resource_modules():
        if mod.RESOURCE_TYPE in MEMBERSHIP:
            continue
        for res in by_type.get(mod.RESOURCE_TYPE, []):
            got = mod.from_fhir(res, _ctx_for(ctx, res))
            if got is None:
                continue
            name, rec = got if isinstance(got, tuple) else (mod.RECORD_TYPES[0], got)
            records[name].append(rec)
    for name, rows in records.items():
        rows.sort(key=record_order(name))
    return records


def record_order(name: str):
    """Sort key for records read from FHIR: the record type's key; visits in date order per
    subject (the order a site writes them, and the one SV keeps for rows without --SEQ)."""
    key = ("subject_id", "start", "visit") if name == "visit" else record_types()[name].key
    return lambda r: tuple(r.get(k, "") for k in key)


def mapped_types() -> frozenset[str]:
    return frozenset(resource_order())


def person_of(resource: dict) -> str:
    """The Patient reference a resource belongs to ("" for study-level resources): the group
    key the engine spills FHIR input by."""
    rtype = resource.get("resourceType")
    if rtype == "Patient":
        return f"Patient/{resource.get('id')}"
    for element in ("individual", "subject", "patient"):
        ref = resource.get(element)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            return ref["reference"]
    return ""


__all__ = ["resource_modules", "resource_order", "study_resources", "subject_resources", "StudyFacts", "read_study", "study_id_named",
           "mrn_index", "subject_records", "person_of", "record_order", "mapped_types"]



# --------------------------------------------------------------------------- whole inputs in memory


def records_to_fhir(records: Records, study, log, include_identifiers: bool = False) -> Iterator[dict]:
    """Every resource for records held in memory (scripts, tests), in the order the engine
    writes them; the engine calls :func:`subject_resources` one subject at a time instead."""
    yield from study_resources(study, log, include_identifiers)
    order = {t: n for n, t in enumerate(resource_order())}
    made = list(subject_resources(records, study, log, include_identifiers))
    made.sort(key=lambda item: (order[item[0]], tuple(_comparable(v) for v in item[1])))
    for _rtype, _key, res in made:
        yield res


def _comparable(value) -> tuple:
    if value is None:
        return (0, "")
    if isinstance(value, (int, float)):
        return (1, value)
    return (2, str(value))


def fhir_to_records(resources: Iterable[dict], study, log, include_identifiers: bool = False,
                    links: dict[str, dict] | None = None) -> Records:
    """Canonical records from resources held in memory (tests, small inputs): study-level
    resources first, then each person's group; the engine does the same from a spill."""
    resources = list(resources)
    facts = read_study(resources, study, log)
    groups: dict[str, list[dict]] = {}
    unmapped: dict[str, int] = {}
    for res in resources:
        rtype = str(res.get("resourceType"))
        if rtype not in mapped_types():
            unmapped[rtype] = unmapped.get(rtype, 0) + 1
        elif rtype != "ResearchStudy":
            groups.setdefault(person_of(res), []).append(res)
    for rtype, count in sorted(unmapped.items()):
        log.warning("FHIR-UNMAPPED-RESOURCE", f"{count} {rtype} resource(s) have no mapping to records; not converted",
                    record=rtype, value=count)
    first_issue = len(log.issues)
    out = Records(study_id=study.study_id)
    for key in sorted(groups):
        got = subject_records(groups[key], study, log, facts, links=links, include_identifiers=include_identifiers)
        for name, rows in got.items():
            out.rows[name].extend(rows)
    for name, rows in out.items():
        rows.sort(key=record_order(name))
    counts: dict[tuple, int] = {}
    for issue in log.issues[first_issue:]:
        if issue.code == "FHIR-UNMAPPED-CODE":
            counts[(issue.field, str(issue.value))] = counts.get((issue.field, str(issue.value)), 0) + 1
    for (field_name, value), count in sorted(counts.items()):
        log.info("FHIR-UNMAPPED-COUNT", f"{count} resource(s) with {field_name} {value!r} not mapped",
                 field=field_name, value=value)
    return out
