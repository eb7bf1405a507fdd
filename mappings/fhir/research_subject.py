"""Subject record <-> FHIR R4 ResearchSubject (the person's participation in the study).

Mapped: subject_id and USUBJID (identifiers), consent_date -> period.start,
planned_arm -> assignedArm, actual_arm -> actualArm, study -> ResearchStudy reference,
individual -> Patient reference, screen_failure -> status (Y: ineligible, N: on-study,
empty: candidate).  site_id, cohort and relapse_date go to local extensions.
study_id is the study being converted (``ctx.study``); a ResearchStudy of another study in the
input is reported by the reader (FHIR-STUDY-MISMATCH).

Not round-tripped: a status other than ineligible/on-study/candidate written by another
system gives no screen_failure value.
"""
from __future__ import annotations

from mappings.fhir import (FhirContext, SUBJECT_ID_SYSTEM, USUBJID_SYSTEM, clean, extensions, get_datetime,
                           identifier_value, read_extensions, set_datetime)
from mappings.fhir.ids import resource_id
from mappings.fhir.patient import patient_id
from mappings.fhir.research_study import study_id_of

EXTRA = ("site_id", "cohort", "relapse_date")
STATUS = {"Y": "ineligible", "N": "on-study", "": "candidate"}
SCREEN_FAILURE = {v: k for k, v in STATUS.items()}


def to_fhir(record: dict, ctx: FhirContext) -> dict:
    sid = record["subject_id"]
    res: dict = {"resourceType": "ResearchSubject", "id": resource_id("ResearchSubject", ctx.study_id, sid)}
    ext = extensions(record, EXTRA)
    if ext:
        res["extension"] = ext
    res["identifier"] = [{"system": SUBJECT_ID_SYSTEM, "value": sid}]
    if record.get("site_id"):
        res["identifier"].append({"system": USUBJID_SYSTEM, "value": ctx.study.usubjid(record["site_id"], sid)})
    res["status"] = STATUS[record.get("screen_failure", "")]
    period: dict = {}
    set_datetime(period, "start", record.get("consent_date"))
    if period:
        res["period"] = period
    res["study"] = {"reference": f"ResearchStudy/{study_id_of(record.get('study_id') or ctx.study_id)}"}
    res["individual"] = {"reference": f"Patient/{patient_id(ctx.study_id, sid)}"}
    if record.get("planned_arm"):
        res["assignedArm"] = record["planned_arm"]
    if record.get("actual_arm"):
        res["actualArm"] = record["actual_arm"]
    return res


def from_fhir(resource: dict, ctx: FhirContext) -> dict:
    status = resource.get("status")
    if status not in SCREEN_FAILURE:
        ctx.issue("warning", "FHIR-UNMAPPED-CODE", f"ResearchSubject.status {status!r} says nothing about screen "
                  "failure; screen_failure left empty", field="status", value=status)
    return clean({
        "study_id": ctx.study_id,
        "subject_id": identifier_value(resource, SUBJECT_ID_SYSTEM),
        "consent_date": get_datetime(resource.get("period"), "start"),
        "planned_arm": resource.get("assignedArm"),
        "actual_arm": resource.get("actualArm"),
        "screen_failure": SCREEN_FAILURE.get(status),
        **read_extensions(resource, EXTRA),
    })
