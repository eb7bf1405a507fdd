"""A subject's own identifying values kept out of free text, and pseudonymised USUBJIDs.

**Redaction.**  The subject record holds identifying fields (``x-identifying`` in
``schemas/internal/subject.schema.json``: family and given name, medical record number,
address, phone); from FHIR input the Patient's ``name``, ``telecom``, ``identifier`` and
``address``.  They are never written to SDTM, but a site may type them into free text: an AE
term ("fell at home, 12 Elm Street"), a disposition reason, a comment.  The free-text fields
of the subject's records (``x-free-text`` in their schemas) are scanned for that subject's own
values, and every other text field not held to a fixed form (no ``pattern``, ``enum`` or date;
not the study, site or subject id) for the subject's phone numbers and identifiers — a name
there could be a medical word (a family name Rash, an AE coded Rash).  One subject at a time
(:func:`redact_records`, called by the engine's ``process_group``), a match is replaced by
``[REDACTED]`` and reported as ``PRIV-REDACTED`` naming file, record and field — never the
value.  The findings of the subject's group are scrubbed the same way
(:func:`scrub_log`), so a message that quotes a value does not carry one either.

How values match (what is and is not caught is listed in ``docs/privacy.md``):

* **names**: each word of a name of at least :data:`MIN_NAME` letters, as a whole word, case
  and accents ignored ("MÜLLER" and "muller" match "Müller"), an apostrophe optional
  ("OBrien" matches "O'Brien"); the whole name also as a phrase.  Name particles (van, de,
  la …) are matched only inside the whole name.
* **phones**: the last :data:`PHONE_DIGITS` digits of a number with at least that many,
  whatever the spaces, dots, dashes and brackets between digits, with any country or trunk
  prefix before them ("+1 (555) 123-4567", "555.123.4567" and "1234567" all match).
* **identifiers** (MRN, other Patient identifiers, e-mail): the value's letters and digits in
  order, separators optional, as a whole word, case ignored; at least :data:`MIN_IDENTIFIER`
  letters and digits (:data:`MIN_NUMBER` for one of digits only); a trailing number of six
  digits or more also on its own ("00123456" of "MRN-00123456").
* **addresses**: each comma-, semicolon- or line-separated part with at least
  :data:`MIN_ADDRESS_PART` letters and digits ("12 Elm Street", "Springfield", "IL 62704"),
  words in order whatever the punctuation between them; a postcode-like word (a digit and at
  least five characters) also on its own.

**Pseudonymised USUBJID.**  :func:`pseudonym` is HMAC-SHA256 of the study, site and subject
id under a secret key, as :data:`PSEUDONYM_LENGTH` characters of Crockford base 32: the same key
gives the same pseudonym, a different key an unrelated one.  :func:`read_key` reads the
secret from a file (never from the command line, where ``ps`` and shell histories show it).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
import unicodedata
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from trialbridge.converters.core.issues import IssueLog, TrialbridgeError
from trialbridge.converters.core.records import Records, record_types

REDACTED = "[REDACTED]"
MIN_NAME = 3  # letters: "Li", "Wu" would hit every text that holds them as a word
PHONE_DIGITS = 7  # the subscriber part of a number; shorter numbers are not looked for
MIN_IDENTIFIER = 4  # letters and digits
MIN_NUMBER = 6  # an identifier of digits only: shorter ones are lab results, doses, counts
MIN_ADDRESS_PART = 5  # letters and digits
PSEUDONYM_LENGTH = 12  # 60 bits: a collision among a million subjects has odds of about 1 in 2 million
PSEUDONYM_ENV = "TRIALBRIDGE_PSEUDONYMISE_KEY_FILE"
PARTICLES = frozenset({"al", "bin", "da", "das", "de", "del", "della", "den", "der", "di", "do", "dos", "du",
                       "el", "ibn", "la", "le", "mac", "san", "st", "ter", "van", "von", "y"})
KINDS = {"name": "name", "phone": "phone number", "identifier": "record number or identifier",
         "address": "address"}
# which subject record field holds which kind of value
FIELD_KINDS = {"family_name": "name", "given_name": "name", "medical_record_number": "identifier",
               "phone": "phone", "address": "address"}
NOT_SCANNED = frozenset({"study_id", "site_id", "subject_id"})

_SEP = r"[\W_]*"  # between letters or digits of one word: nothing or punctuation
_PHONE_SEP = r"[\s\-./()]*"
_BEFORE = r"(?<![^\W_])"  # not right after a letter or digit
_AFTER = r"(?![^\W_])"


def fold(text: str) -> str:
    """Lower case without accents: what names are compared in."""
    if text.isascii():
        return text.lower()
    return "".join(c for c in unicodedata.normalize("NFKD", text.casefold()) if not unicodedata.combining(c))


def _folded_with_map(text: str) -> tuple[str, list[int]]:
    """``text`` folded (a typographic apostrophe as ``'``), and for each folded character the
    index of the character it came from."""
    out, where = [], []
    for i, c in enumerate(text):
        for f in ("'" if c == "\u2019" else fold(c)):
            out.append(f)
            where.append(i)
    return "".join(out), where


def _words(text: str) -> list[str]:
    return [w for w in re.split(r"[\W_]+", fold(text)) if w]


def _word(word: str) -> str:
    """One folded word (letters and digits only); an apostrophe between them is optional
    ("O'Brien", "OBrien", "O’Brien")."""
    return "'?".join(re.escape(c) for c in word)


# Each builder gives (pattern, anchor): the anchor is the value's letters and digits that any
# match must contain once a text is folded and squashed to its letters and digits
# (:func:`squash`), so a subject whose texts hold no anchor needs no pattern compiled at all.

def _name_patterns(value: str) -> list[tuple[str, str]]:
    words = [w for w in (re.sub(r"[\W_]", "", w) for w in re.split(r"[\s,\-]+", fold(value))) if w]
    out = []
    if len(words) > 1:
        out.append((_BEFORE + r"[\W_]+".join(_word(w) for w in words) + _AFTER, "".join(words)))
    for w in words:
        if len(w) >= MIN_NAME and w not in PARTICLES:
            out.append((_BEFORE + _word(w) + _AFTER, w))
    return out


def _phone_patterns(value: str) -> list[tuple[str, str]]:
    digits = re.sub(r"\D", "", value)
    if len(digits) < PHONE_DIGITS:
        return []
    tail = digits[-PHONE_DIGITS:]
    return [(r"(?<![\d+])\+?(?:\d" + _PHONE_SEP + r")*?" + _PHONE_SEP.join(tail) + r"(?!\d)", tail)]


def _identifier_patterns(value: str) -> list[tuple[str, str]]:
    chars = squash(value)
    if len(chars) < (MIN_IDENTIFIER if not chars.isdigit() else MIN_NUMBER):
        return []
    out = [(_BEFORE + _SEP.join(re.escape(c) for c in chars) + _AFTER, chars)]
    number = re.search(r"\d{6,}$", chars)  # "MRN-00123456": the number also on its own
    if number and number.group() != chars:
        out.append((_BEFORE + _SEP.join(number.group()) + _AFTER, number.group()))
    return out


def _address_patterns(value: str) -> list[tuple[str, str]]:
    out = []
    for part in re.split(r"[,;\n]+", value):
        words = _words(part)
        if sum(len(w) for w in words) >= MIN_ADDRESS_PART:
            out.append((_BEFORE + r"[\W_]+".join(re.escape(w) for w in words) + _AFTER, "".join(words)))
        for w in words:
            if len(words) > 1 and len(w) >= 5 and any(c.isdigit() for c in w):
                out.append((_BEFORE + re.escape(w) + _AFTER, w))
    return out


def squash(text: str) -> str:
    """Folded letters and digits only: what anchors are looked for in."""
    return re.sub(r"[\W_]+", "", fold(text))


_BUILDERS = {"name": _name_patterns, "phone": _phone_patterns, "identifier": _identifier_patterns,
             "address": _address_patterns}


STRONG = ("phone", "identifier")  # looked for in coded fields too: no medical word is one


@dataclass(frozen=True)
class Identity:
    """One subject's identifying values as compiled patterns, one per group of kinds (compiling
    one alternation of everything costs several times the parts): ``strong`` phones and
    identifiers, ``weak`` names and addresses; each with the kind of its alternatives."""

    strong: tuple[re.Pattern, tuple[str, ...]] | None = None
    weak: tuple[re.Pattern, tuple[str, ...]] | None = None

    def __bool__(self) -> bool:
        return self.strong is not None or self.weak is not None

    def redact(self, text: str, *, strong_only: bool = False) -> tuple[str, set[str]]:
        """``text`` with every match replaced by :data:`REDACTED`, and the kinds found;
        ``strong_only``: phones and identifiers only (a coded field, where a name could be a
        medical word: a family name Rash, an AE decoded as Rash)."""
        patterns = [p for p in ((self.strong,) if strong_only else (self.strong, self.weak)) if p is not None]
        if not patterns or not text:
            return text, set()
        if text.isascii():
            folded, where = text.lower(), None
        else:
            folded, where = _folded_with_map(text)
        found, kinds = [], set()
        for pattern, kinds_of in patterns:
            for m in pattern.finditer(folded):
                if m.end() == m.start():
                    continue
                kinds.add(kinds_of[m.lastindex - 1])
                found.append((m.start(), m.end()) if where is None else (where[m.start()], where[m.end() - 1] + 1))
        if not found:
            return text, set()
        spans: list[tuple[int, int]] = []
        for start, end in sorted(found):
            if spans and start < spans[-1][1]:
                spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
            else:
                spans.append((start, end))
        out, last = [], 0
        for start, end in spans:
            out.append(text[last:start])
            out.append(REDACTED)
            last = end
        out.append(text[last:])
        return "".join(out), kinds


def identity(values: Iterable[tuple[str, str]], haystack: str | None = None) -> Identity:
    """The patterns of ``(kind, value)`` pairs, kind one of name, phone, identifier, address;
    longer patterns first, so a whole name or address part wins over one of its words.  With
    ``haystack`` (the texts to be scanned, joined), only the patterns whose anchor it holds."""
    squashed = squash(haystack) if haystack is not None else None
    found: dict[str, str] = {}
    for kind, value in values:
        if not isinstance(value, str) or not value.strip():
            continue
        for p, anchor in _BUILDERS[kind](value):
            if squashed is None or anchor in squashed:
                found.setdefault(p, kind)
    ordered = sorted(found.items(), key=lambda pk: (-len(pk[0]), pk[0]))
    return Identity(_compiled([(p, k) for p, k in ordered if k in STRONG]),
                    _compiled([(p, k) for p, k in ordered if k not in STRONG]))


def _compiled(ordered: list[tuple[str, str]]) -> tuple[re.Pattern, tuple[str, ...]] | None:
    # one group per alternative, in order; the patterns inside use no capturing groups
    if not ordered:
        return None
    return re.compile("|".join(f"({p})" for p, _ in ordered)), tuple(kind for _, kind in ordered)


def subject_values(records: Records) -> list[tuple[str, str]]:
    """``(kind, value)`` of the identifying fields of the subject records."""
    fields = [f for f in record_types()["subject"].identifying if f in FIELD_KINDS]
    return [(FIELD_KINDS[f], s[f]) for s in records.rows.get("subject", []) for f in fields if s.get(f)]


@lru_cache(maxsize=1)
def scanned_fields() -> dict[str, tuple[tuple[str, bool], ...]]:
    """Record type -> ``(field, free text)`` of the fields scanned: text not held to a fixed
    form (pattern, enum, date, a dictionary's code such as a MedDRA LLT code — checked against
    its dictionary, and a run of digits that can look like the end of a phone number), not
    the study, site or subject id, not identifying itself.
    Free text (``x-free-text`` in the schema) is scanned for every kind of value; the other
    fields (coded: severity, MedDRA terms, routes …) for phones and identifiers only."""
    out = {}
    for name, rtype in record_types().items():
        props = rtype.schema["properties"]
        out[name] = tuple((f, bool(p.get("x-free-text"))) for f, p in props.items()
                          if f not in NOT_SCANNED and not p.get("x-identifying") and "pattern" not in p
                          and "enum" not in p and not p.get("x-iso8601") and not p.get("x-dictionary-code"))
    return out


def redact_records(records: Records, values: list[tuple[str, str]], log: IssueLog) -> int:
    """Redact the subject's identifying ``values`` ((kind, value) pairs) in the scanned fields
    of ``records`` (in place); one PRIV-REDACTED warning per field changed.  Returns the
    number of fields changed."""
    fields = scanned_fields()
    if not values:
        return 0
    texts = [row[f] for name, rows in records.rows.items() for row in rows for f, _ in fields.get(name, ())
             if isinstance(row.get(f), str) and row[f]]
    who = identity(values, "\n".join(texts))
    if not who:
        return 0
    changed = 0
    seen: dict[tuple[str, bool], tuple[str, set[str]]] = {}  # a subject's values repeat (units, codes)
    for name, rows in records.rows.items():
        for row in rows:
            for f, free_text in fields.get(name, ()):
                value = row.get(f)
                if not isinstance(value, str) or not value:
                    continue
                got = seen.get((value, free_text))
                if got is None:
                    got = seen[(value, free_text)] = who.redact(value, strong_only=not free_text)
                new, kinds = got
                if kinds:
                    row[f] = new
                    changed += 1
                    loc = row.get("_where") or {}
                    what = " and ".join(KINDS[k] for k in sorted(kinds))
                    log.warning("PRIV-REDACTED", f"{name} field {f} held the subject's own {what}; replaced by "
                                f"{REDACTED}", file=loc.get("file"), record=loc.get("record"), field=f)
    return changed


def scrub_log(log: IssueLog, values: list[tuple[str, str]]) -> None:
    """The subject's identifying ``values`` out of the messages and values of ``log`` (in place)."""
    if not values:
        return
    texts = [i.message for i in log.issues] + [i.value for i in log.issues if isinstance(i.value, str)]
    texts += [k.rpartition("\t")[2] for counts in log.unmapped.values() for k in counts]
    who = identity(values, "\n".join(texts))
    if not who:
        return
    for n, issue in enumerate(log.issues):
        message, hit = who.redact(issue.message)
        value = issue.value
        if isinstance(value, str):
            value, hit_value = who.redact(value)
            hit = hit or hit_value
        if hit:
            log.issues[n] = replace(issue, message=message, value=value)
    for table, counts in log.unmapped.items():
        # a counter's key may name its file first ("file<TAB>type<TAB>value"): only the value is
        # scrubbed, a file name is the user's own (Synthea names its files after the patient)
        for key in list(counts):
            head, tab, value = key.rpartition("\t")
            new, hit = who.redact(value)
            if hit:
                counts[head + tab + new] += counts.pop(key)


# ----------------------------------------------------------------------------- pseudonyms

_CROCKFORD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", "0123456789ABCDEFGHJKMNPQRSTVWXYZ")


def pseudonym(key: bytes, study_id: str, site_id: str, subject_id: str) -> str:
    """HMAC-SHA256(key, study id NUL site id NUL subject id) as :data:`PSEUDONYM_LENGTH`
    characters of Crockford base 32 (digits and capitals without I, L, O, U: readable,
    unambiguous).  The site is in the message because subject numbers are the site's: two
    sites may both have a subject 001."""
    digest = hmac.new(key, f"{study_id}\x00{site_id}\x00{subject_id}".encode("utf-8"), hashlib.sha256).digest()
    return base64.b32encode(digest).decode("ascii").translate(_CROCKFORD)[:PSEUDONYM_LENGTH]


def read_key(path: str | Path) -> bytes:
    """The secret of a key file: its bytes without surrounding whitespace; at least 16 bytes."""
    path = Path(path)
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise TrialbridgeError(f"{path}: cannot read the pseudonymisation key file: {exc.strerror}") from None
    if len(key) < 16:
        raise TrialbridgeError(f"{path}: the pseudonymisation key file holds {len(key)} byte(s); a key needs at "
                               "least 16 (e.g. `head -c 32 /dev/urandom | base64 > key`)")
    return key


__all__ = ["REDACTED", "Identity", "identity", "squash", "subject_values", "scanned_fields", "redact_records", "scrub_log",
           "pseudonym", "read_key", "fold", "PSEUDONYM_ENV"]
