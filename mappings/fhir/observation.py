"""Lab result and cell phenotype records <-> FHIR R4 Observation (category laboratory).

code: a LOINC coding (when the terminology table has a confirmed LOINC code) plus the CDISC
test code as an NCI Thesaurus coding (system NCIt, code the C-code of the LBTESTCD term
for a lab_result or of the CPTESTCD term for a cell_phenotype, display the LBTESTCD / CPTESTCD
submission value; see ``mappings.fhir``) — and code.text = the internal test name (lab) or
population (cell phenotype) as given.  The record type and, for cell phenotypes, the measure
(COUNT / PERCENT) are read back from the NCIt coding (or the LOINC code when that is the only
coding; or the invented ``http://cdisc.org/ct/...`` systems of files written before).

value: ``valueQuantity`` (exact decimal, unit as given, system UCUM, code UCUM) for a numeric
result; ``<2.0`` style results keep their comparator (``comparator: "<"``, value 2.0);
anything else is ``valueString``.  No result: status ``cancelled`` and dataAbsentReason
``not-performed`` with the not-done reason as text.  ref_low/ref_high -> referenceRange
low/high (same unit), and Observation.interpretation (HL7 v3 L/H/N) derived from the numeric
result and that range by the --NRIND rule (then the NCIt code of the NRIND term) — derived, so
not read back.  specimen -> a
contained Specimen ("#specimen") whose type is the NCIt coding of its SPECTYPE term (text as
given), with accession -> Specimen.accessionIdentifier.
collected -> effectiveDateTime (local times: see ``mappings.fhir``); visit -> encounter as a
display-only Reference (no Encounter resources are written).

Not round-tripped: a non-numeric ref_low/ref_high (reported FHIR-NOT-NUMERIC, not written);
an Observation whose code is neither in the lab_tests nor the cell_phenotypes table
(reported FHIR-UNMAPPED-CODE, not converted).
"""
from __future__ import annotations

from trialbridge.mappings import terminology
from trialbridge.mappings.fhir import (add_resource_key, COMPARATOR, LEGACY_CPTESTCD_SYSTEM, LEGACY_LBTESTCD_SYSTEM, LOINC, NCIT,
                                       FhirContext, cdisc_coding, clean, exact_decimal, quantity, set_datetime,
                                       subject_of, table_cdisc_coding)
from trialbridge.mappings.fhir import encounter, findings
from trialbridge.mappings.fhir.ids import resource_id
from trialbridge.mappings.fhir.patient import patient_id

RESOURCE_TYPE = "Observation"
RECORD_TYPES = ("lab_result", "cell_phenotype")
ORDER = 60

LABORATORY = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                          "code": "laboratory", "display": "Laboratory"}]}
DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"


def observation_id(kind: str, study_id: str, record: dict) -> str:
    if kind == "cell_phenotype":
        return resource_id("Observation", kind, study_id, record["subject_id"], record["collected"],
                           record["population"], record["measure"])
    return resource_id("Observation", kind, study_id, record["subject_id"], record["collected"], record["test"])


def _code(kind: str, record: dict, ctx: FhirContext) -> dict:
    if kind == "cell_phenotype":
        text = record["population"]
        entry = terminology.cp_test(record["population"], record["measure"])
        cdisc = entry and cdisc_coding("CPTESTCD", entry["cptestcd"])
        table, field_name = "cell_phenotypes", "population"
    else:
        text = record["test"]
        entry = terminology.lab_test(record["test"])
        cdisc = entry and cdisc_coding("LBTESTCD", entry["lbtestcd"])
        table, field_name = "lab_tests", "test"
    coding = []
    if entry is None:
        terminology.count_unmapped(table, text, ctx.log)
        ctx.issue("error", "FHIR-UNMAPPED-CODE", f"{text!r} is not in terminology table {table}; Observation.code "
                  "carries the text only and cannot be read back", field=field_name, value=text)
    else:
        if entry.get("loinc"):
            coding.append({"system": LOINC, "code": entry["loinc"], "display": entry["loinc_display"]})
        if cdisc:
            coding.append(cdisc)
    return {"coding": coding, "text": text} if coding else {"text": text}


def to_fhir(record: dict, ctx: FhirContext, kind: str | None = None) -> dict:
    kind = kind or ctx.record_type or "lab_result"
    sid = record["subject_id"]
    res: dict = {"resourceType": "Observation", "id": observation_id(kind, ctx.study_id, record)}
    add_resource_key(res)
    if record.get("specimen"):
        specimen: dict = {"resourceType": "Specimen", "id": "specimen"}
        if record.get("accession"):
            specimen["accessionIdentifier"] = {"value": record["accession"]}
        spec = table_cdisc_coding("specimen", record["specimen"])
        specimen["type"] = {"coding": [spec], "text": record["specimen"]} if spec else {"text": record["specimen"]}
        res["contained"] = [specimen]
    elif record.get("accession"):
        ctx.issue("warning", "FHIR-NOT-MAPPED", "accession without specimen is not written to FHIR",
                  field="accession", value=record["accession"])
    result = record.get("result")
    res["status"] = "final" if result else "cancelled"
    res["category"] = [LABORATORY]
    res["code"] = _code(kind, record, ctx)
    res["subject"] = {"reference": f"Patient/{patient_id(ctx.study_id, sid)}"}
    if record.get("visit"):
        res["encounter"] = {"display": record["visit"]}
    set_datetime(res, "effectiveDateTime", record["collected"], ctx.clock(record))
    unit = record.get("unit")
    if result:
        q = quantity(result, unit, ctx, "unit")
        m = COMPARATOR.fullmatch(result)
        if q is None and m and exact_decimal(m.group(2)) is not None:
            q = {"value": exact_decimal(m.group(2)), "comparator": m.group(1),
                 **{k: v for k, v in (quantity(m.group(2), unit, ctx, "unit") or {}).items() if k != "value"}}
        if q is not None:
            res["valueQuantity"] = q
        else:
            res["valueString"] = result
            if unit:
                ctx.issue("warning", "FHIR-NOT-MAPPED", f"non-numeric result {result!r} is written as valueString; "
                          f"its unit {unit!r} is not written", field="unit", value=unit)
    else:
        reason = record.get("not_done_reason")
        res["dataAbsentReason"] = {"coding": [{"system": DATA_ABSENT, "code": "not-performed" if reason else "unknown"}],
                                   **({"text": reason} if reason else {})}
    rng: dict = {}
    for key, element in (("ref_low", "low"), ("ref_high", "high")):
        if record.get(key):
            q = quantity(record[key], unit, ctx, key)
            if q is None:
                ctx.issue("warning", "FHIR-NOT-NUMERIC", f"{key} {record[key]!r} is not an exact decimal; "
                          "not written to referenceRange", field=key, value=record[key])
            else:
                rng[element] = q
    if rng:
        res["referenceRange"] = [rng]
        interpretation = _interpretation(result, record)
        if interpretation:
            res["interpretation"] = [interpretation]
    if record.get("specimen"):
        res["specimen"] = {"reference": "#specimen"}
    if ctx.encounters is not None:  # the Encounter of the visit, when the subject's visits are known
        encounter.link(res, "encounter", ctx.encounters.for_result(record, record.get("collected")))
    return res


def _interpretation(result: str | None, record: dict) -> dict | None:
    """Observation.interpretation (HL7 v3 L / H / N) from the reported numeric result and its
    reference range, both in the reported unit — the same rule as --NRIND
    (``derive.reference_range_indicator``), coded through the nrind table.  Derived, so
    not read back (the range is)."""
    from trialbridge.mappings import derive

    value = derive.to_number(result)
    indicator = derive.reference_range_indicator(value, derive.to_number(record.get("ref_low")),
                                                 derive.to_number(record.get("ref_high")))
    entry = terminology.load_table("nrind").lookup(indicator) if indicator else None
    if not entry or not entry.get("fhir"):
        return None
    coding = {k: entry["fhir"][k] for k in ("system", "code", "display") if entry["fhir"].get(k)}
    cdisc = table_cdisc_coding("nrind", indicator)  # the LBNRIND term's NCIt code
    return {"coding": [coding, *([cdisc] if cdisc else [])]}


def kind_of(resource: dict) -> tuple[str | None, dict | None]:
    """("lab_result" | "cell_phenotype", table entry) for an Observation's code, or (None, None)."""
    codings = (resource.get("code") or {}).get("coding", []) or []
    for c in codings:
        if c.get("system") == NCIT and terminology.lab_test_by_ncit(c.get("code")):
            return "lab_result", terminology.lab_test_by_ncit(c["code"])
        if c.get("system") == NCIT and terminology.cp_test_by_ncit(c.get("code")):
            return "cell_phenotype", terminology.cp_test_by_ncit(c["code"])
        if c.get("system") == LEGACY_LBTESTCD_SYSTEM and terminology.lab_test_by_code(c.get("code")):
            return "lab_result", terminology.lab_test_by_code(c["code"])
        if c.get("system") == LEGACY_CPTESTCD_SYSTEM and terminology.cp_test_by_code(c.get("code")):
            return "cell_phenotype", terminology.cp_test_by_code(c["code"])
    for c in codings:
        if c.get("system") == LOINC:
            if terminology.lab_test_by_loinc(c.get("code")):
                return "lab_result", terminology.lab_test_by_loinc(c["code"])
            if terminology.cp_test_by_loinc(c.get("code")):
                return "cell_phenotype", terminology.cp_test_by_loinc(c["code"])
    return None, None


def _normalised(resource: dict, ctx: FhirContext) -> dict:
    """The resource with its code read through the site dialect (canonical system URIs, the
    standard code of each local code the dialect knows)."""
    code = resource.get("code")
    norm = ctx.dialect.normalise_codings(code)
    return resource if norm is code else {**resource, "code": norm}


def claims(resource: dict, ctx: FhirContext) -> bool:
    """Observations whose code is a lab test or cell phenotype of the study's tables (or has a
    component that is)."""
    resource = _normalised(resource, ctx)
    if kind_of(resource)[0] is not None:
        return True
    return any(kind_of({"code": ctx.dialect.normalise_codings(c.get("code"))})[0] is not None
               for c in resource.get("component") or [] if isinstance(c, dict))


def from_fhir(resource: dict, ctx: FhirContext) -> tuple[str, dict] | list[tuple[str, dict]] | None:
    """(record type, record), one per coded component when the result is given as components,
    or None (reported: out of scope or not converted).  Every shape of a real Observation is
    read or reported (:mod:`.findings`)."""
    resource = encounter.fill_display(_normalised(resource, ctx), "encounter", ctx.encounter_labels)
    kind, entry = kind_of(resource)
    code = resource.get("code") or {}
    if kind is None and not claims(resource, ctx):
        shown = "|".join(f"{c.get('system')}#{c.get('code')}" for c in code.get("coding", []) or []) or code.get("text")
        ctx.out_of_scope("code", shown, "Observation")
        return None
    if not findings.screen(resource, ctx):
        return None
    subject_id = subject_of(resource, ctx)
    if subject_id is None:
        return None
    specimen = findings.specimen_of(resource, ctx)
    collected = findings.when(resource, ctx, specimen)
    base: dict = {"subject_id": subject_id, "visit": findings.visit_label(resource, ctx), "collected": collected}
    if specimen:
        stype = specimen.get("type") or {}
        base["specimen"] = stype.get("text") or next((c.get("code") for c in stype.get("coding", [])), None)
        base["accession"] = (specimen.get("accessionIdentifier") or {}).get("value")
    findings.note_unread(resource, ctx, ("interpretation", "method", "note", "bodySite"))
    if resource.get("hasMember"):
        ctx.not_mapped("hasMember", "a panel's members are read on their own")
    out = []
    if kind is not None:
        out.append((kind, _result(resource, kind, entry, base, ctx, "")))
    for n, component in enumerate(resource.get("component") or []):
        ckind, centry = kind_of({"code": ctx.dialect.normalise_codings(component.get("code"))})
        if ckind is None:
            ctx.not_mapped("component", "a component whose code is in neither lab_tests nor cell_phenotypes")
            continue
        out.append((ckind, _result(component, ckind, centry, base, ctx, f"component[{n}].")))
    if not collected:
        ctx.issue("error", "FHIR-NO-DATE", "Observation has no effective[x], specimen collection time or issued; "
                  "not converted", field="effective[x]")
        return None
    return out[0] if len(out) == 1 else out


def _result(element: dict, kind: str, entry: dict, base: dict, ctx: FhirContext, where: str) -> dict:
    """The record of one result: the Observation itself or one of its components."""
    code = element.get("code") or {}
    out = dict(base)
    text = code.get("text")
    if kind == "cell_phenotype":
        out["population"] = text if text and terminology.cp_test(text, entry["measure"]) is entry else entry["population"]
        out["measure"] = entry["measure"]
        out.pop("accession", None)
    else:
        out["test"] = text if text and terminology.lab_test(text) is entry else entry["name"]
    out["result"], unit = findings.value(element, ctx, where)
    out["not_done_reason"] = findings.not_done_reason(element)
    low, high, range_unit = findings.reference_range(element, ctx, base.get("collected"))
    out["ref_low"], out["ref_high"] = low, high
    out["unit"] = unit or range_unit
    if out["result"] is not None and not unit and range_unit and isinstance(element.get("valueQuantity"), dict):
        ctx.issue("warning", "FHIR-UNIT-FROM-RANGE", f"{where}valueQuantity has no unit; the unit of its reference "
                  f"range ({range_unit}) is taken as the result's", field=f"{where}valueQuantity.unit", value=range_unit)
    return clean(out)
