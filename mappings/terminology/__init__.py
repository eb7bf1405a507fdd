"""Terminology tables: code maps as data, each with a declared ``unmapped`` mode.

Every ``*.yaml`` file in this package is one table, checked at load time against
``schemas/config/terminology.schema.json``.  A table names the field of its entries that holds
the value :func:`map_term` returns (``value_field``), the fields a lookup matches on besides
``aliases`` (``match_fields``), the issue code used for values it cannot map (``issue_code``)
and, when it is backed by CDISC controlled terminology, the codelist (``codelist``): a value not
found among the entries is then looked up among the codelist's own submission values, synonyms
and preferred terms (via :mod:`converters.ct`).  With ``ct_fallback: terms`` (the default) any
term of the codelist maps; with ``ct_fallback: synonyms`` (lab_tests, cell_phenotypes, whose
entries carry more than the code) CT synonyms only lead to entries the table lists.

Unmapped values are never dropped silently (design rule 2): ``error`` gives ``None`` and an error
issue, ``passthrough`` keeps the value and adds a warning, ``fixed`` substitutes ``fixed_value``
and adds a warning.  Every unmapped value is also counted per table
(:meth:`IssueLog.count_unmapped`), so the run can report each with its count.

Unit conversion (:func:`convert_value`) is done by ucumvert's pint registry; the factor for a
(from, to, molar mass) triple is computed once and cached.  No factors are written by hand.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from trialbridge.mappings.terminology import ct

__all__ = [
    "TermTable", "table_names", "load_table", "map_term", "count_unmapped", "apply_unmapped",
    "lab_test", "lab_test_by_code", "lab_test_by_loinc", "lab_test_by_ncit", "cp_test", "cp_test_by_code",
    "cp_test_by_loinc", "cp_test_by_ncit",
    "unit", "ucum_to_cdisc", "cdisc_to_ucum", "convert_value",
]

UNMAPPED_MODES = ("error", "passthrough", "fixed")


def _fold(value: Any) -> str:
    return " ".join(str(value).split()).casefold()


def _get(entry: dict, dotted: str) -> Any:
    """Field value of an entry; ``fhir.code`` reaches into a nested mapping."""
    value: Any = entry
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


@dataclass
class TermTable:
    name: str
    unmapped: str
    source: list[dict]
    entries: list[dict]
    value_field: str
    issue_code: str
    match_fields: list[str] = field(default_factory=list)
    fixed_value: str | None = None
    codelist: str | None = None
    ct_fallback: str = "terms"  # "terms": any codelist term maps; "synonyms": only to listed entries
    description: str = ""
    _index: dict[str, dict] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.unmapped not in UNMAPPED_MODES:
            raise ValueError(f"table {self.name}: unknown unmapped mode {self.unmapped!r}")
        if self.unmapped == "fixed" and self.fixed_value is None:
            raise ValueError(f"table {self.name}: unmapped mode 'fixed' needs fixed_value")
        index: dict[str, dict] = {}
        # strongest first, first entry wins: the value field, then match fields, then aliases
        for entry in self.entries:
            value = entry.get(self.value_field)
            if value not in (None, ""):
                index.setdefault(_fold(value), entry)
        for fname in self.match_fields:
            for entry in self.entries:
                value = _get(entry, fname)
                if value not in (None, ""):
                    index.setdefault(_fold(value), entry)
        for entry in self.entries:
            for alias in entry.get("aliases") or []:
                index.setdefault(_fold(alias), entry)
        self._index = index

    def lookup(self, value: Any) -> dict | None:
        """The entry for ``value`` (case-insensitive over the value field, match fields, aliases
        and, for CT-backed tables, the codelist's synonyms and preferred terms), else None."""
        if value is None:
            return None
        key = _fold(value)
        if not key:
            return None
        entry = self._index.get(key)
        if entry is not None or not self.codelist:
            return entry
        submission = ct.codelist(self.codelist).lookup(str(value).strip())
        if submission is None:
            submission = ct.codelist(self.codelist).lookup(" ".join(str(value).split()))
        if submission is None:
            return None
        entry = self._index.get(_fold(submission))
        if entry is None and self.ct_fallback == "terms":
            entry = {self.value_field: submission}
        return entry

    def values(self) -> list[str]:
        """Every value this table can map to (its entries' value field)."""
        return [e[self.value_field] for e in self.entries if e.get(self.value_field) not in (None, "")]


# ---------------------------------------------------------------------------------------------
# loading


@lru_cache(maxsize=1)
def _validator():
    import jsonschema

    text = resources.files("trialbridge.schemas").joinpath("config", "terminology.schema.json").read_text(encoding="utf-8")
    schema = json.loads(text)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def table_names() -> list[str]:
    """Names of all tables in this package (file stems)."""
    here = resources.files(__name__)
    return sorted(p.name[:-5] for p in here.iterdir() if p.name.endswith(".yaml"))


def validate_table_data(data: Any) -> list[str]:
    """Schema messages for a parsed table (empty when valid)."""
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in sorted(_validator().iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))]


@lru_cache(maxsize=None)
def load_table(name: str) -> TermTable:
    """The table ``<name>.yaml`` of this package, validated against the terminology schema."""
    resource = resources.files(__name__).joinpath(f"{name}.yaml")
    if not resource.is_file():
        raise KeyError(f"no terminology table {name!r}; known: {', '.join(table_names())}")
    data = yaml.safe_load(resource.read_text(encoding="utf-8"))
    problems = validate_table_data(data)
    if problems:
        raise ValueError(f"terminology table {name}.yaml does not match its schema: " + "; ".join(problems))
    if data["name"] != name:
        raise ValueError(f"terminology table {name}.yaml declares name {data['name']!r}")
    return TermTable(
        name=data["name"], description=data.get("description", ""), source=data["source"],
        unmapped=data["unmapped"], fixed_value=data.get("fixed_value"), entries=data["entries"],
        value_field=data["value_field"], match_fields=list(data.get("match_fields") or []),
        issue_code=data["issue_code"], codelist=data.get("codelist"),
        ct_fallback=data.get("ct_fallback", "terms"),
    )


# ---------------------------------------------------------------------------------------------
# mapping with a declared unmapped mode

def count_unmapped(table_name: str, value: Any, log=None) -> None:
    """Count a value that a lookup (lab_test, cp_test, unit ...) could not map, in the run's
    log (:meth:`IssueLog.count_unmapped`); the caller reports the issue itself.  map_term
    counts on its own."""
    if log is not None:
        log.count_unmapped(table_name, value)


def apply_unmapped(table: TermTable, value: Any, *, log=None, where: dict | None = None) -> str | None:
    """What ``table`` gives for a value it cannot map, reporting it to ``log`` and the counter."""
    text = str(value)
    count_unmapped(table.name, text, log)
    if table.unmapped == "error":
        result, severity = None, "error"
        message = f"{text!r} is not in terminology table {table.name}"
    elif table.unmapped == "passthrough":
        result, severity = text, "warning"
        message = f"{text!r} is not in terminology table {table.name}; kept as given"
    else:
        result, severity = table.fixed_value, "warning"
        message = f"{text!r} is not in terminology table {table.name}; replaced by {table.fixed_value!r}"
    if log is not None:
        log.add(severity, table.issue_code, message, value=value, **(where or {}))
    return result


def map_term(table_name: str, value: Any, *, log=None, where: dict | None = None) -> str | None:
    """The CDISC submission value for ``value`` in table ``table_name``.

    Empty values (None, blank) give None without an issue.  An unmapped value is handled by the
    table's ``unmapped`` mode and reported to ``log`` (an :class:`~converters.issues.IssueLog`)
    with ``where`` (file, record, field, usubjid, seq) and the value.
    """
    if value is None or not str(value).strip():
        return None
    table = load_table(table_name)
    entry = table.lookup(value)
    if entry is not None and entry.get(table.value_field) not in (None, ""):
        return entry[table.value_field]
    return apply_unmapped(table, value, log=log, where=where)


# ---------------------------------------------------------------------------------------------
# lab tests and cell phenotypes


def lab_test(name: Any) -> dict | None:
    """The lab_tests entry for an internal name, alias, LBTESTCD, LBTEST or LOINC code."""
    return load_table("lab_tests").lookup(name)


@lru_cache(maxsize=None)
def _index(table_name: str, key: str) -> dict[str, dict]:
    """Entries of a table by one field (the first entry wins); for ``loinc`` also by the
    per-unit alternatives of ``loinc_by_unit_kind``.  Test codes are matched upper case."""
    out: dict[str, dict] = {}
    for e in load_table(table_name).entries:
        values = [e.get(key)] + ([alt.get("loinc") for alt in (e.get("loinc_by_unit_kind") or {}).values()]
                                 if key == "loinc" else [])
        for v in values:
            if v:
                out.setdefault(v.upper() if key.endswith("testcd") else v, e)
    return out


def _by(table_name: str, key: str, value: Any) -> dict | None:
    if not value:
        return None
    text = str(value).strip()
    return _index(table_name, key).get(text.upper() if key.endswith("testcd") else text)


def lab_test_by_code(lbtestcd: str) -> dict | None:
    return _by("lab_tests", "lbtestcd", lbtestcd)


def lab_test_by_loinc(code: str) -> dict | None:
    """The lab test for a LOINC code (the entry's own code or one of its per-unit alternatives)."""
    return _by("lab_tests", "loinc", code)


@lru_cache(maxsize=None)
def _ncit_index(table_name: str, key: str, codelist: str) -> dict[str, dict]:
    """Entries of a table by the NCI Thesaurus C-code of their CDISC test code (``key`` in
    ``codelist``), the code FHIR Observation.code carries for CDISC CT (the first entry wins)."""
    terms = ct.codelist(codelist).terms
    out: dict[str, dict] = {}
    for e in load_table(table_name).entries:
        ccode = terms.get(e.get(key) or "")
        if ccode:
            out.setdefault(ccode, e)
    return out


def lab_test_by_ncit(ccode: str) -> dict | None:
    """The lab test whose LBTESTCD has NCIt C-code ``ccode`` (e.g. C81971 -> IGG)."""
    return _ncit_index("lab_tests", "lbtestcd", "LBTESTCD").get(str(ccode or "").strip())


def cp_test_by_ncit(ccode: str) -> dict | None:
    """The cell phenotype test whose CPTESTCD has NCIt C-code ``ccode``."""
    return _ncit_index("cell_phenotypes", "cptestcd", "CPTESTCD").get(str(ccode or "").strip())


def cp_test(population: Any, measure: str) -> dict | None:
    """The cell_phenotypes entry for a population (name or population alias) and a measure
    (COUNT or PERCENT)."""
    if population is None or not measure:
        return None
    key, want = _fold(population), str(measure).strip().upper()
    for e in load_table("cell_phenotypes").entries:
        names = [e["population"], e.get("markers", ""), *(e.get("population_aliases") or [])]
        if e["measure"] == want and key in {_fold(n) for n in names if n}:
            return e
    return None


def cp_test_by_code(cptestcd: str) -> dict | None:
    return _by("cell_phenotypes", "cptestcd", cptestcd)


def cp_test_by_loinc(code: str) -> dict | None:
    return _by("cell_phenotypes", "loinc", code)


# ---------------------------------------------------------------------------------------------
# units


def unit(value: Any) -> dict | None:
    """``{ucum, cdisc}`` for a UCUM code, a CDISC UNIT submission value or a known alias.

    Exact (case-sensitive) UCUM codes win: UCUM is case-sensitive (``mL`` vs ``ML``)."""
    if value is None or not str(value).strip():
        return None
    text = str(value).strip()
    table = load_table("units")
    entry = _index("units", "ucum").get(text) or table.lookup(text)
    if entry is None:
        return None
    return {"ucum": entry.get("ucum"), "cdisc": entry.get("cdisc")}


def ucum_to_cdisc(u: Any) -> str | None:
    found = unit(u)
    return found["cdisc"] if found else None


def cdisc_to_ucum(u: Any) -> str | None:
    if u is None:
        return None
    entry = _index("units", "cdisc").get(str(u).strip())
    if entry is not None:
        return entry["ucum"]
    found = unit(u)
    return found["ucum"] if found else None


# UCUM arbitrary units (UCUM spec section 4.5, "arbitrary" units): pint treats them as
# dimensionless, so [iU]/mL would otherwise "convert" to /uL.  They only convert to themselves.
_ARBITRARY = re.compile(r"\[(?:iU|IU|arb'U|USP'U|GPL'U|MPL'U|APL'U|beth'U|anti'Xa'U|todd'U|dye'U|smgy'U"
                        r"|bdsk'U|ka'U|knk'U|mclg'U|tb'U|CCID_50|TCID_50|EID_50|PFU|FFU|CFU|IR|BAU|AU"
                        r"|Amb'a'1'U|PNU|Lf|D'ag'U|FEU|ELU|EU)\]")


@lru_cache(maxsize=1)
def _registry():
    from ucumvert import PintUcumRegistry

    return PintUcumRegistry()


def _ucum_code(u: Any) -> str | None:
    if u is None or not str(u).strip():
        return None
    found = unit(u)
    if found and found.get("ucum"):
        return found["ucum"]
    return str(u).strip()  # maybe a valid UCUM code the table does not list


def _arbitrary_units(code: str) -> Counter:
    return Counter(m.group(0).replace("[IU]", "[iU]") for m in _ARBITRARY.finditer(code))


@lru_cache(maxsize=1)
def _factor_table() -> tuple[dict, dict]:
    """The factors the UCUM library gives between the units of the units table, computed once
    (scripts/build_unit_factors.py), so most runs never load the library."""
    data = yaml.safe_load(resources.files(__name__).joinpath("derived").joinpath("unit_factors.yaml").read_text(encoding="utf-8"))
    same = {(e["from"], e["to"]): (e["scale"], e["offset"]) for e in data["same_dimension"]}
    molar = {(e["from"], e["to"]): (e["scale"], e["molar_mass"]) for e in data["through_molar_mass"]}
    return same, molar


@lru_cache(maxsize=4096)
def _factor(from_code: str, to_code: str, molar_mass: float | None) -> tuple[float, float] | None:
    """(scale, offset) so that to = scale * from + offset, or None when not convertible."""
    if from_code == to_code:
        return (1.0, 0.0)
    same, molar = _factor_table()
    if (from_code, to_code) in same:
        return same[(from_code, to_code)]
    if (from_code, to_code) in molar:
        if not molar_mass:
            return None
        scale, how = molar[(from_code, to_code)]
        return (float(f"{scale * molar_mass if how == 'multiply' else scale / molar_mass:.15g}"), 0.0)
    known = {e["ucum"] for e in load_table("units").entries if e.get("ucum")}
    if from_code in known and to_code in known:
        return None  # both in the table and not listed: not convertible
    return library_factor(from_code, to_code, molar_mass)


def library_factor(from_code: str, to_code: str, molar_mass: float | None) -> tuple[float, float] | None:
    """(scale, offset) computed by the UCUM library itself (ucumvert on pint)."""
    import pint
    from lark.exceptions import LarkError

    if _arbitrary_units(from_code) != _arbitrary_units(to_code):
        return None
    reg = _registry()
    try:
        source, target = reg.from_ucum(from_code), reg.from_ucum(to_code)
    except (LarkError, pint.errors.PintError):  # ucumvert: InvalidUcumError (a LarkError), pint errors
        return None

    def convert(x: float) -> float | None:
        try:
            q = source * x
        except pint.errors.OffsetUnitCalculusError:  # [degF], Cel: a temperature, not a difference
            q = type(source)(x * source.magnitude, source.units)
        try:
            return float(q.to(target).magnitude)
        except pint.DimensionalityError:
            pass
        if molar_mass:
            per_mole = reg.from_ucum("g/mol") * molar_mass
            for how in ("divide", "multiply"):  # mass -> substance, substance -> mass
                try:
                    candidate = q / per_mole if how == "divide" else q * per_mole
                    return float(candidate.to(target).magnitude)
                except (pint.DimensionalityError, pint.errors.OffsetUnitCalculusError):
                    continue
        return None

    at_zero, at_one = convert(0.0), convert(1.0)
    if at_zero is None or at_one is None:
        return None
    # 15 significant digits: 1 pg/mL is 1 ng/L, not 0.9999999999999999
    return (float(f"{at_one - at_zero:.15g}"), float(f"{at_zero:.15g}"))


def convert_value(value: float, from_unit: str, to_unit: str, molar_mass: float | None = None) -> float | None:
    """``value`` in ``from_unit`` expressed in ``to_unit`` (UCUM codes, CDISC units or aliases).

    Mass and substance concentrations convert through ``molar_mass`` (g/mol).  Returns None
    when the units are unknown or not convertible (different dimensions, arbitrary units).
    """
    if value is None:
        return None
    from_code, to_code = _ucum_code(from_unit), _ucum_code(to_unit)
    if from_code is None or to_code is None:
        return None
    factor = _factor(from_code, to_code, float(molar_mass) if molar_mass else None)
    if factor is None:
        return None
    scale, offset = factor
    return float(value) * scale + offset

