"""FHIR R4 mapping modules: one pair of pure functions per resource.

Each module (``patient``, ``research_study``, ``research_subject``,
``medication_administration``, ``observation``, ``adverse_event``) has
``to_fhir(record, ctx) -> dict`` (R4 JSON as plain dicts, numbers as ``decimal.Decimal``)
and ``from_fhir(resource, ctx) -> dict`` (a canonical record, text values only).
They never read clocks or files; ids are uuid5 of natural keys (:mod:`.ids`).

Choices shared by all modules (documented once, here)
-----------------------------------------------------
* **Code systems chosen by trialbridge** (not registered with HL7; CDISC publishes no FHIR
  canonical URIs for its codelists):
  ``http://cdisc.org/ct/lbtestcd`` (LBTESTCD), ``http://cdisc.org/ct/cptestcd`` (CPTESTCD),
  ``http://cdisc.org/ct/spectype`` (SPECTYPE).  Codes are the CDISC submission values.
* **Local extensions and identifier systems** live under ``urn:trialbridge:fhir:``: a record
  field with no home in core R4 (race, cohort, course, AE grade …) is carried as
  ``{"url": "urn:trialbridge:fhir:extension:<field>", "valueString": <text as given>}``
  so that records -> FHIR -> records is identity.  A receiving server keeps unknown
  extensions; a profile (e.g. US Core race) can replace one later without engine changes.
* **Local times without a UTC offset.**  An R4 ``dateTime`` with a time must carry seconds and
  a timezone; the records hold site-local times such as ``2020-06-05T08:30`` and the study
  configuration states no offset.  Inventing one (+08:00) would be inventing data, so such a
  value is written at *date* precision (``2020-06-05``, which is true) and the exact text as
  given is kept in a primitive extension ``_<element>.extension[url=...:local-datetime]``.
  Readers that ignore extensions see a correct, coarser date; trialbridge reads the exact
  text back.  Values that already are valid FHIR (date only, partial ``YYYY``/``YYYY-MM``,
  or a full time with seconds and offset) are written unchanged.
* **Decimals keep their text**: ``1.30`` becomes ``Decimal("1.30")`` and is serialised as
  ``1.30``; text that a JSON number cannot reproduce exactly (``.5``, ``1e3``) is not turned
  into a number (valueString / an issue instead).
* **Identifying fields** (name, MRN, phone, address) go to Patient only when
  ``ctx.include_identifiers`` is true (hospital-internal use).  The default is False: they are
  omitted, and ``from_fhir`` never copies Patient names/telecom/address into records unless
  the flag is set (and then only into the ``x-identifying`` fields, never exported to SDTM).
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from trialbridge.converters.core import jsoncodec
from trialbridge.mappings import terminology

TB = "urn:trialbridge:fhir:"
EXT = TB + "extension:"
EXT_LOCAL_DATETIME = EXT + "local-datetime"
SUBJECT_ID_SYSTEM = TB + "subject-id"
USUBJID_SYSTEM = TB + "usubjid"
AE_NUMBER_SYSTEM = TB + "ae-number"
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
LBTESTCD_SYSTEM = "http://cdisc.org/ct/lbtestcd"
CPTESTCD_SYSTEM = "http://cdisc.org/ct/cptestcd"
SPECTYPE_SYSTEM = "http://cdisc.org/ct/spectype"

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

    @property
    def study_id(self) -> str:
        return self.study.study_id

    @property
    def dialect(self):
        """The site's FHIR dialect the input is read with (an empty one without facts)."""
        from trialbridge.mappings.fhir.dialect import Dialect

        return getattr(self.facts, "dialect", None) or Dialect()

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


# --------------------------------------------------------------------------- dates


def set_datetime(target: dict, key: str, text: str | None) -> None:
    """Write a record date/time to ``target[key]`` as an R4 dateTime (see module docstring)."""
    if not text:
        return
    if FHIR_DATETIME.fullmatch(text):
        target[key] = text
        return
    target[key] = text[:10]
    target["_" + key] = {"extension": [{"url": EXT_LOCAL_DATETIME, "valueString": text}]}


def get_datetime(source: dict | None, key: str) -> str | None:
    if not source:
        return None
    for ext in (source.get("_" + key) or {}).get("extension", []):
        if ext.get("url") == EXT_LOCAL_DATETIME and ext.get("valueString"):
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


def coded(table: str, value: str | None, ctx: FhirContext, field_name: str) -> dict | None:
    """CodeableConcept for a record value: the table's FHIR coding plus the value as text."""
    if not value:
        return None
    cc: dict[str, Any] = {}
    entry = terminology.load_table(table).lookup(value)
    fhir_coding = (entry or {}).get("fhir") or (entry or {}).get("snomed")
    if fhir_coding:
        cc["coding"] = [{k: fhir_coding[k] for k in ("system", "code", "display") if fhir_coding.get(k)}]
    else:
        ctx.issue("warning", "FHIR-UNMAPPED-CODE", f"{value!r} has no FHIR code in table {table}; "
                  "written as CodeableConcept.text only", field=field_name, value=value)
    cc["text"] = value
    return cc


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


def extensions(record: dict, names: tuple[str, ...]) -> list[dict]:
    return [{"url": EXT + n.replace("_", "-"), "valueString": record[n]} for n in names if record.get(n)]


def read_extensions(resource: dict, names: tuple[str, ...]) -> dict:
    wanted = {EXT + n.replace("_", "-"): n for n in names}
    out = {}
    for ext in resource.get("extension", []) or []:
        name = wanted.get(ext.get("url"))
        if name and ext.get("valueString") not in (None, ""):
            out[name] = ext["valueString"]
    return out


def identifier_value(resource: dict, system: str) -> str | None:
    for ident in resource.get("identifier", []) or []:
        if ident.get("system") == system and ident.get("value"):
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
