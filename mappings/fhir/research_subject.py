"""Subject record (+ its disposition records) <-> FHIR R4 ResearchSubject (the person's
participation in the study).

Mapped: subject_id and USUBJID (identifiers), consent_date -> period.start,
planned_arm -> assignedArm, actual_arm -> actualArm, study -> ResearchStudy reference,
individual -> Patient reference.  site_id, cohort (strings) and relapse_date (a dateTime) go to
trialbridge extensions (``mappings/fhir/extensions.yaml``).
study_id is the study being converted (``ctx.study``); a ResearchStudy of another study in the
input is reported by the reader (FHIR-STUDY-MISMATCH).

Disposition records.  R4 has one ``status`` (value set research-subject-status) and no list
of disposition events, so:

* **every** disposition record of the subject is kept, exactly as given and in record order,
  in a complex extension ``https://trialbridge.org/fhir/StructureDefinition/disposition`` with
  sub-extensions ``event`` (DSDECOD: valueCodeableConcept, the NCIt coding of its NCOMPLT or
  PROTMLST term, text as given), ``verbatim`` (DSTERM, valueString), ``category`` (DSCAT:
  valueCodeableConcept) and ``date`` (DSSTDTC: valueDateTime; a site-local time as for every
  dateTime, see ``mappings.fhir``).  Files written before (``urn:`` URL, valueString parts) are
  still read.  Consent milestones (INFORMED CONSENT OBTAINED …) are kept
  there too: a Consent resource would add nothing the records hold.
* ``status`` summarises the **final disposition event** (the latest-dated record whose
  category — or, when empty, its disposition-table DSCAT — is DISPOSITION EVENT):
  SCREEN FAILURE -> ``ineligible`` ("did not meet one or more criteria"), any other
  completion / non-completion reason (COMPLETED, WITHDRAWAL BY SUBJECT, LOST TO FOLLOW-UP,
  ADVERSE EVENT, DEATH …; codelist NCOMPLT) -> ``off-study`` ("ended their participation …
  because their treatment/observation is complete or through not responding, withdrawal,
  non-compliance and/or adverse event").  R4 ``withdrawn`` means withdrawn *before
  registration*, so it is not used for a withdrawal after enrolment.  The final event's date is
  also period.end (not read back: the extension holds it).
* without a disposition event, status comes from screen_failure as before (Y: ineligible,
  N: on-study, empty: candidate).  When the status is disposition-derived, screen_failure
  (Y/N) is carried in the extension ``screen-failure`` (the NCIt coding of the NY term).

Not round-tripped: a status written by another system without our extensions gives no
disposition records and, unless it is ineligible/on-study/candidate, no screen_failure value.
"""
from __future__ import annotations

from trialbridge.converters.core import iso8601
from trialbridge.mappings import terminology
from trialbridge.mappings.fhir import (EXT, SUBJECT_ID_SYSTEM, USUBJID_SYSTEM, FhirContext, clean, complex_extension,
                                      extension, extension_text, extensions, get_datetime, identifier_value, is_uri,
                                      read_extensions, set_datetime)
from trialbridge.mappings.fhir.ids import resource_id
from trialbridge.mappings.fhir.patient import patient_id
from trialbridge.mappings.fhir.research_study import site_study_id_of, study_id_of

RESOURCE_TYPE = "ResearchSubject"
RECORD_TYPES = ("subject",)
ORDER = 30

EXTRA = ("site_id", "cohort", "relapse_date")
STATUS = {"Y": "ineligible", "N": "on-study", "": "candidate"}
SCREEN_FAILURE = {v: k for k, v in STATUS.items()}
EXT_DISPOSITION = EXT + "disposition"
EXT_SCREEN_FAILURE = EXT + "screen-failure"
DISPOSITION_FIELDS = ("event", "verbatim", "category", "date")
DISPOSITION_EVENT = "DISPOSITION EVENT"
# final disposition event (DSDECOD) -> ResearchSubject.status; every other NCOMPLT reason: off-study
STATUS_BY_EVENT = {"SCREEN FAILURE": "ineligible"}
ENDED = "off-study"


def to_fhir(record: dict, ctx: FhirContext, dispositions: list[dict] | tuple | None = None) -> dict:
    sid = record["subject_id"]
    if dispositions is None:  # the subject's disposition records, gathered by the caller
        dispositions = ctx.dispositions.get(sid, [])
    res: dict = {"resourceType": "ResearchSubject", "id": resource_id("ResearchSubject", ctx.study_id, sid)}
    ext = extensions(record, EXTRA, ctx)
    final = final_event(dispositions)
    if final is not None and record.get("screen_failure"):
        ext.append(extension("screen-failure", record["screen_failure"], ctx))
    ext.extend(disposition_extension(d, ctx) for d in dispositions)
    if ext:
        res["extension"] = ext
    res["identifier"] = [{"system": SUBJECT_ID_SYSTEM, "value": sid}]
    if record.get("site_id"):
        res["identifier"].append({"system": USUBJID_SYSTEM, "value": ctx.study.usubjid(record["site_id"], sid)})
    res["status"] = status_of(final) if final is not None else STATUS[record.get("screen_failure", "")]
    period: dict = {}
    set_datetime(period, "start", record.get("consent_date"), ctx.clock(record))
    if final is not None:
        set_datetime(period, "end", final["date"], ctx.clock(record))
    if period:
        res["period"] = period
    # the site's own study when the site is configured (FHIR-to-CDISC IG: site study partOf sponsor study)
    study_id = record.get("study_id") or ctx.study_id
    if record.get("site_id") and ctx.study.site(record["site_id"]) is not None and study_id == ctx.study_id:
        res["study"] = {"reference": f"ResearchStudy/{site_study_id_of(study_id, record['site_id'])}"}
    else:
        res["study"] = {"reference": f"ResearchStudy/{study_id_of(study_id)}"}
    res["individual"] = {"reference": f"Patient/{patient_id(ctx.study_id, sid)}"}
    if record.get("planned_arm"):
        res["assignedArm"] = record["planned_arm"]
    if record.get("actual_arm"):
        res["actualArm"] = record["actual_arm"]
    return res


def from_fhir(resource: dict, ctx: FhirContext) -> dict:
    """The subject record (study facts); the disposition records: :func:`dispositions_from_fhir`.

    Read as the HL7 FHIR-to-CDISC Joint Mapping IG has it: the subject id is the identifier
    the input's facts say carries it (``ctx.facts``: our subject-id system, the site
    dialect's, or each ResearchSubject's only identifier); the arm is the site's arm text
    mapped through the dialect (or a configured arm code or name) — an arm that matches no
    configured arm is left empty and reported with the choices; consent is period.start."""
    status = resource.get("status")
    extra = read_extensions(resource, EXTRA + ("screen_failure",))
    has_dispositions = any(is_uri(e.get("url"), EXT_DISPOSITION) for e in resource.get("extension") or [])
    if has_dispositions:
        screen_failure = extra.pop("screen_failure", None)
    else:
        screen_failure = extra.pop("screen_failure", None) or SCREEN_FAILURE.get(status)
        if screen_failure is None:
            screen_failure = SCREEN_FAILURE_BY_STATUS.get(status)
        if screen_failure is None:
            ctx.issue("warning", "FHIR-UNMAPPED-CODE", f"ResearchSubject.status {status!r} says nothing about screen "
                      "failure; screen_failure left empty", field="status", value=status)
    if ctx.facts is not None:
        subject_id, _system = ctx.facts.subject_id_of(resource)
    else:
        subject_id = identifier_value(resource, SUBJECT_ID_SYSTEM)
    return clean({
        "study_id": ctx.study_id,
        "subject_id": subject_id,
        "consent_date": get_datetime(resource.get("period"), "start"),
        "planned_arm": arm_of(resource.get("assignedArm"), "assignedArm", ctx),
        "actual_arm": arm_of(resource.get("actualArm"), "actualArm", ctx),
        "screen_failure": screen_failure,
        **extra,
    })


# ResearchSubject.status (R4 research-subject-status) of another system -> screen_failure
SCREEN_FAILURE_BY_STATUS = {
    "not-registered": "Y", "eligible": "N", "on-study-intervention": "N", "on-study-observation": "N",
    "follow-up": "N", "off-study": "N", "pending-on-study": "N", "potential-candidate": "", "screening": "",
    "withdrawn": "",
}


def arm_of(text: str | None, element: str, ctx: FhirContext) -> str | None:
    """The configured arm code for the arm a site wrote: the site dialect's arm map, else a
    configured arm code or name as written (without case); None, reported with the choices,
    for an arm that matches none."""
    if not text:
        return None
    code = ctx.dialect.arm_code(text)
    if code is None and ctx.study.arm(text) is not None:
        code = text
    if code is None:
        folded = " ".join(text.split()).casefold()
        code = next((a["code"] for a in ctx.study.config["arms"]
                     if folded in (a["code"].casefold(), " ".join(a["name"].split()).casefold())), None)
    if code is None:
        choices = "; ".join(f"{a['code']} ({a['name']})" for a in ctx.study.config["arms"])
        ctx.issue("warning", "FHIR-ARM-UNMATCHED", f"{element} {text!r} matches no arm of the study configuration "
                  f"(choices: {choices}); ARM/ARMCD left empty — map the site's arm names in the study's fhir: arms "
                  "or the site's file in mappings/fhir/sites/", field=element, value=text)
    return code


def dispositions_from_fhir(resource: dict, subject_id: str, ctx: FhirContext) -> list[dict]:
    """The disposition records kept in the ResearchSubject's disposition extensions."""
    out = []
    for ext in resource.get("extension") or []:
        if not is_uri(ext.get("url"), EXT_DISPOSITION):
            continue
        values = {}
        for sub in ext.get("extension") or []:
            value = extension_text(sub)
            if sub.get("url") in DISPOSITION_FIELDS and value not in (None, ""):
                values[sub["url"]] = str(value)
        if not values.get("event") or not values.get("date"):
            ctx.issue("error", "FHIR-DISPOSITION-INCOMPLETE", "disposition extension without event or date; "
                      "not converted", field="extension", value=values.get("event") or values.get("date"))
            continue
        out.append(clean({"subject_id": subject_id, **values}))
    return out


# --------------------------------------------------------------------------- helpers


def disposition_extension(record: dict, ctx: FhirContext) -> dict:
    return complex_extension("disposition", {n: record[n] for n in DISPOSITION_FIELDS if record.get(n)}, ctx)


def _category(record: dict) -> str:
    if record.get("category"):
        return record["category"].strip().upper()
    entry = terminology.load_table("disposition").lookup(record.get("event", ""))
    return (entry or {}).get("dscat") or DISPOSITION_EVENT


def final_event(dispositions) -> dict | None:
    """The latest-dated disposition event (not a protocol milestone), or None; of events on
    the same date the last listed."""
    events = [d for d in dispositions if d.get("event") and d.get("date") and _category(d) == DISPOSITION_EVENT]
    return iso8601.latest(events, key=lambda d: d["date"])


def status_of(final: dict) -> str:
    entry = terminology.load_table("disposition").lookup(final["event"])
    decod = entry["cdisc"] if entry else final["event"].strip().upper()
    return STATUS_BY_EVENT.get(decod, ENDED)
