"""Vital sign records <- FHIR R4 Observation with a vital-signs LOINC code (reading only).

Claims the Observations whose code (read through the site dialect) is a LOINC code of the
vital signs table (``mappings/terminology/vital_signs.yaml``: height 8302-2, weight 29463-7
(or 3141-9), BMI 39156-5, heart rate 8867-4, temperature 8310-5, respiratory rate 9279-1) or
the blood pressure panel 85354-9, whose components systolic 8480-6 and diastolic 8462-4 are
one record each.  Other components are reported (not carried).  The value, its unit, the not
done reason, the date and the visit are read as for lab results (:mod:`.findings`); the body
position (core extension observation-bodyPosition) and bodySite become position and location.

Records -> FHIR for vital signs is the writer side's (no ``to_fhir`` here): a vital_sign
record written to FHIR is reported (FHIR-NOT-WRITTEN), not dropped silently.
"""
from __future__ import annotations

from functools import lru_cache

from trialbridge.mappings import terminology
from trialbridge.mappings.fhir import LOINC, FhirContext, clean, subject_of
from trialbridge.mappings.fhir import encounter, findings

RESOURCE_TYPE = "Observation"
RECORD_TYPES = ("vital_sign",)
ORDER = 61  # after lab results and cell phenotypes, which claim their codes first


@lru_cache(maxsize=1)
def _by_loinc() -> tuple[dict[str, dict], frozenset[str]]:
    """LOINC code -> vital signs entry (its own code and loinc_also), and the panel codes."""
    entries, panels = {}, set()
    for e in terminology.load_table("vital_signs").entries:
        for code in [e["loinc"], *(e.get("loinc_also") or [])]:
            entries.setdefault(code, e)
        if e.get("panel_loinc"):
            panels.add(e["panel_loinc"])
    return entries, frozenset(panels)


def _loinc_codes(cc: dict | None, ctx: FhirContext) -> list[str]:
    cc = ctx.dialect.normalise_codings(cc) or {}
    return [c.get("code") for c in cc.get("coding") or [] if c.get("system") == LOINC and c.get("code")]


def entry_of(cc: dict | None, ctx: FhirContext) -> dict | None:
    entries, _ = _by_loinc()
    return next((entries[c] for c in _loinc_codes(cc, ctx) if c in entries), None)


def is_panel(cc: dict | None, ctx: FhirContext) -> bool:
    return any(c in _by_loinc()[1] for c in _loinc_codes(cc, ctx))


def claims(resource: dict, ctx: FhirContext) -> bool:
    return entry_of(resource.get("code"), ctx) is not None or is_panel(resource.get("code"), ctx)


def from_fhir(resource: dict, ctx: FhirContext) -> tuple[str, dict] | list[tuple[str, dict]] | None:
    """One vital_sign record, or one per vital-sign component of a panel; None (reported)."""
    resource = encounter.fill_display(resource, "encounter", ctx.encounter_labels)
    if not findings.screen(resource, ctx):
        return None
    subject_id = subject_of(resource, ctx)
    if subject_id is None:
        return None
    collected = findings.when(resource, ctx)
    if not collected:
        ctx.issue("error", "FHIR-NO-DATE", "Observation has no effective[x] or issued; not converted",
                  field="effective[x]")
        return None
    base = clean({"subject_id": subject_id, "visit": findings.visit_label(resource, ctx), "collected": collected,
                  "position": findings.position_of(resource),
                  "location": findings.concept_text(resource.get("bodySite"))})
    findings.note_unread(resource, ctx, ("interpretation", "method", "note"))
    out = []
    entry = entry_of(resource.get("code"), ctx)
    if entry is not None:
        out.append(_record(resource, entry, base, ctx, ""))
    elif findings.has_value(resource):
        ctx.not_mapped("value[x]", "a blood pressure panel's own value: its components are the results")
    for n, component in enumerate(resource.get("component") or []):
        centry = entry_of(component.get("code"), ctx)
        if centry is None:
            ctx.not_mapped("component", "a component that is not a vital sign of the table")
            continue
        out.append(_record(component, centry, base, ctx, f"component[{n}].",
                           absent=resource.get("dataAbsentReason")))
    if not out:
        ctx.issue("error", "FHIR-NO-RESULT", "blood pressure panel without systolic or diastolic component; not "
                  "converted", field="component")
        return None
    return out[0] if len(out) == 1 else out


def _record(element: dict, entry: dict, base: dict, ctx: FhirContext, where: str, absent: dict | None = None) -> tuple:
    result, unit = findings.value(element, ctx, where)
    reason = findings.not_done_reason(element)
    if reason is None and result is None and absent is not None:  # the panel was not done
        reason = findings.not_done_reason({"dataAbsentReason": absent})
    return "vital_sign", clean({**base, "test": entry["name"], "result": result, "unit": unit,
                                "not_done_reason": reason})
