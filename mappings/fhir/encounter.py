"""Visit record <-> FHIR R4 Encounter (one per visit of a subject, done or missed).

Mapped: visit (the label as written by the site) -> extension
``https://trialbridge.org/fhir/StructureDefinition/visit`` and ``type[0].text`` (a reader without our
extension still sees the label); status DONE -> ``finished``, NOT DONE -> ``cancelled``;
start/end -> period.start/end (site-local times: see ``mappings.fhir``);
reason -> ``reasonCode[0].text``; subject -> Patient reference.  ``class`` is required by R4
and the records hold no setting: a study visit is written as ``AMB`` (ambulatory,
v3-ActCode).  The id is uuid5 of study, subject, visit label and start.

Results and doses point at the Encounter of their visit: :func:`index` builds the lookup
from the visit records and :func:`link` sets ``Observation.encounter`` /
``MedicationAdministration.context`` to ``{"reference": "Encounter/<id>", "display": <label>}``.
An Observation is linked when an Encounter of the same subject, same visit label and same
date exists (otherwise it keeps the display-only reference); a MedicationAdministration
(exposure records carry no visit label) when exactly one Encounter of the subject falls on
the dose's start date.  On reading, a display-only or unlabelled reference gets its label
from the Encounter it names (:func:`labels`); the display, when present, wins so that the
record's label comes back exactly.

Not round-tripped: an empty visit status comes back as DONE (its documented default);
an Encounter status other than finished/cancelled (planned, in-progress …) gives an empty
status and is reported (FHIR-UNMAPPED-CODE); ``entered-in-error`` Encounters are not
converted (FHIR-ENTERED-IN-ERROR).  Encounter.class and a result's link to its Encounter are not
record fields.
"""
from __future__ import annotations

from trialbridge.mappings.fhir import (add_resource_key, EXT, OUT_OF_SCOPE, FhirContext, clean, extension, get_datetime, read_extensions,
                                       set_datetime, subject_of)
from trialbridge.mappings.fhir.ids import resource_id
from trialbridge.mappings.fhir.patient import patient_id

RESOURCE_TYPE = "Encounter"
RECORD_TYPES = ("visit",)
ORDER = 40

EXT_VISIT = EXT + "visit"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
AMBULATORY = {"system": ACT_CODE, "code": "AMB", "display": "ambulatory"}
# visit status (records) <-> Encounter.status (R4 encounter-status, required binding)
STATUS = {"DONE": "finished", "NOT DONE": "cancelled", "": "finished"}
VISIT_STATUS = {"finished": "DONE", "cancelled": "NOT DONE"}


def encounter_id(study_id: str, record: dict) -> str:
    return resource_id("Encounter", study_id, record["subject_id"], record["visit"], record["start"])


def to_fhir(record: dict, ctx: FhirContext) -> dict:
    sid = record["subject_id"]
    res: dict = {"resourceType": "Encounter", "id": encounter_id(ctx.study_id, record),
                 "extension": [extension("visit", record["visit"], ctx)]}
    add_resource_key(res)
    status = record.get("status") or ""
    res["status"] = STATUS.get(status.strip().upper(), "")
    if not res["status"]:
        ctx.issue("warning", "FHIR-UNMAPPED-CODE", f"visit status {status!r} is neither DONE nor NOT DONE; "
                  "written as 'unknown'", field="status", value=status)
        res["status"] = "unknown"
    res["class"] = dict(AMBULATORY)
    res["type"] = [{"text": record["visit"]}]
    res["subject"] = {"reference": f"Patient/{patient_id(ctx.study_id, sid)}"}
    period: dict = {}
    clock = ctx.clock(record)
    set_datetime(period, "start", record["start"], clock)
    set_datetime(period, "end", record.get("end"), clock)
    res["period"] = period
    if record.get("reason"):
        res["reasonCode"] = [{"text": record["reason"]}]
    return res


def claims(resource: dict, ctx: FhirContext) -> bool:
    """Every Encounter is a visit unless the site dialect names its study visits: then only
    those (and planned visit names or aliases of the study) are; any other encounter of the
    hospital is out of scope, counted by label."""
    if not ctx.dialect.visits:
        return True
    label = label_of(resource)
    if ctx.dialect.visit_name(label) or _planned(label, ctx):
        return True
    ctx.out_of_scope("code", label or "(no label)", "Encounter")
    return False


def _planned(label: str | None, ctx: FhirContext) -> bool:
    if not label:
        return False
    folded = " ".join(label.split()).upper()
    aliases = {k.upper() for k in (ctx.study.config.get("visit_aliases") or {})}
    return folded in aliases or folded.replace(" ", "") in aliases or any(v.name.upper() == folded
                                                                          for v in ctx.study.visits)


def from_fhir(resource: dict, ctx: FhirContext) -> dict | None:
    status = resource.get("status")
    if status == "entered-in-error":
        ctx.issue("info", "FHIR-ENTERED-IN-ERROR", "Encounter entered in error; not converted", field="status",
                  value=status)
        ctx.status = OUT_OF_SCOPE
        return None
    subject_id = subject_of(resource, ctx)
    if subject_id is None:
        return None
    label = label_of(resource)
    label = ctx.dialect.visit_name(label) or label
    start = get_datetime(resource.get("period"), "start")
    if not label or not start:
        ctx.issue("error", "FHIR-VISIT-INCOMPLETE", "Encounter has no visit label (extension visit or type.text) "
                  "or no period.start; not converted", field="visit" if not label else "period.start",
                  value=label or start)
        return None
    if status not in VISIT_STATUS:
        ctx.issue("warning", "FHIR-UNMAPPED-CODE", f"Encounter.status {status!r} is neither finished nor "
                  "cancelled; visit status left empty", field="status", value=status)
    return clean({
        "subject_id": subject_id,
        "visit": label,
        "start": start,
        "end": get_datetime(resource.get("period"), "end"),
        "status": VISIT_STATUS.get(status),
        "reason": next((r.get("text") for r in resource.get("reasonCode") or [] if r.get("text")), None),
    })


def label_of(resource: dict) -> str | None:
    """The visit label of an Encounter: our extension, else the first type text."""
    found = read_extensions(resource, ("visit",)).get("visit")
    return found or next((t.get("text") for t in resource.get("type") or [] if t.get("text")), None)


# --------------------------------------------------------------------------- links from results and doses


class Index:
    """Encounters of the visit records, looked up by (subject, label, date) and (subject, date)."""

    def __init__(self, study_id: str, visits) -> None:
        self.by_label: dict[tuple[str, str, str], str] = {}
        by_date: dict[tuple[str, str], list[str]] = {}
        for v in visits:
            if not (v.get("subject_id") and v.get("visit") and v.get("start")):
                continue
            ref = f"Encounter/{encounter_id(study_id, v)}"
            self.by_label.setdefault((v["subject_id"], v["visit"], v["start"][:10]), ref)
            by_date.setdefault((v["subject_id"], v["start"][:10]), []).append(ref)
        self.by_date = {k: refs[0] for k, refs in by_date.items() if len(refs) == 1}

    def for_result(self, record: dict, when: str | None) -> str | None:
        if not record.get("visit") or not when:
            return None
        return self.by_label.get((record["subject_id"], record["visit"], when[:10]))

    def for_dose(self, record: dict, when: str | None) -> str | None:
        return self.by_date.get((record["subject_id"], when[:10])) if when else None


def index(study_id: str, visits) -> Index:
    return Index(study_id, visits)


def link(resource: dict, element: str, ref: str | None) -> None:
    """Point ``resource[element]`` at Encounter ``ref`` (keeping an existing display)."""
    if ref:
        resource[element] = {"reference": ref, **({"display": resource[element]["display"]}
                                                  if (resource.get(element) or {}).get("display") else {})}


def labels(encounters) -> dict[str, str]:
    """"Encounter/<id>" -> visit label, for resolving references on reading."""
    out = {}
    for res in encounters:
        label = label_of(res)
        if label and res.get("id"):
            out[f"Encounter/{res['id']}"] = label
    return out


def fill_display(resource: dict, element: str, known: dict[str, str]) -> dict:
    """``resource`` with ``resource[element].display`` taken from the Encounter it references
    when it has none (a copy; the input is not changed)."""
    target = resource.get(element) or {}
    ref = target.get("reference")
    if target.get("display") or not ref or ref not in known:
        return resource
    return {**resource, element: {**target, "display": known[ref]}}
