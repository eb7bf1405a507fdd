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

from trialbridge.mappings.fhir import (add_resource_key, FhirContext, clean, coded, decode, extensions, get_datetime, number_text, quantity,
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
    add_resource_key(res)
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


def medication_of(resource: dict, ctx: FhirContext) -> tuple[dict, dict]:
    """(the Medication resource, its code) an administration names: medicationCodeableConcept,
    or medicationReference to a contained Medication (``#id``), to one of the person's
    resources, or to a Medication elsewhere in the input (read once by the intake)."""
    if isinstance(resource.get("medicationCodeableConcept"), dict):
        return {}, resource["medicationCodeableConcept"]
    ref = (resource.get("medicationReference") or {}).get("reference") or ""
    medication: dict = {}
    if ref.startswith("#"):
        medication = next((c for c in resource.get("contained") or [] if c.get("id") == ref[1:]), {})
    elif ref:
        from trialbridge.mappings.fhir import references

        key = references.key_of(ref, getattr(ctx.facts, "aliases", None))
        medication = ctx.group.get(key) or getattr(ctx.facts, "medications", {}).get(key) \
            or getattr(ctx.facts, "medications", {}).get(ref) or {}
        if key in ctx.group:
            ctx.used.add(key)
    code = medication.get("code")
    if not code and (resource.get("medicationReference") or {}).get("display"):
        code = {"text": resource["medicationReference"]["display"]}
    return medication, code or {}


def claims(resource: dict, ctx: FhirContext) -> bool:
    """Administrations of the study treatment only (its codes or names: the study
    configuration and the site dialect); any other medication is out of scope, counted."""
    if ctx.facts is None:
        return True
    from trialbridge.mappings.fhir.assemble import code_label, is_study_treatment

    _medication, code = medication_of(resource, ctx)
    if is_study_treatment(code, ctx.study, ctx.dialect):
        return True
    ctx.out_of_scope("medication", code_label(code) if code.get("coding") else (code.get("text") or "(no medication)"),
                     "MedicationAdministration")
    return False


def from_fhir(resource: dict, ctx: FhirContext) -> dict | None:
    """The exposure record of one administration of the study treatment.  Status not-done
    (nothing given) and entered-in-error are out of scope; in-progress, on-hold, stopped and
    unknown convert as a dose given and are counted.  An administration recorded with a rate
    (dosage.rateQuantity) or text instead of the amount given is reported naming the element
    and not converted: an exposure record is a dose and its unit."""
    status = resource.get("status")
    if status in ("not-done", "entered-in-error"):
        reason = next((c.get("text") or next((x.get("display") or x.get("code") for x in c.get("coding") or []), None)
                       for c in resource.get("statusReason") or [] if isinstance(c, dict)), None)
        ctx.out_of_scope("status", status + (f" ({reason})" if reason else ""), "MedicationAdministration")
        return None
    if status not in (None, "completed"):
        ctx.not_mapped("status", f"{status}: converted as a dose given")
    subject_id = subject_of(resource, ctx)
    if subject_id is None:
        return None
    medication, code = medication_of(resource, ctx)
    treatment = code.get("text") or next((c.get("display") or c.get("code") for c in code.get("coding", [])), None)
    configured = (ctx.study.config.get("treatment") or {}).get("name")
    # a treatment the study's fhir: treatment: names lists is a study treatment of its own name
    # (a placebo-controlled study names both): EXTRT keeps it
    named = " ".join(str(treatment or "").split()).casefold() in ctx.dialect.treatment_names
    if ctx.facts is not None and configured and treatment != configured and not named:
        ctx.not_mapped("medication", f"{treatment!r} read as the study treatment {configured!r} (EXTRT)")
        treatment = configured
    period = resource.get("effectivePeriod") or {}
    start = get_datetime(period, "start") or get_datetime(resource, "effectiveDateTime")
    end = get_datetime(period, "end")
    dosage = resource.get("dosage") or {}
    dose = dosage.get("dose") or {}
    if number_text(dose.get("value")) is None or not quantity_unit(dose):
        element = next((e for e in ("rateQuantity", "rateRatio", "text") if dosage.get(e)), "dose")
        why = {"rateQuantity": "is a rate, not the amount given", "rateRatio": "is a rate, not the amount given",
               "text": "is text, not an amount", "dose": "has no value and unit"}[element]
        ctx.issue("warning", "FHIR-VALUE-NOT-MAPPED", f"dosage.{element} {why}: an exposure record needs the dose "
                  "given and its unit (dosage.dose); not converted", field=f"dosage.{element}",
                  value=str(dosage.get(element) or dose or "")[:200] or None)
        return None
    if not start:
        other = sorted(k for k in resource if k.lower().startswith("occur"))  # R5's occurence[x] in an R4 shape
        ctx.issue("error", "FHIR-NO-DATE", "MedicationAdministration has no effectiveDateTime or effectivePeriod.start"
                  + (f" ({', '.join(other)} is R5's element, or no FHIR element, in a resource that is otherwise "
                     "R4: give one version's shape)" if other else "") + "; not converted",
                  field=other[0] if other else "effective[x]")
        return None
    return clean({
        "subject_id": subject_id,
        "treatment": treatment,
        "start": start,
        "end": end,
        "dose": number_text(dose.get("value")),
        "dose_unit": quantity_unit(dose),
        "route": decode("routes", dosage.get("route"), ctx, "route"),
        "dose_form": (medication.get("form") or {}).get("text"),
        "lot_number": (medication.get("batch") or {}).get("lotNumber"),
        **read_extensions(resource, EXTRA),
    })
