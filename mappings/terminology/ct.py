"""CDISC SDTM controlled terminology (NCI EVS release 2025-03-28), from the extract in
``mappings/terminology/ct/sdtm-ct-2025-03-28.csv`` (see its README for the source).

``codelist("SEX")`` or ``codelist("C66731")`` gives a :class:`Codelist`; ``lookup`` maps a
submission value, a CDISC synonym or the NCI preferred term (case-insensitive) to the submission
value, or ``None``.  An unknown codelist name is a programming error (:class:`KeyError`); use
:func:`has_codelist` to test first.
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

CT_VERSION = "2025-03-28"  # the package used unless a run selects another (``--ct``)
CT_FILE = f"sdtm-ct-{CT_VERSION}.csv"
_FILE = re.compile(r"sdtm-ct-(\d{4}-\d{2}-\d{2})\.csv")
_selected = [CT_VERSION]  # the package of this process: set once per run (select), read by version()


def packages() -> list[str]:
    """The CT package dates with an extract in ``mappings/terminology/ct/`` (add one with
    ``python scripts/extract_ct.py --source "SDTM Terminology.txt" --version YYYY-MM-DD``)."""
    folder = resources.files("trialbridge.mappings").joinpath("terminology", "ct")
    return sorted(m.group(1) for p in folder.iterdir() if (m := _FILE.fullmatch(p.name)))


def select(package: str | None) -> str:
    """Use the CT package ``package`` (a date of :func:`packages`; None: the default) in this
    process, for every lookup, define.xml and TS.  A run selects it once, and each worker
    process it starts selects the same (the engine's Job carries it).  Unknown: ValueError."""
    package = package or CT_VERSION
    if package not in packages():
        raise ValueError(f"no CT package {package}; available: {', '.join(packages())}")
    if package != _selected[0]:
        _selected[0] = package
        _all.cache_clear()
        codelist.cache_clear()
    return package


def version() -> str:
    """The CT package in use (CDISC package date)."""
    return _selected[0]


@dataclass(frozen=True)
class Codelist:
    code: str  # NCI C-code of the codelist, e.g. C66731
    short_name: str  # CDISC submission value of the codelist, e.g. SEX
    name: str  # e.g. Sex
    extensible: bool
    terms: dict[str, str]  # submission value -> term C-code
    preferred: dict[str, str]  # submission value -> NCI preferred term
    synonyms: dict[str, list[str]] = field(default_factory=dict)  # submission value -> CDISC synonyms
    _index: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def __contains__(self, value: object) -> bool:
        return value in self.terms

    def lookup(self, value: str | None) -> str | None:
        """Submission value for ``value`` (itself, a synonym or the preferred term), else None.

        Exact submission values win over preferred terms, which win over synonyms.
        """
        if value is None:
            return None
        text = str(value).strip()
        if text in self.terms:  # exact (case-sensitive) submission value first
            return text
        return self._index.get(text.casefold()) if text else None


def _build_index(terms, preferred, synonyms) -> dict[str, str]:
    index: dict[str, str] = {}
    # lowest priority first, so later (stronger) entries overwrite
    for sv in sorted(terms, reverse=True):
        for syn in synonyms.get(sv, []):
            index[syn.casefold()] = sv
    for sv in sorted(terms, reverse=True):
        if preferred.get(sv):
            index[preferred[sv].casefold()] = sv
    for sv in terms:
        index[sv.casefold()] = sv
    return index


@lru_cache(maxsize=1)
def _all() -> dict[str, Codelist]:
    text = resources.files("trialbridge.mappings").joinpath("terminology", "ct", f"sdtm-ct-{version()}.csv"
                                                            ).read_text(encoding="utf-8")
    raw: dict[str, dict] = {}
    for row in csv.DictReader(io.StringIO(text, newline="")):
        cl = raw.setdefault(row["codelist"], {
            "code": row["codelist_code"], "name": row["codelist_name"],
            "extensible": row["extensible"] == "Yes", "terms": {}, "preferred": {}, "synonyms": {},
        })
        sv = row["submission_value"]
        cl["terms"][sv] = row["term_code"]
        cl["preferred"][sv] = row["nci_preferred_term"]
        cl["synonyms"][sv] = [s.strip() for s in row["synonyms"].split(";") if s.strip()]
    out: dict[str, Codelist] = {}
    for short, cl in raw.items():
        c = Codelist(code=cl["code"], short_name=short, name=cl["name"], extensible=cl["extensible"],
                     terms=cl["terms"], preferred=cl["preferred"], synonyms=cl["synonyms"],
                     _index=_build_index(cl["terms"], cl["preferred"], cl["synonyms"]))
        out[short] = c
        out[cl["code"]] = c
    return out


def has_codelist(short_name_or_ccode: str) -> bool:
    return short_name_or_ccode.strip().upper() in _all()


@lru_cache(maxsize=None)
def codelist(short_name_or_ccode: str) -> Codelist:
    """The codelist with this submission short name (``SEX``) or C-code (``C66731``)."""
    key = short_name_or_ccode.strip().upper()
    try:
        return _all()[key]
    except KeyError:
        raise KeyError(f"codelist {short_name_or_ccode!r} is not in the trialbridge CT extract "
                       f"(sdtm-ct-{version()}.csv); add it to scripts/extract_ct.py") from None


def codelists() -> list[str]:
    """Short names of all codelists in the extract."""
    return sorted({c.short_name for c in _all().values()})
