"""Value conventions shared by every SDTM file format: what counts as missing, how a Char or
Num value is normalised, XPT-safe ASCII, the formats and file suffixes, and the FDA transport
limits (the validation rules import these limits instead of keeping their own copies).

Rows are plain dicts: Char values ``str`` ("" = missing), Num values ``int``/``float`` or
``None`` (missing); see :mod:`converters.core.datasets`.
"""
from __future__ import annotations

import math
import re
import unicodedata
from typing import Any

from trialbridge.converters import __version__
from trialbridge.converters.core.datasets import Variable
from trialbridge.converters.core.files import printable, safe_name
from trialbridge.converters.core.issues import TrialbridgeError
from trialbridge.converters.core.sdtm_spec import load_spec
from trialbridge.mappings.derive import SMALLEST_NORMAL
from trialbridge.mappings.derive import format_number, number_problem, to_number

__all__ = ["FORMATS", "SUFFIX", "READ_PREFERENCE", "DEFAULT_CREATED", "DATASET_JSON_VERSION",
           "XPT_MAX_CHAR", "XPT_MAX_LABEL", "XPT_MAX_NAME", "format_number", "to_ascii"]

FORMATS = ("xpt", "dataset-json", "dataset-ndjson", "csv")
SUFFIX = {"xpt": ".xpt", "dataset-json": ".json", "dataset-ndjson": ".ndjson", "csv": ".csv"}
READ_PREFERENCE = (".xpt", ".json", ".ndjson", ".csv")
# a creation time of None means "the run's creation time" (converters/core/clock.py:
# now, or SOURCE_DATE_EPOCH), resolved when the file is written
DEFAULT_CREATED: str | None = None
DATASET_JSON_VERSION = "1.1.0"
XPT_MAX_CHAR = 200
XPT_MAX_LABEL = 40
XPT_MAX_NAME = 8
# Num variables that Dataset-JSON types "integer" when every value is integral (counters, days, MedDRA codes)
PLAIN_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?").fullmatch
INTEGER_NAME = re.compile(r"(SEQ|DY|AGE|TAETORD|VISITNUM|TPTNUM|NUM|LLTCD|PTCD|HLTCD|HLGTCD|BDSYCD|SOCCD)$")


def _missing_num(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def _num(value: Any) -> float | None:
    return None if _missing_num(value) else float(value)


def read_num(text: str, fname: str, n: int, name: str, log: Any, code: str) -> float | None:
    """A Num value given as text (CSV): a plain decimal number a float holds, else missing
    with a finding: ``code`` (CSV-NUM) for text that is no number, SDTM-NUM-RANGE for a number
    beyond what a float holds (1e400 would be inf, 1e-400 would be 0: never a wrong number)."""
    t = text.strip()
    if t == "":
        return None
    if PLAIN_DECIMAL(t):  # the common case, decided here: a plain decimal of a normal magnitude
        value = float(t)
        if SMALLEST_NORMAL <= abs(value) < math.inf:
            return value
    value = to_number(t)
    if value is not None:
        return value
    problem = number_problem(t)
    if problem is not None and problem[0] == "range":
        log.error("SDTM-NUM-RANGE", f"{fname} row {n} {name}: {text!r} is {problem[1]}; read as missing",
                  file=fname, record=n, field=name, value=text)
    else:
        reason = f" ({problem[1]})" if problem else ""
        log.error(code, f"{fname} row {n} {name}: {text!r} is not a number{reason}; read as missing",
                  file=fname, record=n, field=name, value=text)
    return None


def _char(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value if isinstance(value, str) else str(value)


def to_ascii(text: str) -> str:
    """NFKD transliteration: drop combining marks; any character still non-ASCII becomes '?'."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return stripped.encode("ascii", "replace").decode("ascii")


def file_name(name: str, fmt: str) -> str:
    """``lb.xpt`` / ``lb.json`` / ``lb.csv`` for dataset ``LB``; a name that is not a safe
    dataset name (letters, digits, _) is refused (the readers report such names as
    ``SDTM-NAME-UNSAFE`` and do not read the file)."""
    if not safe_name(name):
        raise TrialbridgeError(f"refused to write dataset {printable(repr(name))}: not a safe dataset name")
    return name.lower() + SUFFIX[fmt]


def _enrich(name: str, label: str, typ: str, domain: str) -> Variable:
    """Variable from file metadata, with Core/role/codelist from the spec where known."""
    spec_var = load_spec(domain).var(name)
    if spec_var is None:
        return Variable(name=name, label=label or name, type=typ)
    return Variable(name=name, label=label or spec_var.label, type=typ, core=spec_var.core,
                    role=spec_var.role, codelist=spec_var.codelist,
                    codelist_code=spec_var.codelist_code, order=spec_var.order)


def _keys_for(domain: str, names: list[str]) -> list[str]:
    present = set(names)
    return [k for k in load_spec(domain).keys if k in present]


def _version() -> str:
    return __version__


class RowBatch:
    """A batch of rows handed to every format writer of a dataset, with each column taken
    out of the row dicts once (and normalised once) however many writers read it."""

    __slots__ = ("rows", "first", "_columns", "_texts", "_numbers")

    def __init__(self, rows: list[dict[str, Any]], first: int = 1):
        self.rows = rows
        self.first = first  # 1-based number of rows[0] in the dataset, for messages
        self._columns: dict[str, list[Any]] = {}
        self._texts: dict[str, list[str]] = {}
        self._numbers: dict[str, list[float | None]] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> list[Any]:
        """The values as given (absent -> None)."""
        col = self._columns.get(name)
        if col is None:
            col = self._columns[name] = [r.get(name) for r in self.rows]
        return col

    def texts(self, name: str) -> list[str]:
        """A Char column as text (missing -> "")."""
        col = self._texts.get(name)
        if col is None:
            col = self._texts[name] = [v if type(v) is str else _char(v) for v in self.column(name)]
        return col

    def numbers(self, name: str) -> list[float | None]:
        """A Num column as floats (missing, NaN included -> None)."""
        col = self._numbers.get(name)
        if col is None:
            col = self._numbers[name] = [None if v is None or v == "" or v != v else float(v)
                                         for v in self.column(name)]
        return col


def report_repeated_column(log, path, name: str, index: int, first: int) -> None:
    """SDTM-DUPLICATE-COLUMN: a column name given again (0-based ``index``, first seen at
    ``first``): the first is read, this one is not (the SDTM CSV and Dataset-JSON readers)."""
    log.error("SDTM-DUPLICATE-COLUMN", f"{path.name}: column {name!r} appears again as column {index + 1} "
              f"(first as column {first + 1}); the first is read, this one is not",
              file=path.name, field=name, value=index + 1)
