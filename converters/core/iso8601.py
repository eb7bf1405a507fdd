"""One ISO 8601 grammar for SDTM and record date/times, and comparisons that respect precision.

Every date/time of the canonical records and of SDTM ``--DTC`` variables is read here;
nothing else in the tree parses or compares date text.  Standard library only.

What a value may be (SDTMIG v3.4 §4.4.1, ISO 8601 extended format)
    ``YYYY[-MM[-DD[Thh[:mm[:ss[.f…]]][Z|±hh:mm]]]]`` — a value is shortened from the
    right to the precision that was collected (§4.4.2: ``2003``, ``2003-12``,
    ``2003-12-15T13``, ``2003-12-15T13:14``, ``2003-12-15T13:14:17.123``).
    A component that is unknown while a later one is known is written ``-``
    (§4.4.2: ``2003---15`` day known, month not; ``--12-15`` year unknown;
    ``-----T07:15`` time known, date not).  A value never ends in an unknown component:
    what is unknown at the end is simply left off.  Only the canonical records forbid the
    ``-`` form (they must stay valid FHIR dates), through ``unknown_parts=False``.
Calendar
    A value is valid only if it names a real date and time: month 01-12, a day that month
    has (``2020-02-29`` yes, ``2021-02-29`` and ``2020-02-30`` no), hour 00-23, minute and
    second 00-59.  ``24:00`` (ISO 8601's end-of-day spelling of the next midnight) and the
    leap second ``:60`` are refused: SDTMIG never uses them, they give one instant two
    spellings, and the Pinnacle 21 ISO 8601 check (SD1011's pattern) refuses both too.  Year
    ``0000`` is refused (no clinical date is 1 BC).  When the year is unknown a day is
    checked against the month in a leap year (``--02-29`` is possible).
Offsets
    ``Z`` or ``±hh:mm`` (hh 00-23, mm 00-59), only after a time.  Basic-format offsets
    (``+0100``) and hour-only ones (``+01``) are refused: SDTM values use the extended
    format throughout (§4.4.1), as the Pinnacle 21 pattern does.
Intervals and durations (§4.4.3)
    ``start/end``, ``start/duration`` and ``duration/end`` are valid --DTC values;
    ``duration/duration`` is not.  A duration is ``PnYnMnDTnHnMnS`` (any subset, at least
    one component, a fraction allowed) or ``PnW``.  Intervals are valid values but have no
    place in time here: comparisons and study days treat them as undetermined.

Precision and comparison
    A value stands for the whole period its precision leaves open: ``2020-06-05`` is the
    day, ``2020-06`` the month, ``2020-06-05T08:30`` the minute.  :func:`compare` orders
    two such periods: -1 or 1 when one ends before the other begins, 0 when they are the
    same period (the same value at the same precision), and ``None`` when one lies inside
    the other — a date-only value and a date/time on the same day cannot be ordered, nor
    ``2020-06`` and ``2020-06-10``.  Leading known components only count: ``2003---15``
    is the year 2003.  When both values carry offsets (and times) they are compared in
    UTC; otherwise as the clocks read (offsets ignored), which is how SDTM compares dates
    collected at one site.  ``precision="day"`` compares only as far as the day (dates
    then are local dates, as study days are).
Study day (§4.4.4)
    ``--DY = date(--DTC) - date(RFSTDTC) + 1`` on or after the reference date, and
    ``date(--DTC) - date(RFSTDTC)`` before it: there is no day 0.  Both dates must be
    complete to the day; the time of day plays no part.
"""
from __future__ import annotations

import re
from functools import lru_cache
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Callable, Iterable, TypeVar

UNITS = ("year", "month", "day", "hour", "minute", "second")

_DATE_TIME = re.compile(
    r"(?P<year>\d{4}|-)"
    r"(?:-(?P<month>\d{2}|-)"
    r"(?:-(?P<day>\d{2}|-)"
    r"(?:T(?P<hour>\d{2}|-)"
    r"(?::(?P<minute>\d{2}|-)"
    r"(?::(?P<second>\d{2})(?:\.(?P<fraction>\d+))?)?)?"
    r"(?P<offset>Z|[+-]\d{2}:\d{2})?)?)?)?"
)
_NUMBER = r"\d+(?:[.,]\d+)?"
_DURATION = re.compile(
    rf"P(?:{_NUMBER}W"
    rf"|(?=\d|T\d)(?:{_NUMBER}Y)?(?:{_NUMBER}M)?(?:{_NUMBER}D)?"
    rf"(?:T(?=\d)(?:{_NUMBER}H)?(?:{_NUMBER}M)?(?:{_NUMBER}S)?)?)"
)
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # February of a leap year


@dataclass(frozen=True)
class DateTime:
    """One parsed date/time (not an interval).

    ``fields`` holds year, month, day, hour, minute, second as written, ``None`` where a
    component is unknown (``-``) or was not collected; ``given`` says how many components
    were written, ``fraction`` the digits after the seconds' decimal point and ``offset``
    the UTC offset in minutes (``None``: no offset, local time)."""

    text: str
    fields: tuple[int | None, ...]
    given: int
    fraction: str = ""
    offset: int | None = None

    @property
    def known(self) -> int:
        """How many components are known from the year on, up to the first unknown one."""
        n = 0
        while n < self.given and self.fields[n] is not None:
            n += 1
        return n

    @property
    def has_gaps(self) -> bool:
        """An unknown component before a known one (``2003---15``)."""
        return self.known < self.given

    @property
    def date(self) -> date | None:
        """The calendar date when year, month and day are known."""
        return date(*self.fields[:3]) if self.known >= 3 else None  # type: ignore[arg-type]

    @property
    def has_time(self) -> bool:
        """True when the date is complete and at least the hour is known."""
        return self.known >= 4


def parse(text: Any, *, unknown_parts: bool = True) -> DateTime | None:
    """The date/time ``text`` names, or None when it is not a valid single date/time
    (intervals and durations are not date/times; see :func:`is_valid`)."""
    if not isinstance(text, str):
        return None
    return _parse(text, unknown_parts)


# The same few dates come back for every row of a subject (reference dates, element
# boundaries): parsing and period arithmetic are cached, bounded so memory stays flat.
_CACHE = 65536


@lru_cache(maxsize=_CACHE)
def _parse(text: str, unknown_parts: bool) -> DateTime | None:
    m = _DATE_TIME.fullmatch(text)
    if not m:
        return None
    raw = [m.group(u) for u in UNITS]
    given = sum(1 for v in raw if v is not None)
    if raw[given - 1] == "-":
        return None  # ends in an unknown component: "2024-01-", "-"
    if not unknown_parts and "-" in raw:
        return None
    fields = tuple(None if v in (None, "-") else int(v) for v in raw)
    if not _calendar_ok(fields):
        return None
    offset = _offset_minutes(m.group("offset"))
    if offset is False:
        return None
    return DateTime(text, fields, given, m.group("fraction") or "", offset)  # type: ignore[arg-type]


def _calendar_ok(fields: tuple[int | None, ...]) -> bool:
    year, month, day, hour, minute, second = fields
    if year is not None and year < 1:
        return False
    if month is not None and not 1 <= month <= 12:
        return False
    if day is not None:
        if month is None:
            if not 1 <= day <= 31:
                return False
        elif year is None:
            if not 1 <= day <= _DAYS_IN_MONTH[month - 1]:
                return False
        else:
            try:
                date(year, month, day)
            except ValueError:
                return False
    return (hour is None or hour <= 23) and (minute is None or minute <= 59) and (second is None or second <= 59)


def _offset_minutes(text: str | None) -> int | None | bool:
    if text is None:
        return None
    if text == "Z":
        return 0
    hours, minutes = int(text[1:3]), int(text[4:6])
    if hours > 23 or minutes > 59:
        return False
    return (hours * 60 + minutes) * (-1 if text[0] == "-" else 1)


def is_duration(text: Any) -> bool:
    """An ISO 8601 duration as SDTM --DUR uses it (SDTMIG 3.4 §4.4.3): ``P1Y2M10DT2H30M``, ``PT0.5H``, ``P2W``."""
    return isinstance(text, str) and _DURATION.fullmatch(text) is not None


def is_valid(text: Any, *, intervals: bool = True, unknown_parts: bool = True) -> bool:
    """``text`` is a valid SDTM date/time: complete or partial, calendar-checked (see the
    module docstring).  ``intervals``: also ``a/b`` intervals (§4.4.3); ``unknown_parts``:
    also the ``-`` form for unknown components.  The canonical records use both False."""
    if not isinstance(text, str):
        return False
    if "/" in text:
        if not intervals:
            return False
        sides = text.split("/")
        if len(sides) != 2:
            return False
        durations = [is_duration(s) for s in sides]
        return not all(durations) and all(
            d or parse(s, unknown_parts=unknown_parts) is not None for s, d in zip(sides, durations))
    return parse(text, unknown_parts=unknown_parts) is not None


def is_partial(text: Any) -> bool:
    """A valid date/time whose date is not complete to the day (``2020``, ``2020-07``,
    ``2003---15``): it has no study day and no epoch.  A complete date without a time,
    or with only part of one, is not partial in this sense."""
    dt = parse(text)
    return dt is not None and dt.date is None


def has_time(text: Any) -> bool:
    """A valid date/time with a complete date and at least the hour."""
    dt = parse(text)
    return dt is not None and dt.has_time


def date_part(text: Any) -> date | None:
    """The calendar date of a date/time complete to the day; None for partial, invalid or
    empty values and for intervals."""
    dt = parse(text)
    return dt.date if dt is not None else None


def date_range(text: Any) -> tuple[date, date] | None:
    """The first and last calendar day a date/time can fall on: ``2010-06`` ->
    (2010-06-01, 2010-06-30); a complete date gives the same day twice; None when not even
    the year is known."""
    dt = parse(text)
    if dt is None or dt.known == 0:
        return None
    period = _period(dt, utc=False, known=min(dt.known, 3))
    return period[0].date(), (period[1] - timedelta(days=1)).date()


# --------------------------------------------------------------------------- study day


def study_day(on: str | date | None, reference: str | date | None) -> int | None:
    """Study day of ``on`` relative to ``reference`` (RFSTDTC), each a date/time text or a
    ``date``: the reference day is day 1, the day before is day -1, there is no day 0
    (SDTMIG 3.4 §4.4.4).  None when either is not complete to the day."""
    day = on if isinstance(on, date) else date_part(on)
    ref = reference if isinstance(reference, date) else date_part(reference)
    if day is None or ref is None:
        return None
    delta = (day - ref).days
    return delta + 1 if delta >= 0 else delta


def date_of_study_day(day: int, reference: str | date) -> date | None:
    """The date of study day ``day`` (not 0) — the inverse of :func:`study_day`."""
    if day == 0:
        raise ValueError("there is no study day 0 (SDTMIG 3.4 §4.4.4)")
    ref = reference if isinstance(reference, date) else date_part(reference)
    if ref is None:
        return None
    return ref + timedelta(days=day - 1 if day > 0 else day)


# --------------------------------------------------------------------------- comparison


def _period(dt: DateTime, *, utc: bool, known: int | None = None) -> tuple[datetime, datetime]:
    """[start, end) of the period a value stands for, at ``known`` leading components."""
    return _period_of(dt, utc, dt.known if known is None else known)


@lru_cache(maxsize=_CACHE)
def _period_of(dt: DateTime, utc: bool, n: int) -> tuple[datetime, datetime]:
    year, month, day, hour, minute, second = (v if i < n else None for i, v in enumerate(dt.fields))
    micro = int((dt.fraction + "000000")[:6]) if n == 6 and dt.fraction else 0
    start = datetime(year or 1, month or 1, day or 1, hour or 0, minute or 0, second or 0, micro)
    try:
        if n == 1:
            end = start.replace(year=start.year + 1)
        elif n == 2:
            end = (start.replace(year=start.year + 1, month=1) if start.month == 12
                   else start.replace(month=start.month + 1))
        else:
            step = {3: timedelta(days=1), 4: timedelta(hours=1), 5: timedelta(minutes=1)}.get(n)
            if step is None:  # seconds, to the precision of the fraction written
                digits = min(len(dt.fraction), 6)
                step = timedelta(microseconds=10 ** (6 - digits)) if digits else timedelta(seconds=1)
            end = start + step
    except (OverflowError, ValueError):  # the end of year 9999
        end = datetime.max
    if utc and dt.offset is not None and n >= 4:
        shift = timedelta(minutes=dt.offset)
        start, end = start - shift, end - shift
    return start, end


def _truncated(dt: DateTime, precision: str | None) -> int:
    known = dt.known
    return known if precision is None else min(known, UNITS.index(precision) + 1)


def _as_datetime(value: Any) -> DateTime | None:
    return value if isinstance(value, DateTime) else parse(value)


def _pair(a: Any, b: Any, precision: str | None):
    da, db = _as_datetime(a), _as_datetime(b)
    if da is None or db is None:
        return None
    ka, kb = _truncated(da, precision), _truncated(db, precision)
    if ka == 0 or kb == 0:
        return None
    utc = da.offset is not None and db.offset is not None and ka >= 4 and kb >= 4
    return _period(da, utc=utc, known=ka), _period(db, utc=utc, known=kb)


def compare(a: Any, b: Any, *, precision: str | None = None) -> int | None:
    """-1 when ``a`` is before ``b``, 1 when after, 0 when both name the same period, None
    when their precision cannot tell (see the module docstring) or either is not a valid
    date/time.  ``precision`` ("year" … "second") compares only as far as that unit."""
    if precision is not None and precision not in UNITS:
        raise ValueError(f"precision must be one of {', '.join(UNITS)}")
    periods = _pair(a, b, precision)
    if periods is None:
        return None
    (a0, a1), (b0, b1) = periods
    if (a0, a1) == (b0, b1):
        return 0
    if a1 <= b0:
        return -1
    if a0 >= b1:
        return 1
    return None


def before(a: Any, b: Any, *, precision: str | None = None) -> bool:
    """``a`` is known to be before ``b`` (False when undetermined)."""
    return compare(a, b, precision=precision) == -1


def after(a: Any, b: Any, *, precision: str | None = None) -> bool:
    """``a`` is known to be after ``b`` (False when undetermined)."""
    return compare(a, b, precision=precision) == 1


def on_or_before(a: Any, b: Any, *, precision: str | None = None) -> bool:
    """``a`` is known to be before ``b`` or the same period (False when undetermined)."""
    return compare(a, b, precision=precision) in (-1, 0)


def on_or_after(a: Any, b: Any, *, precision: str | None = None) -> bool:
    """``a`` is known to be after ``b`` or the same period (False when undetermined)."""
    return compare(a, b, precision=precision) in (0, 1)


def within(value: Any, start: Any, end: Any = None) -> bool | None:
    """Whether ``value`` falls in the span that begins at ``start`` and ends, exclusive, at
    ``end`` (open when ``end`` is empty) — e.g. an SDTM subject element (SESTDTC up to
    SEENDTC).  ``start`` and ``end`` are instants: a boundary without a time is the start
    of its day, so ``2020-06-12T08:00`` is inside a span starting ``2020-06-12``.  True or
    False when ``value``'s precision decides; None when it cannot (a date without a time on
    the day a span starts at 08:30), or when ``value`` or ``start`` is not a date/time."""
    lower = _pair(value, start, None)
    if lower is None:
        return None
    (v0, v1), (s0, _) = lower
    after_start = True if v0 >= s0 else False if v1 <= s0 else None
    before_end: bool | None = True
    if end not in (None, ""):
        upper = _pair(value, end, None)
        if upper is None:
            return None
        (v0, v1), (e0, _) = upper
        before_end = True if v1 <= e0 else False if v0 >= e0 else None
    if after_start is False or before_end is False:
        return False
    return True if after_start and before_end else None


def sort_key(text: Any) -> tuple:
    """A total order for sorting: by the clock reading as written (offsets not applied),
    a less precise value before a more precise one with the same start, invalid values last.
    For SDTM values this is the order plain text sorting gave; use :func:`compare` to decide
    whether one value is before another."""
    dt = parse(text)
    if dt is None or dt.known == 0:
        return (1, str(text or ""))
    return (0, _period(dt, utc=False)[0], dt.known, dt.text)


T = TypeVar("T")


def earliest(items: Iterable[T], key: Callable[[T], Any] | None = None) -> T | None:
    """The item whose date/time (``key(item)``, else the item) is earliest; items without a
    valid date/time are skipped; None when none has one.  Where precision cannot order two
    values, :func:`sort_key` does; of equal values the first wins."""
    return _extreme(items, key, later=False)


def latest(items: Iterable[T], key: Callable[[T], Any] | None = None) -> T | None:
    """The item whose date/time is latest (see :func:`earliest`); of equal values the last wins."""
    return _extreme(items, key, later=True)


def _extreme(items: Iterable[T], key: Callable[[T], Any] | None, later: bool) -> T | None:
    best: T | None = None
    best_dt: DateTime | None = None
    for item in items:
        dt = parse(key(item) if key else item)
        if dt is None or dt.known == 0:
            continue
        if best_dt is None:
            best, best_dt = item, dt
            continue
        order = compare(dt, best_dt)
        if order is None:
            order = -1 if sort_key(dt.text) < sort_key(best_dt.text) else 1
        if (order >= 0) if later else (order < 0):
            best, best_dt = item, dt
    return best
