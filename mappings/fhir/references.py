"""References as real inputs write them, normalised to one key per resource.

A Patient is referenced as ``Patient/123``, ``Patient/123/_history/2``,
``https://ehr.example/fhir/Patient/123`` or, inside a transaction Bundle, by the
``urn:uuid:…`` fullUrl of its entry.  The engine groups resources by the Patient they belong
to, so every form must give the same key: ``Patient/<id>`` (:func:`local_key`), or, for
``urn:uuid``/``urn:oid`` references, the key of the resource whose entry had that fullUrl
(an alias the reader records, one per Patient: :func:`key_of`).

Which element names the person: ``subject`` (Observation, Encounter, MedicationAdministration,
AdverseEvent, R5 ResearchSubject …), ``patient`` (Immunization, Claim, AllergyIntolerance …),
``individual`` (R4 ResearchSubject).  A reference to something other than a Patient (a Group,
a Location, a Device) names no person.

Content digests (:func:`content_digest`) tell an identical repeat of a resource from a
different one: the resource's JSON with keys sorted, numbers by value.
"""
from __future__ import annotations

import hashlib
from typing import Any

import orjson

from trialbridge.converters.core import jsoncodec

PERSON_ELEMENTS = ("individual", "subject", "patient")


def local_key(reference: Any) -> str | None:
    """``Type/id`` of a relative, absolute or versioned literal reference; None for a
    contained (``#id``), ``urn:`` or conditional (``Type?identifier=…``) reference."""
    if not isinstance(reference, str):
        return None
    ref = reference.strip()
    if not ref or ref.startswith("#") or ref.startswith("urn:") or "?" in ref:
        return None
    parts = [p for p in ref.split("/") if p]
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2 and parts[-2][:1].isupper() and parts[-2].isalpha():
        return f"{parts[-2]}/{parts[-1]}"
    return None


def key_of(reference: Any, aliases: dict[str, str] | None = None) -> str | None:
    """The key a reference names: ``Type/id``, or what the fullUrl ``aliases`` say for a
    ``urn:`` reference (or a reference written as some entry's full fullUrl)."""
    if not isinstance(reference, str):
        return None
    if aliases and reference in aliases:
        return aliases[reference]
    return local_key(reference)


def resource_key(resource: dict, full_url: str | None = None) -> str:
    """The key of a resource itself: ``Type/id``, or its fullUrl when it has no id."""
    if resource.get("id"):
        return f"{resource.get('resourceType')}/{resource['id']}"
    return full_url or f"{resource.get('resourceType')}/"


def person_reference(resource: dict) -> str | None:
    """The reference by which a resource belongs to a person: the first of ``individual``,
    ``subject``, ``patient`` that is a Patient reference, or a ``urn:`` reference (which may
    be one: it is resolved against the fullUrls of the input's Patients)."""
    for element in PERSON_ELEMENTS:
        ref = resource.get(element)
        if not isinstance(ref, dict) or not isinstance(ref.get("reference"), str):
            continue
        text = ref["reference"].strip()
        if text.startswith("urn:"):
            return text
        key = local_key(text)
        if key and key.startswith("Patient/"):
            return text
    return None


def content_digest(raw: bytes, parsed: Any = None) -> bytes:
    """16 bytes that are equal for two copies of a resource exactly when their content is:
    key order and layout aside, numbers compared by value (``1.30`` and ``1.3`` are one
    value), so the fast parse serves (``parsed``: the resource as orjson read it)."""
    if parsed is None:
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:  # integers beyond 64 bits: the exact codec
            parsed = jsoncodec.loads(raw)
    try:
        canonical = orjson.dumps(parsed, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # Decimal numbers from the exact codec
        canonical = jsoncodec.dumps(_sorted(parsed))
    return hashlib.blake2b(canonical, digest_size=16).digest()


def _sorted(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _sorted(node[k]) for k in sorted(node)}
    if isinstance(node, list):
        return [_sorted(v) for v in node]
    return node


__all__ = ["local_key", "key_of", "resource_key", "person_reference", "content_digest", "PERSON_ELEMENTS"]
