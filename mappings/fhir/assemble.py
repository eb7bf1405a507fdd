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
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from types import ModuleType
from typing import Any, Iterable, Iterator

import trialbridge.mappings.fhir as fhir_pkg
from trialbridge.converters.core import iso8601
from trialbridge.converters.core.records import Records, public, record_types, where
from trialbridge.converters.core.issues import TrialbridgeError
from trialbridge.mappings.fhir import (LEGACY_EXT, LEGACY_SID, OUT_OF_SCOPE, SCOPE_TABLE, SID, SUBJECT_ID_SYSTEM,
                                       USUBJID_SYSTEM, FhirContext, count_scope, encounter, is_uri, patient,
                                       research_study, research_subject)
from trialbridge.mappings.fhir import references
from trialbridge.mappings.fhir.dialect import Dialect

# Resources that make up trial membership: built from the study configuration (ResearchStudy)
# or joined here (Patient + ResearchSubject = one subject record); every other resource module
# maps one resource to one record on its own.
MEMBERSHIP = ("ResearchStudy", "Patient", "ResearchSubject")


@lru_cache(maxsize=1)
def resource_modules() -> tuple[ModuleType, ...]:
    """Every module of this package that declares ``RESOURCE_TYPE``, ``RECORD_TYPES`` and
    ``ORDER`` and reads (``from_fhir``; most also write: ``to_fhir``), in ``ORDER``: found by
    scanning the package, as the SDTM domain modules are, so a new resource is a new module —
    no list to edit.  Several modules may read one resource type: each says which resources
    it takes (``claims(resource, ctx)``), the first that claims one reads it."""
    mods = []
    for info in pkgutil.iter_modules(fhir_pkg.__path__):
        mod = importlib.import_module(f"{fhir_pkg.__name__}.{info.name}")
        if hasattr(mod, "RESOURCE_TYPE") and hasattr(mod, "from_fhir"):
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
        if not hasattr(mod, "to_fhir"):  # a reading-only module: its records have no writer yet
            for name in mod.RECORD_TYPES:
                if records[name]:
                    log.warning("FHIR-NOT-WRITTEN", f"{len(records[name])} {name} record(s): no FHIR mapping writes "
                                f"this record type yet ({mod.__name__} only reads {mod.RESOURCE_TYPE}); not written",
                                field=name, value=len(records[name]))
            continue
        for n, name in enumerate(mod.RECORD_TYPES):
            ctx.record_type = name
            for row in sorted(records[name], key=lambda r: _natural_key(name, r)):
                ctx.where = _loc(row)
                yield mod.RESOURCE_TYPE, (n, *_natural_key(name, row)), mod.to_fhir(public(row), ctx)
    ctx.where, ctx.record_type = {}, None


# --------------------------------------------------------------------------- FHIR -> records
#
# Trial membership as the HL7 FHIR-to-CDISC Joint Mapping IG has it: the subject id is
# ResearchSubject.identifier, the person is ResearchSubject.individual (R4) / .subject (R5),
# the site is the site-level ResearchStudy the ResearchSubject's study is (partOf the sponsor
# study), and every other resource belongs to the trial through its Patient reference.  A
# Patient needs no trial identifier.  A Patient with no ResearchSubject in the study is not
# enrolled: its resources are out of scope (counted, never errors) unless --link-subjects
# matches it to a trial subject by medical record number.  Our own older output (a
# subject-id identifier on the Patient) is still read.

CONVERTED, REJECTED = "converted", "rejected"
# what a record read from FHIR needs to exist at all: what its record type requires (the
# SDTM and FHIR mappings key on it, and records written must read back), except that a
# subject converts without sex or consent date (reported where they are missing)
ESSENTIAL = {"subject": ("study_id", "site_id", "subject_id")}
# resources other resources point at (a result's Specimen, a ResearchSubject's Consent):
# converted when a converted resource used them, else out of scope
SUPPORTING = ("Specimen", "Consent", "Medication")


@dataclass
class InputSurvey:
    """What the intake notes about every resource, compactly, for the decisions that need the
    whole input: the identifier systems it uses (which site dialect fits) and the systems each
    ResearchSubject's identifiers use (which one carries the subject id)."""

    systems: set[str] = field(default_factory=set)
    subject_shapes: Counter = field(default_factory=Counter)  # sorted systems of one ResearchSubject -> count
    research_subjects: int = 0

    def take(self, res: dict) -> None:
        rtype = res.get("resourceType")
        if rtype not in ("Patient", "ResearchSubject", "ResearchStudy"):
            return
        idents = [i for i in _identifiers(res) if i.get("value") not in (None, "")]
        self.systems.update(_system(i.get("system")) for i in idents)
        if rtype == "ResearchSubject":
            self.research_subjects += 1
            self.subject_shapes[tuple(sorted({_system(i.get("system")) for i in idents} - {USUBJID_SYSTEM}))] += 1


def _system(system: Any) -> str:
    """An identifier system, with the ``urn:trialbridge:fhir:`` names earlier trialbridge wrote
    read as the https ones it writes now."""
    text = str(system or "")
    if text.startswith(LEGACY_SID) and not text.startswith(LEGACY_EXT):
        return SID + text[len(LEGACY_SID):]
    return text


def _identifiers(res: dict) -> list[dict]:
    value = res.get("identifier")
    if isinstance(value, dict):  # AdverseEvent.identifier is a single Identifier in R4
        return [value]
    return [i for i in value or [] if isinstance(i, dict)]


@dataclass
class StudyFacts:
    """What the study-level resources of an input say, read once and sent to every worker:
    which ResearchStudy is the study converted (``sponsor``), which are its sites
    (``site_studies``: key -> configured site id, None for a site it cannot place) and which
    belong to other studies; how the input's identifiers are read (``subject_id_systems``,
    None: each ResearchSubject's single identifier); the site's dialect; the Medications of
    the input (by key) for administrations that reference one."""

    site_studies: dict[str, str | None] = field(default_factory=dict)
    sponsor: set[str] = field(default_factory=set)
    others: dict[str, str] = field(default_factory=dict)
    studies_in_input: bool = False
    aliases: dict[str, str] = field(default_factory=dict)
    subject_id_systems: tuple[str, ...] | None = (SUBJECT_ID_SYSTEM,)
    default_site: str | None = None
    default_site_why: str = ""
    dialect: Dialect = field(default_factory=Dialect)
    medications: dict[str, dict] = field(default_factory=dict)

    def study_of(self, reference: Any) -> tuple[str, str | None]:
        """("site", site id) / ("sponsor", None) for a study of ours, ("other", label) for
        another study's, from a ResearchSubject.study reference."""
        key = references.key_of(reference, self.aliases)
        if key in self.site_studies:
            return "site", self.site_studies[key]
        if key in self.sponsor:
            return "sponsor", None
        if key in self.others:
            return "other", self.others[key]
        if not self.others:  # the input names no other study: a study not sent is ours
            return "sponsor", None
        return "other", str(reference)

    def subject_id_of(self, resource: dict) -> tuple[str | None, str | None]:
        """(subject id, system it was read from) of a ResearchSubject."""
        idents = [i for i in _identifiers(resource) if i.get("value") not in (None, "")]
        if self.subject_id_systems is None:
            found = [i for i in idents if _system(i.get("system")) != USUBJID_SYSTEM]
            return (str(found[0]["value"]), found[0].get("system")) if len(found) == 1 else (None, None)
        for system in self.subject_id_systems:
            for i in idents:
                if _system(i.get("system")) == system:
                    return str(i["value"]), system
        return None, None


def rid(res: dict) -> str:
    return f"{res.get('resourceType')}/{res.get('id')}"


def _ctx_for(ctx: FhirContext, res: dict, file: str | None = None) -> FhirContext:
    ctx.where = {**ctx.base_where, **({"file": file} if file else {}), "record": rid(res)}
    ctx.status = None
    return ctx


def _located(resources: Iterable) -> list[tuple[str | None, dict]]:
    """``(fullUrl, resource)`` pairs from resources given alone or with their fullUrl."""
    return [item if isinstance(item, tuple) else (None, item) for item in resources]


def read_study(resources: Iterable, study, log, *, dialect: Dialect | None = None, survey: InputSurvey | None = None,
               medications: dict[str, dict] | None = None, files: dict[str, str] | None = None,
               source: str | None = None) -> StudyFacts:
    """The study-level facts of an input from its ResearchStudy resources (given alone or as
    ``(fullUrl, resource)``), the survey of its identifiers and its Medications.

    Which ResearchStudy is ours: one whose identifier is the study id or its registry id;
    else, when the input has a single sponsor-level study, that one (assumed, info).  A
    ResearchStudy ``partOf`` ours is a site: its identifier (the dialect's site-id system,
    ours, or its only identifier) is the site, through the dialect's site map.  Where several
    readings of an identifier fit and the configuration does not say, the run stops with one
    message naming them (a usage error).  ``files`` (ResearchStudy key -> its file) and
    ``source`` (the input, for findings about all of it) go into the findings."""
    dialect = dialect or Dialect()
    facts = StudyFacts(dialect=dialect, medications=dict(medications or {}))
    files = files or {}

    def at(res: dict, url: str | None = None) -> dict:
        found = files.get(references.resource_key(res, url))
        return {"file": found} if found else {}

    studies = [(url, res) for url, res in _located(resources) if res.get("resourceType") == "ResearchStudy"]
    facts.studies_in_input = bool(studies)
    for url, res in studies:
        key = references.resource_key(res, url)
        if url and url != key:
            facts.aliases[url] = key
    wanted = {_fold(study.study_id), _fold(study.config.get("registry_id") or study.study_id)}
    top = [(url, res) for url, res in studies if not res.get("partOf")]
    ours = [(url, res) for url, res in top if wanted & {_fold(i.get("value")) for i in _identifiers(res)}]
    if not ours and len(top) == 1:
        url, res = top[0]
        ours = top
        log.info("FHIR-STUDY-ASSUMED", f"{rid(res)} names neither {study.study_id!r} nor its registry id; it is the "
                 f"input's only sponsor-level study, so it is read as {study.study_id}", **at(res, url), record=rid(res),
                 value=", ".join(str(i.get("value")) for i in _identifiers(res)) or None)
    facts.sponsor = {references.resource_key(res, url) for url, res in ours}
    for url, res in top:
        key = references.resource_key(res, url)
        if key not in facts.sponsor:
            facts.others[key] = _study_label(res)
            log.info("FHIR-OTHER-STUDY", f"{key} is another study ({facts.others[key]}); its ResearchSubjects are out "
                     "of scope", **at(res, url), record=key, value=facts.others[key])
    for url, res in studies:
        parent = references.key_of(((res.get("partOf") or [{}])[0] or {}).get("reference"), facts.aliases)
        if not res.get("partOf"):
            continue
        key = references.resource_key(res, url)
        if parent in facts.sponsor or (parent not in facts.others and not top):
            facts.site_studies[key] = _site_of_study(res, study, dialect, log, at(res, url))
        else:
            facts.others[key] = _study_label(res)
    facts.default_site, facts.default_site_why = _default_site(study, dialect)
    facts.subject_id_systems = _subject_id_reading(dialect, survey, log, {"file": source} if source else {})
    for url, res in studies:  # our own output names its study: a mismatch is worth a word
        found = research_study.from_fhir(res, None).get("study_id") if not res.get("partOf") else None
        if found and _fold(found) not in wanted and references.resource_key(res, url) in facts.sponsor:
            log.warning("FHIR-STUDY-MISMATCH", f"ResearchStudy {found!r} is not the study converted with "
                        f"({study.study_id!r})", **at(res, url), record=rid(res), value=found)
    return facts


def _fold(value: Any) -> str:
    return " ".join(str(value or "").split()).casefold()


def _study_label(res: dict) -> str:
    idents = [str(i.get("value")) for i in _identifiers(res) if i.get("value")]
    return ", ".join(idents) or res.get("title") or rid(res)


def _site_of_study(res: dict, study, dialect: Dialect, log, where: dict) -> str | None:
    """The configured site a site-level ResearchStudy stands for (see :func:`read_study`)."""
    idents = [i for i in _identifiers(res) if i.get("value") not in (None, "")]
    value, how = None, ""
    for system in dialect.site_id_systems:
        value = value or next((str(i["value"]) for i in idents if i.get("system") == system), None)
    if value is None:
        value = next((str(i["value"]) for i in idents if is_uri(i.get("system"), research_study.SITE_ID_SYSTEM)), None)
    if value is None and len(idents) == 1:
        value = str(idents[0]["value"])
        how = f"its only identifier (system {idents[0].get('system')})"
    elif value is None and len(idents) > 1 and not dialect.site_id:
        choices = ", ".join(f"{i.get('system')}={i.get('value')}" for i in idents)
        raise TrialbridgeError(f"site-level {rid(res)} has several identifiers that could be the site ({choices}); "
                               "name the site's system in the study configuration (fhir: identifiers: site_id) or "
                               "the site's file in mappings/fhir/sites/")
    site = dialect.sites.get(value) if value is not None else None
    if site is None and value is not None and study.site(value) is not None:
        site = value
    if site is None and dialect.site_id:
        site, how = dialect.site_id, f"the site dialect {dialect.name!r}"
    if site is None and len(study.config["sites"]) == 1:
        site, how = study.config["sites"][0]["site_id"], "the study's only site"
    if site is None:
        choices = ", ".join(s["site_id"] for s in study.config["sites"])
        log.warning("FHIR-UNKNOWN-SITE", f"site-level {rid(res)} ({value!r}) is none of the configured sites "
                    f"({choices}); its subjects are not converted — map it in the site dialect (sites:)",
                    **where, record=rid(res), value=value)
        return None
    if how:
        log.info("FHIR-SITE-ASSUMED", f"site-level {rid(res)} read as site {site!r}: {how}", **where, record=rid(res),
                 field="identifier", value=value if value is not None else site)
    return site


def _default_site(study, dialect: Dialect) -> tuple[str | None, str]:
    """The site of a subject whose study is the sponsor study itself (no site-level study)."""
    if dialect.site_id:
        return dialect.site_id, f"the site dialect {dialect.name!r}"
    if len(study.config["sites"]) == 1:
        return study.config["sites"][0]["site_id"], "the study's only site"
    return None, ""


def _subject_id_reading(dialect: Dialect, survey: InputSurvey | None, log, where: dict) -> tuple[str, ...] | None:
    """The identifier systems that carry the subject id, in order; None for "each
    ResearchSubject's only identifier" (assumed where that is the one reading, reported)."""
    if dialect.subject_id_systems:
        return tuple(dialect.subject_id_systems)
    if survey is None or not survey.research_subjects:
        return (SUBJECT_ID_SYSTEM,)
    shapes = survey.subject_shapes
    if all(SUBJECT_ID_SYSTEM in shape for shape in shapes):
        return (SUBJECT_ID_SYSTEM,)
    if all(len(shape) <= 1 for shape in shapes):
        systems = sorted({s for shape in shapes for s in shape})
        log.info("FHIR-SUBJECT-ID-ASSUMED", f"each ResearchSubject carries one identifier; it is read as the subject "
                 f"id (system {', '.join(systems) or 'none'}); say so in the study configuration (fhir: identifiers: "
                 "subject_id) to make it explicit", **where, field="identifier", value=", ".join(systems))
        return None
    count: Counter = Counter()
    for shape, n in shapes.items():
        for system in shape:
            count[system] += n
    choices = "; ".join(f"{s or '(no system)'} on {n} of {survey.research_subjects}" for s, n in sorted(count.items()))
    raise TrialbridgeError(f"ResearchSubject identifiers could carry the subject id in several systems ({choices}); "
                           "name the one that does in the study configuration (fhir: identifiers: subject_id) or the "
                           "site's file in mappings/fhir/sites/")


def study_id_named(resources: Iterable) -> str | None:
    """The study id the sponsor-level ResearchStudy of the input names: our study-id
    identifier, the registry id, or any identifier that is a bundled study configuration."""
    from trialbridge.mappings.study import bundled_studies

    known = set(bundled_studies())
    first = None
    for _url, res in _located(resources):
        if res.get("resourceType") != "ResearchStudy" or res.get("partOf"):
            continue
        found = research_study.from_fhir(res, None).get("study_id")
        if found:
            return found
        for ident in _identifiers(res):
            value = str(ident.get("value") or "")
            if value.upper() in known:
                return value
            first = first or value or None
    return first


def mrn_index(subjects: Iterable[dict]) -> dict[str, dict]:
    """Medical record number -> the trial's subject record, for linking EHR Patients that
    carry no trial identifier (``--link-subjects``).  Kept in memory only."""
    return {s["medical_record_number"]: s for s in subjects if s.get("medical_record_number")}


def _medical_record_numbers(resource: dict, dialect: Dialect | None = None) -> list[str]:
    """Identifier values in the dialect's MRN systems, else of type MR (HL7 v2-0203), else
    every identifier value."""
    idents = [i for i in _identifiers(resource) if i.get("value")]
    if dialect is not None and dialect.mrn_systems:
        found = [i["value"] for s in dialect.mrn_systems for i in idents if i.get("system") == s]
        if found:
            return found
    mr = [i["value"] for i in idents if any(c.get("code") == "MR" for c in (i.get("type") or {}).get("coding", []))]
    return mr or [i["value"] for i in idents]


def _link(rec: dict, res: dict, links: dict[str, dict], log, dialect: Dialect | None = None,
          where: dict | None = None) -> dict:
    """A Patient without a trial subject id, matched to a trial subject by its medical
    record number: the subject's trial facts (not its identifying fields) fill the record;
    where the EHR and the trial records disagree, the EHR value is kept and the difference
    reported."""
    linked = next((links[m] for m in _medical_record_numbers(res, dialect) if m in links), None)
    if linked is None:
        return rec
    where = where or {}
    identifying = set(record_types()["subject"].identifying)
    base = {k: v for k, v in public(linked).items() if k not in identifying}
    for k, v in rec.items():
        if v and base.get(k) and base[k] != v:
            log.warning("FHIR-LINK-CONFLICT", f"{k} differs between the EHR Patient ({v!r}) and the trial's subject "
                        f"record ({base[k]!r}); the EHR value is kept", **where, record=rid(res), field=k, value=v)
    log.info("FHIR-LINKED-BY-MRN", f"Patient has no trial subject id; linked to subject {base['subject_id']!r} by "
             "its medical record number", **where, record=rid(res), value=base["subject_id"])
    return {**base, **{k: v for k, v in rec.items() if v}, "subject_id": base["subject_id"]}


def subject_records(resources: list[dict], study, log, facts: StudyFacts, *, links: dict[str, dict] | None = None,
                    include_identifiers: bool = False, where: dict | None = None, files: list[str] | None = None,
                    outcomes: list[str] | None = None) -> Records:
    """Canonical records from the resources of one person (their Patient, their
    ResearchSubject(s) and the resources that reference the Patient).

    ``files`` (one per resource) or ``where`` (the input file) go into every finding and
    every record's ``_where``; ``outcomes``, when given, receives what became of each resource:
    converted, rejected or out_of_scope (the input's accounting)."""
    ctx = FhirContext(study, log, include_identifiers)
    ctx.base_where = dict(where or {})
    ctx.facts = facts
    files = list(files) if files is not None else [ctx.base_where.get("file")] * len(resources)
    status: list[str] = [""] * len(resources)
    records = Records(study_id=study.study_id)
    ctx.group = {references.resource_key(r): r for r in resources}
    person = _membership(resources, files, status, ctx, links)
    if person is None:
        _set_outcomes(outcomes, status)
        return records
    subject, subject_index = person
    sid = subject["subject_id"]
    ctx.subject_id, ctx.birth_date = sid, subject.get("birth_date")
    records["subject"].append(subject)
    rs = resources[subject_index]
    if rs.get("resourceType") == "ResearchSubject":
        records["disposition"].extend(
            {**d, "_where": {"file": files[subject_index], "record": rid(rs)}}
            for d in research_subject.dispositions_from_fhir(rs, sid, _ctx_for(ctx, rs, files[subject_index])))
    ctx.encounter_labels = encounter.labels([r for r in resources if r.get("resourceType") == "Encounter"])
    for i, res in enumerate(resources):
        if status[i] or res.get("resourceType") in MEMBERSHIP or res.get("resourceType") in SUPPORTING:
            continue
        status[i] = _read_one(res, files[i], ctx, records)
    for i, res in enumerate(resources):  # what converted resources pointed at
        if not status[i]:
            if references.resource_key(res) in ctx.used:
                status[i] = CONVERTED
            else:
                status[i] = OUT_OF_SCOPE
                count_scope(log, "type", files[i], str(res.get("resourceType")),
                            "not referenced by a converted resource")
    for name, rows in records.items():
        rows.sort(key=record_order(name))
    _set_outcomes(outcomes, status)
    return records


def bad_dates(name: str, rec: dict) -> list[tuple[str, str]]:
    """(field, text) of the record's dates that are not ISO 8601 in the hub's grammar (the
    one check the records readers apply, so a FHIR date that no CSV could carry is not
    taken either: ``2020-06-05T08:30:00+25:00``, ``2020-02-30``)."""
    props = record_types()[name].schema.get("properties", {})
    return [(k, str(v)) for k, v in rec.items() if v and props.get(k, {}).get("x-iso8601")
            and not iso8601.is_valid(str(v), intervals=False, unknown_parts=False)]


def element_of(res: Any, text: str, path: str = "") -> str | None:
    """The path of the element of ``res`` whose value is ``text`` (``effectivePeriod.start``),
    to name it in a finding; None when no element holds it."""
    if isinstance(res, dict):
        for k, v in res.items():
            if v == text and not isinstance(v, (dict, list)):
                return path + k
            if isinstance(v, (dict, list)) and k != "contained":
                found = element_of(v, text, f"{path}{k}.")
                if found:
                    return found
    elif isinstance(res, list):
        for n, v in enumerate(res):
            found = element_of(v, text, f"{path[:-1]}[{n}].")
            if found:
                return found
    return None


def _set_outcomes(outcomes: list[str] | None, status: list[str]) -> None:
    if outcomes is not None:
        outcomes[:] = status


def _read_one(res: dict, file: str | None, ctx: FhirContext, records: Records) -> str:
    """Map one resource of an enrolled person through the first module that claims it."""
    rtype = str(res.get("resourceType"))
    mods = [m for m in resource_modules() if m.RESOURCE_TYPE == rtype]
    c = _ctx_for(ctx, res, file)
    if not mods:
        count_scope(ctx.log, "type", file, rtype, "no mapping to the trial records")
        return OUT_OF_SCOPE
    mod = next((m for m in mods if not hasattr(m, "claims") or m.claims(res, c)), None)
    if mod is None:
        if c.status is None and res.get("hasMember"):  # a panel: its members are resources of their own
            c.out_of_scope("panel", code_label(res.get("code")), rtype)
        elif c.status is None:
            c.out_of_scope("code", code_label(res.get("code") or res.get("event")), rtype)
        return OUT_OF_SCOPE
    got = mod.from_fhir(res, c)
    outcome = c.status or (CONVERTED if got else REJECTED)
    if outcome != CONVERTED:
        return outcome
    rows = got if isinstance(got, list) else [got]
    kept = 0
    for item in rows:
        name, rec = item if isinstance(item, tuple) else (mod.RECORD_TYPES[0], item)
        missing = [k for k in ESSENTIAL.get(name, record_types()[name].required) if not rec.get(k)]
        if missing:
            c.issue("error", "FHIR-INCOMPLETE", f"no {', '.join(missing)} for the {name} record; not converted",
                    field=missing[0])
            continue
        bad = bad_dates(name, rec)
        for key, text in bad:
            c.issue("error", "FHIR-DATE-INVALID", f"{element_of(res, text) or key} {text!r} is no date and time "
                    f"(ISO 8601: a real calendar day, hours 00-23, offsets -12:00 to +14:00); the {name} record "
                    "is not converted", field=element_of(res, text) or key, value=text)
        if bad:
            continue
        records[name].append({**rec, "_where": dict(c.where)})
        kept += 1
    return CONVERTED if kept else REJECTED


def code_label(cc: Any) -> str:
    """``system|code`` of a CodeableConcept's first coding (its text when it has none)."""
    if not isinstance(cc, dict):
        return "(no code)"
    for c in cc.get("coding") or []:
        if c.get("code"):
            return f"{c.get('system') or ''}|{c['code']}"
    return cc.get("text") or "(no code)"


def _membership(resources: list[dict], files: list, status: list[str], ctx: FhirContext,
                links: dict[str, dict] | None) -> tuple[dict, int] | None:
    """The subject record of the person, with the index of the resource it came from (their
    ResearchSubject in the study, else the Patient), or None when the person is not a subject
    of the study (every resource out of scope) or cannot be one (every resource rejected)."""
    facts, log, study = ctx.facts, ctx.log, ctx.study
    patients = [i for i, r in enumerate(resources) if r.get("resourceType") == "Patient"]
    candidates = []
    for i, res in enumerate(resources):
        if res.get("resourceType") != "ResearchSubject":
            continue
        kind, site = facts.study_of((res.get("study") or {}).get("reference"))
        if kind == "other":
            status[i] = OUT_OF_SCOPE
            count_scope(log, "study", files[i], "ResearchSubject", site)
            continue
        candidates.append((i, site if kind == "site" else None))
    p = patients[0] if patients else None
    person = patient.from_fhir(resources[p], _ctx_for(ctx, resources[p], files[p])) if p is not None else {}
    if p is not None:
        status[p] = CONVERTED
    if candidates:
        # one person enrolled twice: the first enrolment (earliest period.start; then input
        # order) is the subject, whatever order the files come in; a later one is named
        candidates.sort(key=lambda c: (iso8601.sort_key((resources[c[0]].get("period") or {}).get("start")), c[0]))
        i, site = candidates[0]
        first_start = (resources[i].get("period") or {}).get("start")
        for j, _site in candidates[1:]:
            c = _ctx_for(ctx, resources[j], files[j])
            c.issue("warning", "FHIR-SEVERAL-RESEARCHSUBJECTS", f"the Patient has another ResearchSubject in the study "
                    f"({rid(resources[i])}" + (f", enrolled from {first_start}" if first_start else "")
                    + "), which is read as the subject; this one is not converted (no second subject)",
                    field="individual", value=_subject_identifier(resources[j]))
            status[j] = REJECTED
        rs = resources[i]
        c = _ctx_for(ctx, rs, files[i])
        rec = {**{k: v for k, v in person.items() if k != "subject_id"}, **research_subject.from_fhir(rs, c)}
        consent_key = references.key_of((rs.get("consent") or {}).get("reference"))
        if not rec.get("consent_date") and consent_key in ctx.group:  # R4 ResearchSubject.consent -> Consent
            rec["consent_date"] = str(ctx.group[consent_key].get("dateTime") or "") or None
            ctx.used.add(consent_key)
        if not rec.get("site_id"):
            rec["site_id"] = site or facts.default_site
            if not site and facts.default_site:
                count_scope(log, "assumed", files[i], "ResearchSubject",
                            f"site {facts.default_site} ({facts.default_site_why}): the ResearchSubject's study is "
                            "the sponsor study, not a site-level study")
        if p is None:
            c.issue("warning", "FHIR-NO-PATIENT", "the ResearchSubject's Patient is not in the input: the subject has "
                    "no sex, birth date or other demographics", field="individual",
                    value=(rs.get("individual") or rs.get("subject") or {}).get("reference"))
        where = (i, c.where)
    elif p is not None and person.get("subject_id"):  # our own output without a ResearchSubject
        rec = {"study_id": study.study_id, **person}
        c = _ctx_for(ctx, resources[p], files[p])
        c.issue("warning", "FHIR-NO-RESEARCHSUBJECT", "Patient has a trial subject id but no ResearchSubject in the "
                "input: no arm, consent date or site of its own", value=person["subject_id"])
        rec.setdefault("site_id", facts.default_site)
        where = (p, c.where)
    elif p is not None and links:
        c = _ctx_for(ctx, resources[p], files[p])
        rec = _link(person, resources[p], links, log, facts.dialect, {"file": files[p]})
        if not rec.get("subject_id"):
            return _not_enrolled(resources, files, status, ctx)
        rec = {"study_id": study.study_id, **rec}
        where = (p, c.where)
    else:
        return _not_enrolled(resources, files, status, ctx)
    index, loc = where
    rec["study_id"] = study.study_id
    for key, text in bad_dates("subject", rec):  # the person stays a subject; the date is not taken
        source = next((r for r in (resources[index], resources[p] if p is not None else None)
                       if r is not None and element_of(r, text)), resources[index])
        ctx.log.error("FHIR-DATE-INVALID", f"{element_of(source, text) or key} {text!r} is no date (ISO 8601: a "
                      f"real calendar day); the subject's {key.replace('_', ' ')} is left empty",
                      file=files[resources.index(source)], record=rid(source), field=element_of(source, text) or key,
                      value=text)
        rec[key] = None
    for name in ("consent_date", "sex"):
        if not rec.get(name):
            ctx.log.warning("FHIR-SUBJECT-INCOMPLETE", f"subject has no {name.replace('_', ' ')} "
                            f"({'ResearchSubject.period.start' if name == 'consent_date' else 'Patient.gender'}); "
                            f"{'RFICDTC' if name == 'consent_date' else 'SEX'} stays empty", **loc, field=name)
    missing = [k for k in ESSENTIAL["subject"] if not rec.get(k)]
    if missing:
        log.error("FHIR-NO-" + ("SUBJECT-ID" if "subject_id" in missing else "SITE"),
                  f"the subject has no {' or '.join(missing)}: none of the Patient's resources are converted"
                  + (" (the identifier systems the site uses are named in the study configuration's fhir: section "
                     "or the site's file in mappings/fhir/sites/)" if "subject_id" in missing else ""),
                  **loc, field=missing[0])
        for k in range(len(resources)):
            if status[k] != OUT_OF_SCOPE:
                status[k] = REJECTED
        return None
    status[index] = CONVERTED
    return {**{k: v for k, v in rec.items() if v not in (None, "")}, "_where": dict(loc)}, index


def _subject_identifier(res: dict) -> str | None:
    """The first identifier value of a ResearchSubject (to name a second enrolment)."""
    for ident in res.get("identifier") or []:
        if isinstance(ident, dict) and ident.get("value"):
            return str(ident["value"])
    return None


def _not_enrolled(resources: list[dict], files: list, status: list[str], ctx: FhirContext) -> None:
    """A person with no ResearchSubject in the study (and not linked): out of scope, counted
    per file and resource type.  Resources that name a Patient the input does not hold (a
    reference to nothing) are named too: one warning per file and Patient reference."""
    if not any(r.get("resourceType") in ("Patient", "ResearchSubject") for r in resources):
        missing: dict[tuple, list] = {}
        for k, res in enumerate(resources):
            ref = references.person_reference(res)
            if ref and status[k] != OUT_OF_SCOPE:
                missing.setdefault((files[k], ref), []).append(rid(res))
                status[k] = OUT_OF_SCOPE  # named below, not counted as a Patient's who is not enrolled
        for (file, ref), names in missing.items():  # one line per file at the end (report_scope)
            count_scope(ctx.log, "no-patient", file, ref, min(names), n=len(names))
    for k, res in enumerate(resources):
        if status[k] != OUT_OF_SCOPE:
            status[k] = OUT_OF_SCOPE
            count_scope(ctx.log, "not-enrolled", files[k], str(res.get("resourceType")), "")
    return None


def check_resources(resources: list[dict], study, log, facts: StudyFacts, *, files: list[str] | None = None,
                    outcomes: list[str] | None = None) -> None:
    """Resources that belong to no person (study-level, reference data, types with no
    Patient): what became of each.  Our ResearchStudy resources are converted (they give the
    study and its sites), the study treatment's Medications too (they name what EX gets);
    an OperationOutcome's problems are findings; everything else is out of scope."""
    files = list(files) if files is not None else [None] * len(resources)
    status = []
    for res, file in zip(resources, files):
        rtype = str(res.get("resourceType"))
        key = references.resource_key(res)
        if rtype == "ResearchStudy" and (key in facts.sponsor or key in facts.site_studies):
            status.append(CONVERTED)
            continue
        if rtype == "Medication" and is_study_treatment(res.get("code"), study, facts.dialect):
            status.append(CONVERTED)
            continue
        if rtype == "OperationOutcome":
            for issue in res.get("issue") or []:
                if issue.get("severity") in ("fatal", "error", "warning"):
                    log.warning("FHIR-SENDER-OUTCOME", f"the sender reports {issue.get('severity')} "
                                f"{issue.get('code')!r}: {issue.get('diagnostics') or (issue.get('details') or {}).get('text') or ''}",
                                file=file, record=rid(res), value=issue.get("code"))
        why = {"ResearchStudy": "another study", "Medication": "not the study treatment"}.get(
            rtype, "no Patient of the trial" if rtype in mapped_types() else "no mapping to the trial records")
        count_scope(log, "type", file, rtype, why)
        status.append(OUT_OF_SCOPE)
    if outcomes is not None:
        outcomes[:] = status


def is_study_treatment(cc: Any, study, dialect: Dialect) -> bool:
    """True when a medication's CodeableConcept names the study treatment: one of the
    dialect's codes, or its text / a coding display is the treatment's name or description in
    the study configuration or one of the dialect's names (compared without case)."""
    if not isinstance(cc, dict):
        return False
    codings = [c for c in (dialect.normalise_codings(cc) or {}).get("coding") or [] if isinstance(c, dict)]
    if any((c.get("system"), c.get("code")) in dialect.treatment_codes for c in codings):
        return True
    treatment = study.config.get("treatment") or {}
    names = {_fold(treatment.get("name")), _fold(treatment.get("description"))} | set(dialect.treatment_names)
    names.discard("")
    texts = [cc.get("text")] + [c.get("display") for c in codings]
    return any(_fold(t) in names for t in texts if t)


def report_scope(log) -> None:
    """Turn the out-of-scope counters the workers kept (``fhir-scope:<kind>`` tables of
    ``IssueLog.unmapped``) into one info finding per file and distinct value, with its count:
    so a site sees what it sends that the study does not take."""
    for table in sorted(k for k in log.unmapped if k.startswith(SCOPE_TABLE)):
        kind = table[len(SCOPE_TABLE):]
        counts = log.unmapped.pop(table)
        if kind == "not-enrolled":
            per_file: dict[str, Counter] = {}
            for key, n in counts.items():
                file, rtype, _ = key.split("\t", 2)
                per_file.setdefault(file, Counter())[rtype] += n
            for file, types in sorted(per_file.items()):
                detail = ", ".join(f"{t} {n}" for t, n in sorted(types.items()))
                log.info("FHIR-NOT-ENROLLED", f"{types.get('Patient', 0)} Patient(s) with no ResearchSubject in the "
                         f"study (nor linked by medical record number): their {sum(types.values())} resource(s) are "
                         f"out of scope ({detail})", file=file or None, value=sum(types.values()))
            continue
        if kind == "no-patient":  # per file: resources naming Patients the input does not hold
            absent: dict[str, list] = {}
            for key, n in counts.items():
                file, ref, first = key.split("\t", 2)
                absent.setdefault(file, []).append((ref, first, n))
            for file, refs in sorted(absent.items()):
                refs.sort()
                total = sum(n for _r, _f, n in refs)
                log.warning("FHIR-PATIENT-NOT-IN-INPUT", f"{total} resource(s) name {len(refs)} Patient(s) the input "
                            f"does not hold ({', '.join(r for r, _f, _n in refs[:3])}{' …' if len(refs) > 3 else ''}): "
                            "they belong to no known subject and are not converted", file=file or None,
                            record=refs[0][1], field="subject", value=refs[0][0])
            continue
        for key, n in sorted(counts.items()):
            file, rtype, value = key.split("\t", 2)
            code, message = _SCOPE_MESSAGES[kind]
            log.info(code, message.format(n=n, type=rtype, value=value), file=file or None,
                     record=rtype, field=_SCOPE_FIELDS.get(kind), value=value)


_SCOPE_MESSAGES = {
    "code": ("FHIR-OUT-OF-SCOPE-CODE", "{n} {type} resource(s) with code {value}: not in the study's tables; "
                                       "not converted"),
    "medication": ("FHIR-OUT-OF-SCOPE-MEDICATION", "{n} {type} resource(s) of {value}: not the study treatment "
                                                   "(add its code to the study's fhir: treatment section if it is); "
                                                   "not converted"),
    "type": ("FHIR-OUT-OF-SCOPE-TYPE", "{n} {type} resource(s): {value}; not converted"),
    "status": ("FHIR-OUT-OF-SCOPE-STATUS", "{n} {type} resource(s) with status {value}: nothing to record; "
                                           "not converted"),
    "study": ("FHIR-OTHER-STUDY", "{n} {type} resource(s) in another study ({value}); not converted"),
    "panel": ("FHIR-PANEL", "{n} {type} panel(s) {value}: a panel records no result of its own, its members "
                            "are read on their own"),
    "element": ("FHIR-ELEMENT-NOT-MAPPED", "{n} {type} resource(s) with {value}"),
    "assumed": ("FHIR-ASSUMED", "{n} {type} resource(s) read with {value}"),
}
_SCOPE_FIELDS = {"code": "code", "medication": "medication", "status": "status", "study": "study",
                 "panel": "hasMember", "element": "element", "assumed": None, "type": "resourceType"}


def record_order(name: str):
    """Sort key for records read from FHIR: the record type's key; visits in date order per
    subject (the order a site writes them, and the one SV keeps for rows without --SEQ)."""
    key = ("subject_id", "start", "visit") if name == "visit" else record_types()[name].key
    return lambda r: tuple(r.get(k, "") for k in key)


def mapped_types() -> frozenset[str]:
    return frozenset(resource_order())


def person_of(resource: dict, aliases: dict[str, str] | None = None) -> str:
    """The key of the Patient a resource belongs to ("" when none): the group key the engine
    spills FHIR input by.  ``urn:`` references resolve through ``aliases`` (fullUrl -> key);
    one that does not is returned as it is (the caller may learn it later)."""
    if resource.get("resourceType") == "Patient":
        return references.resource_key(resource)
    ref = references.person_reference(resource)
    if ref is None:
        return ""
    return references.key_of(ref, aliases) or ref


__all__ = ["resource_modules", "resource_order", "study_resources", "subject_resources", "StudyFacts", "InputSurvey",
           "read_study", "study_id_named", "mrn_index", "subject_records", "check_resources", "report_scope",
           "person_of", "record_order", "mapped_types", "is_study_treatment", "code_label"]


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


def fhir_to_records(resources: Iterable, study, log, include_identifiers: bool = False,
                    links: dict[str, dict] | None = None, dialect: Dialect | None = None) -> Records:
    """Canonical records from resources held in memory (tests, small inputs), given alone or
    as ``(fullUrl, resource)``: study-level facts first, then each person's group, as the
    engine does from a spill (without its accounting)."""
    located = _located(resources)
    survey = InputSurvey()
    aliases: dict[str, str] = {}
    medications: dict[str, dict] = {}
    for url, res in located:
        survey.take(res)
        if url and res.get("resourceType") == "Patient":
            aliases[url] = references.resource_key(res, url)
        if res.get("resourceType") == "Medication":
            medications[references.resource_key(res, url)] = res
            if url:
                medications[url] = res
    facts = read_study(located, study, log, dialect=dialect, survey=survey, medications=medications)
    groups: dict[str, list[dict]] = {}
    unowned: list[dict] = []
    for url, res in located:
        key = person_of(res, aliases)
        if key:
            groups.setdefault(key, []).append(res)
        else:
            unowned.append(res)
    out = Records(study_id=study.study_id)
    for key in sorted(groups):
        got = subject_records(groups[key], study, log, facts, links=links, include_identifiers=include_identifiers)
        for name, rows in got.items():
            out.rows[name].extend(rows)
    check_resources(unowned, study, log, facts)
    for name, rows in out.items():
        rows.sort(key=record_order(name))
    report_scope(log)
    return out
