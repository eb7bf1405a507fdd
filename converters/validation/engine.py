"""The streaming rule engine: datasets go by one at a time, each row once, and every rule
sees them through one pass.

A run::

    validator = StreamingValidator(log)                 # converters.validation.rules
    for name in feeding_order(names):                   # DM first, SE second, SUPP-- next
        visitor = validator.begin(meta[name])           # a Dataset; its rows are ignored
        for row_no, row in enumerate(rows_of(name), start=1):
            visitor.row(row_no, row)                     # or visitor.feed(rows_of(name))
        visitor.end()
    validator.finish()                                  # the checks that need several datasets

**Feeding order.**  DM is fed first and SE second when present, so the subject-level
indexes (USUBJID set, RFSTDTC, SE elements) are complete before any other dataset streams
by; :meth:`Validator.begin` raises ``ValueError`` when DM or SE comes later, or when a
dataset is begun before the previous one has ended or twice.  SUPP-- datasets should come
next, before their parents: a parent streaming after its SUPP-- indexes just the
``IDVAR`` values that SUPP-- refers to.  A SUPP-- fed after its parent is still checked for
its parent dataset, its subjects and its ``IDVAR`` name, but not for ``IDVARVAL``; an info
issue ``SDTM-SUPP-PARENT-UNCHECKED`` says so (never a silent miss).  :func:`feeding_order`
puts names in this order.  Rows of a dataset come in file order with 1-based row numbers;
any order of subjects is accepted (see :class:`~.stores.FirstSeen`).

**A check** (:class:`Check`) is one rule's visitor.  ``begin(ds)`` runs the rule's
dataset-level part on the metadata (:class:`DatasetInfo`), precomputes what the rows need
(columns, compiled validators, codelists) and returns the function each row goes through,
or None; ``end(ds)`` closes a dataset; ``finish()`` reports what needed every dataset.
Between rows a check keeps only compact indexes: one entry per subject, per distinct value,
or the current subject's keys; anything that grows with the rows goes to a bounded store
(:mod:`.stores`).

Where a finding sits: ``file`` = ``Dataset.source`` or ``"<name>.xpt"`` (lower case, as XPT
files are named); ``record`` = the 1-based row number (None for dataset-level findings);
``field`` = the variable; ``usubjid`` and ``seq`` (the ``--SEQ`` value) when the row has them.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Callable, Iterable, Sequence

from trialbridge.converters.core import iso8601, sdtm_spec
from trialbridge.converters.core.datasets import Dataset, Variable
from trialbridge.converters.core.issues import IssueLog
from trialbridge.converters.validation.stores import Scratch

# Trial design and other datasets without subject-level records.
TRIAL_DESIGN = frozenset({"TA", "TE", "TV", "TI", "TS", "TD", "TM"})

RowFn = Callable[[int, dict], None]
_INTEGER_TEXT = re.compile(r"[+-]?\d+(\.0*)?")
CACHE_LIMIT = 4_096  # entries of a parse or text cache before it is emptied


# --------------------------------------------------------------------------- values


def is_null(value: Any) -> bool:
    """SDTM missing: None, empty/blank string, NaN."""
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    if isinstance(value, float):
        return math.isnan(value)
    return False


def num_text(value: Any) -> str:
    """Text of a value as IDVARVAL would hold it: 3.0 -> '3', ' AE ' -> 'AE', ' 2.00' -> '2'."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        text = value.strip()
        if _INTEGER_TEXT.fullmatch(text):
            number = float(text)
            if number.is_integer():
                return str(int(number))
        return text
    return str(value)


def key_text(value: Any) -> str:
    """One cell of a comparison key: '' when missing, else :func:`num_text`."""
    if value.__class__ is str:
        text = value.strip()
        if text and (text[0].isdigit() or text[0] in "+-") and _INTEGER_TEXT.fullmatch(text):
            number = float(text)
            if number.is_integer():
                return str(int(number))
        return text
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return str(int(value)) if value.is_integer() else str(value)
    return num_text(value)


class KeyTexts(dict):
    """:func:`key_text` of one column's values, remembered: ``texts[value]`` is a C-level
    lookup for a value seen before.  Text and numbers are kept, except numbers equal to 0 or
    1, which a bool would also find as a dict key (``True == 1``) and has another text."""

    def __missing__(self, value: Any) -> str:
        text = key_text(value)
        if value.__class__ is str or (value.__class__ in (float, int) and value not in (0, 1)):
            self[value] = text
        return text


def key_texts(columns: int) -> tuple[list[KeyTexts], Callable[[int], None]]:
    """One :class:`KeyTexts` per column and a function that empties those grown past
    :data:`CACHE_LIMIT`, cheap enough to call on every row (it looks every 1024th)."""
    caches = [KeyTexts() for _ in range(columns)]

    def bound(row_no: int) -> None:
        if not row_no & 1023:
            for cache in caches:
                if len(cache) > CACHE_LIMIT:
                    cache.clear()
    return caches, bound


def dtc(value: Any) -> str | None:
    """A --DTC cell as text for the ISO 8601 functions (surrounding blanks dropped), None when empty."""
    return value.strip() or None if isinstance(value, str) else None


def run_value(value: Any) -> Any:
    """A grouping value (USUBJID …) as a run marker: missing values are one run."""
    return None if is_null(value) else value


# --------------------------------------------------------------------------- metadata


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


def load_spec(name: str, ig: str | None = None) -> Any | None:
    """The DomainSpec of a dataset name (SUPPxx -> SUPPQUAL, LBUR -> LB), None when unknown."""
    spec = sdtm_spec.load_spec(name, ig)
    return spec if spec.known else None


@dataclass
class DatasetInfo:
    """What the checks know of a dataset while its rows stream by: its metadata, never its rows."""

    meta: Dataset  # rows, if any, are ignored
    position: int  # 0 for the first dataset fed
    name: str = ""
    names: list[str] = field(default_factory=list)
    present: frozenset[str] = frozenset()
    file: str = ""
    prefix: str = ""
    seq: str | None = None
    spec: Any | None = None
    ig: str | None = None  # the SDTMIG version checked against (None: the shipped 3.3 schemas)

    def __post_init__(self) -> None:
        ds = self.meta
        self.name = ds.name.upper()
        self.names = list(ds.names)
        self.present = frozenset(self.names)
        self.file = dataset_file(ds)
        self.prefix = prefix(ds)
        self.seq = seq_name(ds)
        self.spec = load_spec(self.name, self.ig)

    @property
    def variables(self) -> list[Variable]:
        return self.meta.variables

    @property
    def label(self) -> str:
        return self.meta.label

    def spec_variables(self) -> list[Variable]:
        """Spec variables (all, including ones absent from the data), else the dataset's."""
        return list(self.spec.variables) if self.spec is not None else list(self.meta.variables)

    def codelists(self) -> dict[str, str]:
        """variable -> CT codelist short name; the dataset's own metadata wins."""
        out: dict[str, str] = {}
        if self.spec is not None:
            for v in self.spec.variables:
                if v.codelist:
                    out[v.name] = v.codelist
        for v in self.meta.variables:
            if v.codelist:
                out[v.name] = v.codelist
        return out

    def where(self, row: dict[str, Any]) -> tuple[str | None, Any]:
        """(usubjid, seq) of a row as findings carry them."""
        u = row.get("USUBJID")
        usubjid = None if is_null(u) else str(u)
        seq = None
        if self.seq is not None:
            s = row.get(self.seq)
            if not is_null(s):
                seq = int(s) if isinstance(s, float) and s.is_integer() else s
        return usubjid, seq


# --------------------------------------------------------------------------- rules and checks


@dataclass(frozen=True)
class Rule:
    id: str
    severity: str  # default severity; a rule may report a finding at another level (CT)
    description: str
    mirrors: str
    check: type["Check"]
    # how the rule meets the data: "metadata" (begin only), "row" (each row on its own),
    # "subject-run" (keys of the current subject), "index" (compact indexes, finish)
    kind: str = "row"
    core: tuple[str, ...] = ()  # CDISC CORE rule ids it corresponds to (rules.yaml)
    checks: str = ""  # what it checks, exactly (docs/rules.md)
    confirmed_by: str = ""
    operator: dict | None = None  # the operator of a rule written as data, else None (a Python check)


class Check:
    """One rule's visitor over the stream; subclasses override what they need."""

    needs: frozenset[str] = frozenset()  # context indexes: "dm" (subjects, RFSTDTC), "se" (elements)

    def __init__(self, rule: Rule, ctx: "Context") -> None:
        self.rule = rule
        self.ctx = ctx

    def begin(self, ds: DatasetInfo) -> RowFn | None:
        """Dataset-level findings on the metadata; the per-row function, or None."""
        return None

    def end(self, ds: DatasetInfo) -> None:
        """After the last row of ``ds``."""

    def finish(self) -> None:
        """After the last dataset."""

    def close(self) -> None:
        """Release stores (also after an error)."""

    def report(self, ds: DatasetInfo, message: str, row_no: int | None = None, row: dict | None = None,
               field: str | None = None, value: Any = None, severity: str | None = None) -> None:
        usubjid, seq = ds.where(row) if row is not None else (None, None)
        self.add(ds.file, message, row_no, field, value, usubjid, seq, severity)

    def add(self, file: str, message: str, row_no: int | None = None, field: str | None = None,
            value: Any = None, usubjid: str | None = None, seq: Any = None, severity: str | None = None) -> None:
        """A finding whose row has gone by: where it sat was kept (:meth:`DatasetInfo.where`)."""
        if isinstance(value, float) and math.isnan(value):
            value = None
        self.ctx.log.add(severity or self.rule.severity, self.rule.id, message, file=file, record=row_no,
                         field=field, value=value, usubjid=usubjid, seq=seq)


class Context:
    """What the checks share: the log, the datasets fed so far (metadata), the subject-level
    indexes from DM and SE, the scratch database and the parse caches."""

    def __init__(self, log: IssueLog, needs: frozenset[str]) -> None:
        self.log = log
        self.needs = needs
        self.fed: dict[str, DatasetInfo] = {}  # name -> info, in feeding order
        self.scratch = Scratch()
        # from DM (one entry per subject); dm_subjects is None until DM is fed
        self.dm_subjects: set[Any] | None = None
        self.rfstdtc: dict[Any, date] = {}
        # from SE: USUBJID -> [(start, end or None, EPOCH)] as parsed date/times
        self.se_elements: dict[Any, list[tuple[Any, Any, Any]]] | None = None
        self._se_raw: dict[Any, list[tuple[str, str | None, Any]]] = {}
        self._parsed: dict[Any, Any] = {}

    # --- cached parsing (values repeat: visit dates, reference dates)
    def parse(self, text: Any) -> iso8601.DateTime | None:
        cache = self._parsed
        try:
            return cache[text]
        except KeyError:
            pass
        except TypeError:  # unhashable: not a date/time
            return None
        if len(cache) > CACHE_LIMIT:
            cache.clear()
        out = cache[text] = iso8601.parse(text)
        return out

    def date_part(self, text: Any) -> date | None:
        dt = self.parse(text)
        return dt.date if dt is not None else None

    # --- subject-level indexes, built while DM and SE stream by
    def index_rows(self, ds: DatasetInfo) -> RowFn | None:
        if ds.name == "DM":
            self.dm_subjects = set()
            subjects, rfstdtc, date_part = self.dm_subjects, self.rfstdtc, self.date_part

            def dm_row(row_no: int, row: dict) -> None:
                u = row.get("USUBJID")
                if is_null(u):
                    return
                subjects.add(u)
                day = date_part(row.get("RFSTDTC"))
                if day is not None:
                    rfstdtc[u] = day
            return dm_row
        if ds.name == "SE" and "se" in self.needs and {"USUBJID", "SESTDTC", "EPOCH"} <= ds.present:
            raw = self._se_raw

            def se_row(row_no: int, row: dict) -> None:
                start, end = dtc(row.get("SESTDTC")), dtc(row.get("SEENDTC"))
                epoch = row.get("EPOCH")
                if self.parse(start) is None or is_null(epoch) or is_null(row.get("USUBJID")):
                    return
                raw.setdefault(row["USUBJID"], []).append((start, end if self.parse(end) else None, epoch))
            return se_row
        return None

    def index_end(self, ds: DatasetInfo) -> None:
        if ds.name == "SE" and "se" in self.needs and {"USUBJID", "SESTDTC", "EPOCH"} <= ds.present:
            self.se_elements = subject_elements(self._se_raw, self.parse)
            self._se_raw = {}

    def close(self) -> None:
        self.scratch.close()
        self._parsed = {}


def subject_elements(raw: dict[Any, list[tuple[str, str | None, Any]]], parse: Callable[[Any], Any]
                     ) -> dict[Any, list[tuple[Any, Any, Any]]]:
    """USUBJID -> [(start, end or None, EPOCH)] ordered by start, as parsed date/times; an
    empty SEENDTC ends at the next element's start, or is open for the last element."""
    out = {}
    for u, elements in raw.items():
        elements.sort(key=lambda e: iso8601.sort_key(e[0]))
        out[u] = [(parse(s), parse(e if e is not None else (elements[n + 1][0] if n + 1 < len(elements) else None)),
                   ep) for n, (s, e, ep) in enumerate(elements)]
    return out


# --------------------------------------------------------------------------- the runner


def feeding_order(names: Iterable[str]) -> list[str]:
    """``names`` in the order the validator wants them: DM, SE, the SUPP-- datasets, then the
    others in the order given."""
    names = list(names)

    def rank(name: str) -> int:
        upper = name.upper()
        return 0 if upper == "DM" else 1 if upper == "SE" else 2 if upper.startswith("SUPP") else 3
    return sorted(names, key=rank)  # stable: the given order within each rank


class DatasetVisitor:
    """One dataset streaming through every check: :meth:`row` for each row, then :meth:`end`."""

    def __init__(self, validator: "Validator", ds: DatasetInfo, fns: list[RowFn]) -> None:
        self._validator = validator
        self.info = ds
        self._fns = fns

    def row(self, row_no: int, row: dict[str, Any]) -> None:
        """Row ``row_no`` (1-based, in file order) of the dataset."""
        for fn in self._fns:
            fn(row_no, row)

    def feed(self, rows: Iterable[dict[str, Any]], start: int = 1) -> int:
        """Every row of ``rows``, numbered from ``start``; returns the number the next row would take."""
        fns = self._fns
        row_no = start - 1
        for row_no, row in enumerate(rows, start):
            for fn in fns:
                fn(row_no, row)
        return row_no + 1

    def end(self) -> None:
        self._validator._end(self)


class Validator:
    """Runs ``rules`` (or the ids in ``only``) over datasets fed one after another."""

    def __init__(self, log: IssueLog, rules: Sequence[Rule], only: Iterable[str] | None = None,
                 ig: str | None = None) -> None:
        self.ig = ig
        by_id = {r.id: r for r in rules}
        wanted = None if only is None else set(only)
        if wanted is not None and wanted - by_id.keys():
            raise ValueError(f"unknown rule id(s): {sorted(wanted - by_id.keys())}")
        active = [r for r in rules if wanted is None or r.id in wanted]
        self.log = log
        self.ctx = Context(log, frozenset().union(*(r.check.needs for r in active)))
        self.checks: list[Check] = [r.check(r, self.ctx) for r in active]
        self.applied: dict[str, int] = {r.id: 0 for r in active}  # datasets each rule looked at
        self._open: DatasetVisitor | None = None
        self._finished = False

    def begin(self, meta: Dataset) -> DatasetVisitor:
        """Start a dataset: ``meta`` gives its name, label, variables, keys and source."""
        if self._finished:
            raise ValueError("the validator has finished")
        if self._open is not None:
            raise ValueError(f"{self._open.info.name} is still being fed: end() it before beginning another")
        name = meta.name.upper()
        fed = self.ctx.fed
        if name in fed:
            raise ValueError(f"{name} was fed already")
        if name == "DM" and fed:
            raise ValueError(f"DM must be fed first (after {', '.join(fed)} it is too late for their checks)")
        if name == "SE" and any(n != "DM" for n in fed):
            raise ValueError("SE must be fed right after DM (or first when there is no DM)")
        ds = DatasetInfo(meta, len(fed), ig=self.ig)
        fed[name] = ds
        if ds.spec is None:
            self.log.info("SDTM-SPEC-UNKNOWN", f"No SDTM spec for {meta.name}; spec-based checks use its own "
                          "metadata", file=ds.file)
        fns = [fn for fn in [self.ctx.index_rows(ds)] if fn is not None]
        for check in self.checks:
            fn = check.begin(ds)
            if fn is not None or (check.rule.kind == "metadata" and ds.spec is not None):
                self.applied[check.rule.id] += 1
            if fn is not None:
                fns.append(fn)
        self._open = DatasetVisitor(self, ds, fns)
        return self._open

    def _end(self, visitor: DatasetVisitor) -> None:
        if visitor is not self._open:
            raise ValueError(f"{visitor.info.name} is not the dataset being fed")
        self._open = None
        self.ctx.index_end(visitor.info)
        for check in self.checks:
            check.end(visitor.info)

    def validate(self, meta: Dataset, rows: Iterable[dict[str, Any]]) -> None:
        """One whole dataset: begin, every row, end."""
        visitor = self.begin(meta)
        visitor.feed(rows)
        visitor.end()

    def finish(self) -> None:
        """Report what needed every dataset, then release the stores."""
        if self._open is not None:
            raise ValueError(f"{self._open.info.name} is still being fed: end() it before finish()")
        if self._finished:
            return
        self._finished = True
        try:
            for check in self.checks:
                check.finish()
        finally:
            self.close()

    def close(self) -> None:
        for check in self.checks:
            check.close()
        self.ctx.close()

    def __enter__(self) -> "Validator":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
