"""One subject's records <-> that subject's FHIR resources, and the study-level resources.

The engine hands these functions one subject at a time (records grouped by subject, FHIR
resources grouped by the Patient they belong to), so memory follows one subject, never the
input.  What is study-wide — the sponsor and site ResearchStudy resources, which site each
site-level study stands for — is built once (:func:`study_resources`, :func:`read_study`).

Order of the written resources: ResearchStudy (sponsor, then sites), then per type in
:data:`RESOURCE_ORDER`, each type sorted by its record's natural key; the sort keys are
returned with the resources so that the engine's sorted sinks give the same order whatever
the order subjects were processed in.  Same input, same bytes.

Visits are Encounters (results and doses reference the Encounter of their visit,
:mod:`.encounter`); disposition records live on the subject's ResearchSubject (status plus one
extension per record, :mod:`.research_subject`).  A disposition record whose subject has no
subject record has no ResearchSubject to go to: reported (FHIR-DISPOSITION-NO-SUBJECT), not
written.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator

from trialbridge.converters.core.records import Records, public, record_types, where
from trialbridge.mappings.fhir import FhirContext, adverse_event, encounter, medication_administration, observation
from trialbridge.mappings.fhir import patient, research_study, research_subject

RESOURCE_ORDER = ("ResearchStudy", "Patient", "ResearchSubject", "Encounter", "MedicationAdministration",
                  "Observation", "AdverseEvent")
# record types that become Observations, in the order they are written
_OBSERVATION_KINDS = ("lab_result", "cell_phenotype")


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
    the sort key orders resources of one type across all subjects."""
    ctx = FhirContext(study, log, include_identifiers)
    dispositions: dict[str, list[dict]] = {}
    for row in sorted(records["disposition"], key=lambda r: _natural_key("disposition", r)):
        dispositions.setdefault(row.get("subject_id", ""), []).append(row)
    subjects = sorted(records["subject"], key=lambda r: _natural_key("subject", r))
    for row in subjects:
        ctx.where = _loc(row)
        yield "Patient", _natural_key("subject", row), patient.to_fhir(public(row), ctx)
    for row in subjects:
        ctx.where = _loc(row)
        yield "ResearchSubject", _natural_key("subject", row), research_subject.to_fhir(
            public(row), ctx, [public(d) for d in dispositions.pop(row["subject_id"], [])])
    for rows in dispositions.values():  # subjects with no subject record
        for row in rows:
            log.warning("FHIR-DISPOSITION-NO-SUBJECT", f"disposition record of subject {row.get('subject_id')!r}, "
                        "who has no subject record: no ResearchSubject to carry it; not written",
                        **_loc(row), field="subject_id", value=row.get("subject_id"))
    visits = sorted(records["visit"], key=lambda r: _natural_key("visit", r))
    for row in visits:
        ctx.where = _loc(row)
        yield "Encounter", _natural_key("visit", row), encounter.to_fhir(public(row), ctx)
    encounters = encounter.index(study.study_id, visits)
    for row in sorted(records["exposure"], key=lambda r: _natural_key("exposure", r)):
        ctx.where = _loc(row)
        res = medication_administration.to_fhir(public(row), ctx)
        encounter.link(res, "context", encounters.for_dose(row, row.get("start")))
        yield "MedicationAdministration", _natural_key("exposure", row), res
    for n, name in enumerate(_OBSERVATION_KINDS):
        for row in sorted(records[name], key=lambda r: _natural_key(name, r)):
            ctx.where = _loc(row)
            res = observation.to_fhir(public(row), ctx, kind=name)
            encounter.link(res, "encounter", encounters.for_result(row, row.get("collected")))
            yield "Observation", (n, *_natural_key(name, row)), res
    for row in sorted(records["adverse_event"], key=lambda r: _natural_key("adverse_event", r)):
        ctx.where = _loc(row)
        yield "AdverseEvent", _natural_key("adverse_event", row), adverse_event.to_fhir(public(row), ctx)


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
        rows.sort(key=record_order(name))
    return records


def record_order(name: str):
    """Sort key for records read from FHIR: the record type's key; visits in date order per
    subject (the order a site writes them, and the one SV keeps for rows without --SEQ)."""
    key = ("subject_id", "start", "visit") if name == "visit" else record_types()[name].key
    return lambda r: tuple(r.get(k, "") for k in key)


def mapped_types() -> frozenset[str]:
    return frozenset(RESOURCE_ORDER)


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


__all__ = ["RESOURCE_ORDER", "study_resources", "subject_resources", "StudyFacts", "read_study", "study_id_named",
           "mrn_index", "subject_records", "person_of", "record_order", "mapped_types"]



# --------------------------------------------------------------------------- whole inputs in memory


def records_to_fhir(records: Records, study, log, include_identifiers: bool = False) -> Iterator[dict]:
    """Every resource for records held in memory (scripts, tests), in the order the engine
    writes them; the engine calls :func:`subject_resources` one subject at a time instead."""
    yield from study_resources(study, log, include_identifiers)
    order = {t: n for n, t in enumerate(RESOURCE_ORDER)}
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
        if rtype not in RESOURCE_ORDER:
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
