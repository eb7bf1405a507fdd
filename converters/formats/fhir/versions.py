"""FHIR R4 <-> R5 for the resources trialbridge writes (pure functions on plain dicts).

The mapping modules speak R4; R5 is a shape conversion on top of them, so records -> R5 is
records -> R4 (:mod:`mappings.fhir` modules) -> :func:`to_r5`, and R5 -> records is
:func:`to_r4` -> ``fhir_to_records``.  No clock, no files, no issue log (except
:func:`detect_versions` and :func:`validate_r5`, which report to one).

API
---
* :func:`to_r5` / :func:`to_r4` — one resource (contained resources included).
* :func:`detect_version` — "R4" | "R5" | None (no shape difference: Patient, most Observations).
* :func:`detect_versions` — the version of a whole input (majority), FHIR-VERSION-MIXED warning.
* :func:`normalise_to_r4` — what a reader applies to an input of either version.
* :func:`validate_r5` — the official R5 JSON schema (``schemas/fhir/fhir.r5.schema.json``,
  jsonschema-rs) on every resource, the fhir.resources R5 models (``fhir.resources.<module>``,
  the package default) only on those it rejected; FHIR-MODEL-R5 / FHIR-SCHEMA-R5 errors.

Tables as data
--------------
The element lists per resource type and version, the renames, the elements always stashed,
the version markers, the code systems and the status/code maps live in
``mappings/fhir/r4_r5.yaml`` (checked by ``schemas/config/r4_r5.schema.json``, sources: the
R4 and R5 resource pages); each code map declares what an unlisted code becomes
(``passthrough``, ``fixed`` or ``error``).  This module holds the logic only.

What moves where (R4 -> R5; :func:`to_r4` is the reverse)
--------------------------------------------------------
ResearchStudy
  status (R4 study-state codes) -> ``progressStatus[0].state`` coded in
  ``http://hl7.org/fhir/research-study-status`` (``actual: true``); R5 ``status`` is the
  *publication* status: in-review -> draft, withdrawn/disapproved -> retired, all else active.
  sponsor -> ``associatedParty`` role ``sponsor``, principalInvestigator -> role
  ``primary-investigator`` (system ``http://hl7.org/fhir/research-study-party-role``;
  Reference.display -> associatedParty.name, the rest of the Reference -> party).
  arm -> ``comparisonGroup`` (name, description, type; ``linkId`` = the arm name when it is a
  valid FHIR id, else uuid5 of it, see :func:`comparison_group_id`).
  location -> region, reasonStopped -> whyStopped, category -> classifier.  partOf stays.
  enrollment, contact: no R5 home -> stash (below).
ResearchSubject
  individual -> subject; assignedArm/actualArm -> assignedComparisonGroup/actualComparisonGroup
  (same id rule as linkId); status (R4 research-subject-status) -> ``progress[0].subjectState``
  coded in ``http://terminology.hl7.org/CodeSystem/research-subject-state`` (the same 13
  codes) and R5 ``status`` ``active`` (publication status).  consent -> [consent].
  Back in R4 with no subjectState: status ``candidate`` (trialbridge reads it as "no
  screen-failure information").
Patient, Observation: unchanged.  Contained Specimen: unchanged; contained Medication:
  form -> doseForm, manufacturer -> marketingAuthorizationHolder (amount, ingredient -> stash).
MedicationAdministration
  medicationCodeableConcept -> medication.concept, medicationReference -> medication.reference;
  effectiveDateTime/effectivePeriod -> occurenceDateTime/occurencePeriod (R5 spells it so),
  primitive extensions (``_effectiveDateTime`` …, our local-datetime) move with them;
  context -> encounter; category -> [category]; reasonCode/reasonReference -> reason;
  device -> [{reference}], performer.actor -> performer.actor.reference.  status codes are
  the same set in R4 and R5 and pass through.  instantiates -> stash.
AdverseEvent
  event -> code; date -> occurrenceDateTime (with ``_date``); identifier -> [identifier];
  outcome -> [outcome]; resultingCondition -> resultingEffect; contributor -> participant.actor;
  subjectMedicalHistory -> supportingInfo.itemReference; suspectEntity.instance ->
  instanceReference, suspectEntity.causality[0] -> causality {assessment -> entityRelatedness,
  method -> assessmentMethod, author}.  severity -> extension
  ``http://hl7.org/fhir/uv/ae-research-ig/StructureDefinition/ae-severity``
  (valueCodeableConcept) and our local ``grade`` extension -> ``.../ae-grade``
  (valueCodeableConcept with the grade as text) — both from the HL7 Adverse Event Clinical
  Research IG STU1 (v1.0.1, FHIR 5.0.0; https://hl7.org/fhir/uv/ae-research-ig/).
  ``status`` (required in R5, absent in R4) is derived: completed when the record has an end
  date (local ``end`` extension) or outcome resolved/resolvedWithSequelae/fatal, in-progress
  for ongoing/recovering, else unknown.  actuality passes through (R4 requires it too).
  referenceDocument and further causality entries -> stash.
Encounter
  status finished -> completed, arrived/triaged -> in-progress, onleave -> on-hold (others the
  same); class Coding -> [CodeableConcept]; period -> actualPeriod; reasonCode/reasonReference ->
  reason[].value; serviceType -> [{concept}]; hospitalization, statusHistory, classHistory,
  participant, diagnosis -> stash.

Nothing dropped: the stash
--------------------------
An element with no home on the other side is kept in a complex extension
``https://trialbridge.org/fhir/StructureDefinition/r4-element`` (on R5 resources) or
``.../r5-element`` (on R4 resources; both defined in ``mappings/fhir/extensions.yaml``, the
``urn:trialbridge:fhir:extension:`` names of older files still read) with sub-extensions ``name`` (the JSON key, e.g. ``enrollment``) and ``json`` (the
value as JSON text, decimals exact), and restored on the way back.  Beyond the lists above,
each conversion checks itself: an element whose value does not come back unchanged through
the reverse conversion is stashed as well (e.g. a second causality, an arm name that is not a
valid id, an R5 ``status`` our derivation would not give).  So R4 -> R5 -> R4 and
R5 -> R4 -> R5 are identity for every top-level element; only JSON key order may differ.
Not covered: an element present in both versions whose datatype changed and that we do not
convert (e.g. ResearchStudy.focus CodeableConcept -> CodeableReference) passes unchanged and
is reported by :func:`validate_r5` instead.
"""
from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from dataclasses import dataclass
from importlib import resources as package_files
from typing import Any, Callable, Iterable

import jsonschema
import yaml

from trialbridge.converters.core import jsoncodec
from trialbridge.converters.core.issues import TrialbridgeError
from trialbridge.converters.formats.fhir import validate as fhir_validate
from trialbridge.mappings.fhir import EXT, is_uri

R4, R5 = "R4", "R5"
STASH = {R4: EXT + "r4-element", R5: EXT + "r5-element"}  # key: version the element belongs to
LOCAL_GRADE = EXT + "grade"
LOCAL_END = EXT + "end"
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
GROUP_NAMESPACE = uuid.UUID("6f1c8a52-3d0e-5b7a-9c4e-2a1b0c9d8e7f")


# --------------------------------------------------------------------------- the tables (data)
# mappings/fhir/r4_r5.yaml, checked by schemas/config/r4_r5.schema.json: element lists per
# resource type and version, renames, stash and marker lists, code systems and code maps,
# each with its source (the R4 and R5 resource pages).  Only the logic lives here.


@dataclass(frozen=True)
class CodeMap:
    """One code map of the tables; ``unmapped`` says what a code it does not list becomes:
    ``passthrough`` (the same code), ``{"fixed": code}``, or ``error`` (KeyError)."""

    name: str
    map: dict[str, str]
    unmapped: Any

    def __call__(self, code: Any) -> Any:
        if code in self.map:
            return self.map[code]
        if self.unmapped == "passthrough":
            return code
        if isinstance(self.unmapped, dict):
            return self.unmapped["fixed"]
        raise KeyError(f"{self.name}: no code for {code!r}")


def load_tables(text: str | None = None) -> dict:
    """The R4 <-> R5 tables (``text``: YAML to use instead of the shipped file), checked
    against their schema; one that fails it is a packaging error: TrialbridgeError naming the
    element."""
    if text is None:
        text = package_files.files("trialbridge.mappings").joinpath("fhir", TABLES_FILE).read_text("utf-8")
    data = yaml.safe_load(text)
    schema = json.loads(package_files.files("trialbridge.schemas").joinpath("config", "r4_r5.schema.json")
                        .read_text("utf-8"))
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        raise TrialbridgeError(f"mappings/fhir/{TABLES_FILE}: {'/'.join(map(str, e.absolute_path)) or '<root>'}: "
                               f"{e.message}")
    return data


TABLES_FILE = "r4_r5.yaml"
_T = load_tables()
COMMON = set(_T["common_elements"])
ELEMENTS = {version: {rtype: set(names) for rtype, names in _T["elements"][version].items()} for version in (R4, R5)}
FORCE_STASH = {rtype: set(names) for rtype, names in _T["force_stash"].items()}
RENAMES_TO_R5 = {rtype: dict(m) for rtype, m in _T["renames_to_r5"].items()}
RENAMES_TO_R4 = {t: {v: k for k, v in m.items()} for t, m in RENAMES_TO_R5.items()}
MARKERS = {rtype: (set(m[R4]), set(m[R5])) for rtype, m in _T["markers"].items()}
AE_AFTER_SEVERITY = tuple(_T["adverse_event_r4_after_severity"])
STUDY_STATUS_SYSTEM = _T["systems"]["study_status"]
SUBJECT_STATE_SYSTEM = _T["systems"]["subject_state"]
PARTY_ROLE_SYSTEM = _T["systems"]["party_role"]
AE_SEVERITY = _T["extensions"]["ae_severity"]
AE_GRADE = _T["extensions"]["ae_grade"]
_MAPS = {name: CodeMap(name, dict(m["map"]), m["unmapped"]) for name, m in _T["code_maps"].items()}
ENCOUNTER_STATUS_TO_R5 = _MAPS["encounter_status_to_r5"]
ENCOUNTER_STATUS_TO_R4 = _MAPS["encounter_status_to_r4"]
STUDY_PUBLICATION = _MAPS["study_status_to_publication"]
STUDY_STATUS_FROM_PUBLICATION = _MAPS["publication_to_study_status"]
PARTY_ROLES = _MAPS["party_role"]
AE_DONE = set(_T["adverse_event_status_from_outcome"]["completed"])
AE_ONGOING = set(_T["adverse_event_status_from_outcome"]["in-progress"])
AE_STATUS_OTHERWISE = _T["adverse_event_status_from_outcome"]["unmapped"]


# --------------------------------------------------------------------------- helpers


def _json(value: Any) -> str:
    return jsoncodec.dumps(value).decode("utf-8")


def _from_json(text: str) -> Any:
    return jsoncodec.loads(text)


def _canon(value: Any) -> str:
    """Comparison text: key order ignored, decimals compared by their exact text."""
    return json.dumps(value, sort_keys=True, default=str)


def comparison_group_id(arm_name: str) -> str:
    """ResearchStudy.comparisonGroup.linkId / ResearchSubject.*ComparisonGroup for an R4 arm name:
    the name itself when it is a valid FHIR id, else uuid5 of it (deterministic)."""
    return arm_name if FHIR_ID.fullmatch(arm_name) else str(uuid.uuid5(GROUP_NAMESPACE, arm_name))


def _stash_ext(version: str, name: str, value: Any) -> dict:
    return {"url": STASH[version], "extension": [{"url": "name", "valueString": name},
                                                 {"url": "json", "valueString": _json(value)}]}


def _take_stash(resource: dict, version: str) -> tuple[dict, list[tuple[str, Any]]]:
    """(resource without the stash extensions of ``version``, [(name, value)])."""
    exts = resource.get("extension")
    if not exts or not any(is_uri(e.get("url"), STASH[version]) for e in exts):
        return resource, []
    found, keep = [], []
    for e in exts:
        if is_uri(e.get("url"), STASH[version]):
            parts = {s.get("url"): s.get("valueString") for s in e.get("extension", [])}
            found.append((parts["name"], _from_json(parts["json"])))
        else:
            keep.append(e)
    out = dict(resource)
    if keep:
        out["extension"] = keep
    else:
        del out["extension"]
    return out, found


def _add_extensions(out: dict, exts: list[dict]) -> None:
    if not exts:
        return
    out["extension"] = [*(out.get("extension") or []), *exts]


def _coding_code(cc: dict | None, system: str) -> str | None:
    for c in (cc or {}).get("coding", []) or []:
        if c.get("system") == system and c.get("code"):
            return c["code"]
    return None


# --------------------------------------------------------------------------- R4 -> R5 element handlers
# handler(value, out, resource) writes into ``out``; keys are R4 element names


def _r5_study_status(v, out, res):
    out["status"] = STUDY_PUBLICATION(v)
    out["progressStatus"] = [{"state": {"coding": [{"system": STUDY_STATUS_SYSTEM, "code": v}]}, "actual": True}]


def _r5_party(element):
    def handler(v, out, res):
        party: dict = {}
        if v.get("display"):
            party["name"] = v["display"]
        party["role"] = {"coding": [{"system": PARTY_ROLE_SYSTEM, "code": PARTY_ROLES(element)}]}
        rest = {k: x for k, x in v.items() if k != "display"}
        if rest:
            party["party"] = rest
        out.setdefault("associatedParty", []).append(party)
    return handler


def _r5_arms(v, out, res):
    groups = []
    for arm in v:
        group = {"linkId": comparison_group_id(arm["name"]), "name": arm["name"]}
        group.update({k: arm[k] for k in ("type", "description") if k in arm})
        groups.append(group)
    out["comparisonGroup"] = groups


def _r5_subject_status(v, out, res):
    out["status"] = "active"
    out["progress"] = [{"subjectState": {"coding": [{"system": SUBJECT_STATE_SYSTEM, "code": v}]}}]


def _r5_arm_id(element):
    def handler(v, out, res):
        out[element] = comparison_group_id(v)
    return handler


def _r5_medication(kind):
    def handler(v, out, res):
        out["medication"] = {kind: v}
    return handler


def _r5_reason(kind):
    def handler(v, out, res):
        out.setdefault("reason", []).extend({kind: x} for x in v)
    return handler


def _r5_ae_extension(v, out, res):
    out["extension"] = [{"url": AE_GRADE, "valueCodeableConcept": {"text": e["valueString"]}}
                        if e.get("url") == LOCAL_GRADE and set(e) == {"url", "valueString"} else e for e in v]


def _r5_ae_severity(v, out, res):
    out.setdefault("_late_extensions", []).append({"url": AE_SEVERITY, "valueCodeableConcept": v})


def _r5_suspect(v, out, res):
    entities = []
    for entity in v:
        new = {k: x for k, x in entity.items() if k not in ("instance", "causality")}
        if "instance" in entity:
            new["instanceReference"] = entity["instance"]
        causes = entity.get("causality") or []
        if causes:
            c = causes[0]
            new["causality"] = {k2: c[k1] for k1, k2 in (("method", "assessmentMethod"),
                                                         ("assessment", "entityRelatedness"),
                                                         ("author", "author")) if k1 in c}
        entities.append(new)
    out["suspectEntity"] = entities


def _ae_status(res_r4: dict) -> str:
    """R5 AdverseEvent.status derived from an R4 AdverseEvent (see module docstring)."""
    if any(e.get("url") == LOCAL_END and (e.get("valueDateTime") or e.get("valueString"))
           for e in res_r4.get("extension", []) or []):
        return "completed"
    codes = {c.get("code") for c in (res_r4.get("outcome") or {}).get("coding", []) or []}
    if codes & AE_DONE:
        return "completed"
    if codes & AE_ONGOING:
        return "in-progress"
    return AE_STATUS_OTHERWISE


def _r5_encounter_reason(kind):
    def handler(v, out, res):
        out.setdefault("reason", []).extend({"value": [{kind: x}]} for x in v)
    return handler


TO_R5: dict[str, dict[str, Callable]] = {
    "Encounter": {
        "status": lambda v, out, res: out.__setitem__("status", ENCOUNTER_STATUS_TO_R5(v)),
        "class": lambda v, out, res: out.__setitem__("class", [{"coding": [v]}]),
        "serviceType": lambda v, out, res: out.__setitem__("serviceType", [{"concept": v}]),
        "reasonCode": _r5_encounter_reason("concept"), "reasonReference": _r5_encounter_reason("reference")},
    "ResearchStudy": {"status": _r5_study_status, "sponsor": _r5_party("sponsor"),
                      "principalInvestigator": _r5_party("principalInvestigator"), "arm": _r5_arms},
    "ResearchSubject": {"status": _r5_subject_status, "assignedArm": _r5_arm_id("assignedComparisonGroup"),
                        "actualArm": _r5_arm_id("actualComparisonGroup"),
                        "consent": lambda v, out, res: out.__setitem__("consent", [v])},
    "MedicationAdministration": {
        "medicationCodeableConcept": _r5_medication("concept"), "medicationReference": _r5_medication("reference"),
        "category": lambda v, out, res: out.__setitem__("category", [v]),
        "reasonCode": _r5_reason("concept"), "reasonReference": _r5_reason("reference"),
        "device": lambda v, out, res: out.__setitem__("device", [{"reference": d} for d in v]),
        "performer": lambda v, out, res: out.__setitem__(
            "performer", [{**p, "actor": {"reference": p["actor"]}} if "actor" in p else p for p in v])},
    "AdverseEvent": {
        "extension": _r5_ae_extension, "severity": _r5_ae_severity,
        "identifier": lambda v, out, res: out.__setitem__("identifier", [v]),
        "outcome": lambda v, out, res: out.__setitem__("outcome", [v]),
        "suspectEntity": _r5_suspect,
        "contributor": lambda v, out, res: out.__setitem__("participant", [{"actor": r} for r in v]),
        "subjectMedicalHistory": lambda v, out, res: out.setdefault("supportingInfo", []).extend(
            {"itemReference": r} for r in v)},
}


# --------------------------------------------------------------------------- R5 -> R4 element handlers


def _r4_study_status(v, out, res):
    for ps in res.get("progressStatus") or []:
        code = _coding_code(ps.get("state"), STUDY_STATUS_SYSTEM)
        if code:
            out["status"] = code
            return
    out["status"] = STUDY_STATUS_FROM_PUBLICATION(v)


def _r4_parties(v, out, res):
    by_role = {code: element for element, code in PARTY_ROLES.map.items()}
    for party in v:
        element = by_role.get(_coding_code(party.get("role"), PARTY_ROLE_SYSTEM))
        if element is None or element in out:
            continue  # no R4 home: the self-check stashes associatedParty
        ref = dict(party.get("party") or {})
        if party.get("name"):
            ref["display"] = party["name"]
        out[element] = ref


def _r4_arms(v, out, res):
    out["arm"] = [{"name": g["name"], **{k: g[k] for k in ("type", "description") if k in g}} for g in v]


def _r4_subject_status(v, out, res):
    for p in res.get("progress") or []:
        code = _coding_code(p.get("subjectState"), SUBJECT_STATE_SYSTEM)
        if code:
            out["status"] = code
            return
    out["status"] = "candidate"


def _r4_medication(v, out, res):
    if "reference" in v:
        out["medicationReference"] = v["reference"]
    elif "concept" in v:
        out["medicationCodeableConcept"] = v["concept"]


def _r4_reason(v, out, res):
    codes = [r["concept"] for r in v if "concept" in r]
    refs = [r["reference"] for r in v if "reference" in r]
    if codes:
        out["reasonCode"] = codes
    if refs:
        out["reasonReference"] = refs


def _r4_ae_extension(v, out, res):
    exts = []
    for e in v:
        if e.get("url") == AE_SEVERITY and "valueCodeableConcept" in e and "severity" not in out:
            out["severity"] = e["valueCodeableConcept"]
        elif e.get("url") == AE_GRADE and set(e.get("valueCodeableConcept") or {}) == {"text"} and set(e) == {
                "url", "valueCodeableConcept"}:
            exts.append({"url": LOCAL_GRADE, "valueString": e["valueCodeableConcept"]["text"]})
        else:
            exts.append(e)
    if exts:
        out["extension"] = exts


def _r4_suspect(v, out, res):
    entities = []
    for entity in v:
        new = {k: x for k, x in entity.items() if k not in ("instanceReference", "instanceCodeableConcept",
                                                           "causality")}
        if "instanceReference" in entity:
            new["instance"] = entity["instanceReference"]
        c = entity.get("causality")
        if c:
            new["causality"] = [{k1: c[k2] for k1, k2 in (("assessment", "entityRelatedness"),
                                                          ("method", "assessmentMethod"),
                                                          ("author", "author")) if k2 in c}]
        entities.append(new)
    out["suspectEntity"] = entities


def _first(element):
    def handler(v, out, res):
        if v:
            out[element] = v[0]
    return handler


def _skip(v, out, res):
    pass


def _r4_encounter_reason(v, out, res):
    values = [x for r in v for x in r.get("value") or []]
    _r4_reason(values, out, res)


def _r4_encounter_class(v, out, res):
    if v and v[0].get("coding"):
        out["class"] = v[0]["coding"][0]


TO_R4: dict[str, dict[str, Callable]] = {
    "Encounter": {
        "status": lambda v, out, res: out.__setitem__("status", ENCOUNTER_STATUS_TO_R4(v)),
        "class": _r4_encounter_class, "reason": _r4_encounter_reason,
        "serviceType": lambda v, out, res: out.__setitem__("serviceType", v[0]["concept"]) if v and "concept" in v[0]
        else None},
    "ResearchStudy": {"status": _r4_study_status, "progressStatus": _skip, "associatedParty": _r4_parties,
                      "comparisonGroup": _r4_arms},
    "ResearchSubject": {"status": _r4_subject_status, "progress": _skip,
                        "assignedComparisonGroup": lambda v, out, res: out.__setitem__("assignedArm", v),
                        "actualComparisonGroup": lambda v, out, res: out.__setitem__("actualArm", v),
                        "consent": _first("consent")},
    "MedicationAdministration": {
        "medication": _r4_medication, "category": _first("category"), "reason": _r4_reason,
        "device": lambda v, out, res: out.__setitem__("device", [d["reference"] for d in v if "reference" in d]),
        "performer": lambda v, out, res: out.__setitem__(
            "performer", [{**p, "actor": p["actor"]["reference"]} if "reference" in (p.get("actor") or {}) else p
                          for p in v])},
    "AdverseEvent": {
        "extension": _r4_ae_extension, "status": _skip, "identifier": _first("identifier"),
        "outcome": _first("outcome"), "suspectEntity": _r4_suspect,
        "participant": lambda v, out, res: out.__setitem__("contributor", [p["actor"] for p in v if "actor" in p]),
        "supportingInfo": lambda v, out, res: out.__setitem__(
            "subjectMedicalHistory", [s["itemReference"] for s in v if "itemReference" in s])},
}


# --------------------------------------------------------------------------- the conversions


def _place_before(out: dict, key: str, followers: tuple[str, ...]) -> dict:
    """``out`` with ``key`` moved before the first of ``followers`` present (R4 key order)."""
    anchor = next((f for f in followers if f in out), None)
    if anchor is None:
        return out
    value = out.pop(key)
    placed: dict = {}
    for k, v in out.items():
        if k == anchor:
            placed[key] = value
        placed[k] = v
    return placed


def _core(resource: dict, src: str, dst: str) -> tuple[dict, list[tuple[str, Any]]]:
    """Shape conversion of one resource: (converted, [(element with no home, value)])."""
    rtype = resource.get("resourceType")
    handlers = (TO_R5 if dst == R5 else TO_R4).get(rtype, {})
    renames = (RENAMES_TO_R5 if dst == R5 else RENAMES_TO_R4).get(rtype, {})
    dst_names = ELEMENTS[dst].get(rtype)
    forced = FORCE_STASH.get(rtype, set())
    out: dict = {}
    homeless: list[tuple[str, Any]] = []
    for key, value in resource.items():
        primitive = key.startswith("_")
        base = key[1:] if primitive else key
        if key == "contained" and isinstance(value, list):
            convert = to_r5 if dst == R5 else to_r4
            out[key] = [convert(c) for c in value]
        elif base in renames:
            out[("_" if primitive else "") + renames[base]] = value
        elif not primitive and key in handlers:
            handlers[key](value, out, resource)
        elif base in COMMON or dst_names is None or (base in dst_names and base not in forced):
            out[key] = value
        else:
            homeless.append((key, value))
    if dst == R4 and rtype == "AdverseEvent" and "severity" in out:
        out = _place_before(out, "severity", AE_AFTER_SEVERITY)
    if dst == R5 and rtype == "AdverseEvent":
        late = out.pop("_late_extensions", [])
        _add_extensions(out, late)
        if "status" not in out:
            out["status"] = _ae_status(resource)
    return out, homeless


def _convert(resource: dict, src: str, dst: str) -> dict:
    if not isinstance(resource, dict):
        return resource
    base, restore = _take_stash(resource, dst)  # elements of dst kept on an earlier trip
    out, homeless = _core(base, src, dst)
    # self-check: every element of the input must come back through the reverse conversion
    back, _ = _core(out, dst, src)
    stashed = {k for k, _ in homeless}
    for key, value in base.items():
        if key not in stashed and key != "extension" and _canon(back.get(key)) != _canon(value):
            homeless.append((key, value))
    if _canon(back.get("extension")) != _canon(base.get("extension")):
        homeless.append(("extension", base.get("extension")))
    for key in back:
        if key not in base and key != "extension":
            homeless.append((key, None))  # the reverse would invent it: remove on the way back
    for key, value in restore:
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    _add_extensions(out, [_stash_ext(src, k, v) for k, v in homeless])
    return out


def to_r5(resource_r4: dict) -> dict:
    """R4 resource (as trialbridge writes it, or any R4 of the handled types) -> R5."""
    return _convert(resource_r4, R4, R5)


def to_r4(resource_r5: dict) -> dict:
    """R5 resource -> R4 (restores what :func:`to_r5` stashed)."""
    return _convert(resource_r5, R5, R4)


# --------------------------------------------------------------------------- version detection


def detect_version(resource: dict) -> str | None:
    """"R4" or "R5" from the resource's shape; None when both versions look alike."""
    if not isinstance(resource, dict):
        return None
    urls = {e.get("url") for e in resource.get("extension", []) or [] if isinstance(e, dict)}
    if any(is_uri(u, STASH[R4]) for u in urls):
        return R5
    if any(is_uri(u, STASH[R5]) for u in urls):
        return R4
    r4_marks, r5_marks = MARKERS.get(resource.get("resourceType"), (set(), set()))
    keys = {k.lstrip("_") for k in resource}
    if resource.get("resourceType") == "AdverseEvent" and isinstance(resource.get("identifier"), dict):
        return R4
    in_r4, in_r5 = bool(keys & r4_marks), bool(keys & r5_marks)
    if in_r4 != in_r5:
        return R4 if in_r4 else R5
    if resource.get("resourceType") == "ResearchStudy" and resource.get("status") in ("draft", "retired",
                                                                                      "unknown"):
        return R5
    return None


def detect_versions(resources: Iterable[dict], log=None) -> str:
    """The FHIR version of a whole input: the majority of the resources that show one
    ("R4" when none does or on a tie); a FHIR-VERSION-MIXED warning when both occur."""
    counts = Counter(v for v in map(detect_version, resources) if v)
    version = R5 if counts[R5] > counts[R4] else R4
    if counts[R4] and counts[R5] and log is not None:
        log.warning("FHIR-VERSION-MIXED", f"input mixes FHIR versions: {counts[R4]} resource(s) look R4, "
                    f"{counts[R5]} look R5; read as {version} where a resource shows no version",
                    value=f"R4:{counts[R4]} R5:{counts[R5]}")
    return version


def normalise_to_r4(resources: Iterable[dict], log=None) -> list[dict]:
    """Resources of an input of either version as R4 (what the mapping modules read):
    R5-shaped ones through :func:`to_r4`, R4-shaped ones unchanged, the rest by the
    input's majority version."""
    resources = list(resources)
    version = detect_versions(resources, log)
    out = []
    for res in resources:
        found = detect_version(res) or version
        out.append(to_r4(res) if found == R5 else res)
    return out


# --------------------------------------------------------------------------- validation


def _model_class(resource_type: str):
    from fhir.resources import get_fhir_model_class  # default package: R5

    try:
        return get_fhir_model_class(resource_type)
    except (KeyError, ValueError, ImportError, AttributeError):
        return None


def model_errors_r5(resource: dict) -> list[str]:
    from pydantic import ValidationError

    cls = _model_class(str(resource.get("resourceType")))
    if cls is None:
        return [f"fhir.resources (R5) has no model for {resource.get('resourceType')!r}"]
    try:
        cls.model_validate(fhir_validate.plain(resource))
    except ValidationError as exc:
        return [f"{'/'.join(map(str, e.get('loc', ()))) or '<root>'}: {e.get('msg')}" for e in exc.errors()]
    except ValueError as exc:  # fhir.core raises plain ValueErrors for some invariants
        return [str(exc)]
    return []


def validate_r5(resources: Iterable[dict], log) -> dict[str, int]:
    """Check R5 resources: the official R5 JSON schema (``schemas/fhir/fhir.r5.schema.json``,
    one compiled jsonschema-rs validator per type) on every resource, the fhir.resources R5
    models only on those the schema rejected, for precise messages.  Each model message is a
    FHIR-MODEL-R5 error; where the models accept what the schema rejected (one of the few codes
    the R5 schema enumerates, e.g. HumanName.use: the models check no codes), the schema's
    messages are reported as FHIR-SCHEMA-R5 errors.  Returns {"resources", "invalid"}."""
    count = invalid = 0
    for res in resources:
        count += 1
        if fhir_validate.schema_validator(str(res.get("resourceType")), R5) is not None:
            schema = fhir_validate.schema_errors(res, R5)
            if not schema:
                continue
        else:
            schema = []  # no such R5 type: the models say so
        rid = f"{res.get('resourceType')}/{res.get('id')}"
        invalid += 1
        models = model_errors_r5(res)
        for msg in models:
            log.error("FHIR-MODEL-R5", msg, record=rid)
        for msg in ([] if models else schema):
            log.error("FHIR-SCHEMA-R5", msg, record=rid)
    return {"resources": count, "invalid": invalid}


__all__ = ["to_r5", "to_r4", "detect_version", "detect_versions", "normalise_to_r4", "validate_r5",
           "model_errors_r5", "comparison_group_id"]
