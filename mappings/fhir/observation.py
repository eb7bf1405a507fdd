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
from trialbridge.mappings.fhir import (COMPARATOR, LEGACY_CPTESTCD_SYSTEM, LEGACY_LBTESTCD_SYSTEM, LOINC, NCIT,
                                      FhirContext, cdisc_coding, clean, exact_decimal, get_datetime, number_text,
                                      quantity, quantity_unit, set_datetime, subject_of, table_cdisc_coding)
from trialbridge.mappings.fhir import encounter
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


def from_fhir(resource: dict, ctx: FhirContext) -> tuple[str, dict] | None:
    """(record type, record) or None (reported) when the code is not one we map."""
    resource = encounter.fill_display(resource, "encounter", ctx.encounter_labels)
    kind, entry = kind_of(resource)
    code = resource.get("code") or {}
    if kind is None:
        shown = "|".join(f"{c.get('system')}#{c.get('code')}" for c in code.get("coding", []) or []) or code.get("text")
        ctx.issue("error", "FHIR-UNMAPPED-CODE", f"Observation code {shown!r} is in neither lab_tests nor "
                  "cell_phenotypes; not converted", field="code", value=shown)
        return None
    subject_id = subject_of(resource, ctx)
    if subject_id is None:
        return None
    out: dict = {"subject_id": subject_id, "visit": (resource.get("encounter") or {}).get("display"),
                 "collected": get_datetime(resource, "effectiveDateTime")}
    if kind == "cell_phenotype":
        out["population"] = code.get("text") or entry["population"]
        out["measure"] = entry["measure"]
    else:
        out["test"] = code.get("text") or entry["name"]
    q = resource.get("valueQuantity")
    unit = None
    if q:
        out["result"] = (q.get("comparator") or "") + (number_text(q.get("value")) or "")
        unit = quantity_unit(q)
    elif resource.get("valueString") is not None:
        out["result"] = resource["valueString"]
    absent = resource.get("dataAbsentReason")
    if absent and absent.get("text"):
        out["not_done_reason"] = absent["text"]
    for rng in (resource.get("referenceRange") or [])[:1]:
        for key, element in (("ref_low", "low"), ("ref_high", "high")):
            if rng.get(element):
                out[key] = number_text(rng[element].get("value"))
                unit = unit or quantity_unit(rng[element])
    out["unit"] = unit
    ref = (resource.get("specimen") or {}).get("reference", "")
    specimen = next((c for c in resource.get("contained", []) or [] if "#" + str(c.get("id")) == ref), None)
    if specimen:
        stype = specimen.get("type") or {}
        out["specimen"] = stype.get("text") or next((c.get("code") for c in stype.get("coding", [])), None)
        if kind == "lab_result":
            out["accession"] = (specimen.get("accessionIdentifier") or {}).get("value")
    return kind, clean(out)
