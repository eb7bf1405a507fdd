"""Derivations shared by the SDTM mapping modules — one named function each.

Dates are ISO 8601 text throughout, read, compared and turned into study days by the hub's
grammar (:mod:`converters.core.iso8601`, SDTMIG v3.4 §4.4); a partial date (``2020-07``)
is kept as given and simply yields no study day.  Sources: SDTMIG v3.4 section 4.1.4.6
(--SEQ), section 5 (DM reference dates).
"""
from __future__ import annotations

import math
import re
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from trialbridge.converters.core import iso8601

def age_years(birth: str | None, reference: str | None) -> tuple[int | None, bool]:
    """Age in completed years at ``reference``; second value True when the birth date
    was partial and the age could differ with the missing day/month (then the lower age
    is returned)."""
    ref = iso8601.date_part(reference)
    born = iso8601.date_range(birth)
    if ref is None or born is None:
        return None, False
    hi, lo = _completed_years(born[0], ref), _completed_years(born[1], ref)
    return lo, hi != lo


def _completed_years(born: date, ref: date) -> int:
    return ref.year - born.year - ((ref.month, ref.day) < (born.month, born.day))


def bsa_mosteller(height_cm: float, weight_kg: float) -> float:
    """Body surface area in m² by Mosteller (N Engl J Med 1987;317:1098)."""
    return math.sqrt(height_cm * weight_kg / 3600.0)


_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
# numbers written in a form other than a plain decimal: decimal comma (1,5), grouped digits
# (1.234,5  1 234  1'234  1_000), hexadecimal (0x1A)
_OTHER_NOTATION = re.compile(r"[+-]?(\d{1,3}([ .,'_]\d{3})+([.,]\d+)?|\d+,\d+|\d+(_\d+)+|0[xX][0-9a-fA-F]+)")
SMALLEST_NORMAL = 2.2250738585072014e-308


def to_number(text: str | None) -> float | None:
    """A float from a plain numeric text ("1.30", "-2", "1e3"); None for anything else
    ("<0.5", "NEGATIVE", "") and for a number a float cannot hold ("1e400" would be inf,
    "1e-400" would be 0: see :func:`number_problem`)."""
    if text is None:
        return None
    t = str(text).strip()
    if not _DECIMAL.fullmatch(t):
        return None
    value = float(t)
    return value if _representable(t, value) else None


def _representable(text: str, value: float) -> bool:
    if not math.isfinite(value):
        return False
    if value == 0.0 or abs(value) >= SMALLEST_NORMAL:
        return value != 0.0 or not re.search(r"[1-9]", text.split("e")[0].split("E")[0])
    return False  # subnormal: fewer significant bits than the text may carry


def number_problem(text: str | None) -> tuple[str, str] | None:
    """Why ``text`` looks like a number but gives no float: ("range", reason) for a plain
    decimal beyond what a float holds (magnitude over about 1.8e308, or so small it would
    become 0 or lose precision), ("format", reason) for a number in another notation (decimal
    comma, digit groups, hexadecimal); None for a plain number and for text that is not a
    number at all (NEGATIVE, <0.5)."""
    if text is None:
        return None
    t = str(text).strip()
    if _DECIMAL.fullmatch(t):
        value = float(t)
        if _representable(t, value):
            return None
        if not math.isfinite(value):
            return "range", "too large for a number (magnitude over about 1.8e308)"
        return "range", "too small for a number (it would become 0 or lose precision under about 2.2e-308)"
    if _OTHER_NOTATION.fullmatch(t):
        return "format", "not a plain decimal number (decimal comma, digit grouping or hexadecimal)"
    return None


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


_NUMBER_PARTS = re.compile(r"[+-]?(\d*)(?:\.(\d*))?(?:[eE][+-]?\d+)?")
MIN_CONVERTED_DIGITS = 2


def significant_digits(text: str | None) -> int | None:
    """Significant digits of a number as written: ``0.53`` 2, ``1.30`` 3, ``0.0050`` 2,
    ``150`` 3 (an integer's trailing zeros were typed, so they count), ``1.2e3`` 2,
    ``0`` 1; None for a text that is not a plain number."""
    if text is None or to_number(text) is None:
        return None
    m = _NUMBER_PARTS.fullmatch(str(text).strip())
    digits = (m.group(1) or "") + (m.group(2) or "")
    return max(1, len(digits.lstrip("0")))


def converted_digits(text: str | None) -> int:
    """How many significant digits a value converted to another unit keeps: those of the
    text it was converted from (``0.53`` mg/dL gives 47 umol/L, not 46.85289958), and at
    least :data:`MIN_CONVERTED_DIGITS` — a one-digit reading such as ``5`` mg/dL is a whole
    number read off an analyser more often than a claim of one significant figure, and
    rounding its 442 umol/L to 400 would move it by up to 10 %."""
    n = significant_digits(text)
    # a float holds 15 significant digits for sure: a text with more (1050.1234567890123456…)
    # keeps 15, and never more than the decimal context can round to
    return min(15, max(MIN_CONVERTED_DIGITS, n)) if n is not None else 10


def round_sig(value: float, digits: int = 10) -> float:
    """Round away binary noise from unit conversion (12.499999999 -> 12.5)."""
    if value == 0 or not math.isfinite(value):
        return value
    try:
        d = Decimal(repr(value))
    except InvalidOperation:
        return value
    try:
        return float(round(d, digits - int(math.floor(math.log10(abs(value)))) - 1))
    except InvalidOperation:  # more digits than the decimal context holds: nothing to round away
        return value


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
