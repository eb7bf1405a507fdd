"""Conformance rules over a set of SDTM datasets.

:func:`validate_datasets` runs every rule in :data:`RULES` over ``dict[name, Dataset]``
and appends findings to an :class:`~converters.issues.IssueLog` (design rule 3: issues
are collected, never raised).  Each rule is one small named function registered in
:data:`RULES` with a stable code, a severity, a description and the CDISC / FDA /
Pinnacle 21 rule it mirrors; ``docs/rules.md`` lists them with the source that
confirms each mirrored id.

Where a finding sits:
``file``  = ``dataset.source`` or ``"<name>.xpt"`` (lower-case, as XPT files are named);
``record`` = 1-based row number in ``dataset.rows`` (``None`` for dataset-level findings);
``field`` = the variable; ``usubjid`` and ``seq`` (the ``--SEQ`` value) when the row has them.

Variable metadata (core, codelist, natural keys, row schema) comes from
:mod:`converters.sdtm_spec`; codelists from :mod:`converters.ct`.  A dataset without a
spec (custom domain) is checked with its own ``Dataset.variables``; spec-only rules
are then skipped for it and one ``SDTM-SPEC-UNKNOWN`` info issue says so.

Performance: plain loops over the row dicts, one pass per rule, compiled schema
validators; no per-row pandas.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date
from typing import Any, Callable, Iterable

from trialbridge.converters.core import iso8601
from trialbridge.converters.core.datasets import Dataset, Variable
from trialbridge.converters.core.issues import IssueLog
from trialbridge.converters.formats.sdtm import XPT_MAX_CHAR, XPT_MAX_LABEL, XPT_MAX_NAME  # the writer's FDA limits

# Trial design and other datasets without subject-level records.
TRIAL_DESIGN = frozenset({"TA", "TE", "TV", "TI", "TS", "TD", "TM"})
XPT_NAME = re.compile(r"[A-Z][A-Z0-9_]*\Z")
# Variables whose codelist depends on another variable's value (SDTMIG DS assumptions):
# variable -> (governing variable, {governing value: codelist short name}).  The spec
# carries one codelist per variable; these rows override it when the governing value is known.
@dataclass(frozen=True)
class Rule:
    id: str
    severity: str  # default severity; a rule may report a finding at another level (CT)
    description: str
    mirrors: str
    func: Callable[["Context", "Rule"], None]


# --------------------------------------------------------------------------- helpers


def is_null(value: Any) -> bool:
    """SDTM missing: None, empty/blank string, NaN."""
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    if isinstance(value, float):
        return math.isnan(value)
    return False


def _num_text(value: Any) -> str:
    """Text of a value as IDVARVAL would hold it: 3.0 -> '3', ' AE ' -> 'AE'."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            return text
        if number.is_integer() and re.fullmatch(r"[+-]?\d+(\.0*)?", text):
            return str(int(number))
        return text
    return str(value)


def _dtc(value: Any) -> str | None:
    """A --DTC cell as text for the ISO 8601 functions (surrounding blanks dropped), None when empty."""
    return value.strip() or None if isinstance(value, str) else None


# --------------------------------------------------------------------------- context


class Context:
    """What the rules share: the datasets, the log, specs and DM lookups."""

    def __init__(self, datasets: dict[str, Dataset], log: IssueLog):
        self.datasets = datasets
        self.log = log
        self._specs: dict[str, Any] = {}
        self._validators: dict[str, Any] = {}
        self._dm_subjects: set[str] | None = None
        self._rfstdtc: dict[str, date] | None = None

    # --- metadata
    def spec(self, ds: Dataset) -> Any | None:
        """The DomainSpec for a dataset, or None when the domain has no spec."""
        name = ds.name.upper()
        if name not in self._specs:
            self._specs[name] = _load_spec(name)
        return self._specs[name]

    def row_validator(self, ds: Dataset) -> Any | None:
        name = ds.name.upper()
        if name not in self._validators:
            self._validators[name] = None
            if self.spec(ds) is not None:
                from trialbridge.converters.core import sdtm_spec

                self._validators[name] = sdtm_spec.row_validator(name)
        return self._validators[name]

    def variables(self, ds: Dataset) -> list[Variable]:
        """Spec variables (all, including ones absent from the data), else the dataset's."""
        spec = self.spec(ds)
        return list(spec.variables) if spec is not None else list(ds.variables)

    def codelist_of(self, ds: Dataset) -> dict[str, str]:
        """variable -> CT codelist short name; the dataset's own metadata wins."""
        out: dict[str, str] = {}
        spec = self.spec(ds)
        if spec is not None:
            for v in spec.variables:
                if v.codelist:
                    out[v.name] = v.codelist
        for v in ds.variables:
            if v.codelist:
                out[v.name] = v.codelist
        return out

    # --- DM lookups
    @property
    def dm_subjects(self) -> set[str] | None:
        if self._dm_subjects is None:
            dm = self.datasets.get("DM")
            if dm is None:
                return None
            self._dm_subjects = {r.get("USUBJID") for r in dm.rows if not is_null(r.get("USUBJID"))}
        return self._dm_subjects

    @property
    def rfstdtc(self) -> dict[str, date]:
        if self._rfstdtc is None:
            self._rfstdtc = {}
            dm = self.datasets.get("DM")
            if dm is not None:
                for r in dm.rows:
                    day = iso8601.date_part(r.get("RFSTDTC"))
                    if day is not None and not is_null(r.get("USUBJID")):
                        self._rfstdtc[r["USUBJID"]] = day
        return self._rfstdtc

    # --- reporting
    def report(
        self, rule: Rule, ds: Dataset, message: str, row_no: int | None = None,
        row: dict[str, Any] | None = None, field: str | None = None, value: Any = None,
        severity: str | None = None,
    ) -> None:
        usubjid = seq = None
        if row is not None:
            u = row.get("USUBJID")
            usubjid = None if is_null(u) else str(u)
            s = row.get(seq_name(ds)) if seq_name(ds) else None
            if not is_null(s):
                seq = int(s) if isinstance(s, float) and s.is_integer() else s
        if isinstance(value, float) and math.isnan(value):
            value = None
        self.log.add(
            severity or rule.severity, rule.id, message, file=dataset_file(ds), record=row_no,
            field=field, value=value, usubjid=usubjid, seq=seq,
        )


def _load_spec(name: str) -> Any | None:
    from trialbridge.converters.core import sdtm_spec

    spec = sdtm_spec.load_spec(name)  # SUPPxx -> SUPPQUAL metadata; unknown -> known=False
    return spec if spec.known else None


def dataset_file(ds: Dataset) -> str:
    return ds.source or f"{ds.name.lower()}.xpt"


def prefix(ds: Dataset) -> str:
    """Variable prefix of a domain: AE for AE and split AEx datasets."""
    return ds.name[:2].upper()


def seq_name(ds: Dataset) -> str | None:
    if ds.name.upper().startswith("SUPP") or ds.name.upper() == "RELREC":
        return None
    name = f"{prefix(ds)}SEQ"
    return name if name in ds.names else None


def _rows(ds: Dataset) -> Iterable[tuple[int, dict[str, Any]]]:
    return enumerate(ds.rows, start=1)


# --------------------------------------------------------------------------- rules


def check_req_missing(ctx: Context, rule: Rule) -> None:
    for ds in ctx.datasets.values():
        present = set(ds.names)
        required = [v.name for v in ctx.variables(ds) if v.core == "Req"]
        for name in required:
            if name not in present:
                ctx.report(rule, ds, f"Required variable {name} is not in {ds.name}", field=name)
        required = [n for n in required if n in present]
        if not required:
            continue
        for row_no, row in _rows(ds):
            for name in required:
                if is_null(row.get(name)):
                    ctx.report(rule, ds, f"NULL value in Required variable {name}", row_no, row, name)


def check_exp_missing(ctx: Context, rule: Rule) -> None:
    for ds in ctx.datasets.values():
        present = set(ds.names)
        for v in ctx.variables(ds):
            if v.core == "Exp" and v.name not in present:
                ctx.report(rule, ds, f"Expected variable {v.name} is not in {ds.name}", field=v.name)


def check_key_duplicate(ctx: Context, rule: Rule) -> None:
    for ds in ctx.datasets.values():
        keys = list(ds.keys)
        if not keys:
            spec = ctx.spec(ds)
            keys = list(getattr(spec, "keys", None) or []) if spec is not None else []
        present = set(ds.names)
        keys = [k for k in keys if k in present]
        if not keys:
            continue
        first: dict[tuple, int] = {}
        field = ", ".join(keys)
        for row_no, row in _rows(ds):
            key = tuple(_num_text(row.get(k)) if not is_null(row.get(k)) else "" for k in keys)
            if key in first:
                ctx.report(
                    rule, ds, f"Duplicate record over keys ({field}): same as record {first[key]}",
                    row_no, row, field, " | ".join(key),
                )
            else:
                first[key] = row_no


def check_usubjid_in_dm(ctx: Context, rule: Rule) -> None:
    subjects = ctx.dm_subjects
    if subjects is None:
        return
    for name, ds in ctx.datasets.items():
        if name.upper() in ("DM",) or name.upper() in TRIAL_DESIGN or "USUBJID" not in ds.names:
            continue
        for row_no, row in _rows(ds):
            u = row.get("USUBJID")
            if not is_null(u) and u not in subjects:
                ctx.report(rule, ds, f"Subject {u} is not present in DM", row_no, row, "USUBJID", u)


def check_seq_duplicate(ctx: Context, rule: Rule) -> None:
    for ds in ctx.datasets.values():
        seq = seq_name(ds)
        if seq is None:
            continue
        # within USUBJID (or POOLID); TSSEQ within TSPARMCD (CDISC CG0028)
        group = next((g for g in ("USUBJID", "POOLID", "TSPARMCD") if g in ds.names), None)
        first: dict[tuple, int] = {}
        for row_no, row in _rows(ds):
            value = row.get(seq)
            if is_null(value):
                continue
            key = (row.get(group) if group else None, _num_text(value))
            if key in first:
                ctx.report(
                    rule, ds, f"Duplicate {seq} {key[1]} within {group or 'dataset'} "
                    f"(first at record {first[key]})", row_no, row, seq, value,
                )
            else:
                first[key] = row_no


def check_study_day(ctx: Context, rule: Rule) -> None:
    rfst = ctx.rfstdtc
    if not rfst:
        return
    for ds in ctx.datasets.values():
        p = prefix(ds)
        present = set(ds.names)
        pairs = [
            (f"{p}{dtc}", f"{p}{dy}") for dtc, dy in (("DTC", "DY"), ("STDTC", "STDY"), ("ENDTC", "ENDY"))
            if f"{p}{dtc}" in present and f"{p}{dy}" in present
        ]
        if not pairs or "USUBJID" not in present:
            continue
        for row_no, row in _rows(ds):
            ref = rfst.get(row.get("USUBJID"))
            if ref is None:
                continue
            for dtc, dy in pairs:
                recorded = row.get(dy)
                on = iso8601.date_part(row.get(dtc))
                if on is None or is_null(recorded):
                    continue
                expected = iso8601.study_day(on, ref)
                if not isinstance(recorded, (int, float)) or recorded != expected:
                    ctx.report(
                        rule, ds, f"{dy} is {_num_text(recorded)} but {dtc} {row.get(dtc)} and "
                        f"RFSTDTC give {expected}", row_no, row, dy, recorded,
                    )


def check_dtc_iso8601(ctx: Context, rule: Rule) -> None:
    for ds in ctx.datasets.values():
        dtcs = [v.name for v in ds.variables if v.name.endswith("DTC") and v.type == "Char"]
        if not dtcs:
            continue
        for row_no, row in _rows(ds):
            for name in dtcs:
                value = row.get(name)
                if is_null(value):
                    continue
                if not iso8601.is_valid(value):
                    ctx.report(rule, ds, f"Invalid ISO 8601 value for {name}", row_no, row, name, value)


def check_ct(ctx: Context, rule: Rule) -> None:
    from trialbridge.mappings.terminology import ct

    for ds in ctx.datasets.values():
        present = set(ds.names)
        cols: list[tuple[str, Any]] = []
        for name, short in ctx.codelist_of(ds).items():
            if name not in present:
                continue
            codelist = _codelist(ct, short)
            if codelist is None:
                ctx.log.info(
                    "SDTM-CT-CODELIST-UNKNOWN",
                    f"Codelist {short} of {name} is not in the loaded CT ({ct.CT_VERSION}); not checked",
                    file=dataset_file(ds), field=name, value=short,
                )
                continue
            cols.append((name, codelist))
        if not cols:
            continue
        by_value = {
            name: (gov, {v: _codelist(ct, short) for v, short in table.items()})
            for name, (gov, table) in _governed(ds.name).items() if name in present and gov in present
        }
        for row_no, row in _rows(ds):
            for name, codelist in cols:
                value = row.get(name)
                if is_null(value):
                    continue
                if name.endswith("STRESC") and _NUMERIC_RESULT.match(str(value)):
                    continue  # --STRESC codelists (C102580 …) govern character results only
                if name in by_value:
                    gov, table = by_value[name]
                    codelist = table.get(row.get(gov)) or codelist
                if value in codelist.terms:
                    continue
                hint = codelist.lookup(value)
                kind = "extensible" if codelist.extensible else "non-extensible"
                message = f"Value for {name} not found in {kind} codelist {codelist.short_name}"
                if hint is not None and hint != value:
                    message += f" (submission value is {hint!r})"
                ctx.report(
                    rule, ds, message, row_no, row, name, value,
                    severity="warning" if codelist.extensible else "error",
                )


_NUMERIC_RESULT = re.compile(r"^(<=|>=|<|>)?\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def _governed(name: str) -> dict[str, tuple[str, dict[str, str]]]:
    """Codelists chosen by another variable's value (DSDECOD by DSCAT), from the schemas."""
    from trialbridge.converters.core.sdtm_spec import governed_codelists

    spec = _load_spec(name)
    return governed_codelists(name) if spec is not None else {}


def _codelist(ct_module: Any, short: str) -> Any | None:
    return ct_module.codelist(short) if ct_module.has_codelist(short) else None


def check_xpt_name(ctx: Context, rule: Rule) -> None:
    for ds in ctx.datasets.values():
        if len(ds.name) > XPT_MAX_NAME or not XPT_NAME.match(ds.name):
            ctx.report(rule, ds, f"Dataset name {ds.name!r} is not a SAS V5 name (<=8, [A-Z][A-Z0-9_]*)",
                       value=ds.name)
        for v in ds.variables:
            if len(v.name) > XPT_MAX_NAME or not XPT_NAME.match(v.name):
                ctx.report(rule, ds, f"Variable name {v.name!r} is not a SAS V5 name (<=8, [A-Z][A-Z0-9_]*)",
                           field=v.name, value=v.name)


def check_xpt_label(ctx: Context, rule: Rule) -> None:
    for ds in ctx.datasets.values():
        if len(ds.label or "") > XPT_MAX_LABEL:
            ctx.report(rule, ds, f"Dataset label is {len(ds.label)} characters (max {XPT_MAX_LABEL})",
                       value=ds.label)
        for v in ds.variables:
            if len(v.label or "") > XPT_MAX_LABEL:
                ctx.report(rule, ds, f"Label of {v.name} is {len(v.label)} characters (max {XPT_MAX_LABEL})",
                           field=v.name, value=v.label)


def check_xpt_char_200(ctx: Context, rule: Rule) -> None:
    for ds in ctx.datasets.values():
        chars = [v.name for v in ds.variables if v.type == "Char"]
        for row_no, row in _rows(ds):
            for name in chars:
                value = row.get(name)
                if isinstance(value, str) and len(value) > XPT_MAX_CHAR // 4 and \
                        len(value.encode("utf-8")) > XPT_MAX_CHAR:
                    ctx.report(rule, ds, f"{name} value is {len(value.encode('utf-8'))} bytes "
                               f"(SAS V5 max {XPT_MAX_CHAR})", row_no, row, name, value)


def _bad_chars(text: str) -> str:
    return "".join(sorted({c for c in text if not 32 <= ord(c) <= 126}))


def check_xpt_ascii(ctx: Context, rule: Rule) -> None:
    for ds in ctx.datasets.values():
        if _bad_chars(ds.label or ""):
            ctx.report(rule, ds, "Non-ASCII or non-printable character in dataset label", value=ds.label)
        for v in ds.variables:
            if _bad_chars(v.label or ""):
                ctx.report(rule, ds, f"Non-ASCII or non-printable character in label of {v.name}",
                           field=v.name, value=v.label)
        chars = [v.name for v in ds.variables if v.type == "Char"]
        for row_no, row in _rows(ds):
            for name in chars:
                value = row.get(name)
                if isinstance(value, str) and not (value.isascii() and value.isprintable()):
                    bad = _bad_chars(value)
                    if bad:
                        ctx.report(rule, ds, f"Non-ASCII or non-printable character(s) {bad!r} in {name}",
                                   row_no, row, name, value)


def check_row_schema(ctx: Context, rule: Rule) -> None:
    """Schema findings that no other rule owns.

    Left to their own rules (one finding, one code): missing/empty Req variables
    (SDTM-REQ-MISSING), ``--DTC`` patterns (SDTM-DTC-ISO8601, which also accepts the
    SDTMIG ``-`` placeholders and intervals), ``maxLength`` (SDTM-XPT-CHAR-200) and the
    DOMAIN enum (SDTM-DOMAIN-VALUE).  A variable the schema does not know is reported
    once for the dataset, not on every row.
    """
    for ds in ctx.datasets.values():
        validator = ctx.row_validator(ds)
        spec = ctx.spec(ds)
        if validator is None or spec is None:
            continue
        known = set(spec.names)
        required = {v.name for v in spec.variables if v.core == "Req"}
        for v in ds.variables:
            if v.name not in known:
                ctx.report(rule, ds, f"Variable {v.name} is not in the {spec.name} schema "
                           f"(SDTMIG {spec.schema.get('x-sdtmig', '?')})", field=v.name)
        for row_no, row in _rows(ds):
            if validator.is_valid(row):
                continue
            seen: set[str | None] = set()
            for error in validator.iter_errors(row):
                for field in _error_fields(error):
                    if field in seen or _owned_elsewhere(error, field, row, required, known):
                        continue
                    seen.add(field)
                    ctx.report(rule, ds, error.message, row_no, row, field, row.get(field) if field else None)


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


def check_studyid_multiple(ctx: Context, rule: Rule) -> None:
    dm = ctx.datasets.get("DM")
    counts: dict[str, int] = {}
    for ds in ctx.datasets.values():
        for row in ds.rows:
            s = row.get("STUDYID")
            if not is_null(s):
                counts[s] = counts.get(s, 0) + 1
    if len(counts) <= 1:
        return
    dm_ids = {r.get("STUDYID") for r in dm.rows if not is_null(r.get("STUDYID"))} if dm else set()
    main = next(iter(dm_ids)) if len(dm_ids) == 1 else max(sorted(counts), key=lambda s: counts[s])
    for ds in ctx.datasets.values():
        reported: set[str] = set()
        for row_no, row in _rows(ds):
            s = row.get("STUDYID")
            if is_null(s) or s == main or s in reported:
                continue
            reported.add(s)
            ctx.report(rule, ds, f"STUDYID {s!r} differs from the study's {main!r} "
                       f"(first of its records here)", row_no, row, "STUDYID", s)


def check_domain_value(ctx: Context, rule: Rule) -> None:
    for ds in ctx.datasets.values():
        if "DOMAIN" not in ds.names:
            continue
        name = ds.name.upper()
        for row_no, row in _rows(ds):
            value = row.get("DOMAIN")
            if is_null(value):
                continue  # SDTM-REQ-MISSING reports it
            if value == name or (len(value) == 2 and len(name) in (3, 4) and name.startswith(value)):
                continue
            ctx.report(rule, ds, f"DOMAIN {value!r} does not match dataset {ds.name}", row_no, row,
                       "DOMAIN", value)


def check_rfstdtc_after_rfendtc(ctx: Context, rule: Rule) -> None:
    dm = ctx.datasets.get("DM")
    if dm is None or "RFSTDTC" not in dm.names or "RFENDTC" not in dm.names:
        return
    for row_no, row in _rows(dm):
        start, end = row.get("RFSTDTC"), row.get("RFENDTC")
        if is_null(start) or is_null(end):
            continue
        if iso8601.after(_dtc(start), _dtc(end)):  # at the precision both have
            ctx.report(rule, dm, f"RFSTDTC {start} is after RFENDTC {end}", row_no, row, "RFSTDTC", start)


def check_supp_parent(ctx: Context, rule: Rule) -> None:
    index: dict[tuple[str, str], set[tuple[Any, str]]] = {}
    for name, ds in ctx.datasets.items():
        if not name.upper().startswith("SUPP"):
            continue
        for row_no, row in _rows(ds):
            rdomain = row.get("RDOMAIN")
            if is_null(rdomain):
                continue  # SDTM-REQ-MISSING reports it
            usubjid, idvar, idvarval = row.get("USUBJID"), row.get("IDVAR"), row.get("IDVARVAL")
            parent = ctx.datasets.get(rdomain)
            if parent is None and len(name) == 8 and name.upper()[4:6] == str(rdomain).upper():
                parent = ctx.datasets.get(name.upper()[4:])  # split dataset: SUPPLBUR -> LBUR
            if parent is None:
                ctx.report(rule, ds, f"Parent dataset {rdomain} is not among the datasets", row_no, row,
                           "RDOMAIN", rdomain)
                continue
            if is_null(idvar):
                found = any(r.get("USUBJID") == usubjid for r in parent.rows) if rdomain != "DM" else (
                    usubjid in (ctx.dm_subjects or set()))
                if not found:
                    ctx.report(rule, ds, f"No {rdomain} record for subject {usubjid}", row_no, row,
                               "USUBJID", usubjid)
                continue
            if idvar not in parent.names:
                ctx.report(rule, ds, f"IDVAR {idvar} is not a variable of {rdomain}", row_no, row,
                           "IDVAR", idvar)
                continue
            key = (rdomain, idvar)
            if key not in index:
                index[key] = {
                    (r.get("USUBJID"), _num_text(r.get(idvar))) for r in parent.rows if not is_null(r.get(idvar))
                }
            if (usubjid, _num_text(idvarval) if not is_null(idvarval) else "") not in index[key]:
                ctx.report(rule, ds, f"No {rdomain} record with {idvar} = {idvarval} for subject {usubjid}",
                           row_no, row, "IDVARVAL", idvarval)


def check_label_mismatch(ctx: Context, rule: Rule) -> None:
    for ds in ctx.datasets.values():
        spec = ctx.spec(ds)
        if spec is None:
            continue  # custom domain: its labels are the sponsor's (SDTM-SPEC-UNKNOWN says so)
        for v in ds.variables:
            expected = spec.var(v.name)
            if expected is None or not expected.label:
                continue  # a variable the spec lacks is SDTM-ROW-SCHEMA's finding
            if (v.label or "").strip() != expected.label.strip():
                ctx.report(rule, ds, f"Label of {v.name} is {v.label!r}; SDTMIG label is {expected.label!r}",
                           field=v.name, value=v.label)


def check_duplicate_record(ctx: Context, rule: Rule) -> None:
    for ds in ctx.datasets.values():
        seq = seq_name(ds)
        names = [n for n in ds.names if n != seq]
        if not names:
            continue
        first: dict[tuple, int] = {}
        for row_no, row in _rows(ds):
            key = tuple("" if is_null(row.get(n)) else _num_text(row.get(n)) for n in names)
            if key in first:
                ctx.report(rule, ds, f"Record is identical to record {first[key]}"
                           + (f" except {seq}" if seq else ""), row_no, row, seq)
            else:
                first[key] = row_no


# DM dates that count as contact with the subject when RFPENDTC is empty.
_DM_CONTACT_DATES = ("RFICDTC", "RFSTDTC", "RFENDTC", "RFXSTDTC", "RFXENDTC", "DTHDTC")


def _last_contact(ctx: Context, subjects: set[str]) -> dict[str, tuple[str, str]]:
    """Latest date of each subject (value, 'DATASET.VARIABLE') over DM's reference
    dates and every --DTC/--STDTC/--ENDTC of the subject-level datasets except AE."""
    out: dict[str, tuple[str, str]] = {}

    def offer(usubjid: Any, value: Any, where: str) -> None:
        text = _dtc(value)
        if usubjid not in subjects or iso8601.parse(text) is None:
            return
        # the value seen first stays when a later one is equal
        out[usubjid] = iso8601.latest([(text, where), out.get(usubjid)], key=lambda e: e and e[0])

    for name, ds in ctx.datasets.items():
        if name in TRIAL_DESIGN or prefix(ds) == "AE" or name.startswith("SUPP") or name == "RELREC" \
                or "USUBJID" not in ds.names:
            continue
        p = prefix(ds)
        cols = list(_DM_CONTACT_DATES) if name == "DM" else [
            f"{p}{s}" for s in ("DTC", "STDTC", "ENDTC")]
        cols = [c for c in cols if c in ds.names]
        for row in ds.rows:
            for col in cols:
                offer(row.get("USUBJID"), row.get(col), f"{name}.{col}")
    return out


def check_ae_after_last_contact(ctx: Context, rule: Rule) -> None:
    dm = ctx.datasets.get("DM")
    if dm is None:
        return
    reference: dict[str, tuple[str, str]] = {}
    lacking: set[str] = set()
    for row in dm.rows:
        u = row.get("USUBJID")
        if is_null(u):
            continue
        end = _dtc(row.get("RFPENDTC"))
        if iso8601.parse(end) is not None:
            reference[u] = (end, "DM.RFPENDTC")
        else:
            lacking.add(u)
    if lacking:
        reference.update(_last_contact(ctx, lacking))
    for name, ds in ctx.datasets.items():
        if prefix(ds) != "AE" or "AESTDTC" not in ds.names or name.startswith("SUPP"):
            continue
        for row_no, row in _rows(ds):
            ref = reference.get(row.get("USUBJID"))
            if ref is not None and iso8601.after(_dtc(row.get("AESTDTC")), ref[0]):  # at the precision both have
                label = "end of participation" if ref[1] == "DM.RFPENDTC" else "last contact"
                on = iso8601.date_part(ref[0])
                ctx.report(rule, ds, f"AESTDTC {row['AESTDTC']} is after the subject's {label} "
                           f"({ref[1]} {on.isoformat() if on else ref[0]})", row_no, row,
                           "AESTDTC", row["AESTDTC"])


def check_aedecod_inconsistent(ctx: Context, rule: Rule) -> None:
    for name, ds in ctx.datasets.items():
        if prefix(ds) != "AE" or name.startswith("SUPP") or not {"AETERM", "AEDECOD"} <= set(ds.names):
            continue
        coded: dict[str, dict[str, list[int]]] = {}
        for row_no, row in _rows(ds):
            term, decod = row.get("AETERM"), row.get("AEDECOD")
            if is_null(term) or is_null(decod):
                continue
            coded.setdefault(" ".join(str(term).split()).casefold(), {}).setdefault(decod, []).append(row_no)
        for term, by_decod in coded.items():
            if len(by_decod) < 2:
                continue
            # the most frequent coding (first seen on ties) is taken as intended; the others are reported
            usual = max(by_decod, key=lambda d: (len(by_decod[d]), -by_decod[d][0]))
            for decod, row_nos in by_decod.items():
                if decod == usual:
                    continue
                for row_no in row_nos:
                    row = ds.rows[row_no - 1]
                    ctx.report(rule, ds, f"AETERM {row['AETERM']!r} is coded to AEDECOD {decod!r} here but to "
                               f"{usual!r} in {len(by_decod[usual])} other record(s)", row_no, row, "AEDECOD",
                               decod)


def _subject_elements(se: Dataset) -> dict[str, list[tuple[str, str | None, str]]]:
    """USUBJID -> [(start, end or None, EPOCH)] ordered by start; an empty SEENDTC ends at
    the next element's start, or is open for the last element."""
    raw: dict[str, list[tuple[str, str | None, str]]] = {}
    for row in se.rows:
        start, end = _dtc(row.get("SESTDTC")), _dtc(row.get("SEENDTC"))
        epoch = row.get("EPOCH")
        if iso8601.parse(start) is None or is_null(epoch) or is_null(row.get("USUBJID")):
            continue
        raw.setdefault(row["USUBJID"], []).append((start, end if iso8601.parse(end) else None, epoch))
    out = {}
    for u, elements in raw.items():
        elements.sort(key=lambda e: iso8601.sort_key(e[0]))
        out[u] = [(s, e if e is not None else (elements[n + 1][0] if n + 1 < len(elements) else None), ep)
                  for n, (s, e, ep) in enumerate(elements)]
    return out


def _order_at_element_boundary(a: str, b: str) -> int | None:
    """:func:`iso8601.compare`, except that two equal dates without a time are undecided: an
    element that ends on 2014-07-02 and the next that starts that day share the date, so an
    event dated that day may belong to either."""
    order = iso8601.compare(a, b)
    return None if order == 0 and not iso8601.has_time(a) else order


def check_epoch_se(ctx: Context, rule: Rule) -> None:
    se = ctx.datasets.get("SE")
    if se is None or not {"USUBJID", "SESTDTC", "EPOCH"} <= set(se.names):
        return
    elements = _subject_elements(se)
    for name, ds in ctx.datasets.items():
        if name in ("SE", "DM") or name in TRIAL_DESIGN or "EPOCH" not in ds.names or "USUBJID" not in ds.names:
            continue
        p = prefix(ds)
        date_vars = [v for v in (f"{p}STDTC", f"{p}DTC") if v in ds.names]
        if not date_vars:
            continue
        for row_no, row in _rows(ds):
            epoch, subject = row.get("EPOCH"), elements.get(row.get("USUBJID"))
            if is_null(epoch) or not subject:
                continue
            var_name = next((v for v in date_vars if not is_null(row.get(v))), None)
            on = _dtc(row.get(var_name)) if var_name else None
            if iso8601.date_part(on) is None:
                continue  # partial date: the element cannot be told
            candidates, certain = set(), []
            for n, (start, end, element_epoch) in enumerate(subject):
                last = n == len(subject) - 1
                after_start = _order_at_element_boundary(on, start)
                before_end = 1 if end is None else _order_at_element_boundary(end, on)
                if after_start == -1 or before_end == -1 or (before_end == 0 and not last):
                    continue  # an element runs from its start up to, not including, its end
                candidates.add(element_epoch)
                if after_start in (0, 1) and (before_end == 1 or (before_end == 0 and last)):
                    certain.append(element_epoch)
            if certain and epoch not in candidates:
                ctx.report(rule, ds, f"EPOCH {epoch!r} but {var_name} {row[var_name]} falls in the SE element "
                           f"of EPOCH {certain[0]!r}", row_no, row, "EPOCH", epoch)


# ARMCD / ACTARMCD values that need no TA arm (SDTMIG 3.x; FDA validator SD0066, SD2002).
ARM_CODES_WITHOUT_TA = {"ARMCD": frozenset({"SCRNFAIL", "NOTASSGN"}),
                        "ACTARMCD": frozenset({"SCRNFAIL", "NOTASSGN", "NOTTRT", "UNPLAN"})}


def check_armcd_in_ta(ctx: Context, rule: Rule) -> None:
    dm, ta = ctx.datasets.get("DM"), ctx.datasets.get("TA")
    if dm is None or ta is None or "ARMCD" not in ta.names:
        return
    arms = {r.get("ARMCD") for r in ta.rows if not is_null(r.get("ARMCD"))}
    for variable, exempt in ARM_CODES_WITHOUT_TA.items():
        if variable not in dm.names:
            continue
        for row_no, row in _rows(dm):
            value = row.get(variable)
            if is_null(value) or value in exempt or value in arms:
                continue
            hint = f" (the exempt code is {value.upper()!r}, upper case)" if str(value).upper() in exempt else ""
            ctx.report(rule, dm, f"{variable} {value!r} is not an ARMCD of TA{hint}", row_no, row, variable, value)


def check_ts_sstdtc(ctx: Context, rule: Rule) -> None:
    if not ctx.datasets:
        return
    ts = ctx.datasets.get("TS")
    if ts is None:
        ctx.report(rule, Dataset("TS", "", []), "TS dataset is absent: the study start date (TSPARMCD SSTDTC) "
                   "cannot be found")
        return
    rows = [(n, r) for n, r in _rows(ts) if r.get("TSPARMCD") == "SSTDTC"]
    if not rows:
        ctx.report(rule, ts, "TS has no record with TSPARMCD = 'SSTDTC' (study start date)", field="TSPARMCD",
                   value="SSTDTC")
        return
    for row_no, row in rows:
        value = row.get("TSVAL")
        if is_null(value) or iso8601.date_part(value) is None or len(str(value).strip()) != 10:
            ctx.report(rule, ts, "TSVAL of SSTDTC is not a complete ISO 8601 date (YYYY-MM-DD)", row_no, row,
                       "TSVAL", value)


def check_dm_one_per_subject(ctx: Context, rule: Rule) -> None:
    dm = ctx.datasets.get("DM")
    if dm is None or "USUBJID" not in dm.names:
        return
    first: dict[str, int] = {}
    for row_no, row in _rows(dm):
        u = row.get("USUBJID")
        if is_null(u):
            continue
        if u in first:
            ctx.report(rule, dm, f"USUBJID {u} already in DM at record {first[u]}", row_no, row, "USUBJID", u)
        else:
            first[u] = row_no



RULES: list[Rule] = [
    Rule("SDTM-REQ-MISSING", "error", "Required variable absent from the dataset, or null in a record",
         "P21 SD0056 (absent) / SD0002 (null); CDISC CG0463", check_req_missing),
    Rule("SDTM-EXP-MISSING", "warning", "Expected variable absent from the dataset",
         "P21 SD0057; CDISC CG0016", check_exp_missing),
    Rule("SDTM-KEY-DUPLICATE", "error", "Two records share the values of the dataset's natural keys",
         "P21 SD1117 / SD1201 (FDA FDAB021)", check_key_duplicate),
    Rule("SDTM-USUBJID-NOT-IN-DM", "error", "USUBJID of a subject-level record is not in DM",
         "P21 SD0064; CDISC CG0029", check_usubjid_in_dm),
    Rule("SDTM-SEQ-DUPLICATE", "error", "--SEQ not unique within USUBJID (or POOLID)",
         "P21 SD0005; CDISC CG0028", check_seq_duplicate),
    Rule("SDTM-DY-INCONSISTENT", "error",
         "--DY/--STDY/--ENDY differs from the day computed from --DTC/--STDTC/--ENDTC and DM.RFSTDTC",
         "P21 SD1086 / SD1090 / SD1094; CDISC CG0006, CG0220, CG0222", check_study_day),
    Rule("SDTM-DTC-ISO8601", "error", "--DTC value is not ISO 8601",
         "P21 SD0003; CDISC CG0238", check_dtc_iso8601),
    Rule("SDTM-CT-INVALID", "error",
         "Value not in the variable's codelist (error: non-extensible, warning: extensible)",
         "P21 CT2001 (non-extensible) / CT2002 (extensible)", check_ct),
    Rule("SDTM-XPT-NAME", "error", "Dataset or variable name longer than 8 or not [A-Z][A-Z0-9_]*",
         "FDA Study Data TCG / SAS XPORT v5 limit (P21 id unconfirmed)", check_xpt_name),
    Rule("SDTM-XPT-LABEL", "error", "Dataset or variable label longer than 40 characters",
         "FDA Study Data TCG / SAS XPORT v5 limit (P21 id unconfirmed)", check_xpt_label),
    Rule("SDTM-XPT-CHAR-200", "error", "Character value longer than 200 bytes",
         "FDA Study Data TCG / SAS XPORT v5 limit (P21 id unconfirmed; related SD1096)", check_xpt_char_200),
    Rule("SDTM-XPT-ASCII", "error", "Non-ASCII or non-printable character in a value or label",
         "P21 SD1029 (FDA FDAB041)", check_xpt_ascii),
    Rule("SDTM-ROW-SCHEMA", "error", "Record fails the domain's JSON Schema (type, length, pattern)",
         "none (structural check on schemas/sdtm)", check_row_schema),
    Rule("SDTM-STUDYID-MULTIPLE", "error", "More than one STUDYID value across the datasets",
         "P21 SD1005; CDISC CG0409", check_studyid_multiple),
    Rule("SDTM-DOMAIN-VALUE", "error", "DOMAIN value differs from the dataset name",
         "P21 SD0004; CDISC CG0413", check_domain_value),
    Rule("SDTM-RFSTDTC-AFTER-RFENDTC", "error", "DM.RFSTDTC is after DM.RFENDTC",
         "P21 SD1002 (FDA FDAB034)", check_rfstdtc_after_rfendtc),
    Rule("SDTM-SUPP-PARENT", "error", "SUPP-- record whose RDOMAIN/USUBJID/IDVAR/IDVARVAL has no parent record",
         "P21 SD0077; CDISC CG0371", check_supp_parent),
    Rule("SDTM-LABEL-MISMATCH", "warning", "Variable label differs from the SDTMIG label of the domain spec",
         "P21 SD0063; CDISC CG0303", check_label_mismatch),
    Rule("SDTM-DUPLICATE-RECORD", "warning", "Record identical to an earlier one in every variable except --SEQ",
         "unconfirmed (related: P21 SD1117 / SD1201, FDA FDAB021)", check_duplicate_record),
    Rule("SDTM-AE-AFTER-LAST-CONTACT", "warning",
         "AESTDTC after the subject's end of participation (DM.RFPENDTC; last contact date when RFPENDTC is empty)",
         "P21 SD1202 (FDA FDAB034) for AE; related SD0080", check_ae_after_last_contact),
    Rule("SDTM-AEDECOD-INCONSISTENT", "warning", "The same AETERM (case-insensitive) coded to different AEDECOD values",
         "unconfirmed (related: FDA FDAB009 paired variables; P21 SD1287 --DECOD within --PTCD)",
         check_aedecod_inconsistent),
    Rule("SDTM-EPOCH-SE", "error", "EPOCH differs from the EPOCH of the subject's SE element holding --STDTC/--DTC",
         "unconfirmed (CDISC CG0009 defines EPOCH by the element; P21 SD1015 checks EPOCH against TA only)",
         check_epoch_se),
    Rule("SDTM-ARMCD-NOT-IN-TA", "error",
         "DM.ARMCD / ACTARMCD not in TA.ARMCD (SCRNFAIL, NOTASSGN; for ACTARMCD also NOTTRT, UNPLAN excepted)",
         "P21 SD0066 (ARMCD; CDISC CG0126) / SD2002 (ACTARMCD; CDISC CG0125)", check_armcd_in_ta),
    Rule("SDTM-TS-SSTDTC", "error", "TS absent, without a TSPARMCD SSTDTC record, or its TSVAL not a YYYY-MM-DD date",
         "FDA Technical Rejection Criteria 1734; P21 SD1115 (TS absent) / SD2232 (SSTDTC; CDISC CG0287)",
         check_ts_sstdtc),
    Rule("SDTM-DM-ONE-PER-SUBJECT", "error", "USUBJID occurs in more than one DM record",
         "P21 SD0083; CDISC CG0151", check_dm_one_per_subject),
]

RULES_BY_ID: dict[str, Rule] = {r.id: r for r in RULES}


def validate_datasets(
    datasets: dict[str, Dataset], log: IssueLog, only: Iterable[str] | None = None
) -> None:
    """Run every rule (or the ids in ``only``) over ``datasets`` (name -> Dataset)."""
    wanted = None if only is None else set(only)
    if wanted is not None and wanted - RULES_BY_ID.keys():
        raise ValueError(f"unknown rule id(s): {sorted(wanted - RULES_BY_ID.keys())}")
    ctx = Context({name.upper(): ds for name, ds in datasets.items()}, log)
    for ds in ctx.datasets.values():
        if ctx.spec(ds) is None:
            log.info("SDTM-SPEC-UNKNOWN", f"No SDTM spec for {ds.name}; spec-based checks use its own metadata",
                     file=dataset_file(ds))
    for rule in RULES:
        if wanted is None or rule.id in wanted:
            rule.func(ctx, rule)
