"""SDTM dataset specifications loaded from ``schemas/sdtm/<DOMAIN>.json``.

``load_spec("LB")`` gives the variables of a domain in SDTMIG order with label, type, Core, role
and codelist; ``SUPPxx`` names load the SUPPQUAL metadata; any other name gives a minimal spec
(``known=False``) so reading a foreign dataset never crashes.  ``make_dataset`` turns mapping
output rows into a :class:`~converters.datasets.Dataset` holding every Req variable plus every
variable with a value.  Schemas are read with :mod:`importlib.resources` and cached.
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Iterable

import jsonschema_rs

from trialbridge.converters.core.datasets import Dataset, Variable

SCHEMA_PACKAGE = "trialbridge.schemas"


@dataclass(frozen=True)
class DomainSpec:
    name: str
    label: str
    class_: str
    structure: str
    keys: list[str]
    variables: list[Variable]
    schema: dict = field(repr=False, compare=False, hash=False)
    known: bool = True  # False: built from the data of a dataset we have no schema for

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.variables]

    def var(self, name: str) -> Variable | None:
        for v in self.variables:
            if v.name == name:
                return v
        return None


def available_domains() -> list[str]:
    """Names of the schemas shipped in ``schemas/sdtm``."""
    folder = resources.files(SCHEMA_PACKAGE).joinpath("sdtm")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


@lru_cache(maxsize=None)
def _schema_text(name: str) -> str | None:
    if not re.fullmatch(r"[A-Z][A-Z0-9_]*", name):  # a name from input data never walks the package
        return None
    res = resources.files(SCHEMA_PACKAGE).joinpath("sdtm", f"{name}.json")
    if not res.is_file():
        return None
    return res.read_text(encoding="utf-8")


def _spec_from_schema(name: str, schema: dict) -> DomainSpec:
    variables = [
        Variable(
            name=var,
            label=p.get("title", var),
            type=p.get("x-type", "Char"),
            core=p.get("x-core", "Perm"),
            role=p.get("x-role", ""),
            codelist=p.get("x-codelist"),
            codelist_code=p.get("x-codelist-code"),
            order=p.get("x-order", n),
        )
        for n, (var, p) in enumerate(schema["properties"].items(), start=1)
    ]
    variables.sort(key=lambda v: v.order)
    return DomainSpec(
        name=name,
        label=schema.get("title", name),
        class_=schema.get("x-class", ""),
        structure=schema.get("x-structure", ""),
        keys=list(schema.get("x-keys", [])),
        variables=variables,
        schema=schema,
    )


def spec_from_columns(name: str, columns: Iterable[str | Variable], label: str = "") -> DomainSpec:
    """A minimal spec for a dataset without a schema: the given columns in the given order.

    Plain names become Char Perm variables labelled with their name; :class:`Variable`
    objects (e.g. metadata read from a file) are kept as they are.
    """
    variables = []
    for n, col in enumerate(columns, start=1):
        if isinstance(col, Variable):
            variables.append(col)
        else:
            variables.append(Variable(name=col, label=col, type="Char", order=n))
    props = {
        v.name: {"title": v.label, "x-type": v.type,
                 "type": ["number", "null"] if v.type == "Num" else "string"}
        for v in variables
    }
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": label or name,
        "x-domain": name,
        "type": "object",
        "properties": props,
    }
    return DomainSpec(name=name, label=label or name, class_="", structure="", keys=[],
                      variables=variables, schema=schema, known=False)


@lru_cache(maxsize=None)
def load_spec(domain: str) -> DomainSpec:
    """Specification of ``domain`` (case-insensitive). Unknown names give ``known=False``."""
    name = domain.upper()
    text = _schema_text(name)
    if text is not None:
        return _spec_from_schema(name, json.loads(text))
    if name.startswith("SUPP") and len(name) > 4:
        parent = name[4:]
        schema = json.loads(_schema_text("SUPPQUAL"))
        schema = copy.deepcopy(schema)
        schema["title"] = f"Supplemental Qualifiers for {parent}"
        schema["x-domain"] = name
        # a split dataset's SUPP (SUPPLBUR for LBUR) names the domain (LB) in RDOMAIN
        schema["properties"]["RDOMAIN"]["enum"] = [parent] + ([parent[:2]] if split_parent(parent) else [])
        return _spec_from_schema(name, schema)
    parent = split_parent(name)
    if parent:
        # split dataset (SDTMIG 3.4 section 4.1.7): LBUR has the variables of LB, DOMAIN = "LB"
        spec = load_spec(parent)
        return DomainSpec(name=name, label=spec.label, class_=spec.class_, structure=spec.structure,
                          keys=spec.keys, variables=spec.variables, schema=spec.schema, known=True)
    return spec_from_columns(name, [])


def split_parent(name: str) -> str | None:
    """The domain a split dataset belongs to (LBUR -> LB), or None."""
    name = name.upper()
    if len(name) == 4 and not name.startswith("SUPP") and _schema_text(name[:2]) is not None:
        return name[:2]
    return None


def _is_missing(value: Any) -> bool:
    return value is None or value == ""


def make_dataset(domain: str, rows: list[dict[str, Any]], *, source: str | None = None) -> Dataset:
    """Build a Dataset from mapping output rows.

    Variables = every Req and Exp variable (SDTMIG: Expected variables are present even when
    all null) + every Perm variable with at least one non-missing value, in spec order.  Each output row holds every chosen variable (Char missing "", Num missing None).
    A row key the spec does not know is a programming error: :class:`ValueError`.
    For a domain without a schema the columns are taken from the rows in first-seen order.
    """
    spec = load_spec(domain)
    if not spec.known:
        seen: dict[str, None] = {}
        for row in rows:
            for k in row:
                seen.setdefault(k, None)
        spec = spec_from_columns(spec.name, list(seen))
    allowed = set(spec.names)
    present: set[str] = set()
    for n, row in enumerate(rows, start=1):
        unknown = [k for k in row if k not in allowed]
        if unknown:
            raise ValueError(f"{spec.name} row {n}: variables not in the {spec.name} spec: {unknown}")
        present.update(k for k, v in row.items() if not _is_missing(v))
    variables = [v for v in spec.variables if v.core in ("Req", "Exp") or v.name in present]
    out_rows = []
    for row in rows:
        out_rows.append({
            v.name: (row.get(v.name) if not _is_missing(row.get(v.name))
                     else (None if v.type == "Num" else ""))
            for v in variables
        })
    return Dataset(name=spec.name, label=spec.label, variables=variables, rows=out_rows,
                   keys=[k for k in spec.keys if k in {v.name for v in variables}], source=source)


@lru_cache(maxsize=None)
def row_validator(domain: str):
    """Compiled ``jsonschema_rs`` validator for one row of ``domain`` (use ``.is_valid``/``.iter_errors``)."""
    return jsonschema_rs.validator_for(load_spec(domain).schema)


def governed_codelists(domain: str) -> dict[str, tuple[str, dict[str, str]]]:
    """Variables whose codelist depends on another variable's value, from the schema's
    ``x-codelist-by``: {variable: (governing variable, {governing value: codelist})}
    (DSDECOD by DSCAT).  Split datasets use their parent domain's."""
    spec = load_spec(domain)
    out = {}
    for name, prop in (spec.schema.get("properties") or {}).items():
        by = prop.get("x-codelist-by")
        if by:
            out[name] = (by["variable"], dict(by["codelists"]))
    return out
