"""What lab results and vital signs share when read from FHIR Observations in all the shapes
hospitals send them (the counterpart of ``mappings/sdtm/findings.py``).

* value[x]: ``valueQuantity`` (with its comparator: ``<0.5``), ``valueString``,
  ``valueCodeableConcept`` (its text, else the first coding's display, else its code),
  ``valueInteger``, ``valueBoolean`` (``true``/``false`` as written); ``valueRange``,
  ``valueRatio``, ``valueSampledData``, ``valueTime``, ``valueDateTime``, ``valuePeriod`` have
  no --ORRES and are reported (FHIR-VALUE-NOT-MAPPED) naming the element.
* not done: ``dataAbsentReason`` -> --STAT NOT DONE with --REASND (its text, else its display,
  else its code); a ``cancelled`` Observation without one is not done too.
* when: ``effectiveDateTime``, ``effectivePeriod.start`` (an end that differs is reported: no
  --ENDTC in the records), ``effectiveInstant``, else the collection time of its Specimen,
  else ``issued`` (counted: the date the result was released, not measured).
  ``effectiveTiming`` is reported.
* ``referenceRange``: low/high (the range for the subject's age when ranges are
  age-specific, else the first normal range); ``text`` is counted as not carried.
* status: ``entered-in-error`` is out of scope; ``registered`` without a value is out of
  scope (nothing measured yet); ``preliminary`` converts and is counted.
* units: Quantity.unit as written when the units table knows it, else the UCUM code.
"""
from __future__ import annotations

import math
from typing import Any

from trialbridge.converters.core import iso8601
from trialbridge.mappings import terminology
from trialbridge.mappings.fhir import FhirContext, get_datetime, number_text
from trialbridge.mappings.fhir import references

NOT_A_RESULT = ("valueRange", "valueRatio", "valueSampledData", "valueTime", "valueDateTime", "valuePeriod")
UCUM = "http://unitsofmeasure.org"


def screen(resource: dict, ctx: FhirContext) -> bool:
    """False (counted out of scope) for an Observation that records nothing to convert."""
    status = resource.get("status")
    if status == "entered-in-error":
        ctx.out_of_scope("status", status, "Observation")
        return False
    if status == "registered" and not has_value(resource) and not resource.get("dataAbsentReason"):
        ctx.out_of_scope("status", status, "Observation")
        return False
    if status == "preliminary":
        ctx.not_mapped("status", "preliminary: converted as reported (a final result may follow)")
    return True


def has_value(resource: dict) -> bool:
    return any(k.startswith("value") and k != "valueSet" for k in resource)


def unit_of(q: dict) -> str | None:
    """The unit of a Quantity: its text as written when that is the unit its UCUM code says
    (``lbs`` for ``[lb_av]``), else the UCUM code (``kU/L`` written for ``k[iU]/L`` is a
    different CDISC unit; ``beats/minute`` is no unit the table knows), else the text."""
    text, code = q.get("unit"), q.get("code")
    if not code or (code and q.get("system") not in (None, UCUM) and not terminology.unit(code)):
        return text or code
    if text:
        known = terminology.unit(text)
        if known and known.get("ucum") == code or text == code:
            return text
    return code


def value(resource: dict, ctx: FhirContext, where: str = "") -> tuple[str | None, str | None]:
    """(result text, unit) of an Observation (or one of its components: ``where`` names it)."""
    q = resource.get("valueQuantity")
    if isinstance(q, dict):
        number = number_text(q.get("value"))
        if number is None:
            return None, unit_of(q)
        if not _representable(q.get("value")):
            ctx.issue("error", "FHIR-NUMBER-RANGE", f"{where}valueQuantity.value {number} is beyond what a number in "
                      f"SDTM can hold (a double, about 1.8e308); not converted", field=f"{where}valueQuantity.value",
                      value=number[:40])
            ctx.status = "rejected"
            return None, None
        return (q.get("comparator") or "") + number, unit_of(q)
    if resource.get("valueString") is not None:
        return str(resource["valueString"]), None
    cc = resource.get("valueCodeableConcept")
    if isinstance(cc, dict):
        text = cc.get("text") or next((c.get("display") or c.get("code") for c in cc.get("coding") or []
                                       if isinstance(c, dict) and (c.get("display") or c.get("code"))), None)
        if text is None:
            ctx.issue("warning", "FHIR-VALUE-NOT-MAPPED", f"{where}valueCodeableConcept has no text, display or code: "
                      "the result is left empty", field=f"{where}valueCodeableConcept", value=str(cc)[:200])
        return text, None
    if resource.get("valueInteger") is not None:
        return str(resource["valueInteger"]), None
    if resource.get("valueBoolean") is not None:
        return ("true" if resource["valueBoolean"] else "false"), None
    for element in NOT_A_RESULT:
        if element in resource:
            ctx.issue("warning", "FHIR-VALUE-NOT-MAPPED", f"{where}{element} has no --ORRES (a result is one value); "
                      "the result is left empty", field=f"{where}{element}", value=str(resource[element])[:200])
            return None, None
    return None, None


def _representable(number: Any) -> bool:
    """A JSON number a double holds (finite; 1e400 is valid JSON and read exactly, but no
    numeric variable can take it)."""
    try:
        return math.isfinite(float(number))
    except (TypeError, ValueError, OverflowError):
        return True  # not a number at all: the schema check names it


def not_done_reason(resource: dict) -> str | None:
    """--REASND: dataAbsentReason's text, display or code; a cancelled Observation without one.
    A bare ``unknown`` code (what trialbridge writes for a result recorded with neither value
    nor reason) gives none, so that such a record reads back as it was."""
    absent = resource.get("dataAbsentReason")
    if isinstance(absent, dict):
        if absent.get("text"):
            return absent["text"]
        codings = [c for c in absent.get("coding") or [] if c.get("display") or c.get("code")]
        if codings and not codings[0].get("display") and codings[0].get("code") == "unknown":
            return None
        return next((c.get("display") or c.get("code") for c in codings), None) or "not done"
    if resource.get("status") == "cancelled" and not has_value(resource):
        return "cancelled"
    return None


def when(resource: dict, ctx: FhirContext, specimen: dict | None = None) -> str | None:
    """The date/time the value was measured or collected (see the module docstring)."""
    found = get_datetime(resource, "effectiveDateTime")
    if found:
        return found
    period = resource.get("effectivePeriod")
    if isinstance(period, dict) and get_datetime(period, "start"):
        end = get_datetime(period, "end")
        if end and end != get_datetime(period, "start"):
            ctx.not_mapped("effectivePeriod.end", "the records keep the start of the collection (--DTC), not its end")
        return get_datetime(period, "start")
    if resource.get("effectiveInstant"):
        return str(resource["effectiveInstant"])
    if resource.get("effectiveTiming") is not None:
        ctx.issue("warning", "FHIR-VALUE-NOT-MAPPED", "effectiveTiming is a schedule, not a date; the date is taken "
                  "from the specimen or issued", field="effectiveTiming")
    collection = (specimen or {}).get("collection") or {}
    found = collection.get("collectedDateTime") or (collection.get("collectedPeriod") or {}).get("start")
    if found:
        return str(found)
    if resource.get("issued"):
        ctx.not_mapped("issued", "no effective[x]: the date the result was issued is taken as its date")
        return str(resource["issued"])
    return None


def reference_range(resource: dict, ctx: FhirContext, collected: str | None) -> tuple[str | None, str | None, str | None]:
    """(low, high, unit) of the reference range that applies (see the module docstring)."""
    ranges = [r for r in resource.get("referenceRange") or [] if isinstance(r, dict)]
    if not ranges:
        return None, None, None
    if any(r.get("text") for r in ranges):
        ctx.not_mapped("referenceRange.text", "no record field for a range given as text")
    chosen = [r for r in ranges if _applies(r, ctx.birth_date, collected)]
    if len(ranges) > 1:
        normal = [r for r in chosen if _is_normal(r)]
        chosen = normal or chosen
        ctx.not_mapped("referenceRange", f"{len(ranges)} ranges: the {'one for the age' if any(r.get('age') for r in ranges) else 'first normal one'} is kept")
    if not chosen:
        ctx.not_mapped("referenceRange.age", "no range for the subject's age: none kept")
        return None, None, None
    rng = chosen[0]
    low, high = rng.get("low") or {}, rng.get("high") or {}
    unit = (unit_of(low) if low else None) or (unit_of(high) if high else None)
    return number_text(low.get("value")), number_text(high.get("value")), unit


def _is_normal(rng: dict) -> bool:
    codes = {c.get("code") for c in (rng.get("type") or {}).get("coding") or []}
    return not codes or "normal" in codes


def _applies(rng: dict, birth_date: str | None, collected: str | None) -> bool:
    """True when the range has no age or the subject's age at collection falls in it
    (years; an age that cannot be worked out does not exclude the range)."""
    age = rng.get("age")
    if not isinstance(age, dict):
        return True
    years = _age_years(birth_date, collected)
    if years is None:
        return True
    low, high = (age.get("low") or {}).get("value"), (age.get("high") or {}).get("value")
    return (low is None or years >= float(low)) and (high is None or years <= float(high))


def _age_years(birth_date: str | None, on: str | None) -> float | None:
    born, day = iso8601.date_part(birth_date), iso8601.date_part(on)
    if born is None or day is None:
        return None
    return (day - born).days / 365.25


def specimen_of(resource: dict, ctx: FhirContext) -> dict | None:
    """The Specimen an Observation names: contained (``#id``) or another resource of the same
    person (marked used: it is then converted with the result)."""
    ref = (resource.get("specimen") or {}).get("reference")
    if not isinstance(ref, str):
        return None
    if ref.startswith("#"):
        return next((c for c in resource.get("contained") or [] if "#" + str(c.get("id")) == ref), None)
    key = references.key_of(ref)
    found = ctx.group.get(key) if key else None
    if found is not None:
        ctx.used.add(key)
    return found


def visit_label(resource: dict, ctx: FhirContext) -> str | None:
    """The visit of a result: the display of its encounter reference (filled from the
    Encounter when the reference has none), through the site dialect's visit names."""
    label = (resource.get("encounter") or {}).get("display")
    return ctx.dialect.visit_name(label) or label


def position_of(resource: dict) -> str | None:
    """The body position (core extension observation-bodyPosition), as text."""
    for ext in resource.get("extension") or []:
        if ext.get("url") == "http://hl7.org/fhir/StructureDefinition/observation-bodyPosition":
            return concept_text(ext.get("valueCodeableConcept"))
    return None


def concept_text(cc: Any) -> str | None:
    if not isinstance(cc, dict):
        return None
    return cc.get("text") or next((c.get("display") or c.get("code") for c in cc.get("coding") or []
                                   if c.get("display") or c.get("code")), None)


def note_unread(resource: dict, ctx: FhirContext, elements: tuple[str, ...]) -> None:
    """Count the elements of a converted Observation no record field takes."""
    reasons = {"interpretation": "derived again as --NRIND from the result and its range",
               "method": "no record field", "note": "no record field", "performer": "no record field",
               "bodySite": "no record field", "derivedFrom": "no record field", "device": "no record field"}
    for element in elements:
        if resource.get(element):
            ctx.not_mapped(element, reasons.get(element, "no record field"))
