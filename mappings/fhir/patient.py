"""Subject record <-> FHIR R4 Patient (the person; study facts are on ResearchSubject).

Mapped: subject_id (identifier, system https://trialbridge.org/fhir/sid/subject-id, scoped by
the Patient id which is uuid5 of study and subject), sex -> gender (sex table), birth_date ->
birthDate, death_date -> deceasedDateTime.  race, ethnicity (CodeableConcepts with the NCIt
coding of the CDISC term), country (ISO 3166 alpha-3), height_cm and weight_kg (Quantities in
cm and kg) go to trialbridge extensions (no core R4 element outside US Core / vital-signs
Observations; see ``mappings/fhir/extensions.yaml``).

Identifying fields (family_name, given_name, medical_record_number, phone, address) are
written only with ``ctx.include_identifiers`` (name, identifier type MR, telecom, address.text)
and read back only with that flag.  Not round-tripped by default: those five fields.
"""
from __future__ import annotations

from trialbridge.mappings.fhir import (SID, SUBJECT_ID_SYSTEM, FhirContext, clean, coded, decode, extensions,
                                      get_datetime, identifier_value, read_extensions, set_datetime)
from trialbridge.mappings.fhir.ids import resource_id

RESOURCE_TYPE = "Patient"
RECORD_TYPES = ("subject",)
ORDER = 20

EXTRA = ("race", "ethnicity", "country", "height_cm", "weight_kg")
MR_TYPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR",
                       "display": "Medical record number"}]}
ADMINISTRATIVE_GENDER = "http://hl7.org/fhir/administrative-gender"
MRN_SYSTEM = SID + "medical-record-number"


def patient_id(study_id: str, subject_id: str) -> str:
    return resource_id("Patient", study_id, subject_id)


def to_fhir(record: dict, ctx: FhirContext) -> dict:
    res: dict = {"resourceType": "Patient", "id": patient_id(ctx.study_id, record["subject_id"])}
    ext = extensions(record, EXTRA, ctx)
    if ext:
        res["extension"] = ext
    res["identifier"] = [{"system": SUBJECT_ID_SYSTEM, "value": record["subject_id"]}]
    if ctx.include_identifiers:
        if record.get("medical_record_number"):
            res["identifier"].append({"type": MR_TYPE, "system": MRN_SYSTEM, "value": record["medical_record_number"]})
        name = {k: v for k, v in (("family", record.get("family_name")),
                                  ("given", [record["given_name"]] if record.get("given_name") else None)) if v}
        if name:
            res["name"] = [name]
        if record.get("phone"):
            res["telecom"] = [{"system": "phone", "value": record["phone"]}]
        if record.get("address"):
            res["address"] = [{"text": record["address"]}]
    gender = next((c["code"] for c in (coded("sex", record.get("sex"), ctx, "sex") or {}).get("coding", [])
                   if c.get("system") == ADMINISTRATIVE_GENDER), None)
    if gender:
        res["gender"] = gender
    if record.get("birth_date"):
        res["birthDate"] = record["birth_date"]
    set_datetime(res, "deceasedDateTime", record.get("death_date"), ctx.clock(record))
    return res


def from_fhir(resource: dict, ctx: FhirContext) -> dict:
    out = {
        "subject_id": identifier_value(resource, SUBJECT_ID_SYSTEM),
        "sex": decode("sex", {"coding": [{"code": resource["gender"]}]}, ctx, "sex") if resource.get("gender") else None,
        "birth_date": resource.get("birthDate"),
        "death_date": get_datetime(resource, "deceasedDateTime"),
        **read_extensions(resource, EXTRA),
    }
    if ctx.include_identifiers:
        name = (resource.get("name") or [{}])[0]
        out["family_name"] = name.get("family")
        out["given_name"] = " ".join(name.get("given") or []) or None
        out["medical_record_number"] = identifier_value(resource, MRN_SYSTEM) or _mrn(resource, ctx)
        out["phone"] = next((t.get("value") for t in resource.get("telecom") or [] if t.get("system") == "phone"), None)
        out["address"] = next((a.get("text") for a in resource.get("address") or [] if a.get("text")), None)
    return clean(out)


def _mrn(resource: dict, ctx: FhirContext) -> str | None:
    """The medical record number another system wrote: the site dialect's MRN system, else an
    identifier of type MR (HL7 v2-0203)."""
    for system in ctx.dialect.mrn_systems:
        found = identifier_value(resource, system)
        if found:
            return found
    return next((i.get("value") for i in resource.get("identifier") or []
                 if any(c.get("code") == "MR" for c in (i.get("type") or {}).get("coding", [])) and i.get("value")),
                None)


def identifying_values(resource: dict) -> list[tuple[str, str]]:
    """``(kind, value)`` of what identifies the person in a Patient: every name's family,
    given and text; every telecom (phones as phone, anything else as an identifier); every
    identifier's value; every address's lines, city, district, postal code and text (not
    state or country, which identify no one).  For the redaction of free text
    (``converters.core.privacy``); nothing here is written anywhere."""
    out: list[tuple[str, str]] = []

    def add(kind: str, value) -> None:
        if isinstance(value, str) and value.strip():
            out.append((kind, value))

    for name in _dicts(resource.get("name")):
        add("name", name.get("family"))
        add("name", name.get("text"))
        for given in _texts(name.get("given")):
            add("name", given)
    for telecom in _dicts(resource.get("telecom")):
        add("phone" if telecom.get("system") in (None, "phone", "fax", "sms", "pager") else "identifier",
            telecom.get("value"))
    for ident in _dicts(resource.get("identifier")):
        add("identifier", ident.get("value"))
    for address in _dicts(resource.get("address")):
        for line in _texts(address.get("line")):
            add("address", line)
        for part in ("city", "district", "postalCode", "text"):
            add("address", address.get(part))
    # shapes the schema rejects (a name given as text, a telecom not in a list): every text in them
    for element, kind in (("name", "name"), ("telecom", "phone"), ("identifier", "identifier"), ("address", "address")):
        value = resource.get(element)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, dict) for v in value)):
            for text in _leaves(value):
                add(kind, text)
    return out


def _leaves(value) -> list[str]:
    """Every text inside ``value``, codes and URLs of its ``system``/``use`` left out."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [t for v in value for t in _leaves(v)]
    if isinstance(value, dict):
        return [t for k, v in value.items() if k not in ("system", "use", "type", "url") for t in _leaves(v)]
    return []


def _dicts(value) -> list[dict]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _texts(value) -> list:
    return value if isinstance(value, list) else []
