"""Rules that judge each row on its own (plus, some, a dataset-level part on the metadata).

``begin`` works out everything the rows need — the columns to look at, the compiled row
validator, the codelists — so that a row costs a few dict lookups per column.
"""
from __future__ import annotations

import re
from typing import Any

from trialbridge.converters.core import iso8601
from trialbridge.converters.core import sdtm_spec
from trialbridge.converters.formats.sdtm import XPT_MAX_CHAR  # the writer's FDA limit
from trialbridge.converters.validation.engine import CACHE_LIMIT, Check, DatasetInfo, RowFn, dtc, is_null, num_text

_NUMERIC_RESULT = re.compile(r"^(<=|>=|<|>)?\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


class RequiredVariables(Check):
    """SDTM-REQ-MISSING: a Req variable absent from the dataset, or null in a row."""

    def begin(self, ds: DatasetInfo) -> RowFn | None:
        required = [v.name for v in ds.spec_variables() if v.core == "Req"]
        for name in required:
            if name not in ds.present:
                self.report(ds, f"Required variable {name} is not in {ds.name}", field=name)
        required = [n for n in required if n in ds.present]
        if not required:
            return None

        def row_fn(row_no: int, row: dict) -> None:
            for name in required:
                if is_null(row.get(name)):
                    self.report(ds, f"NULL value in Required variable {name}", row_no, row, name)
        return row_fn


class Iso8601Values(Check):
    """SDTM-DTC-ISO8601: every Char --DTC value is SDTM ISO 8601."""

    def begin(self, ds: DatasetInfo) -> RowFn | None:
        dtcs = [v.name for v in ds.variables if v.name.endswith("DTC") and v.type == "Char"]
        if not dtcs:
            return None
        valid: dict[Any, bool] = {}  # values repeat (visit dates): judge each once

        def row_fn(row_no: int, row: dict) -> None:
            for name in dtcs:
                value = row.get(name)
                if is_null(value):
                    continue
                ok = valid.get(value)
                if ok is None:
                    if len(valid) > CACHE_LIMIT:
                        valid.clear()
                    ok = valid[value] = iso8601.is_valid(value)
                if not ok:
                    self.report(ds, f"Invalid ISO 8601 value for {name}", row_no, row, name, value)
        return row_fn


def _codelist(ct_module: Any, short: str) -> Any | None:
    return ct_module.codelist(short) if ct_module.has_codelist(short) else None


class CodelistValues(Check):
    """SDTM-CT-INVALID: values in the variable's codelist (error when non-extensible, warning
    when extensible); DSDECOD's codelist follows DSCAT (``x-codelist-by``)."""

    def begin(self, ds: DatasetInfo) -> RowFn | None:
        from trialbridge.mappings.terminology import ct

        cols: list[tuple[str, Any]] = []
        for name, short in ds.codelists().items():
            if name not in ds.present:
                continue
            codelist = _codelist(ct, short)
            if codelist is None:
                self.ctx.log.info(
                    "SDTM-CT-CODELIST-UNKNOWN",
                    f"Codelist {short} of {name} is not in the loaded CT ({ct.version()}); not checked",
                    file=ds.file, field=name, value=short,
                )
                continue
            cols.append((name, codelist))
        if not cols:
            return None
        governed = sdtm_spec.governed_codelists(ds.name, ds.ig) if ds.spec is not None else {}
        by_value = {
            name: (gov, {v: _codelist(ct, short) for v, short in table.items()})
            for name, (gov, table) in governed.items() if name in ds.present and gov in ds.present
        }
        # (name, codelist, terms, governing variable or None, codelists by its value, numeric results pass)
        plan = [(name, codelist, codelist.terms, *(by_value.get(name) or (None, None)), name.endswith("STRESC"))
                for name, codelist in cols]

        def row_fn(row_no: int, row: dict) -> None:
            for name, codelist, terms, gov, table, stresc in plan:
                value = row.get(name)
                if value is None or is_null(value):
                    continue
                if gov is not None:
                    codelist = table.get(row.get(gov)) or codelist
                    terms = codelist.terms
                if value in terms:
                    continue
                if stresc and _NUMERIC_RESULT.match(str(value)):
                    continue  # --STRESC codelists (C102580 …) govern character results only
                self._finding(ds, row_no, row, name, value, codelist)
        return row_fn

    def _finding(self, ds: DatasetInfo, row_no: int, row: dict, name: str, value: Any, codelist: Any) -> None:
        hint = codelist.lookup(value)
        kind = "extensible" if codelist.extensible else "non-extensible"
        message = f"Value for {name} not found in {kind} codelist {codelist.short_name}"
        if hint is not None and hint != value:
            message += f" (submission value is {hint!r})"
        self.report(ds, message, row_no, row, name, value, severity="warning" if codelist.extensible else "error")


class XptCharLength(Check):
    """SDTM-XPT-CHAR-200: Char values of at most 200 bytes (UTF-8)."""

    def begin(self, ds: DatasetInfo) -> RowFn | None:
        chars = [v.name for v in ds.variables if v.type == "Char"]
        if not chars:
            return None
        shortest = XPT_MAX_CHAR // 4  # no text of fewer characters can exceed the bytes

        def row_fn(row_no: int, row: dict) -> None:
            if max(map(len, map(str, map(row.get, chars)))) <= shortest:
                return  # every value short: nothing to measure in bytes
            for name in chars:
                value = row.get(name)
                if isinstance(value, str) and len(value) > shortest and len(value.encode("utf-8")) > XPT_MAX_CHAR:
                    self.report(ds, f"{name} value is {len(value.encode('utf-8'))} bytes "
                                f"(SAS V5 max {XPT_MAX_CHAR})", row_no, row, name, value)
        return row_fn


def _bad_chars(text: str) -> str:
    return "".join(sorted({c for c in text if not 32 <= ord(c) <= 126}))


class XptAscii(Check):
    """SDTM-XPT-ASCII: printable ASCII in labels (metadata) and values (rows)."""

    def begin(self, ds: DatasetInfo) -> RowFn | None:
        if _bad_chars(ds.label or ""):
            self.report(ds, "Non-ASCII or non-printable character in dataset label", value=ds.label)
        for v in ds.variables:
            if _bad_chars(v.label or ""):
                self.report(ds, f"Non-ASCII or non-printable character in label of {v.name}",
                            field=v.name, value=v.label)
        chars = [v.name for v in ds.variables if v.type == "Char"]
        if not chars:
            return None

        def row_fn(row_no: int, row: dict) -> None:
            whole = "".join(map(str, map(row.get, chars)))
            if whole.isascii() and whole.isprintable():
                return  # then so is every value
            for name in chars:
                value = row.get(name)
                if isinstance(value, str) and not (value.isascii() and value.isprintable()):
                    bad = _bad_chars(value)
                    if bad:
                        self.report(ds, f"Non-ASCII or non-printable character(s) {bad!r} in {name}",
                                    row_no, row, name, value)
        return row_fn


class RowSchema(Check):
    """SDTM-ROW-SCHEMA: schema findings that no other rule owns.

    Left to their own rules (one finding, one code): missing/empty Req variables
    (SDTM-REQ-MISSING), ``--DTC`` patterns (SDTM-DTC-ISO8601, which also accepts the
    SDTMIG ``-`` placeholders and intervals), ``maxLength`` (SDTM-XPT-CHAR-200) and the
    DOMAIN enum (SDTM-DOMAIN-VALUE).  A variable the schema does not know is reported
    once for the dataset (in ``begin``), not on every row.
    """

    def begin(self, ds: DatasetInfo) -> RowFn | None:
        spec = ds.spec
        if spec is None:
            return None
        validator = sdtm_spec.row_validator(ds.name, ds.ig)
        known = set(spec.names)
        required = {v.name for v in spec.variables if v.core == "Req"}
        for v in ds.variables:
            if v.name not in known:
                if sdtm_spec.is_model_variable(ds.name, v.name):
                    continue  # a model variable added to the domain: SDTM-MODEL-VAR-ADDED's finding
                self.report(ds, f"Variable {v.name} is not in the {spec.name} schema "
                            f"(SDTMIG {spec.schema.get('x-sdtmig', '?')}) nor a variable of the SDTM model",
                            field=v.name)
        # a variable stored with the other type (the Dataset-JSON MSG example's AELLTCD as Char):
        # one finding for the dataset, not one per row
        retyped = set()
        for v in ds.variables:
            want = spec.var(v.name)
            if want is not None and v.type and want.type and v.type != want.type:
                retyped.add(v.name)
                self.report(ds, f"Variable {v.name} is {v.type} in the dataset but {want.type} in SDTMIG "
                            f"{spec.schema.get('x-sdtmig', '?')}; its values are not checked row by row", field=v.name)
        is_valid = validator.is_valid

        def row_fn(row_no: int, row: dict) -> None:
            if is_valid(row):
                return
            seen: set[str | None] = set(retyped)
            for error in validator.iter_errors(row):
                for field in _error_fields(error):
                    if field in seen or _owned_elsewhere(error, field, row, required, known):
                        continue
                    seen.add(field)
                    self.report(ds, error.message, row_no, row, field, row.get(field) if field else None)
        return row_fn


def _error_fields(error: Any) -> list[str | None]:
    path = list(error.instance_path)
    if path:
        return [str(path[0])]
    kind = error.kind
    prop = getattr(kind, "property", None)
    if prop is not None:
        return [str(prop)]
    unexpected = getattr(kind, "unexpected", None)
    if unexpected:
        return [str(u) for u in unexpected]
    return [None]


def _owned_elsewhere(error: Any, field: str | None, row: dict[str, Any], required: set[str],
                     known: set[str]) -> bool:
    kind = type(error.kind).__name__
    if kind in ("Required", "AdditionalProperties", "MaxLength"):
        return True
    if field is None or field not in known:
        return field is not None
    if field in required and is_null(row.get(field)):
        return True
    if kind == "Pattern" and field.endswith("DTC"):
        return True
    return kind == "Enum" and field == "DOMAIN"


class ModelVariablesAdded(Check):
    """SDTM-MODEL-VAR-ADDED: a variable the domain's specification does not list but the SDTM
    model has (AEDTC, AEDY and EPOCH in the pilot's AE; VISIT in its DS) — allowed by SDTMIG
    as a Permissible variable of the class, worth a look, not an error (P21 SD1076 warning).
    Once per dataset and variable."""

    def begin(self, ds: DatasetInfo) -> RowFn | None:
        spec = ds.spec
        if spec is None:
            return None
        known = set(spec.names)
        for v in ds.variables:
            if v.name not in known and sdtm_spec.is_model_variable(ds.name, v.name):
                self.report(ds, f"Model variable {v.name} added to {spec.name}: not in its SDTMIG "
                            f"{spec.schema.get('x-sdtmig', '?')} specification", field=v.name)
        return None
