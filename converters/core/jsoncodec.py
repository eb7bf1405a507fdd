"""The one lossless JSON codec (FHIR resources, record files): fast path and exact path.

Imports nothing of ours.  Every JSON document trialbridge reads or writes whose numbers
matter goes through :func:`loads` / :func:`dumps` (design rules 5 and 5a).

Reading: fast path and exact path
---------------------------------
``orjson`` parses several times faster than the standard library, but it turns every
number with a fraction into a ``float``, and ``1.30`` then reads back as ``1.3``.  Most
numbers survive that; :func:`loads` keeps the floats only where it has proved that, for
every number token of the document, the float's text is the token:

1. orjson parses the document and writes it back compactly (about a fifth of the parse
   cost).  Bytes equal to the source (our own NDJSON and any compact, canonical JSON): every
   token is exactly the text its float is written as.  Fast path.
2. Otherwise, for a document laid out with whitespace (several lines, or a rewrite more
   than 2.5% shorter), :data:`_EXACT_NEEDED`, one compiled regex, looks for a number
   token a float may not reproduce: an exponent (``1e3``), a negative zero integer
   (``-0``), a trailing zero after the first fraction digit (``1.30``, ``2.00``), sixteen
   digits or more (``0.1234567890123456``, 20-digit integers, integers beyond 64 bits,
   which orjson turns into floats), a magnitude below 1e-4 (``0.00001``).  Any other token
   has at most 15 digits, and 15 significant digits always round-trip through a double, whose
   shortest text (``repr``, or orjson's, equal in that range) is then the token.  The regex
   looks only at tokens in value position (after ``:``, ``[`` or ``,`` and before ``,``,
   ``]``, ``}`` or the end), so ``"08:30:15.000Z"`` inside a string does not trigger it;
   string text that looks like such a token can (a false positive costs only speed).  It
   never misses a real token: every number inside an array or object follows one of those
   characters, and a document that is a bare number always takes the exact path.  No match:
   fast path.  (A compact one-line document whose rewrite differs almost surely holds such a
   token: it goes straight to step 3.)
3. Else the exact path: the standard library's C scanner with number hooks.  Every number
   with a fraction or an exponent becomes a :class:`decimal.Decimal` (``str()`` gives its
   text: ``Decimal("1.30")``), or, where ``str(Decimal)`` would not give the token back
   (``1e3`` -> ``1E+3``, ``0.0000001`` -> ``1E-7``), an :class:`ExactDecimal`: a Decimal
   that also keeps its token text.  Integers are ``int`` (exact at any size); ``-0`` is
   ``Decimal("-0")``.

Measured on the hospital sample's Observation.ndjson (compact; 40% of the lines hold a
value such as ``4.50``): parsing costs about what ``json.loads(parse_float=Decimal)``
costs, and the 60% of documents on the fast path come out as plain dicts of str/int/float
that the jsonschema-rs validators check directly.

:func:`number_text` gives any of those back as text: the token as written for exact-path
numbers, the float's shortest round-trip text for fast-path floats (which is the token),
``str`` for ints.

Writing
-------
:func:`dumps` writes compact JSON (no spaces, keys in insertion order, non-ASCII as UTF-8,
control characters escaped): byte for byte what ``json.dumps(..., ensure_ascii=False,
separators=(",", ":"))`` writes for strings, ints, booleans and null.  A ``Decimal`` is
written as :func:`number_text` of it; a ``float`` as its shortest round-trip text (orjson's,
the same as :func:`number_text`), never with binary noise; NaN and infinities are refused.  orjson writes the whole document in
one call; Decimals pass through its ``default`` hook as a placeholder string that is then
replaced by the number's text (orjson cannot write raw number text itself).  Documents orjson
cannot write (integers beyond 64 bits, a placeholder-like string) go through a small writer
in Python that gives the same bytes.

Hardening
---------
Documents nested deeper than :data:`MAX_DEPTH` raise :class:`JsonDepthError` (never
``RecursionError``); :func:`loads_object` raises :class:`JsonNotObjectError` for a valid
document that is not an object; malformed text raises :class:`JsonSyntaxError`.  All three
are :class:`JsonError`, a ``ValueError``.
"""
from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from typing import Any

import orjson

MAX_DEPTH = 256  # far beyond any FHIR resource; well inside Python's recursion limit


class JsonError(ValueError):
    """A JSON document trialbridge cannot take (base of the codec's errors)."""


class JsonSyntaxError(JsonError):
    """The text is not JSON."""


class JsonDepthError(JsonError):
    """The document nests arrays/objects deeper than :data:`MAX_DEPTH`."""


class JsonNotObjectError(JsonError):
    """The document is valid JSON but not an object."""


class ExactDecimal(Decimal):
    """A Decimal that keeps the token text it was read from (for tokens ``str(Decimal)``
    would rewrite: ``1e3`` reads as ``Decimal("1E+3")``).  Arithmetic gives plain Decimals."""

    __slots__ = ("text",)

    def __new__(cls, text: str) -> "ExactDecimal":
        obj = Decimal.__new__(cls, text)
        obj.text = text
        return obj

    def __reduce__(self):
        return (ExactDecimal, (self.text,))

    def __repr__(self) -> str:
        return f"ExactDecimal({self.text!r})"


# --------------------------------------------------------------------------- reading

_INT = r"(?:0|[1-9][0-9]*)"
_BEFORE = r"[:\[,][ \t\r\n]*(?=[-0-9])"    # value position: after ':' '[' ','; a number starts
_AFTER = r"(?=[ \t\r\n]*(?:[,\]}]|\Z))"      # ... and the token ends there
_NOT_FLOAT_TEXT = (
    rf"-?{_INT}(?:\.[0-9]+)?[eE][+-]?[0-9]+"  # exponent
    rf"|-0"                                   # negative zero integer
    rf"|-?{_INT}\.[0-9]+0"                    # trailing zero after the first fraction digit
    rf"|-?0\.0000[0-9]*"                      # below 1e-4: repr would use an exponent
    rf"|-?(?=(?:[0-9]\.?){{16}}){_INT}(?:\.[0-9]+)?"  # 16 digits or more
)
_PATTERN = f"{_BEFORE}(?:{_NOT_FLOAT_TEXT}){_AFTER}"
_EXACT_NEEDED = re.compile(_PATTERN.encode())
_EXACT_NEEDED_STR = re.compile(_PATTERN)


def needs_exact(data: bytes | str) -> bool:
    """True when ``data`` may hold a number token a float would not reproduce (may be a
    false positive, never a false negative).  A document that is a bare number is always
    read on the exact path."""
    if isinstance(data, str):
        return _EXACT_NEEDED_STR.search(data) is not None or data.lstrip()[:1] in _NUMBER_START_STR
    return _EXACT_NEEDED.search(data) is not None or data.lstrip()[:1] in _NUMBER_START


_NUMBER_START = tuple(b"-0123456789"[i:i + 1] for i in range(11))
_NUMBER_START_STR = tuple("-0123456789")


def _exact_float(token: str) -> Decimal:
    d = Decimal(token)
    return d if str(d) == token else ExactDecimal(token)


def _exact_int(token: str) -> int | Decimal:
    return Decimal(token) if token == "-0" else int(token)


def _no_constant(token: str) -> Any:
    raise JsonSyntaxError(f"{token} is not a JSON value")


# ints: the C scanner's own int(); NaN / Infinity are not JSON and are refused as orjson refuses them
_exact_decoder = json.JSONDecoder(parse_float=_exact_float, parse_constant=_no_constant)
_exact_decoder_negative_zero = json.JSONDecoder(parse_float=_exact_float, parse_int=_exact_int,
                                                parse_constant=_no_constant)
_NEGATIVE_ZERO = re.compile(rb"-0[ \t\r\n]*(?:[,\]}]|\Z)")
_NEGATIVE_ZERO_STR = re.compile(r"-0[ \t\r\n]*(?:[,\]}]|\Z)")


def _depth_exceeds(obj: Any, limit: int) -> bool:
    """True when ``obj`` nests lists/dicts deeper than ``limit`` (iterative: no recursion)."""
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            values = node.values()
        elif isinstance(node, list):
            values = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((v, depth + 1) for v in values if isinstance(v, (dict, list)))
    return False


def _bracket_count(data: bytes | str) -> int:
    """Opening brackets in ``data``: a bound on its depth (one pass, no Python loop)."""
    if len(data) <= MAX_DEPTH:
        return len(data)
    if isinstance(data, str):
        return len(data) - len(data.translate(_NO_BRACKETS))
    return len(data) - len(data.translate(None, b"[{"))


_NO_BRACKETS = {ord("["): None, ord("{"): None}


def loads(data: bytes | str) -> Any:
    """Parse one JSON document losslessly (see the module docstring for the number types)."""
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    try:
        fast = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc) or "recursion" in str(exc):
            raise JsonDepthError(f"JSON nested deeper than {MAX_DEPTH} levels") from None
        if "infinity" in str(exc):  # a number beyond a double (1e400): valid JSON, exact path
            return _exact_only(data)
        raise JsonSyntaxError(str(exc)) from None
    if _bracket_count(data) > MAX_DEPTH and _depth_exceeds(fast, MAX_DEPTH):  # cheap bound first
        raise JsonDepthError(f"JSON nested deeper than {MAX_DEPTH} levels")
    source = data.strip().encode("utf-8") if isinstance(data, str) else data.strip()
    try:
        again = orjson.dumps(fast)
    except orjson.JSONEncodeError:  # e.g. a lone surrogate from a \ud800 escape
        again = b""
    if again == source:
        return fast  # every number token is the text its float is written as
    if _spaced(source, again) and not needs_exact(data):
        return fast  # not compact (pretty-printed, several lines): the regex decides
    return _loads_exact(data, depth_checked=True)


def _loads_exact(data: bytes | str, depth_checked: bool = False) -> Any:
    """The exact path: numbers with a fraction or exponent as Decimal (any magnitude)."""
    negative_zero = (_NEGATIVE_ZERO if isinstance(data, bytes) else _NEGATIVE_ZERO_STR).search(data)
    decoder = _exact_decoder_negative_zero if negative_zero else _exact_decoder
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        obj = decoder.decode(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise JsonSyntaxError(str(exc)) from None
    except RecursionError:
        raise JsonDepthError(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    if not depth_checked and _bracket_count(data) > MAX_DEPTH and _depth_exceeds(obj, MAX_DEPTH):
        raise JsonDepthError(f"JSON nested deeper than {MAX_DEPTH} levels")
    return obj


def _exact_only(data: bytes | str) -> Any:
    """The exact path alone, for a document orjson refuses only for a number beyond a double
    (``1e400`` is valid JSON): the number keeps its text as an :class:`ExactDecimal`."""
    if _bracket_count(data) > MAX_DEPTH:
        raise JsonDepthError(f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return _exact_decoder_negative_zero.decode(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise JsonSyntaxError(str(exc)) from None
    except RecursionError:
        raise JsonDepthError(f"JSON nested deeper than {MAX_DEPTH} levels") from None


def _spaced(source: bytes, again: bytes) -> bool:
    """True when the source is laid out with whitespace (several lines, or a compact rewrite
    shorter by more than 2.5%), so the rewrite differs for layout rather than for numbers
    (a number changes the length by a few bytes: ``1.30`` -> ``1.3``, ``1e3`` -> ``1000.0``).
    Only speed depends on this guess: both paths that follow are exact."""
    return len(source) - len(again) > 8 + len(source) // 40 or b"\n" in source


def loads_object(data: bytes | str) -> dict:
    """:func:`loads` for a document that must be an object (a FHIR resource, an NDJSON line)."""
    obj = loads(data)
    if not isinstance(obj, dict):
        raise JsonNotObjectError(f"a JSON {_kind(obj)}, not an object")
    return obj


def _kind(obj: Any) -> str:
    if isinstance(obj, list):
        return "array"
    if isinstance(obj, str):
        return "string"
    if obj is None:
        return "null"
    if isinstance(obj, bool):
        return "boolean"
    return "number"


def number_text(value: int | float | Decimal) -> str:
    """The JSON text of a number from :func:`loads` (or made by a mapping module): the token
    as written for exact-path numbers; for a float its shortest round-trip text as orjson
    writes it (the token it was read from); ``str`` for ints and Decimals."""
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    if isinstance(value, ExactDecimal):
        return value.text
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"not a JSON number: {value}")
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"not a JSON number: {value!r}")
        return orjson.dumps(value).decode()
    if isinstance(value, int):
        return str(value)
    raise TypeError(f"not a number: {type(value).__name__}")


# --------------------------------------------------------------------------- writing

# orjson escapes control characters, so this string is written as "\u001ftb-number\u001f"
_PLACEHOLDER = "\x1ftb-number\x1f"
_PLACEHOLDER_OUT = orjson.dumps(_PLACEHOLDER)
_PASSTHROUGH = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes; Decimals written as their exact text (see the module docstring)."""
    texts: list[bytes] = []

    def default(value: Any) -> str:
        if isinstance(value, Decimal):
            texts.append(number_text(value).encode())
            return _PLACEHOLDER
        raise TypeError(f"not JSON: {type(value).__name__}")

    try:
        out = orjson.dumps(obj, default=default, option=_PASSTHROUGH)
    except orjson.JSONEncodeError as exc:
        if isinstance(exc.__cause__, (TypeError, ValueError)) and not isinstance(exc.__cause__, OverflowError):
            raise exc.__cause__ from None  # our default hook refused a value
        return _dumps_slow(obj)  # integers beyond 64 bits, too deep for orjson, bad str
    if texts:
        parts = out.split(_PLACEHOLDER_OUT)
        if len(parts) != len(texts) + 1:  # a string equal to the placeholder
            return _dumps_slow(obj)
        out = b"".join(p + t for p, t in zip(parts, texts)) + parts[-1]
    if b"null" in out and _has_nonfinite_float(obj):  # orjson writes NaN/inf as null
        raise ValueError("not a JSON number: NaN or infinity")
    return out


def _has_nonfinite_float(obj: Any) -> bool:
    stack = [obj]
    while stack:
        node = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            return True
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
    return False


def _dumps_slow(obj: Any) -> bytes:
    out: list[str] = []
    _encode(obj, out, 0)
    return "".join(out).encode("utf-8")


_string = json.JSONEncoder(ensure_ascii=False).encode  # the escaping orjson also applies


def _encode(obj: Any, out: list[str], depth: int) -> None:
    if isinstance(obj, str):
        out.append(_string(obj))
    elif isinstance(obj, dict):
        if depth >= MAX_DEPTH:
            raise JsonDepthError(f"JSON nested deeper than {MAX_DEPTH} levels")
        out.append("{")
        for n, (k, v) in enumerate(obj.items()):
            if not isinstance(k, str):
                raise TypeError(f"JSON object keys are strings, not {type(k).__name__}")
            out.append(("," if n else "") + _string(k) + ":")
            _encode(v, out, depth + 1)
        out.append("}")
    elif isinstance(obj, (list, tuple)):
        if depth >= MAX_DEPTH:
            raise JsonDepthError(f"JSON nested deeper than {MAX_DEPTH} levels")
        out.append("[")
        for n, v in enumerate(obj):
            if n:
                out.append(",")
            _encode(v, out, depth + 1)
        out.append("]")
    elif obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, float):
        number_text(obj)  # refuses NaN and infinities
        out.append(orjson.dumps(obj).decode())
    elif isinstance(obj, (int, Decimal)):
        out.append(number_text(obj))
    else:
        raise TypeError(f"not JSON: {type(obj).__name__}")


__all__ = ["MAX_DEPTH", "JsonError", "JsonSyntaxError", "JsonDepthError", "JsonNotObjectError", "ExactDecimal",
           "loads", "loads_object", "dumps", "number_text", "needs_exact"]
