"""Validate FHIR R4 resources: the official JSON schema, the fhir.resources models, references.

* FHIR-SCHEMA (error): the resource fails the official R4 JSON schema
  (``schemas/fhir/fhir.r4.schema.json``; compiled by ``jsonschema_rs`` once per version,
  each resource sent to its type's definition; see :class:`_Compiled`).
  This is the fast check and the one that rejects bad codes (enums).  It runs on the parsed
  resource itself, never on a re-serialised copy: jsonschema-rs takes ``int``, ``float`` and
  ``decimal.Decimal`` numbers as they come from the codec (:mod:`converters.core.jsoncodec`);
  only a resource holding a value it does not take (the codec's ``ExactDecimal``, which keeps
  ``1e3`` as written) is checked through a copy whose numbers are plain Decimals.
* FHIR-MODEL (error): ``fhir.resources.R4B.<Type>`` rejects it (precise messages for
  cardinality, datatypes and invariants the schema cannot express).  The R4B models are the
  closest fhir.resources ships to R4; resources we write use no element that differs.
  Slower (about 1,300 resources/s), so by default (``model_check="failed"``) the models run
  only on resources the schema rejected, for precise messages (design rule 5);
  ``model_check=True`` runs them on every resource, ``False`` on none.
* FHIR-REF-UNRESOLVED (error): a ``reference`` that names no resource of the input
  (``Type/id``), or a ``#id`` that names no contained resource.  Display-only references
  (``{"display": ...}``) are not references to resolve.
* FHIR-DUPLICATE-ID (error): two resources of one type share an id.
* FHIR-UNKNOWN-TYPE (error): no ``resourceType`` or one R4 does not define.

The schema helpers take ``version`` ("R4", the default, or "R5": ``fhir.r5.schema.json``,
used by :func:`converters.formats.fhir.versions.validate_r5`).
"""
from __future__ import annotations

import re

from decimal import Decimal
from functools import lru_cache
from importlib import resources as package_files
from typing import Any, Iterable, Iterator

import jsonschema_rs
import orjson

from trialbridge.converters.core import jsoncodec
from trialbridge.converters.core.issues import IssueLog

SCHEMA_FILES = {"R4": "fhir.r4.schema.json", "R5": "fhir.r5.schema.json"}
# Errata applied when a schema is loaded (the files stay as published).  R5 5.0.0 writes the
# decimal pattern of 25 elements (e.g. CodeSystem.property.valueDecimal) with a stray "}"
# ("[0-9]{1,9}})?$"); jsonschema-rs rejects it as a regex.  "pattern" applies only to
# strings and these elements are JSON numbers, so the fix changes no validation result.
SCHEMA_ERRATA = {"R5": [('[eE][+-]?[0-9]{1,9}})?$', '[eE][+-]?[0-9]{1,9})?$')]}


def _schema(version: str = "R4") -> dict:
    """The published schema, parsed (about 9 MiB as Python objects; not kept: see
    :class:`_Compiled`)."""
    text = package_files.files("trialbridge.schemas").joinpath("fhir", SCHEMA_FILES[version]).read_text("utf-8")
    for wrong, right in SCHEMA_ERRATA.get(version, []):
        text = text.replace(wrong, right)  # no backslash in either: same in JSON text
    return orjson.loads(text)


@lru_cache(maxsize=2)
def _types(version: str = "R4") -> frozenset[str]:
    return frozenset(_schema(version)["discriminator"]["mapping"])


def resource_types(version: str = "R4") -> list[str]:
    return sorted(_types(version))


class _Compiled:
    """One compiled validator per version for every resource type asked for so far.

    A validator compiled from ``{"$ref": "#/definitions/<Type>"}`` compiles everything that
    type can reach, and through ``contained`` (``ResourceList``: any resource) that is the
    whole schema: about 17 MiB of compiled nodes per type, so seven types held 140 MiB in
    every process that checks resources.  Here the types share one compiled tree: a root that
    sends each resource to its own definition by its ``resourceType`` (``if``/``then``, the
    one reason for Draft 7; the FHIR schema uses no keyword whose meaning differs between
    Drafts 6 and 7).  It names only the types seen so far, since every ``if`` is tried on every
    resource: a new type recompiles the root (about 0.05 s, the schema read again), so a run
    compiles once per type as before.  Same findings, same messages and paths."""

    def __init__(self, version: str):
        self.version = version
        self.types: tuple[str, ...] = ()
        self.validator = None

    def add(self, resource_type: str) -> None:
        types = tuple(sorted({*self.types, resource_type}))
        self.validator = None  # the old tree goes before the new one is built: one at a time
        schema = _schema(self.version)
        self.validator = jsonschema_rs.Draft7Validator({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "definitions": schema["definitions"],
            "allOf": [{"if": {"properties": {"resourceType": {"const": t}}, "required": ["resourceType"]},
                       "then": {"$ref": f"#/definitions/{t}"}} for t in types]})
        self.types = types


@lru_cache(maxsize=2)
def _compiled_for(version: str) -> _Compiled:
    return _Compiled(version)


class _TypeValidator:
    """The validator of one resource type (what :func:`schema_validator` returns): checks a
    resource of that type through the version's shared compiled schema."""

    def __init__(self, resource_type: str, version: str):
        self.resource_type = resource_type
        self.version = version
        self._shared = _compiled_for(version)
        if resource_type not in self._shared.types:
            self._shared.add(resource_type)

    def _for(self, resource: Any):
        if isinstance(resource, dict) and resource.get("resourceType") == self.resource_type:
            return self._shared.validator
        return _standalone(self.resource_type, self.version)  # another type given: checked as this type

    def is_valid(self, resource: Any) -> bool:
        return self._for(resource).is_valid(resource)

    def iter_errors(self, resource: Any):
        return self._for(resource).iter_errors(resource)


def schema_validator(resource_type: str, version: str = "R4"):
    """The validator for one resource type (None when the version has no such type); all
    types of a version share one compiled schema (:class:`_Compiled`)."""
    return _compiled(resource_type, version)


@lru_cache(maxsize=None)
def _compiled(resource_type: str, version: str):
    if resource_type not in _types(version):
        return None
    return _TypeValidator(resource_type, version)


@lru_cache(maxsize=4)
def _standalone(resource_type: str, version: str):
    """A validator of this type alone, for the odd call that hands a validator a resource of
    another type (the definition's ``resourceType`` const then reports it, as it always did)."""
    schema = _schema(version)
    return jsonschema_rs.Draft6Validator({"$schema": schema["$schema"], "$ref": f"#/definitions/{resource_type}",
                                          "definitions": schema["definitions"]})


@lru_cache(maxsize=None)
def model_class(resource_type: str):
    from fhir.resources.R4B import get_fhir_model_class

    try:
        return get_fhir_model_class(resource_type)
    except (KeyError, ValueError, ImportError, AttributeError):
        return None


def plain(resource: dict) -> Any:
    """The resource as plain JSON values (numbers as float/int) for the fhir.resources models;
    used only on the slow path (resources the schema rejected)."""
    return orjson.loads(jsoncodec.dumps(resource))


def _validator_view(node: Any) -> Any:
    """A copy jsonschema-rs takes: ``ExactDecimal`` (and any Decimal subclass) as a plain
    Decimal, tuples as lists.  Only made for the rare resource that holds one."""
    if isinstance(node, dict):
        return {k: _validator_view(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_validator_view(v) for v in node]
    if isinstance(node, Decimal) and type(node) is not Decimal:
        return Decimal(node)
    return node


def _errors(validator, resource: dict) -> list:
    try:
        if validator.is_valid(resource):
            return []
        return list(validator.iter_errors(resource))
    except ValueError as exc:  # "Unsupported type: 'ExactDecimal'"
        if "Unsupported type" not in str(exc):
            raise
        view = _validator_view(resource)
        try:
            return list(validator.iter_errors(view))
        except ValueError as again:  # a jsonschema-rs without Decimal support: numbers as floats
            if "Unsupported type" not in str(again):
                raise
            return list(validator.iter_errors(plain(resource)))


def schema_errors(resource: dict, version: str = "R4") -> list[str]:
    validator = schema_validator(str(resource.get("resourceType")), version)
    if validator is None:
        return [f"unknown resourceType {resource.get('resourceType')!r}"]
    return [f"{'/'.join(map(str, e.instance_path)) or '<root>'}: {e.message}" for e in _errors(validator, resource)]


def model_errors(resource: dict) -> list[str]:
    from pydantic import ValidationError

    cls = model_class(str(resource.get("resourceType")))
    if cls is None:
        return [f"fhir.resources.R4B has no model for {resource.get('resourceType')!r}"]
    try:
        cls.model_validate(plain(resource))
    except ValidationError as exc:
        return [f"{'/'.join(map(str, e.get('loc', ()))) or '<root>'}: {e.get('msg')}" for e in exc.errors()]
    except ValueError as exc:  # fhir.core raises plain ValueErrors for some invariants
        return [str(exc)]
    return []


def element_named(message: str) -> str | None:
    """The element a schema or model message is about, dotted (``effectivePeriod.start``,
    ``component[0].code``); for an element that should not be there, its name."""
    path, _, rest = message.partition(": ")
    if path == "<root>" or not rest:
        unexpected = re.search(r"'([^']+)' was unexpected|^([A-Za-z_][\w]*): Extra inputs", message)
        return (unexpected.group(1) or unexpected.group(2)) if unexpected else None
    parts = path.split("/")
    out = ""
    for part in parts:
        out += f"[{part}]" if part.isdigit() else (("." if out else "") + part)
    return out


def references(node: Any) -> Iterator[str]:
    """Every ``reference`` string inside a resource (contained resources included)."""
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str):
            yield ref
        for v in node.values():
            if isinstance(v, (dict, list)):
                yield from references(v)
    elif isinstance(node, list):
        for v in node:
            yield from references(v)


def validate_resources(resources: Iterable[dict], log: IssueLog, model_check: bool | str = "failed",
                       check_references: bool = True, check_ids: bool = True) -> dict[str, int]:
    """Check every resource as it streams by; report to ``log``; returns counts
    {"resources", "invalid"}.  Only ids and not-yet-resolved references are kept, and the
    references are resolved against every id of the input at the end."""
    known: set[str] = set()
    pending: list[tuple[str, str]] = []  # (resource, reference) not resolved when seen
    invalid: set[str] = set()
    count = 0
    for res in resources:
        count += 1
        rid = f"{res.get('resourceType')}/{res.get('id')}"
        if check_ids and rid in known:
            invalid.add(rid)
            log.error("FHIR-DUPLICATE-ID", "a resource with this type and id came earlier in the input",
                      record=rid, field="id", value=res.get("id"))
        known.add(rid)
        if schema_validator(str(res.get("resourceType"))) is None:
            log.error("FHIR-UNKNOWN-TYPE", f"resourceType {res.get('resourceType')!r} is not an R4 resource",
                      record=rid, field="resourceType", value=res.get("resourceType"))
            invalid.add(rid)
            continue
        schema_bad = False
        for msg in schema_errors(res):
            invalid.add(rid)
            schema_bad = True
            log.error("FHIR-SCHEMA", msg, record=rid, field=element_named(msg))
        # model_check: True = every resource; "failed" = only those the fast schema check
        # rejected, for precise messages (design rule 5); False = none
        if model_check is True or (model_check == "failed" and schema_bad):
            for msg in model_errors(res):
                invalid.add(rid)
                log.error("FHIR-MODEL", msg, record=rid, field=element_named(msg))
        contained = {f"#{c.get('id')}" for c in res.get("contained", []) or []}
        for ref in (references(res) if check_references else ()):
            if ref.startswith("#"):
                if ref not in contained:
                    invalid.add(rid)
                    log.error("FHIR-REF-UNRESOLVED", f"reference {ref!r} names no contained resource",
                              record=rid, field="reference", value=ref)
            elif ref not in known:
                pending.append((rid, ref))
    for rid, ref in pending:
        if ref not in known:
            invalid.add(rid)
            log.error("FHIR-REF-UNRESOLVED", f"reference {ref!r} names no resource in the input",
                      record=rid, field="reference", value=ref)
    return {"resources": count, "invalid": len(invalid)}
