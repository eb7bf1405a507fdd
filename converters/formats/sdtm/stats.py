"""Column statistics of one SDTM dataset, gathered while its rows pass.

Everything the writers (XPT storage widths, Dataset-JSON ``dataType``/``length``) and define.xml
(variables present, Length, DataType, SignificantDigits, value-level metadata, codelist subsets)
need to describe a dataset is collected here in one pass, so that no dataset is ever read back
or rescanned to describe it.

* :class:`VarStats` - one variable (Char or Num).
* :class:`ColumnStats` - one dataset: a row count, a :class:`VarStats` per variable and, for the
  value-level metadata, a :class:`VarStats` per variable per group value (LBORRES per LBTESTCD,
  DSDECOD per DSCAT).  ``add(row)`` / ``add_rows(rows)`` / ``merge(other)``; picklable.
* :func:`dataset_meta` - the dataset's variables as ``make_dataset`` chooses them (every Req and
  Exp variable, every Perm variable with a value, spec order), rows empty.

``merge`` is commutative and associative: chunks of one dataset gathered by different workers, in
any split and any order, merge to statistics equal to one pass over all rows.  Where the old
whole-dataset code took "the first value in row order" an order-free choice is made instead: the
smallest (a non-integral example in a message, STUDYID when no study is configured, the --TEST
text of a test code).  One exception: a dataset *without a specification* (a foreign SDTM file
read back) takes its columns in first-seen order; merge keeps the left operand's order then the
right's new columns, which is associative but not commutative - merge such chunks in input order.

Bounded memory: distinct values are kept only for coded variables (a CT codelist, STUDYID, the
--TEST and unit variables per test code, or names passed in ``track_values``), at most
``max_values`` (default :data:`MAX_VALUES`) per variable; past that the variable's ``values`` is
None and ``values_overflow`` True (define.xml then lists no codelist for it and reports
``DEFINE-TOO-MANY-VALUES``).  Group values are capped the same way (:data:`MAX_GROUPS`).  Whether
a cap is passed does not depend on chunking: a merge that would exceed it overflows too.

Rows given to :meth:`ColumnStats.add` are copied into a small batch (:data:`BATCH` rows) and
folded column by column; every accessor folds the pending batch first.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable, Mapping

from trialbridge.converters.core.datasets import Dataset, Variable
from trialbridge.converters.core.sdtm_spec import choose_variables, governed_codelists, load_spec, spec_from_columns
from trialbridge.converters.formats.sdtm.values import _char, format_number, to_ascii

MAX_VALUES = 1000  # distinct values kept per coded variable (a codelist subset is small)
MAX_GROUPS = 10000  # distinct group values (test codes, DSCAT values) kept per grouping variable
BATCH = 2048  # rows folded at a time by ColumnStats.add
_EXACT = 2.0 ** 53  # whole floats below this print without exponent or fraction (format_number)
VLM_DOMAINS = ("LB", "CP", "VS")  # Findings datasets that get value-level metadata by --TESTCD
VLM_SUFFIXES = ("ORRES", "STRESC", "STRESN")
VLM_TEXTS = ("TEST", "ORRESU", "STRESU")  # described per test code (test name, units)

DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?([+-]\d{2}:\d{2}|Z)?$")


def number_shape(value: Any) -> tuple[int, int] | None:
    """(digits before the point, at least 1; digits after it) of a number as written in its
    shortest form (:func:`format_number`), or None for a missing or non-finite value.  Equal to
    ``Decimal(format_number(value)).as_tuple()`` read as define.xml's Length/SignificantDigits."""
    text = format_number(value)
    if not text:
        return None
    if "e" not in text and "n" not in text:  # plain "123", "-0.05": count characters
        digits = text[1:] if text[0] == "-" else text
        whole, dot, frac = digits.partition(".")
        return len(whole), len(frac)
    try:
        t = Decimal(text).as_tuple()
    except InvalidOperation:
        return None
    if not isinstance(t.exponent, int):  # inf
        return None
    frac = max(0, -t.exponent)
    return max(1, len(t.digits) + t.exponent), frac


@dataclass
class VarStats:
    """Statistics of one variable.  ``given``: values that are neither None nor "" (what
    ``make_dataset`` calls having a value); ``present``: values that are not missing as written
    (Char: non-empty text; Num: a number, NaN excluded)."""

    type: str = "Char"  # "Char" | "Num"
    given: int = 0
    present: int = 0
    # Char
    max_bytes: int = 0  # longest UTF-8 encoding
    max_ascii: int = 0  # longest XPT form (ASCII transliteration), before the 200-byte limit
    non_ascii: int = 0  # values that are not ASCII
    all_date: bool = True  # every present value is a complete date (YYYY-MM-DD)
    all_datetime: bool = True  # every present value is a complete date and time
    track: bool = False  # a coded variable: its distinct values are kept
    numeric_text: bool = False  # some present value reads as a number (tracked variables only)
    values: Counter | None = None  # distinct present values -> rows (tracked, up to max_values)
    values_overflow: bool = False  # tracked, but more than max_values distinct values
    # Num
    integral: bool = True  # every present value is a whole number
    non_integral_min: float | None = None  # smallest value that is not (for messages)
    max_abs_integral: float = 0.0  # largest |value| among whole numbers
    num_length: int = 1  # define.xml Length of a float: max digits before + after the point
    num_frac: int = 0  # define.xml SignificantDigits: max digits after the point
    max_values: int = field(default=MAX_VALUES, repr=False, compare=False)

    @classmethod
    def new(cls, type_: str, track: bool = False, max_values: int = MAX_VALUES) -> VarStats:
        track = track and type_ == "Char"
        return cls(type=type_, track=track, values=Counter() if track else None, max_values=max_values)

    # -- derived
    @property
    def int_digits(self) -> int:
        """Digits of the largest whole value (define.xml Length of an integer), at least 1."""
        return len(str(int(self.max_abs_integral)))

    @property
    def length(self) -> int:
        """Dataset-JSON / define.xml Length of a Char variable: longest UTF-8 value, at least 1."""
        return max(1, self.max_bytes)

    # -- gathering
    def add_values(self, values: list[Any]) -> None:
        if self.type == "Num":
            self._add_nums(values)
        else:
            self._add_texts(values)

    def _add_texts(self, values: list[Any]) -> None:
        given = [v for v in values if v is not None and v != ""]
        if not given:
            return
        self.given += len(given)
        texts = [v if type(v) is str else _char(v) for v in given]
        if not all(texts):  # NaN in a Char column is missing as written
            texts = [t for t in texts if t]
            if not texts:
                return
        self.present += len(texts)
        if all(map(str.isascii, texts)):
            longest = max(map(len, texts))
            self.max_bytes = max(self.max_bytes, longest)
            self.max_ascii = max(self.max_ascii, longest)
        else:
            for t in texts:
                if t.isascii():
                    self.max_bytes = max(self.max_bytes, len(t))
                    self.max_ascii = max(self.max_ascii, len(t))
                else:
                    self.non_ascii += 1
                    self.max_bytes = max(self.max_bytes, len(t.encode("utf-8")))
                    self.max_ascii = max(self.max_ascii, len(to_ascii(t)))
        if self.all_date or self.all_datetime:
            distinct = set(texts)
            if self.all_date:
                self.all_date = all(DATE.match(t) for t in distinct)
            if self.all_datetime:
                self.all_datetime = all(DATETIME.match(t) for t in distinct)
        if self.track:
            if not self.numeric_text:
                seen = self.values.keys() if self.values is not None else set()
                self.numeric_text = any(_reads_as_number(t) for t in set(texts) - seen)
            if self.values is not None:
                self.values.update(texts)
                self._cap()

    def _add_nums(self, values: list[Any]) -> None:
        given = [v for v in values if v is not None and v != ""]
        if not given:
            return
        self.given += len(given)
        numbers = [float(v) for v in given]
        if any(x != x for x in numbers):  # NaN is missing as written
            keep = [x == x for x in numbers]
            numbers = [x for x, k in zip(numbers, keep) if k]
            given = [v for v, k in zip(given, keep) if k]
            if not numbers:
                return
        self.present += len(numbers)
        whole = [x for x in numbers if x.is_integer()]
        if len(whole) != len(numbers):
            self.integral = False
            smallest = min(x for x in numbers if not x.is_integer())
            if self.non_integral_min is None or smallest < self.non_integral_min:
                self.non_integral_min = smallest
        shaped = given
        if whole:
            largest = max(map(abs, whole))
            self.max_abs_integral = max(self.max_abs_integral, largest)
            if largest < _EXACT:  # whole numbers print as their digits: the largest has the most
                self.num_length = max(self.num_length, len(str(int(largest))))
                shaped = [v for v, x in zip(given, numbers) if not x.is_integer()]
        for v in set(shaped):
            shape = number_shape(v)
            if shape is not None:
                self.num_length = max(self.num_length, shape[0] + shape[1])
                self.num_frac = max(self.num_frac, shape[1])

    def _cap(self) -> None:
        if self.values is not None and len(self.values) > self.max_values:
            self.values = None
            self.values_overflow = True

    # -- combining
    def merge(self, other: VarStats) -> VarStats:
        """Fold ``other`` (the same variable, other rows) into this one; returns self."""
        if (other.type, other.track) != (self.type, self.track):
            raise ValueError(f"cannot merge {other.type} statistics (values kept: {other.track}) into "
                             f"{self.type} statistics (values kept: {self.track})")
        self.given += other.given
        self.present += other.present
        self.max_bytes = max(self.max_bytes, other.max_bytes)
        self.max_ascii = max(self.max_ascii, other.max_ascii)
        self.non_ascii += other.non_ascii
        self.all_date = self.all_date and other.all_date
        self.all_datetime = self.all_datetime and other.all_datetime
        self.numeric_text = self.numeric_text or other.numeric_text
        if self.values_overflow or other.values_overflow:
            self.values, self.values_overflow = None, True
        elif self.track:
            self.values.update(other.values)
            self._cap()
        self.integral = self.integral and other.integral
        if other.non_integral_min is not None and (
                self.non_integral_min is None or other.non_integral_min < self.non_integral_min):
            self.non_integral_min = other.non_integral_min
        self.max_abs_integral = max(self.max_abs_integral, other.max_abs_integral)
        self.num_length = max(self.num_length, other.num_length)
        self.num_frac = max(self.num_frac, other.num_frac)
        return self


def _reads_as_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class _Grouping:
    """Statistics of ``variables`` kept per value of ``by`` (only values in ``allowed`` when set)."""
    by: str
    variables: tuple[str, ...]
    allowed: frozenset[str] | None = None


class ColumnStats:
    """Statistics of one dataset's columns, gathered row by row.

    ``ColumnStats("LB")`` follows the LB specification (every spec variable; a row key the spec
    does not know raises :class:`ValueError`, as ``make_dataset`` does); ``ColumnStats("LB",
    variables)`` follows the given variables (other row keys are ignored), e.g. a dataset read
    from a file.  A name without a specification and without variables takes its columns from
    the rows (all Char, first-seen order).
    """

    def __init__(self, name: str, variables: Iterable[Variable] | None = None, *,
                 track_values: Iterable[str] = (), max_values: int = MAX_VALUES,
                 max_groups: int = MAX_GROUPS):
        spec = load_spec(name)
        self.name = spec.name
        self._rows = 0
        self.max_values = max_values
        self.max_groups = max_groups
        self._track = set(track_values)
        self._strict = variables is None and spec.known
        self._open = variables is None and not spec.known
        self.variables: dict[str, Variable] = {}
        self.vars: dict[str, VarStats] = {}
        for var in (spec.variables if variables is None else variables):
            self._add_variable(var)
        self.groupings = self._groupings()
        # grouping variable -> group value -> variable -> stats; None once over max_groups
        self.groups: dict[str, dict[str, dict[str, VarStats]] | None] = {g.by: {} for g in self.groupings}
        self._pending: list[dict[str, Any]] = []

    @classmethod
    def of(cls, ds: Dataset, **kwargs: Any) -> ColumnStats:
        """Statistics of a whole in-memory dataset (its own variables)."""
        stats = cls(ds.name, ds.variables, **kwargs)
        stats.add_rows(ds.rows)
        return stats

    def _tracks(self, var: Variable) -> bool:
        return var.type == "Char" and (bool(var.codelist) or var.name == "STUDYID" or var.name in self._track)

    def _add_variable(self, var: Variable) -> None:
        self.variables[var.name] = var
        self.vars[var.name] = VarStats.new(var.type, self._tracks(var), self.max_values)

    def _groupings(self) -> list[_Grouping]:
        out = []
        names = self.variables
        if self.name in VLM_DOMAINS:
            p = self.name[:2]
            tracked = tuple(p + s for s in VLM_SUFFIXES + VLM_TEXTS if p + s in names)
            if p + "TESTCD" in names and tracked:
                out.append(_Grouping(p + "TESTCD", tracked))
        for name, (gov, table) in sorted(governed_codelists(self.name).items()):
            if name in names and gov in names:
                out.append(_Grouping(gov, (name,), frozenset(table)))
        return out

    def _group_var_stats(self, grouping: _Grouping) -> dict[str, VarStats]:
        out = {}
        for n in grouping.variables:
            var = self.variables[n]
            track = var.type == "Char" and (bool(var.codelist) or n[2:] in VLM_TEXTS or
                                            grouping.allowed is not None)
            out[n] = VarStats.new(var.type, track, self.max_values)
        return out

    # -- gathering
    def add(self, row: Mapping[str, Any]) -> None:
        """Count one row (a copy is kept until the batch is folded)."""
        self._pending.append(dict(row))
        if len(self._pending) >= BATCH:
            self._fold()

    def _fold(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, []
            self.add_rows(pending)

    def add_rows(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Count a batch of rows (folded column by column at once)."""
        rows = rows if isinstance(rows, list) else list(rows)
        if not rows:
            return
        if self._pending:
            self._fold()
        if self._strict:
            allowed = self.variables.keys()
            for n, row in enumerate(rows, start=self._rows + 1):
                if not allowed >= row.keys():
                    unknown = [k for k in row if k not in allowed]
                    raise ValueError(f"{self.name} row {n}: variables not in the {self.name} spec: {unknown}")
        elif self._open:
            for row in rows:
                for k in row:
                    if k not in self.vars:
                        self._add_variable(Variable(name=k, label=k, type="Char",
                                                    order=len(self.vars) + 1))
        self._rows += len(rows)
        keys = set().union(*rows)  # a variable no row holds has nothing to count
        for name, stats in self.vars.items():
            if name in keys:
                stats.add_values([r.get(name) for r in rows])
        for grouping in self.groupings:
            self._add_groups(grouping, rows)

    def _add_groups(self, grouping: _Grouping, rows: list[Mapping[str, Any]]) -> None:
        bucket = self.groups[grouping.by]
        if bucket is None:
            return
        parts: dict[str, list[Mapping[str, Any]]] = {}
        by, allowed = grouping.by, grouping.allowed
        for r in rows:
            key = _char(r.get(by))
            if key and (allowed is None or key in allowed):
                parts.setdefault(key, []).append(r)
        for key, sub in parts.items():
            group = bucket.get(key)
            if group is None:
                if len(bucket) >= self.max_groups:
                    self.groups[grouping.by] = None
                    return
                group = bucket[key] = self._group_var_stats(grouping)
            for n, stats in group.items():
                stats.add_values([r.get(n) for r in sub])

    def merge(self, other: ColumnStats) -> ColumnStats:
        """Fold ``other`` (the same dataset, other rows) into this one; returns self."""
        if other.name != self.name:
            raise ValueError(f"cannot merge statistics of {other.name} into {self.name}")
        self._fold()
        other._fold()
        for name, var in other.variables.items():
            if name not in self.vars:
                if not self._open:
                    raise ValueError(f"{self.name}: statistics of different variables ({name})")
                self._add_variable(var)
            self.vars[name].merge(other.vars[name])
        self._rows += other._rows
        for grouping in self.groupings:
            mine, theirs = self.groups[grouping.by], other.groups.get(grouping.by, {})
            if mine is None or theirs is None:
                self.groups[grouping.by] = None
                continue
            for key, group in theirs.items():
                if key not in mine:
                    if len(mine) >= self.max_groups:
                        self.groups[grouping.by] = None
                        break
                    mine[key] = self._group_var_stats(grouping)
                for n, stats in group.items():
                    mine[key][n].merge(stats)
        return self

    # -- reading
    @property
    def rows(self) -> int:
        """Rows counted."""
        self._fold()
        return self._rows

    def var(self, name: str) -> VarStats:
        """Statistics of ``name`` (empty statistics for a variable never seen)."""
        self._fold()
        stats = self.vars.get(name)
        if stats is not None:
            return stats
        var = self.variables.get(name)
        return VarStats.new(var.type if var else "Char")

    def has_value(self, name: str) -> bool:
        return self.var(name).given > 0

    def group(self, by: str) -> dict[str, dict[str, VarStats]] | None:
        """{group value: {variable: stats}} for grouping variable ``by`` ({} when the dataset is
        not grouped by it); None when it had more than ``max_groups`` values."""
        self._fold()
        return self.groups.get(by, {})

    @property
    def column_order(self) -> list[str]:
        self._fold()
        return list(self.vars)

    def __getstate__(self) -> dict[str, Any]:
        self._fold()
        return dict(self.__dict__)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ColumnStats):
            return NotImplemented
        self._fold()
        other._fold()
        return (self.name, self._rows, self.vars, self.groups) == (other.name, other._rows, other.vars, other.groups)

    def __repr__(self) -> str:
        return f"ColumnStats({self.name!r}, rows={self.rows})"


def dataset_meta(domain: str, stats: ColumnStats) -> Dataset:
    """The dataset's metadata (rows empty): variables chosen as ``make_dataset`` chooses them
    (:func:`~trialbridge.converters.core.sdtm_spec.choose_variables`);
    for a domain without a specification the columns seen, in first-seen order (all Char)."""
    spec = load_spec(domain)
    if not spec.known:
        spec = spec_from_columns(spec.name, stats.column_order)
    variables = choose_variables(spec, stats.has_value)
    names = {v.name for v in variables}
    return Dataset(name=spec.name, label=spec.label, variables=variables, rows=[],
                   keys=[k for k in spec.keys if k in names])
