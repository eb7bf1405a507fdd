"""Canonical trial records: the hub every reader and writer meets at.

A record is a plain ``dict`` of text values keyed by the property names of its JSON
Schema in ``schemas/internal/<type>.schema.json`` (design rule 5: plain dicts on the
hot path, schemas for the contract).  Each record also carries ``_where`` — the file
and row it came from — so every finding can name its source.  Keys starting with ``_``
are never written out.

The record types, their order and their on-disk file names come from the schemas
themselves (``x-order``, ``x-file``, ``x-key``), so adding a record type is adding a schema.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from importlib import resources
from typing import Any, Iterator

import jsonschema



def _discover() -> tuple[str, ...]:
    """Record type names: one per ``schemas/internal/<name>.schema.json``, ordered by the
    schema's ``x-order`` (subjects first: other files are checked against their ids)."""
    folder = resources.files("trialbridge.schemas").joinpath("internal")
    order = []
    for entry in folder.iterdir():
        if entry.name.endswith(".schema.json"):
            schema = json.loads(entry.read_text("utf-8"))
            order.append((schema.get("x-order", 1000), entry.name[: -len(".schema.json")]))
    return tuple(name for _, name in sorted(order))


# Adding a record type is adding a schema (x-file, x-key, x-order): nothing here to edit.
RECORD_ORDER = _discover()


@dataclass(frozen=True)
class RecordType:
    name: str
    file: str  # base name of the on-disk file: subjects -> subjects.csv / subjects.json
    key: tuple[str, ...]
    schema: dict = field(repr=False, hash=False, compare=False)

    @property
    def fields(self) -> list[str]:
        return list(self.schema["properties"])

    @property
    def required(self) -> list[str]:
        return list(self.schema.get("required", []))

    @property
    def identifying(self) -> list[str]:
        """Fields that identify a person: kept internally, never exported to SDTM."""
        return [k for k, v in self.schema["properties"].items() if v.get("x-identifying")]

    @cached_property
    def validator(self) -> jsonschema.Draft202012Validator:
        """The exact path: precise errors (field, keyword) for a row the fast check rejected."""
        return jsonschema.Draft202012Validator(self.schema)

    @cached_property
    def fast_validator(self):
        """The fast path: a compiled validator (jsonschema-rs) that only says yes or no."""
        import jsonschema_rs

        return jsonschema_rs.validator_for(self.schema, validate_formats=False)


@lru_cache(maxsize=1)
def record_types() -> dict[str, RecordType]:
    folder = resources.files("trialbridge.schemas").joinpath("internal")
    out = {}
    for name in RECORD_ORDER:
        schema = json.loads(folder.joinpath(f"{name}.schema.json").read_text("utf-8"))
        out[name] = RecordType(name, schema["x-file"], tuple(schema["x-key"]), schema)
    return out


def record_type_for_file(stem: str) -> RecordType | None:
    return next((t for t in record_types().values() if t.file == stem), None)


@dataclass
class Records:
    """All canonical records of one study, grouped by record type."""

    study_id: str | None = None
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {n: [] for n in RECORD_ORDER})

    def __getitem__(self, name: str) -> list[dict[str, Any]]:
        return self.rows[name]

    def items(self) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        for name in RECORD_ORDER:
            yield name, self.rows[name]

    def subjects_by_id(self) -> dict[str, dict[str, Any]]:
        return {s["subject_id"]: s for s in self.rows["subject"]}


def public(row: dict[str, Any]) -> dict[str, Any]:
    """The row without provenance keys (``_where`` …)."""
    return {k: v for k, v in row.items() if not k.startswith("_")}


def where(row: dict[str, Any], field_name: str | None = None) -> dict[str, Any]:
    """Location keywords for an Issue: file and record of the row, plus the field."""
    loc = dict(row.get("_where") or {})
    if field_name:
        loc["field"] = field_name
    return loc
