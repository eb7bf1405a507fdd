"""Deterministic FHIR resource ids: uuid5 of natural keys (design rule 6).

One namespace for the whole tool; the name hashed is ``<ResourceType>|<key part>|...``
so the same natural key always gives the same id, across runs and machines.
"""
from __future__ import annotations

import uuid

# uuid5(NAMESPACE_URL, "urn:trialbridge:fhir") — fixed forever; changing it changes every id.
NAMESPACE = uuid.UUID("314c47e7-74f9-535b-8e46-55f86a220439")


def resource_id(resource_type: str, *key: str) -> str:
    """The id of a resource of ``resource_type`` with natural key ``key`` (text parts)."""
    name = "|".join([resource_type, *(str(k) for k in key)])
    return str(uuid.uuid5(NAMESPACE, name))


def reference(resource_type: str, *key: str) -> dict:
    return {"reference": f"{resource_type}/{resource_id(resource_type, *key)}"}
