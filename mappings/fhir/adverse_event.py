"""Adverse event record <-> FHIR R4 AdverseEvent.

Mapped: ae_number -> identifier (system https://trialbridge.org/fhir/sid/ae-number); term -> event.text;
decoded_term, pt_code -> the first event.coding of system MedDRA
``http://terminology.hl7.org/CodeSystem/mdr`` (code when known, display the PT name); llt,
llt_code -> a second MedDRA coding (read back the same way:
the first MedDRA coding is the PT, a second the LLT);
category -> category.text; start -> date (partial dates YYYY / YYYY-MM are valid R4
dateTimes and are written as given); serious -> seriousness (serious / non-serious, then the
NCIt code of the NY term, text as
given); severity -> severity (severity table: the HL7 code, then the NCIt coding of the CDISC
AESEV term); outcome -> outcome (outcome table: HL7 code, then the NCIt coding of the OUT term);
relatedness -> suspectEntity.causality.assessment (relatedness table), with
suspectEntity.instance a display-only reference to the study treatment.  end (R4 has no
resolution date; a dateTime), body_system, grade, serious_criteria (strings), action_taken (the
NCIt coding of its CDISC ACN term) -> trialbridge extensions.
actuality is ``actual``.  Not written to FHIR: the MedDRA levels above the PT (hlt, hlgt and
the SOC codes), which the dictionary derives again from the PT (``--meddra``).

Coded values keep the record's value in CodeableConcept.text and are read back from it, so
they round-trip exactly.  Read from a FHIR source without text, the code maps through the
table: NOT RELATED goes out as Unassessable-Unclassifiable and such a code comes back as
NOT RELATED; WHO-UMC Certain comes back as RELATED.
"""
from __future__ import annotations

from trialbridge.mappings.fhir import (AE_NUMBER_SYSTEM, FhirContext, cdisc_coding, clean, coded, decode, extensions,
                                      get_datetime, is_uri, read_extensions, set_datetime, subject_of)
from trialbridge.mappings.fhir.ids import resource_id
from trialbridge.mappings.fhir.patient import patient_id

RESOURCE_TYPE = "AdverseEvent"
RECORD_TYPES = ("adverse_event",)
ORDER = 70

EXTRA = ("end", "body_system", "grade", "serious_criteria", "action_taken")
MEDDRA = "http://terminology.hl7.org/CodeSystem/mdr"
SERIOUSNESS_SYSTEM = "http://terminology.hl7.org/CodeSystem/adverse-event-seriousness"
# AESER (NY codelist) <-> R4 adverse-event-seriousness
SERIOUSNESS = {"Y": ("serious", "Serious"), "N": ("non-serious", "Non-serious")}
SERIOUS_BY_CODE = {code: yn for yn, (code, _) in SERIOUSNESS.items()}


def to_fhir(record: dict, ctx: FhirContext) -> dict:
    sid = record["subject_id"]
    res: dict = {"resourceType": "AdverseEvent",
                 "id": resource_id("AdverseEvent", ctx.study_id, sid, record["ae_number"])}
    ext = extensions(record, EXTRA, ctx)
    if ext:
        res["extension"] = ext
    res["identifier"] = {"system": AE_NUMBER_SYSTEM, "value": record["ae_number"]}
    res["actuality"] = "actual"
    if record.get("category"):
        res["category"] = [{"text": record["category"]}]
    event: dict = {}
    codings = []
    if record.get("decoded_term") or record.get("pt_code"):
        codings.append(clean({"system": MEDDRA, "code": record.get("pt_code"), "display": record.get("decoded_term")}))
    if record.get("llt") or record.get("llt_code"):
        if not codings:
            codings.append({"system": MEDDRA})  # no PT: an empty first place keeps the LLT second
        codings.append(clean({"system": MEDDRA, "code": record.get("llt_code"), "display": record.get("llt")}))
    if codings:
        event["coding"] = codings
    event["text"] = record["term"]
    res["event"] = event
    res["subject"] = {"reference": f"Patient/{patient_id(ctx.study_id, sid)}"}
    set_datetime(res, "date", record["start"], ctx.clock(record))
    serious = record.get("serious")
    if serious:
        found = SERIOUSNESS.get(serious.strip().upper())
        if found is None:
            ctx.issue("warning", "FHIR-UNMAPPED-CODE", f"serious {serious!r} is not Y or N; written as text only",
                      field="serious", value=serious)
        codings = ([{"system": SERIOUSNESS_SYSTEM, "code": found[0], "display": found[1]}] if found else []) + \
            [c for c in [cdisc_coding("NY", serious.strip().upper())] if c and found]  # AESER: the NY term's NCIt code
        res["seriousness"] = {**({"coding": codings} if codings else {}), "text": serious}
    for key, table in (("severity", "severity"), ("outcome", "outcome")):
        cc = coded(table, record.get(key), ctx, key)
        if cc:
            res[key] = cc
    causality = coded("relatedness", record.get("relatedness"), ctx, "relatedness")
    if causality:
        treatment = (ctx.study.config.get("treatment") or {}).get("name") or "study treatment"
        res["suspectEntity"] = [{"instance": {"display": treatment}, "causality": [{"assessment": causality}]}]
    return res


def _code(value) -> str | None:
    return str(value).strip() if value not in (None, "") else None


def from_fhir(resource: dict, ctx: FhirContext) -> dict | None:
    """The adverse event record.  An event that did not happen (actuality ``potential``: a
    near miss) is out of scope.  ae_number (AESPID) is our ae-number identifier, else the
    event's own identifier (another system's), else its resource id."""
    if resource.get("actuality") == "potential":
        ctx.out_of_scope("status", "actuality potential", "AdverseEvent")
        return None
    subject_id = subject_of(resource, ctx)
    if subject_id is None:
        return None
    ident = resource.get("identifier") or {}
    if isinstance(ident, list):  # R5 and some R4 senders: a list
        ident = next((i for i in ident if isinstance(i, dict) and is_uri(i.get("system"), AE_NUMBER_SYSTEM)),
                     ident[0] if ident else {})
    event = resource.get("event") or {}
    meddra = [c for c in event.get("coding", []) or [] if isinstance(c, dict) and is_uri(c.get("system"), MEDDRA)]
    pt = meddra[0] if meddra else {}
    llt = meddra[1] if len(meddra) > 1 else {}
    seriousness = resource.get("seriousness") or {}
    serious = seriousness.get("text") or next(
        (SERIOUS_BY_CODE.get(str(c.get("code")).casefold()) for c in seriousness.get("coding", []) if c.get("system") == SERIOUSNESS_SYSTEM),
        None)
    assessment = None
    for entity in resource.get("suspectEntity", []) or []:
        for causality in entity.get("causality", []) or []:
            if causality.get("assessment") and assessment is None:
                assessment = causality["assessment"]
    return clean({
        "subject_id": subject_id,
        "ae_number": ident.get("value") if is_uri(ident.get("system"), AE_NUMBER_SYSTEM) or ctx.facts is not None
        and ident.get("value") else (resource.get("id") if ctx.facts is not None else None),
        "term": event.get("text") or next((c.get("display") for c in event.get("coding", [])), None),
        "decoded_term": pt.get("display"),
        "pt_code": _code(pt.get("code")),
        "llt": llt.get("display"),
        "llt_code": _code(llt.get("code")),
        "category": next((c.get("text") for c in resource.get("category", []) or [] if c.get("text")), None),
        "start": get_datetime(resource, "date"),
        "serious": serious,
        "severity": decode("severity", resource.get("severity"), ctx, "severity"),
        "outcome": decode("outcome", resource.get("outcome"), ctx, "outcome"),
        "relatedness": decode("relatedness", assessment, ctx, "relatedness"),
        **read_extensions(resource, EXTRA),
    })
