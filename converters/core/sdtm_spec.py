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


SHIPPED_IG = "3.3"  # the SDTMIG of schemas/sdtm/*.json, which trialbridge writes (CP from 3.4)
IG_VERSIONS = ("3.2", "3.3", "3.4")  # those with a variable table in schemas/sdtm/ig/


@lru_cache(maxsize=None)
def ig_table(version: str) -> dict[str, dict]:
    """Datasets of one SDTMIG version: name -> {label, class, variables: [[name, label, type,
    core], ...]} (schemas/sdtm/ig/, built from the CDISC Library exports by
    scripts/build_ig_metadata.py)."""
    if version not in IG_VERSIONS:
        raise ValueError(f"no SDTMIG {version} metadata; available: {', '.join(IG_VERSIONS)}")
    res = resources.files(SCHEMA_PACKAGE).joinpath("sdtm", "ig", f"sdtmig-{version}.json")
    return json.loads(res.read_text(encoding="utf-8"))["datasets"]


def _ig_spec(name: str, ig: str) -> DomainSpec | None:
    """The spec of ``name`` as SDTMIG ``ig`` has it: its variables, labels, types and cores
    from the version's table; codelists, patterns and keys borrowed from the shipped schema
    for the variables both have."""
    table = ig_table(ig).get(name)
    if table is None:
        return None
    text = _schema_text(name)
    shipped = json.loads(text) if text is not None else {"properties": {}}
    props = {}
    for order, (var, label, typ, core) in enumerate(table["variables"], start=1):
        base = dict(shipped["properties"].get(var) or {})
        if base.get("x-type") != typ:  # not in the shipped schema, or of the other type there
            base = {"type": ["number", "null"] if typ == "Num" else "string"}
            if typ == "Char":
                base["maxLength"] = 200
        base.update({"title": label, "x-type": typ, "x-core": core, "x-order": order})
        if var == "DOMAIN":
            base["enum"] = [name]
        props[var] = base
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              "$comment": f"SDTMIG v{ig} variables (schemas/sdtm/ig/sdtmig-{ig}.json) over the shipped schema",
              "title": table["label"] or shipped.get("title", name), "x-domain": name,
              "x-class": (table["class"] or "").title(), "x-structure": shipped.get("x-structure", ""),
              "x-keys": [k for k in shipped.get("x-keys", []) if k in props], "x-sdtmig": ig,
              "type": "object", "additionalProperties": False,
              "required": [v for v, p in props.items() if p["x-core"] == "Req"], "properties": props}
    return _spec_from_schema(name, schema)


@lru_cache(maxsize=None)
def load_spec(domain: str, ig: str | None = None) -> DomainSpec:
    """Specification of ``domain`` (case-insensitive). Unknown names give ``known=False``.

    ``ig`` (3.2, 3.3, 3.4; ``validate --sdtmig``) checks data against that SDTMIG version's
    variables (:func:`_ig_spec`) instead of the shipped 3.3 schemas, and gives a spec to the
    datasets of that version the shipped schemas lack (CM, MH, QS …)."""
    name = domain.upper()
    if ig is not None and re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
        text = _schema_text(name)
        if not (ig == SHIPPED_IG and text is not None):
            spec = _ig_spec(name, ig)
            if spec is not None:
                return spec
            parent = split_parent(name)
            if parent and not name.startswith("SUPP"):
                spec = load_spec(parent, ig)
                return DomainSpec(name=name, label=spec.label, class_=spec.class_, structure=spec.structure,
                                  keys=spec.keys, variables=spec.variables, schema=spec.schema, known=spec.known)
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


@lru_cache(maxsize=None)
def _model_names() -> tuple[frozenset[str], frozenset[str]]:
    """(``--`` names, plain names) of every variable of the shipped domain specs: the part of
    the SDTM model trialbridge knows.  ``AEDTC`` is ``--DTC`` (LB, VS, CP have it), ``VISIT``
    is plain (LB, VS, SV have it)."""
    generic, plain = set(), set()
    for name in available_domains():
        spec = load_spec(name)
        prefix = name[:2]
        for v in spec.variables:
            if len(name) == 2 and v.name.startswith(prefix) and len(v.name) > 2:
                generic.add("--" + v.name[2:])
            else:
                plain.add(v.name)
    return frozenset(generic), frozenset(plain)


def is_model_variable(domain: str, name: str) -> bool:
    """Whether ``name`` in ``domain`` is a variable of the SDTM model that the domain's
    specification does not list (a Permissible variable of the class added to a standard
    domain, P21 SD1076) rather than a variable outside the model (P21 SD0058).  Judged from
    the shipped domain specs (:func:`_model_names`): a name none of them uses is not known
    to be a model variable."""
    generic, plain = _model_names()
    if name in plain:
        return True
    return len(domain) >= 2 and name.startswith(domain[:2]) and "--" + name[2:] in generic


def choose_variables(spec, has_value) -> list:
    """The variables a dataset is written with, in spec order: every Req and Exp variable
    (SDTMIG: Expected variables are present even when all null), every Perm variable with at
    least one value (``has_value(name)``), and the --DTC of every --DY chosen — a study day
    is the day of a date, and CDISC CORE-000700 reports a --DY present without its --DTC
    (DS: DSDY is Expected, DSDTC Permissible)."""
    chosen = {v.name for v in spec.variables if v.core in ("Req", "Exp") or has_value(v.name)}
    names = {v.name for v in spec.variables}
    for name in list(chosen):
        if name.endswith("DY") and name[:-2] + "DTC" in names:
            chosen.add(name[:-2] + "DTC")
    return [v for v in spec.variables if v.name in chosen]


def _is_missing(value: Any) -> bool:
    return value is None or value == ""


def make_dataset(domain: str, rows: list[dict[str, Any]], *, source: str | None = None) -> Dataset:
    """Build a Dataset from mapping output rows.

    Variables: :func:`choose_variables`.  Each output row holds every chosen variable (Char
    missing "", Num missing None).
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
    variables = choose_variables(spec, present.__contains__)
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
def row_validator(domain: str, ig: str | None = None):
    """Compiled ``jsonschema_rs`` validator for one row of ``domain`` (use ``.is_valid``/``.iter_errors``)."""
    return _row_validator(domain.upper(), ig)


@lru_cache(maxsize=None)
def _row_validator(domain: str, ig: str | None):
    return jsonschema_rs.validator_for(load_spec(domain, ig).schema)


def governed_codelists(domain: str, ig: str | None = None) -> dict[str, tuple[str, dict[str, str]]]:
    """Variables whose codelist depends on another variable's value, from the schema's
    ``x-codelist-by``: {variable: (governing variable, {governing value: codelist})}
    (DSDECOD by DSCAT).  Split datasets use their parent domain's."""
    spec = load_spec(domain, ig)
    out = {}
    for name, prop in (spec.schema.get("properties") or {}).items():
        by = prop.get("x-codelist-by")
        if by:
            out[name] = (by["variable"], dict(by["codelists"]))
    return out
