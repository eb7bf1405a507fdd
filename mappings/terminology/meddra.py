"""MedDRA: a licensed dictionary the user brings (``--meddra DIR``), read from its ASCII
distribution, and the coding of adverse event records with it.

MedDRA is licensed by the MSSO, so none of it ships here: the folder is the subscriber's
``MedAscii`` folder (or the folder that holds it).  Its files are ``$``-separated, one record
a line, each line ending with a ``$``; the fields are in the order of the MSSO's
"Distribution File Format" document (tables 2-3 and 3-1 to 3-9 of its 25.1 edition), which
the reader checks by count:

=====================  =======================================================================
``meddra_release.asc``  version, language, three empty fields (optional here: ``--meddra-version``)
``llt.asc``             llt_code, llt_name, pt_code, six legacy code fields, llt_currency, one more
``pt.asc``              pt_code, pt_name, an empty field, pt_soc_code (the primary SOC), seven legacy
``mdhier.asc``          pt_code, hlt_code, hlgt_code, soc_code, pt_name, hlt_name, hlgt_name, soc_name,
                        soc_abbrev, an empty field, pt_soc_code, primary_soc_fg (Y on the primary path)
=====================  =======================================================================

``mdhier.asc`` is the distribution's own join of ``hlt_pt``, ``hlgt_hlt`` and ``soc_hlgt`` with
the names of ``hlt``, ``hlgt`` and ``soc``: one line per path from a PT to a SOC, so only these
three files (and the version file) are read.  What is kept per process (one load per folder,
cached: a worker loads it once for all its subjects) is one small object per LLT, PT and path
with their texts interned: about 46 MiB, 50 MiB at the peak of loading, measured on a made-up
dictionary the size of a full English release (86,000 LLTs, 26,000 PTs, 39,000 paths).

Coding an adverse event record (:func:`code_event`), in this order:

1. **Codes given** (``llt_code``, ``pt_code``, from the records or a FHIR MedDRA coding) are
   used as given and checked: an unknown code is MEDDRA-CODE-UNKNOWN, a non-current LLT
   MEDDRA-LLT-NONCURRENT, an LLT under another PT than ``pt_code`` MEDDRA-CODE-MISMATCH.
2. **Otherwise the text**: the decoded term (the site's coding, AEDECOD) is matched, ignoring
   case and repeated spaces, to a *current* LLT and else to a PT; the PT reached is the event's.
   The verbatim term (AETERM) is matched to current LLTs too: when it names an LLT of that
   PT, that LLT is AELLT, else the LLT the decoded term matched (the PT's own LLT, which
   carries the PT's code and name, when it matched a PT).  With no decoded term the verbatim
   term is matched the same way.  A name that only a non-current LLT has is never used
   (MEDDRA-LLT-NONCURRENT, info, names it); a name two current LLTs (or PTs) share is
   MEDDRA-TERM-AMBIGUOUS; no match at all is MEDDRA-TERM-UNKNOWN: the event keeps what it had
   and its MedDRA codes stay empty.
3. **The hierarchy** is the PT's primary path (``primary_soc_fg`` Y): HLT, HLGT and SOC with
   their codes; AESOC is the primary SOC.  AEBODSYS is the body system the record names when
   it is a SOC on one of the PT's paths (a sponsor may analyse by a secondary SOC), else the
   primary SOC (MEDDRA-SOC-MISMATCH when one was named).  Names come from the dictionary; a
   decoded term that was an LLT's name becomes its PT's name (MEDDRA-DECOD-NOT-PT).

Given codes above the PT that disagree with the primary path are kept as given
(MEDDRA-CODE-MISMATCH).  ``soc``/``soc_code`` are only set when the primary SOC is not the body
system (AESOC = AEBODSYS otherwise), so records -> SDTM -> records stays the identity.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from trialbridge.converters.core.issues import IssueLog, TrialbridgeError
from trialbridge.converters.core.records import where

# field counts per line (the trailing "$" gives one empty field more, dropped before counting)
FIELD_COUNTS = {"llt.asc": 11, "pt.asc": 11, "mdhier.asc": 12, "meddra_release.asc": 5}
REQUIRED_FILES = ("llt.asc", "pt.asc", "mdhier.asc")
VERSION_FILE = "meddra_release.asc"

# record fields the coding fills (names and codes of every level)
CODE_FIELDS = ("llt_code", "pt_code", "hlt_code", "hlgt_code", "body_system_code", "soc_code")
NAME_FIELDS = ("llt", "decoded_term", "hlt", "hlgt", "body_system", "soc")
CODE_RE = re.compile(r"^[0-9]{1,10}$")


@dataclass(frozen=True, slots=True)
class Llt:
    code: str
    name: str
    pt_code: str
    current: bool


@dataclass(frozen=True, slots=True)
class MedPath:
    """One line of mdhier.asc: a PT's path up to a SOC."""
    hlt_code: str
    hlt: str
    hlgt_code: str
    hlgt: str
    soc_code: str
    soc: str
    primary: bool


@dataclass
class Dictionary:
    folder: str
    version: str
    llts: dict[str, Llt] = field(default_factory=dict)
    pts: dict[str, str] = field(default_factory=dict)  # pt_code -> name
    pt_soc: dict[str, str] = field(default_factory=dict)  # pt_code -> primary SOC code (pt.asc)
    paths: dict[str, list[MedPath]] = field(default_factory=dict)  # pt_code -> its paths
    llt_names: dict[str, str | tuple[str, ...]] = field(default_factory=dict)  # normalised name -> LLT code(s)
    pt_names: dict[str, str | tuple[str, ...]] = field(default_factory=dict)  # normalised name -> PT code(s)

    def primary(self, pt_code: str) -> MedPath | None:
        paths = self.paths.get(pt_code) or []
        return (next((p for p in paths if p.primary), None)
                or next((p for p in paths if p.soc_code == self.pt_soc.get(pt_code)), None)
                or (paths[0] if paths else None))


def normalise(text: str | None) -> str:
    return " ".join(str(text or "").split()).casefold()


def _files(folder: Path) -> dict[str, Path]:
    """The distribution's files by lower-case name (some packages ship them in upper case),
    in ``folder`` or its ``MedAscii`` subfolder."""
    for where_ in (folder, *(p for p in sorted(folder.iterdir()) if p.is_dir() and p.name.lower() == "medascii")):
        files = {p.name.lower(): p for p in where_.iterdir() if p.is_file()}
        if all(name in files for name in REQUIRED_FILES):
            return files
    return {}


def _lines(path: Path, fields: int):
    """The fields of each line of a distribution file, read line by line; a line with
    another number of fields means this is not the format (or a damaged copy): a usage
    error, one line.  Older English releases are Latin-1 rather than UTF-8."""
    try:
        path.read_bytes().decode("utf-8")
        encoding = "utf-8"
    except UnicodeDecodeError:
        encoding = "latin-1"
    with open(path, encoding=encoding, newline="") as fh:
        yield from _checked(path, fields, fh)


def _checked(path: Path, fields: int, fh):
    for n, line in enumerate(fh, start=1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        parts = line.split("$")
        if parts and parts[-1] == "":
            parts.pop()
        if len(parts) != fields:
            raise TrialbridgeError(f"--meddra {path.parent}: {path.name} line {n} has {len(parts)} $-separated "
                                   f"field(s), not {fields}: not a MedDRA ASCII distribution file")
        yield n, [sys.intern(p.strip()) for p in parts]


def _code(path: Path, n: int, value: str) -> str:
    value = value.strip()
    if not CODE_RE.match(value):
        raise TrialbridgeError(f"--meddra {path.parent}: {path.name} line {n}: {value!r} is not a MedDRA code")
    return value


@lru_cache(maxsize=4)
def load(folder: str, version: str | None = None) -> Dictionary:
    """The dictionary in ``folder`` (read once per process and folder).  ``version`` overrides
    the distribution's ``meddra_release.asc``; with neither the version is ``unspecified``."""
    try:
        return _load(folder, version)
    except OSError as exc:  # unreadable file or folder: a usage / I-O failure, one line
        raise TrialbridgeError(f"--meddra {folder}: cannot read {exc.filename or folder}: {exc.strerror or exc}") from exc


def _load(folder: str, version: str | None) -> Dictionary:
    path = Path(folder)
    if not path.is_dir():
        raise TrialbridgeError(f"--meddra {folder}: no such folder")
    files = _files(path)
    if not files:
        raise TrialbridgeError(f"--meddra {folder}: not a MedDRA ASCII distribution (needs "
                               f"{', '.join(REQUIRED_FILES)}, in the folder or its MedAscii folder)")
    found = version
    if not found and VERSION_FILE in files:
        for _n, parts in _lines(files[VERSION_FILE], FIELD_COUNTS[VERSION_FILE]):
            found = parts[0].strip()
            break
    dic = Dictionary(folder=folder, version=found or "unspecified")
    p = files["pt.asc"]
    for n, parts in _lines(p, FIELD_COUNTS["pt.asc"]):
        code = _code(p, n, parts[0])
        dic.pts[code] = parts[1].strip()
        dic.pt_soc[code] = parts[3].strip()
        _index(dic.pt_names, normalise(parts[1]), code)
    p = files["llt.asc"]
    for n, parts in _lines(p, FIELD_COUNTS["llt.asc"]):
        llt = Llt(_code(p, n, parts[0]), parts[1].strip(), _code(p, n, parts[2]), parts[9].strip().upper() == "Y")
        dic.llts[llt.code] = llt
        _index(dic.llt_names, normalise(llt.name), llt.code)
    p = files["mdhier.asc"]
    for n, parts in _lines(p, FIELD_COUNTS["mdhier.asc"]):
        pt = _code(p, n, parts[0])
        dic.paths.setdefault(pt, []).append(MedPath(_code(p, n, parts[1]), parts[5].strip(), _code(p, n, parts[2]),
                                                    parts[6].strip(), _code(p, n, parts[3]), parts[7].strip(),
                                                    parts[11].strip().upper() == "Y"))
    if not dic.llts or not dic.pts or not dic.paths:
        raise TrialbridgeError(f"--meddra {folder}: llt.asc, pt.asc or mdhier.asc is empty")
    return dic


def _index(names: dict, key: str, code: str) -> None:
    """One code per name (nearly every name), a tuple for the few that several terms share:
    a list per name would double the index's size."""
    have = names.get(key)
    names[key] = code if have is None else (*((have,) if isinstance(have, str) else have), code)


def _codes(names: dict, key: str) -> tuple[str, ...]:
    have = names.get(key, ())
    return (have,) if isinstance(have, str) else have


# ----------------------------------------------------------------------------- coding


def _match(dic: Dictionary, text: str) -> tuple[str, Any]:
    """How ``text`` names a term: ("llt", Llt) a current LLT; ("pt", code) a PT;
    ("ambiguous", names); ("noncurrent", Llt); ("none", None)."""
    key = normalise(text)
    llts = [dic.llts[c] for c in _codes(dic.llt_names, key)]
    current = [x for x in llts if x.current]
    if len({x.pt_code for x in current}) > 1:
        return "ambiguous", sorted(f"{x.name} ({x.code})" for x in current)
    if current:
        return "llt", min(current, key=lambda x: x.code)
    pts = _codes(dic.pt_names, key)
    if len(pts) > 1:
        return "ambiguous", sorted(f"{dic.pts[c]} ({c})" for c in pts)
    if pts:
        return "pt", pts[0]
    if llts:
        return "noncurrent", min(llts, key=lambda x: x.code)
    return "none", None


def _from_text(rec: dict[str, Any], dic: Dictionary, log: IssueLog) -> tuple[str | None, Llt | None]:
    """(PT code, LLT) the event's texts give, reporting what could not be used."""
    decoded, term = rec.get("decoded_term") or "", rec.get("term") or ""
    verbatim = _match(dic, term) if term else ("none", None)
    source = "decoded_term" if decoded else "term"
    kind, found = _match(dic, decoded) if decoded else verbatim
    if decoded and verbatim[0] == "noncurrent":
        llt = verbatim[1]
        log.info("MEDDRA-LLT-NONCURRENT", f"term names the non-current LLT {llt.name!r} ({llt.code}); non-current "
                 "LLTs are not used for coding: coded from decoded_term", **where(rec, "term"), value=term)
    if kind == "noncurrent":
        log.warning("MEDDRA-LLT-NONCURRENT", f"{source} names only the non-current LLT {found.name!r} "
                    f"({found.code}, PT {dic.pts.get(found.pt_code, '?')!r}); non-current LLTs are not used for "
                    "coding: not coded", **where(rec, source), value=rec.get(source))
        return None, None
    if kind == "ambiguous":
        log.error("MEDDRA-TERM-AMBIGUOUS", f"{source} matches several MedDRA terms ({'; '.join(found)}); "
                  "not coded: give llt_code or pt_code", **where(rec, source), value=rec.get(source))
        return None, None
    if kind not in ("llt", "pt"):
        log.error("MEDDRA-TERM-UNKNOWN", f"{source} is no current LLT nor PT of MedDRA {dic.version}; not coded: "
                  "MedDRA codes left empty", **where(rec, source), value=rec.get(source))
        return None, None
    pt_code = found.pt_code if kind == "llt" else found
    llt = found if kind == "llt" else dic.llts.get(pt_code)
    if decoded and verbatim[0] == "llt" and verbatim[1].pt_code == pt_code:
        llt = verbatim[1]
    return pt_code, llt


def _check_code(rec: dict[str, Any], name: str, log: IssueLog) -> str:
    value = str(rec.get(name) or "").strip()
    if value and not CODE_RE.match(value):
        log.error("MEDDRA-CODE-INVALID", f"{name} is not a MedDRA code (digits); left empty", **where(rec, name),
                  value=value)
        rec.pop(name, None)
        return ""
    return value


def check_codes(rec: dict[str, Any], log: IssueLog) -> None:
    """Given codes must be codes (digits): without a dictionary nothing more can be checked."""
    for name in CODE_FIELDS:
        _check_code(rec, name, log)


def code_event(rec: dict[str, Any], dic: Dictionary, log: IssueLog) -> bool:
    """Fill the MedDRA names and codes of one adverse event record in place (module
    docstring); True when it has a PT code afterwards."""
    check_codes(rec, log)
    llt_code, pt_code = rec.get("llt_code") or "", rec.get("pt_code") or ""
    llt = None
    if llt_code:
        llt = dic.llts.get(llt_code)
        if llt is None:
            log.error("MEDDRA-CODE-UNKNOWN", f"llt_code is no LLT of MedDRA {dic.version}; kept as given",
                      **where(rec, "llt_code"), value=llt_code)
        elif not llt.current:
            log.warning("MEDDRA-LLT-NONCURRENT", f"llt_code is the non-current LLT {llt.name!r}; kept as given "
                        "(non-current LLTs should not code new data)", **where(rec, "llt_code"), value=llt_code)
    if pt_code:
        if pt_code not in dic.pts:
            log.error("MEDDRA-CODE-UNKNOWN", f"pt_code is no PT of MedDRA {dic.version}; kept as given",
                      **where(rec, "pt_code"), value=pt_code)
            return True
        if llt is not None and llt.pt_code != pt_code:
            log.error("MEDDRA-CODE-MISMATCH", f"LLT {llt_code} belongs to PT {llt.pt_code}, not to pt_code; kept "
                      "as given", **where(rec, "pt_code"), value=pt_code)
    elif llt is not None:
        pt_code = llt.pt_code
    elif llt_code:  # an unknown LLT code given: nothing to build on
        return False
    if not pt_code:
        pt_code, llt = _from_text(rec, dic, log)
        if pt_code is None:
            return False
        if llt is None:
            llt = dic.llts.get(pt_code)
    if llt is None and not llt_code:
        llt = dic.llts.get(pt_code)  # the PT's own LLT
    _fill(rec, "llt_code", llt.code if llt else None)
    if llt is not None and (not llt_code or llt.code == llt_code):
        rec["llt"] = llt.name
    _fill(rec, "pt_code", pt_code)
    pt_name = dic.pts[pt_code]
    given = rec.get("decoded_term") or ""
    if given and normalise(given) != normalise(pt_name):
        log.warning("MEDDRA-DECOD-NOT-PT", f"decoded_term is not the name of PT {pt_code}; AEDECOD is the PT "
                    f"{pt_name!r}", **where(rec, "decoded_term"), value=given)
    rec["decoded_term"] = pt_name
    _hierarchy(rec, dic, pt_code, log)
    return True


def _fill(rec: dict[str, Any], name: str, value: str | None) -> None:
    if value and not rec.get(name):
        rec[name] = value


def _hierarchy(rec: dict[str, Any], dic: Dictionary, pt_code: str, log: IssueLog) -> None:
    path = dic.primary(pt_code)
    if path is None:
        log.error("MEDDRA-NO-PATH", f"PT {pt_code} has no line in mdhier.asc; HLT, HLGT and SOC left as given",
                  **where(rec, "pt_code"), value=pt_code)
        return
    for level in ("hlt", "hlgt"):
        code, name = getattr(path, f"{level}_code"), getattr(path, level)
        given = rec.get(f"{level}_code")
        if given and given != code:
            log.warning("MEDDRA-CODE-MISMATCH", f"{level}_code is not the {level.upper()} of PT {pt_code}'s primary "
                        f"path ({code}); kept as given", **where(rec, f"{level}_code"), value=given)
            continue
        rec[f"{level}_code"], rec[level] = code, name
    paths = dic.paths[pt_code]
    body_code, body = rec.get("body_system_code") or "", rec.get("body_system") or ""
    chosen = (next((p for p in paths if p.soc_code == body_code), None) if body_code else
              next((p for p in paths if normalise(p.soc) == normalise(body)), None) if body else path)
    if chosen is None:
        if body_code:
            log.warning("MEDDRA-CODE-MISMATCH", f"body_system_code is no SOC of PT {pt_code}; kept as given",
                        **where(rec, "body_system_code"), value=body_code)
        else:
            log.warning("MEDDRA-SOC-MISMATCH", f"body_system is no SOC of PT {pt_code} ({dic.pts[pt_code]!r}); "
                        f"AEBODSYS is its primary SOC {path.soc!r}", **where(rec, "body_system"), value=body)
            chosen = path
    if chosen is not None:
        rec["body_system"], rec["body_system_code"] = chosen.soc, chosen.soc_code
    given = rec.get("soc_code")
    if given and given != path.soc_code:
        log.warning("MEDDRA-CODE-MISMATCH", f"soc_code is not the primary SOC of PT {pt_code} ({path.soc_code}); "
                    "kept as given", **where(rec, "soc_code"), value=given)
        return
    if rec.get("body_system_code") == path.soc_code:
        rec.pop("soc", None)
        rec.pop("soc_code", None)
    else:
        rec["soc"], rec["soc_code"] = path.soc, path.soc_code


def has_codes(rec: dict[str, Any]) -> bool:
    return bool(rec.get("pt_code") or rec.get("llt_code"))


__all__ = ["Dictionary", "Llt", "MedPath", "load", "code_event", "check_codes", "has_codes", "normalise",
           "CODE_FIELDS", "NAME_FIELDS"]
