"""Exposure record <-> FHIR R4 MedicationAdministration (one per administered dose).

Mapped: treatment -> contained Medication.code.text, dose_form -> Medication.form (the NCIt
coding of its CDISC FRM term, text as given),
lot_number -> Medication.batch.lotNumber (the Medication is contained, referenced as "#med");
start/end -> effectivePeriod (site-local times: see ``mappings.fhir``);
dose/dose_unit -> dosage.dose (value as exact decimal, unit as given, system UCUM, code the
UCUM code); route -> dosage.route (SNOMED CT coding from the routes table and the NCIt coding
of the CDISC ROUTE term, text as given).
planned_dose_per_bsa and bsa_m2 -> extensions with Quantity values (UCUM <dose unit>/m2 and m2),
frequency -> extension with the NCIt coding of its CDISC FREQ term, course and
adjustment_reason -> string extensions (``mappings/fhir/extensions.yaml``).
status is ``completed``: an exposure record is a dose that was given.

Not round-tripped: a dose that is not an exact decimal (then dosage.text carries
"<dose> <unit>" and an issue FHIR-NOT-NUMERIC is raised); a route read from FHIR without
text comes back as the CDISC term of its SNOMED code.
"""
from __future__ import annotations

from trialbridge.mappings.fhir import (FhirContext, clean, coded, decode, extensions, get_datetime, number_text, quantity,
                           quantity_unit, read_extensions, set_datetime, subject_of, table_cdisc_coding)
from trialbridge.mappings.fhir import encounter
from trialbridge.mappings.fhir.ids import resource_id
from trialbridge.mappings.fhir.patient import patient_id

RESOURCE_TYPE = "MedicationAdministration"
RECORD_TYPES = ("exposure",)
ORDER = 50

EXTRA = ("planned_dose_per_bsa", "bsa_m2", "frequency", "course", "adjustment_reason")


def to_fhir(record: dict, ctx: FhirContext) -> dict:
    sid = record["subject_id"]
    medication: dict = {"resourceType": "Medication", "id": "med", "code": {"text": record["treatment"]}}
    if record.get("dose_form"):
        form = table_cdisc_coding("dose_form", record["dose_form"])  # CDISC FRM term as its NCIt code
        medication["form"] = {**({"coding": [form]} if form else {}), "text": record["dose_form"]}
    if record.get("lot_number"):
        medication["batch"] = {"lotNumber": record["lot_number"]}
    res: dict = {
        "resourceType": "MedicationAdministration",
        "id": resource_id("MedicationAdministration", ctx.study_id, sid, record["start"], record["treatment"]),
        "contained": [medication],
    }
    ext = extensions(record, EXTRA, ctx)
    if ext:
        res["extension"] = ext
    res["status"] = "completed"
    res["medicationReference"] = {"reference": "#med"}
    res["subject"] = {"reference": f"Patient/{patient_id(ctx.study_id, sid)}"}
    period: dict = {}
    clock = ctx.clock(record)
    set_datetime(period, "start", record["start"], clock)
    set_datetime(period, "end", record.get("end"), clock)
    res["effectivePeriod"] = period
    dosage: dict = {}
    route = coded("routes", record.get("route"), ctx, "route")
    if route:
        dosage["route"] = route
    dose = quantity(record["dose"], record.get("dose_unit"), ctx, "dose")
    if dose is None:
        ctx.issue("warning", "FHIR-NOT-NUMERIC", f"dose {record['dose']!r} is not an exact decimal; written as "
                  "dosage.text and not read back as a dose", field="dose", value=record["dose"])
        dosage["text"] = f"{record['dose']} {record.get('dose_unit', '')}".strip()
    else:
        dosage["dose"] = dose
    res["dosage"] = dosage
    if ctx.encounters is not None:  # the Encounter of the visit on the dose's day
        encounter.link(res, "context", ctx.encounters.for_dose(record, record.get("start")))
    return res


def from_fhir(resource: dict, ctx: FhirContext) -> dict | None:
    subject_id = subject_of(resource, ctx)
    if subject_id is None:
        return None
    medication = {}
    ref = (resource.get("medicationReference") or {}).get("reference", "")
    if ref.startswith("#"):
        medication = next((c for c in resource.get("contained", []) if c.get("id") == ref[1:]), {})
    code = medication.get("code") or resource.get("medicationCodeableConcept") or {}
    treatment = code.get("text") or next((c.get("display") or c.get("code") for c in code.get("coding", [])), None)
    period = resource.get("effectivePeriod") or {}
    start = get_datetime(period, "start") or get_datetime(resource, "effectiveDateTime")
    dosage = resource.get("dosage") or {}
    dose = dosage.get("dose") or {}
    return clean({
        "subject_id": subject_id,
        "treatment": treatment,
        "start": start,
        "end": get_datetime(period, "end"),
        "dose": number_text(dose.get("value")),
        "dose_unit": quantity_unit(dose),
        "route": decode("routes", dosage.get("route"), ctx, "route"),
        "dose_form": (medication.get("form") or {}).get("text"),
        "lot_number": (medication.get("batch") or {}).get("lotNumber"),
        **read_extensions(resource, EXTRA),
    })
