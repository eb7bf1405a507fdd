"""Study configuration <-> FHIR R4 ResearchStudy (one per study).

Written from the study configuration (not from records): identifier (ClinicalTrials.gov
registry id), title, sponsor (display), arms (code -> arm.name, name -> arm.description).
``status`` is required by R4 and the configuration carries none: the value of the
configuration's ``status`` key is used when present, else ``active`` — reported as an info
issue (FHIR-DEFAULTED), as it is not data from the study.
``from_fhir`` gives ``{"study_id": ...}`` only: arms and visits stay in the configuration.

Site-level studies: as the HL7 FHIR-to-CDISC mapping IG presumes, each site of the
configuration is its own ResearchStudy (identifier site-id, ``partOf`` the sponsor study,
``location`` the site's country), and a ResearchSubject's ``study`` is its site's study.
``site_of`` reads the site id back from such a study (used when a ResearchSubject carries
no site extension).
"""
from __future__ import annotations

from trialbridge.mappings.fhir import SID, FhirContext, is_uri
from trialbridge.mappings.fhir.ids import resource_id

RESOURCE_TYPE = "ResearchStudy"
RECORD_TYPES = ()  # built from the study configuration, not from records
ORDER = 10

REGISTRY_SYSTEM = "https://clinicaltrials.gov"
STUDY_ID_SYSTEM = SID + "study-id"
SITE_ID_SYSTEM = SID + "site-id"
ISO_3166 = "urn:iso:std:iso:3166"


def study_id_of(study_id: str) -> str:
    return resource_id("ResearchStudy", study_id)


def site_study_id_of(study_id: str, site_id: str) -> str:
    return resource_id("ResearchStudy", study_id, "site", site_id)


def site_to_fhir(config: dict, site: dict, status: str) -> dict:
    """The site-level ResearchStudy of one configured site, part of the sponsor study."""
    res: dict = {"resourceType": "ResearchStudy", "id": site_study_id_of(config["study_id"], site["site_id"]),
                 "identifier": [{"system": SITE_ID_SYSTEM, "value": site["site_id"]}],
                 "partOf": [{"reference": f"ResearchStudy/{study_id_of(config['study_id'])}"}],
                 "title": f"{' '.join(str(config.get('title') or config['study_id']).split())} — site {site['site_id']}"
                          + (f" ({site['name']})" if site.get("name") else ""),
                 "status": status}
    if site.get("country"):
        res["location"] = [{"coding": [{"system": ISO_3166, "code": site["country"]}]}]
    return res


def site_of(resource: dict) -> str | None:
    """The site id of a site-level ResearchStudy, or None for any other ResearchStudy."""
    if not resource.get("partOf"):
        return None
    return next((i.get("value") for i in resource.get("identifier", []) or [] if is_uri(i.get("system"), SITE_ID_SYSTEM)),
                None)


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
        if is_uri(ident.get("system"), STUDY_ID_SYSTEM):
            return {"study_id": ident["value"]}
    for ident in resource.get("identifier", []) or []:
        if ident.get("system") == REGISTRY_SYSTEM:
            return {"study_id": ident["value"]}
    return {}
