"""FHIR R4 mapping modules: one pair of pure functions per resource.

Each module (``patient``, ``research_study``, ``research_subject``,
``medication_administration``, ``observation``, ``adverse_event``) has
``to_fhir(record, ctx) -> dict`` (R4 JSON as plain dicts, numbers as ``decimal.Decimal``)
and ``from_fhir(resource, ctx) -> dict`` (a canonical record, text values only).
They never read clocks or files; ids are uuid5 of natural keys (:mod:`.ids`).

Choices shared by all modules (documented once, here)
-----------------------------------------------------
* **CDISC controlled terminology as NCI Thesaurus codes.**  CDISC CT is published by NCI EVS
  inside the NCI Thesaurus (NCIt): every codelist term has an NCIt C-code.  A coded CDISC value
  (LBTESTCD, CPTESTCD, SPECTYPE, ROUTE, AESEV …) is written as a coding in the NCIt code
  system ``http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl`` (the official URL of HL7
  Terminology's CodeSystem v3-nciThesaurus) with the term's C-code as ``code`` and the CDISC
  submission value as ``display`` (:func:`cdisc_coding`; C-codes from the CT extract in
  ``mappings/terminology/ct/``).  Files written before this used invented systems
  (``http://cdisc.org/ct/lbtestcd`` …, submission values as codes); they are still read.
* **Extensions and identifier systems at canonical https URLs we own.**  A record field with no
  home in core R4 (race, cohort, course, AE grade …) is an extension
  ``https://trialbridge.org/fhir/StructureDefinition/<name>``, each defined by an R4
  StructureDefinition shipped in ``schemas/fhir/structuredefinitions/`` and listed, with the
  type of its value, in ``mappings/fhir/extensions.yaml``: numbers are Quantities with a UCUM
  unit (BSA in m2, dose per m2, height, weight), CDISC-coded values CodeableConcepts with the
  NCIt coding and the text as given, dates dateTimes, free text strings.  Identifier systems
  are ``https://trialbridge.org/fhir/sid/<name>``.  The readers also accept the
  ``urn:trialbridge:fhir:…`` URLs of files written before (:func:`is_uri`).
* **Site-local times.**  The records hold date/times as the site wrote them, in site-local
  time without a UTC offset (``2020-06-05T08:30``); an R4 ``dateTime`` with a time must have
  seconds and an offset.  When the study configuration states the site's time zone
  (``sites[].time_zone``, IANA, or ``sites[].utc_offset``) the value is written as the full
  dateTime of that instant, ``2020-06-05T08:30:00+08:00`` (seconds zero-filled, as R4 allows;
  the offset in force at that local time, daylight saving included).  Without it — or for a
  local time that a daylight-saving change makes ambiguous or non-existent — inventing an
  offset would be inventing data, so the value is written at *date* precision
  (``2020-06-05``, which is true).  Either way the text exactly as recorded is kept in the
  primitive extension ``_<element>.extension[url=…/local-datetime]`` (defined in
  ``extensions.yaml``), from which trialbridge reads it back: records -> FHIR -> records is
  identity.  Values that already are valid FHIR (dates, partial ``YYYY``/``YYYY-MM``, full
  times with seconds and offset) are written unchanged, without the extension.  The site is the
  record's own ``site_id`` (subject records) or its subject's (:attr:`FhirContext.subject_sites`,
  filled by ``assemble``); when it is not known, the configured time zone is used only if every
  configured site has the same one.
* **Decimals keep their text**: ``1.30`` becomes ``Decimal("1.30")`` and is serialised as
  ``1.30``; text that a JSON number cannot reproduce exactly (``.5``, ``1e3``) is not turned
  into a number (valueString / an issue instead).
* **Identifying fields** (name, MRN, phone, address) go to Patient only when
  ``ctx.include_identifiers`` is true (hospital-internal use).  The default is False: they are
  omitted, and ``from_fhir`` never copies Patient names/telecom/address into records unless
  the flag is set (and then only into the ``x-identifying`` fields, never exported to SDTM).
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from importlib import resources
from typing import Any

import jsonschema
import yaml

from trialbridge.converters.core import iso8601, jsoncodec
from trialbridge.converters.core.issues import TrialbridgeError, schema_problem
from trialbridge.mappings import terminology
from trialbridge.mappings.terminology import ct

# canonical URLs trialbridge owns (docs/fhir.md): extension definitions and identifier systems
CANONICAL = "https://trialbridge.org/fhir/"
EXT = CANONICAL + "StructureDefinition/"
SID = CANONICAL + "sid/"
# read only: what files written before used for the same extensions and identifier systems
LEGACY_EXT = "urn:trialbridge:fhir:extension:"
LEGACY_SID = "urn:trialbridge:fhir:"
EXT_LOCAL_DATETIME = EXT + "local-datetime"
SUBJECT_ID_SYSTEM = SID + "subject-id"
USUBJID_SYSTEM = SID + "usubjid"
AE_NUMBER_SYSTEM = SID + "ae-number"
# the business identifier of resources that have no natural one of their own (Observation,
# MedicationAdministration, Encounter): value = the resource id, uuid5 of its natural key, so a
# server that assigns its own ids still finds by identifier what an earlier push wrote
RESOURCE_KEY_SYSTEM = SID + "resource-key"
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
# NCI Thesaurus, in which NCI EVS publishes CDISC CT (HL7 Terminology, CodeSystem v3-nciThesaurus)
NCIT = "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl"
# read only: the invented systems earlier versions wrote CDISC submission values in
LEGACY_LBTESTCD_SYSTEM = "http://cdisc.org/ct/lbtestcd"
LEGACY_CPTESTCD_SYSTEM = "http://cdisc.org/ct/cptestcd"

# FHIR R4 dateTime / decimal regexes (datatypes.html): FHIR's own wire grammar, which decides
# whether a record date/time can be written as a dateTime as it is (seconds and offset
# required with a time).  Record and SDTM dates are read by converters/core/iso8601.
FHIR_DATETIME = re.compile(
    r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])"
    r"(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00)))?)?)?")
EXACT_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?")
COMPARATOR = re.compile(r"(<=|>=|<|>)(.*)")


@dataclass
class FhirContext:
    """What the mapping functions need besides the record: the study, the issue log and the
    references resolved within the input (``subjects``: "Patient/<id>" -> subject_id)."""

    study: Any
    log: Any = None
    include_identifiers: bool = False
    where: dict = field(default_factory=dict)
    subjects: dict[str, str] = field(default_factory=dict)
    base_where: dict = field(default_factory=dict)  # the input file, added to every finding
    # what one subject's resources share, set by mappings.fhir.assemble: the record type being
    # written, the Encounters of the subject's visits (to link results and doses), the
    # subject's disposition records (carried by ResearchSubject), Encounter -> visit label
    record_type: str | None = None
    encounters: Any = None
    dispositions: dict[str, list[dict]] = field(default_factory=dict)
    encounter_labels: dict[str, str] = field(default_factory=dict)
    # reading one person's resources (mappings.fhir.assemble.subject_records): the study-level
    # facts of the input (StudyFacts: which studies are ours, how the site's dialect reads),
    # the person's subject id and birth date, the person's other resources by key (Specimen,
    # Consent … that a resource references), the keys of those a converted resource used, and
    # what became of the resource being read (None: converted when it gave a record)
    facts: Any = None
    subject_id: str | None = None
    birth_date: str | None = None
    group: dict[str, dict] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)
    status: str | None = None
    subject_sites: dict[str, str] = field(default_factory=dict)  # subject_id -> site_id, for site-local times
    _clocks: dict = field(default_factory=dict, repr=False)

    @property
    def study_id(self) -> str:
        return self.study.study_id

    @property
    def dialect(self):
        """The site's FHIR dialect the input is read with (an empty one without facts)."""
        from trialbridge.mappings.fhir.dialect import Dialect

        return getattr(self.facts, "dialect", None) or Dialect()

    def clock(self, record: dict | None) -> SiteClock | None:
        """The clock of the site a record was collected at (None: its UTC offset is not known)."""
        record = record or {}
        site = record.get("site_id") or self.subject_sites.get(record.get("subject_id") or "")
        if site not in self._clocks:
            self._clocks[site] = site_clock(self.study, site)
        return self._clocks[site]

    def issue(self, severity: str, code: str, message: str, **where: Any) -> None:
        if self.log is not None:
            self.log.add(severity, code, message, **{**self.where, **where})

    def out_of_scope(self, kind: str, value: Any, resource_type: str | None = None) -> None:
        """The resource being read is not the study's (a code outside its tables, another
        drug, a status that records nothing …): counted per file, kind and value, reported
        once per distinct value at the end (info), never converted."""
        self.status = OUT_OF_SCOPE
        count_scope(self.log, kind, self.where.get("file"),
                    resource_type or str(self.where.get("record", "")).split("/", 1)[0], value)

    def not_mapped(self, element: str, reason: str) -> None:
        """An element of a converted resource that no record field takes: counted per file and
        element, reported once each at the end (info) with the reason."""
        count_scope(self.log, "element", self.where.get("file"),
                    str(self.where.get("record", "")).split("/", 1)[0], f"{element}: {reason}")


OUT_OF_SCOPE = "out_of_scope"
SCOPE_TABLE = "fhir-scope:"  # IssueLog.unmapped tables counting what was not converted, by kind


def count_scope(log, kind: str, file: str | None, resource_type: str, value: Any, n: int = 1) -> None:
    """Count one out-of-scope finding in the run's log (merged across workers like the
    terminology counters; :func:`mappings.fhir.assemble.report_scope` reports them)."""
    if log is not None:
        log.unmapped.setdefault(SCOPE_TABLE + kind, Counter())[f"{file or ''}\t{resource_type}\t{value}"] += n


def legacy_uri(uri: str) -> str | None:
    """The ``urn:trialbridge:fhir:`` URL files written before used for one of our URLs."""
    if uri.startswith(EXT):
        return LEGACY_EXT + uri[len(EXT):]
    if uri.startswith(SID):
        return LEGACY_SID + uri[len(SID):]
    return None


def is_uri(found: Any, ours: str) -> bool:
    """``found`` (an extension url or identifier system read from FHIR) is ``ours``, or the
    ``urn:`` name an earlier trialbridge wrote for it."""
    return isinstance(found, str) and (found == ours or found == legacy_uri(ours))


# --------------------------------------------------------------------------- dates


@dataclass(frozen=True)
class SiteClock:
    """A site's local time: an IANA time zone or a fixed UTC offset (``+08:00``)."""

    time_zone: str | None = None
    utc_offset: str | None = None

    def offset_at(self, local: datetime) -> str | None:
        """The UTC offset (``+08:00``) of a local wall-clock time at the site; None when a
        daylight-saving change makes that local time ambiguous or non-existent."""
        if self.utc_offset:
            return self.utc_offset
        from zoneinfo import ZoneInfo

        zone = ZoneInfo(str(self.time_zone))
        first, second = (local.replace(tzinfo=zone, fold=f).utcoffset() for f in (0, 1))
        if first != second or first is None:
            return None
        # a non-existent local time (spring forward) has one offset per fold but does not round-trip
        if local.replace(tzinfo=zone).astimezone(zone).replace(tzinfo=None) != local:
            return None
        return _offset_text(first)


def _offset_text(delta: timedelta) -> str:
    minutes = int(delta.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def site_clock(study: Any, site_id: str | None) -> SiteClock | None:
    """The clock the study configuration gives a site; for an unknown site, the one every
    configured site shares (None when they differ or none is configured)."""
    sites = (getattr(study, "config", None) or {}).get("sites") or []
    if site_id:
        site = next((s for s in sites if s.get("site_id") == site_id), None)
        return _clock_of(site) if site else None
    clocks = {_clock_of(s) for s in sites}
    return clocks.pop() if len(clocks) == 1 else None


def _clock_of(site: dict) -> SiteClock | None:
    if site.get("time_zone") or site.get("utc_offset"):
        return SiteClock(site.get("time_zone"), site.get("utc_offset"))
    return None


def fhir_datetime(text: str, clock: SiteClock | None) -> str | None:
    """The R4 dateTime of a record date/time with a time and no seconds or offset
    (``2020-06-05T08:30`` -> ``2020-06-05T08:30:00+08:00``): seconds zero-filled, the offset
    the text gives or the site's; None when the text has no minutes or no offset is known."""
    parsed = iso8601.parse(text, unknown_parts=False)
    if parsed is None or parsed.known < 5:
        return None
    year, month, day, hour, minute, second = parsed.fields
    if parsed.offset is not None:
        offset = "Z" if text.endswith("Z") else text[-6:]
    elif clock is not None:
        offset = clock.offset_at(datetime(year, month, day, hour, minute, second or 0))
        if offset is None:
            return None
    else:
        return None
    fraction = f".{parsed.fraction}" if parsed.fraction else ""
    return f"{text[:10]}T{hour:02d}:{minute:02d}:{second or 0:02d}{fraction}{offset}"


def set_datetime(target: dict, key: str, text: str | None, clock: SiteClock | None = None) -> None:
    """Write a record date/time to ``target[key]`` as an R4 dateTime (see module docstring):
    as it is when it is one; else completed with seconds and the site's offset (``clock``),
    or at date precision, with the text as recorded in the local-datetime extension."""
    if not text:
        return
    if FHIR_DATETIME.fullmatch(text):
        target[key] = text
        return
    target[key] = fhir_datetime(text, clock) or text[:10]
    target["_" + key] = {"extension": [{"url": EXT_LOCAL_DATETIME, "valueString": text}]}


def get_datetime(source: dict | None, key: str) -> str | None:
    if not source:
        return None
    for ext in (source.get("_" + key) or {}).get("extension", []):
        if is_uri(ext.get("url"), EXT_LOCAL_DATETIME) and ext.get("valueString"):
            return ext["valueString"]
    value = source.get(key)
    return str(value) if value else None


# --------------------------------------------------------------------------- numbers


def exact_decimal(text: str | None) -> Decimal | None:
    """``Decimal(text)`` when a JSON number reproduces ``text`` exactly, else None."""
    if text is None or not EXACT_DECIMAL.fullmatch(text):
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def number_text(value: Any) -> str | None:
    """A FHIR number as record text, exactly as written in the JSON it was read from
    (the hub codec's :func:`~converters.core.jsoncodec.number_text`); None for no number."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float, Decimal)):
        return jsoncodec.number_text(value)
    return str(value)


def quantity(value_text: str, unit_text: str | None, ctx: FhirContext, field_name: str) -> dict | None:
    """A Quantity for ``value_text`` in ``unit_text`` (UCUM code when the unit is known)."""
    value = exact_decimal(value_text)
    if value is None:
        return None
    q: dict[str, Any] = {"value": value}
    if unit_text:
        q["unit"] = unit_text
        found = terminology.unit(unit_text)
        if found and found.get("ucum"):
            q["system"] = UCUM
            q["code"] = found["ucum"]
        else:
            ctx.issue("warning", "FHIR-UNIT-NOT-UCUM", f"unit {unit_text!r} has no UCUM code in the units table; "
                      "written as Quantity.unit text only", field=field_name, value=unit_text)
    return q


def quantity_unit(q: dict) -> str | None:
    return q.get("unit") or q.get("code")


# --------------------------------------------------------------------------- codes and extensions


def cdisc_coding(codelist: str, value: str | None) -> dict | None:
    """The NCIt coding of a CDISC CT term: ``{system: NCIt, code: <C-code>, display: <submission
    value>}`` for a submission value (or CDISC synonym) of ``codelist`` (short name or C-code);
    None when the value is not a term of that codelist."""
    if not value:
        return None
    found = ct.codelist(codelist)
    submission = found.lookup(value)
    if submission is None:
        return None
    return {"system": NCIT, "code": found.terms[submission], "display": submission}


def table_cdisc_coding(table: str, value: str | None) -> dict | None:
    """The NCIt coding of a record value mapped through a CT-backed terminology table: the
    entry's CDISC value in the table's codelist (an entry may name its own, e.g. a disposition
    event's ``dsdecod_codelist``)."""
    found = terminology.load_table(table)
    entry = found.lookup(value) if value else None
    codelist = (entry or {}).get("dsdecod_codelist") or found.codelist
    if entry is None or not codelist:
        return None
    return cdisc_coding(codelist, entry.get(found.value_field))


def coded(table: str, value: str | None, ctx: FhirContext, field_name: str) -> dict | None:
    """CodeableConcept for a record value: the table's FHIR coding (HL7, SNOMED CT …), then the
    NCIt coding of its CDISC CT term when the table is CT-backed, and the value as text."""
    if not value:
        return None
    entry = terminology.load_table(table).lookup(value)
    fhir_coding = (entry or {}).get("fhir") or (entry or {}).get("snomed")
    codings = [{k: fhir_coding[k] for k in ("system", "code", "display") if fhir_coding.get(k)}] if fhir_coding else []
    cdisc = table_cdisc_coding(table, value)
    if cdisc:
        codings.append(cdisc)
    if not codings:
        ctx.issue("warning", "FHIR-UNMAPPED-CODE", f"{value!r} has no FHIR code in table {table}; "
                  "written as CodeableConcept.text only", field=field_name, value=value)
    return {**({"coding": codings} if codings else {}), "text": value}


def decode(table: str, cc: dict | None, ctx: FhirContext, field_name: str) -> str | None:
    """Record value for a CodeableConcept: its text, else its codes, mapped through ``table``."""
    if not cc:
        return None
    candidates = ([cc["text"]] if cc.get("text") else []) + [c.get("code") for c in cc.get("coding", []) if c.get("code")]
    for cand in candidates:
        entry = terminology.load_table(table).lookup(cand)
        if entry is not None:
            return entry[terminology.load_table(table).value_field]
    if not candidates:
        return None
    # not in the table: the table's own unmapped mode decides, and it is reported
    return terminology.map_term(table, candidates[0], log=ctx.log, where={**ctx.where, "field": field_name})


@lru_cache(maxsize=1)
def extension_definitions() -> dict[str, dict]:
    """``mappings/fhir/extensions.yaml`` (checked against its schema), by extension name."""
    data = yaml.safe_load(resources.files("trialbridge.mappings").joinpath("fhir", "extensions.yaml")
                          .read_text("utf-8"))
    schema = json.loads(resources.files("trialbridge.schemas").joinpath("config", "fhir_extensions.schema.json")
                        .read_text("utf-8"))
    problem = schema_problem(jsonschema.Draft202012Validator(schema), data)
    if problem:
        raise TrialbridgeError(f"mappings/fhir/extensions.yaml: {problem}")
    if data["base"] != EXT or data["legacy_base"] != LEGACY_EXT:
        raise TrialbridgeError("mappings/fhir/extensions.yaml: base and legacy_base must be "
                               f"{EXT!r} and {LEGACY_EXT!r} (mappings.fhir.EXT, LEGACY_EXT)")
    return {e["name"]: e for e in data["extensions"]}


def _coding(spec: dict, text: str) -> dict | None:
    source = spec["coding"]
    if "table" in source:
        return table_cdisc_coding(source["table"], text)
    if "codelist" in source:
        return cdisc_coding(source["codelist"], text)
    return {"system": source["system"], "code": text}


def _unit_code(spec: dict, record: dict) -> str | None:
    if "unit" in spec:
        return spec["unit"]
    base = record.get(spec["unit_field"])
    found = terminology.unit(base) if base else None
    return f"{found['ucum']}{spec['unit_suffix']}" if found and found.get("ucum") else None


def set_extension_value(ext: dict, spec: dict, text: str, ctx: FhirContext, record: dict, name: str) -> bool:
    """Put ``text`` into ``ext`` as the value type ``spec`` declares (False: nothing written)."""
    kind = spec["value"]
    if kind == "string":
        ext["valueString"] = text
    elif kind == "dateTime":
        set_datetime(ext, "valueDateTime", text, ctx.clock(record))
    elif kind == "CodeableConcept":
        coding = _coding(spec, text)
        if coding is None:
            ctx.issue("warning", "FHIR-UNMAPPED-CODE", f"{text!r} has no code for extension {name}; written as "
                      "CodeableConcept.text only", field=name, value=text)
        ext["valueCodeableConcept"] = {**({"coding": [coding]} if coding else {}), "text": text}
    else:  # Quantity
        value = exact_decimal(text)
        if value is None:
            ctx.issue("warning", "FHIR-NOT-NUMERIC", f"{name} {text!r} is not an exact decimal; not written",
                      field=name, value=text)
            return False
        unit = _unit_code(spec, record)
        if unit is None:
            ctx.issue("warning", "FHIR-UNIT-NOT-UCUM", f"{name}: no UCUM unit (from {spec.get('unit_field')!r} "
                      f"{record.get(spec.get('unit_field', ''))!r}); written without unit", field=name, value=text)
        ext["valueQuantity"] = {"value": value, **({"unit": unit, "system": UCUM, "code": unit} if unit else {})}
    return True


def extension(name: str, text: str, ctx: FhirContext, record: dict | None = None) -> dict | None:
    """One simple extension ``<EXT><name>`` with ``text`` as its declared value type."""
    spec = extension_definitions()[name]
    ext: dict[str, Any] = {"url": EXT + name}
    return ext if set_extension_value(ext, spec, text, ctx, record or {}, name) else None


def complex_extension(name: str, values: dict[str, str], ctx: FhirContext) -> dict:
    """A complex extension ``<EXT><name>``: one sub-extension per declared part with a value."""
    subs = []
    for part in extension_definitions()[name]["parts"]:
        text = values.get(part["name"])
        sub: dict[str, Any] = {"url": part["name"]}
        if text and set_extension_value(sub, part, text, ctx, values, f"{name}.{part['name']}"):
            subs.append(sub)
    return {"url": EXT + name, "extension": subs}


def extensions(record: dict, names: tuple[str, ...], ctx: FhirContext) -> list[dict]:
    """The extensions of a record's fields (field ``bsa_m2`` -> extension ``bsa-m2``)."""
    out = []
    for n in names:
        if record.get(n):
            ext = extension(n.replace("_", "-"), record[n], ctx, record)
            if ext is not None:
                out.append(ext)
    return out


def extension_text(ext: dict) -> str | None:
    """The record text of an extension (or sub-extension) value, whichever type we wrote it as
    (``valueString`` as well: what files written before used for every field)."""
    if ext.get("valueString") not in (None, ""):
        return str(ext["valueString"])
    if "valueDateTime" in ext or "_valueDateTime" in ext:
        return get_datetime(ext, "valueDateTime")
    if "valueCodeableConcept" in ext:
        cc = ext["valueCodeableConcept"] or {}
        return cc.get("text") or next((c.get("display") or c.get("code") for c in cc.get("coding") or []), None)
    if "valueQuantity" in ext:
        return number_text((ext["valueQuantity"] or {}).get("value"))
    return None


def read_extensions(resource: dict, names: tuple[str, ...]) -> dict:
    wanted = {}
    for n in names:
        url = EXT + n.replace("_", "-")
        wanted[url] = wanted[legacy_uri(url)] = n
    out = {}
    for ext in resource.get("extension", []) or []:
        name = wanted.get(ext.get("url"))
        text = extension_text(ext) if name else None
        if text not in (None, ""):
            out[name] = text
    return out


def identifier_value(resource: dict, system: str) -> str | None:
    for ident in resource.get("identifier", []) or []:
        if is_uri(ident.get("system"), system) and ident.get("value"):
            return ident["value"]
    return None


def subject_of(resource: dict, ctx: FhirContext, element: str = "subject") -> str | None:
    """subject_id of the Patient a resource points at: the person whose resources are being
    read (the engine grouped them by that Patient, whatever form the reference takes), else
    the reference looked up in ``ctx.subjects``."""
    if ctx.subject_id:
        return ctx.subject_id
    ref = (resource.get(element) or {}).get("reference")
    subject_id = ctx.subjects.get(ref) if ref else None
    if subject_id is None:
        ctx.issue("error", "FHIR-REF-UNRESOLVED", f"{element} reference {ref!r} names no Patient in the input; "
                  "resource not converted", field=element, value=ref)
    return subject_id


def clean(record: dict) -> dict:
    """Drop empty values (records hold only what was recorded)."""
    return {k: v for k, v in record.items() if v not in (None, "")}


def add_resource_key(resource: dict) -> dict:
    """Give ``resource`` (whose id is uuid5 of its natural key) the business identifier
    ``RESOURCE_KEY_SYSTEM | <id>``, before any other identifiers it has."""
    ident = {"system": RESOURCE_KEY_SYSTEM, "value": resource["id"]}
    others = [i for i in resource.get("identifier") or [] if i.get("system") != RESOURCE_KEY_SYSTEM]
    resource["identifier"] = [ident, *others]
    return resource
