"""Derivations shared by the SDTM mapping modules — one named function each.

Dates are ISO 8601 text throughout; a partial date (``2020-07``) is kept as given and
simply yields no study day.  Sources: SDTMIG v3.4 section 4.4 (timing variables, study
day without day 0), section 4.1.4.6 (--SEQ), section 5 (DM reference dates).
"""
from __future__ import annotations

import math
import re
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable

_DTC = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2})(?::(\d{2})(?::(\d{2})(?:\.\d+)?)?)?([+-]\d{2}:\d{2}|Z)?)?)?)?$")


def is_iso8601(value: str) -> bool:
    m = _DTC.match(value or "")
    if not m:
        return False
    try:
        y, mo, d = m.group(1), m.group(2), m.group(3)
        if d:
            date(int(y), int(mo), int(d))
        elif mo and not 1 <= int(mo) <= 12:
            return False
        if m.group(4) and not (int(m.group(4)) < 24 and int(m.group(5) or 0) < 60 and int(m.group(6) or 0) < 60):
            return False
    except ValueError:
        return False
    return True


def date_part(dtc: str | None) -> date | None:
    """The calendar date of a complete-to-the-day ISO 8601 value, else None."""
    if not dtc or len(dtc) < 10 or not is_iso8601(dtc):
        return None
    return date(int(dtc[0:4]), int(dtc[5:7]), int(dtc[8:10]))


def is_partial(dtc: str | None) -> bool:
    return bool(dtc) and is_iso8601(dtc) and len(dtc) < 10


def study_day(dtc: str | None, rfstdtc: str | None) -> int | None:
    """--DY: days from RFSTDTC, counting RFSTDTC as day 1 and the day before as day -1."""
    d, ref = date_part(dtc), date_part(rfstdtc)
    if d is None or ref is None:
        return None
    return day_number(d, ref)


def day_number(on: date, reference: date) -> int:
    """Study day of a date: the reference date is day 1, the day before is day -1."""
    delta = (on - reference).days
    return delta + 1 if delta >= 0 else delta


def date_from_study_day(day: int, rfstdtc: str) -> date:
    from datetime import timedelta
    ref = date_part(rfstdtc)
    assert ref is not None
    return ref + timedelta(days=day - 1 if day > 0 else day)


def age_years(birth: str | None, reference: str | None) -> tuple[int | None, bool]:
    """Age in completed years at ``reference``; second value True when the birth date
    was partial and the age could differ with the missing day/month (then the lower age
    is returned)."""
    ref = date_part(reference)
    if not birth or ref is None or not is_iso8601(birth):
        return None, False
    if len(birth) >= 10:
        b = date_part(birth)
        return _completed_years(b, ref), False
    y = int(birth[0:4])
    if len(birth) == 7:
        m = int(birth[5:7])
        earliest, latest = date(y, m, 1), date(y, m, _month_days(y, m))
    else:
        earliest, latest = date(y, 1, 1), date(y, 12, 31)
    hi, lo = _completed_years(earliest, ref), _completed_years(latest, ref)
    return lo, hi != lo


def _month_days(y: int, m: int) -> int:
    import calendar
    return calendar.monthrange(y, m)[1]


def _completed_years(born: date, ref: date) -> int:
    return ref.year - born.year - ((ref.month, ref.day) < (born.month, born.day))


def bsa_mosteller(height_cm: float, weight_kg: float) -> float:
    """Body surface area in m² by Mosteller (N Engl J Med 1987;317:1098)."""
    return math.sqrt(height_cm * weight_kg / 3600.0)


def to_number(text: str | None) -> float | None:
    """A float from a plain numeric text ("1.30", "-2", "1e3"); None for anything else
    ("<0.5", "NEGATIVE", "")."""
    if text is None:
        return None
    t = str(text).strip()
    if not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", t):
        return None
    return float(t)


def format_number(value: float | int | str | None) -> str:
    """Shortest round-trip text of a number: integral values without '.0', others by repr;
    missing (None, '', NaN) -> ''."""
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    f = float(value)
    if f.is_integer() and abs(f) < 2**53:
        return str(int(f))
    return repr(f)


def round_sig(value: float, digits: int = 10) -> float:
    """Round away binary noise from unit conversion (12.499999999 -> 12.5)."""
    if value == 0 or not math.isfinite(value):
        return value
    try:
        d = Decimal(repr(value))
    except InvalidOperation:
        return value
    return float(round(d, digits - int(math.floor(math.log10(abs(value)))) - 1))


def assign_seq(rows: list[dict[str, Any]], seq_var: str, sort_key) -> None:
    """--SEQ: 1..n within USUBJID after sorting by ``sort_key`` — stable for the same data."""
    rows.sort(key=lambda r: (r["USUBJID"], sort_key(r)))
    current, n = None, 0
    for r in rows:
        if r["USUBJID"] != current:
            current, n = r["USUBJID"], 0
        n += 1
        r[seq_var] = n


def reference_range_indicator(value: float | None, low: float | None, high: float | None) -> str:
    """--NRIND from a numeric standard result and its standard range (NRIND C78736)."""
    if value is None or (low is None and high is None):
        return ""
    if low is not None and value < low:
        return "LOW"
    if high is not None and value > high:
        return "HIGH"
    return "NORMAL"


def min_dtc(values: Iterable[str | None]) -> str:
    vals = [v for v in values if v]
    return min(vals) if vals else ""


def max_dtc(values: Iterable[str | None]) -> str:
    vals = [v for v in values if v]
    return max(vals) if vals else ""


def parse_datetime(dtc: str) -> datetime | None:
    d = date_part(dtc)
    if d is None:
        return None
    if len(dtc) >= 16:
        return datetime(d.year, d.month, d.day, int(dtc[11:13]), int(dtc[14:16]))
    return datetime(d.year, d.month, d.day)
