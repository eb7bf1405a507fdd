"""Study configuration <-> FHIR R4 ResearchStudy (one per study).

Written from the study configuration (not from records): identifier (ClinicalTrials.gov
registry id), title, sponsor (display), arms (code -> arm.name, name -> arm.description).
``status`` is required by R4 and the configuration carries none: the value of the
configuration's ``status`` key is used when present, else ``active`` — reported as an info
issue (FHIR-DEFAULTED), as it is not data from the study.
``from_fhir`` gives ``{"study_id": ...}`` only: arms and visits stay in the configuration.
"""
from __future__ import annotations

from mappings.fhir import TB, FhirContext
from mappings.fhir.ids import resource_id

REGISTRY_SYSTEM = "https://clinicaltrials.gov"
STUDY_ID_SYSTEM = TB + "study-id"


def study_id_of(study_id: str) -> str:
    return resource_id("ResearchStudy", study_id)


def to_fhir(record: dict, ctx: FhirContext) -> dict:
    """``record`` is the study configuration dict (``study.config``)."""
    config = record
    res: dict = {"resourceType": "ResearchStudy", "id": study_id_of(config["study_id"]),
                 "identifier": [{"system": STUDY_ID_SYSTEM, "value": config["study_id"]}]}
    if config.get("registry_id"):
        res["identifier"].append({"system": REGISTRY_SYSTEM, "value": config["registry_id"]})
    if config.get("title"):
        res["title"] = " ".join(str(config["title"]).split())
    status = config.get("status")
    if not status:
        status = "active"
        ctx.issue("info", "FHIR-DEFAULTED", "ResearchStudy.status is required and the study configuration has no "
                  "'status'; written as 'active'", field="status", value=status)
    res["status"] = status
    if config.get("sponsor"):
        res["sponsor"] = {"display": config["sponsor"]}
    arms = [{"name": a["code"], **({"description": a["name"]} if a.get("name") else {})} for a in config.get("arms", [])]
    if arms:
        res["arm"] = arms
    return res


def from_fhir(resource: dict, ctx: FhirContext) -> dict:
    for ident in resource.get("identifier", []) or []:
        if ident.get("system") == STUDY_ID_SYSTEM:
            return {"study_id": ident["value"]}
    for ident in resource.get("identifier", []) or []:
        if ident.get("system") == REGISTRY_SYSTEM:
            return {"study_id": ident["value"]}
    return {}
