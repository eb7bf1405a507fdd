"""One hardened policy for reading XML we are handed (ODM exports, Define-XML).

The policy, in the order it is applied:

1. **Look before parsing.**  The prolog — XML declaration, comments, processing
   instructions, document type declaration — is scanned as text from the first
   :data:`PROLOG_LIMIT` bytes, without a parser.  A ``<!DOCTYPE …>`` with an internal
   subset (``[ … ]``, where entities are declared) or an external identifier
   (``SYSTEM`` / ``PUBLIC``: an external DTD) is refused.  Neither ODM nor Define-XML
   uses a DTD, and entity declarations are how "billion laughs" bombs and external-entity
   (XXE) reads work.  libxml2 substitutes internal entities inside attribute values even
   with entity resolution off, so such a document must never reach the parser.  A bare
   ``<!DOCTYPE ODM>`` declares nothing and is accepted.
2. **Bounded.**  No root element within :data:`PROLOG_LIMIT` bytes is refused too: the scan
   never reads more, and a prolog that large is padding in front of something.
3. **A parser with everything off**: no entity resolution, no DTD loading, validation or
   default attributes, no network, libxml2's huge-tree limits kept (depth, text size),
   comments and processing instructions dropped.
4. **Belt and braces**: a parsed document that still shows a DTD with entities, a system
   or a public identifier is refused.

Refusals raise :class:`UnsafeXMLError`; a document that is not well-formed raises
:class:`MalformedXMLError`; both are :class:`XMLRefusedError`, which readers turn into one
issue with their own rule code.  libxml2's own limits (nesting deeper than 256, a text
node over 10 MB) come back as :class:`MalformedXMLError` with libxml2's message.  Failing to
open or read the file raises ``OSError`` unchanged: that is an I/O failure, not a finding
about the data.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

PROLOG_LIMIT = 1 << 20  # bytes of prolog read before the root element must have begun

_NAME = re.compile(r"[A-Za-z_:][-A-Za-z0-9_.:]*")
_ENTITY_NAME = re.compile(r"<!ENTITY\s+(?:%\s+)?([^\s\"'>]+)")


class XMLRefusedError(Exception):
    """An XML document we do not read; ``line`` when the parser named one."""

    def __init__(self, message: str, *, line: int | None = None):
        super().__init__(message)
        self.line = line


class UnsafeXMLError(XMLRefusedError):
    """Refused for safety: a DTD (entity declarations or an external DTD), or a prolog
    beyond the scan limit.  ``doctype`` is the declaration as written (when one was
    found) and ``entities`` the names it declares."""

    def __init__(self, message: str, *, doctype: str | None = None, line: int | None = None):
        super().__init__(message, line=line)
        self.doctype = doctype
        self.entities = sorted(set(_ENTITY_NAME.findall(doctype or "")))


class MalformedXMLError(XMLRefusedError):
    """Not well-formed XML (the parser's message and line)."""


@dataclass(frozen=True)
class Prolog:
    root: str | None  # qualified name of the root element, None when not reached
    doctype: str | None  # the document type declaration as written, when there is one
    problem: str | None  # why the prolog could not be read to the root element


def scan_prolog(source: str | Path | bytes) -> Prolog:
    """Read the prolog of a file (or of bytes) up to the root element's name, without a parser."""
    if isinstance(source, bytes):
        head = source[:PROLOG_LIMIT]
    else:
        with open(source, "rb") as fh:
            head = fh.read(PROLOG_LIMIT)
    text = _decode(head)
    pos, doctype = 0, None
    while True:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        if text.startswith("<?", pos):
            end = _after(text, "?>", pos)
        elif text.startswith("<!--", pos):
            end = _after(text, "-->", pos)
        elif text.startswith("<!DOCTYPE", pos):
            end = _doctype_end(text, pos)
            if end >= 0:
                doctype = text[pos:end]
        elif text.startswith("<", pos):
            m = _NAME.match(text, pos + 1)
            return Prolog(m.group(0) if m else None, doctype, None if m else "no root element")
        else:
            return Prolog(None, doctype, "empty file" if pos == 0 and not text else "no root element")
        if end < 0:
            return Prolog(None, doctype, f"prolog longer than {PROLOG_LIMIT} bytes or unterminated")
        pos = end


def _decode(head: bytes) -> str:
    """Enough of the encoding to read markup: UTF-16 by its byte order mark or by ``<?``
    spelt in two bytes; everything else byte for byte (markup is ASCII in UTF-8 and the
    8-bit encodings)."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = head.decode("utf-16", errors="replace")
    elif head[:4] in (b"<\x00?\x00", b"\x00<\x00?"):
        text = head.decode("utf-16-le" if head[0] == 0x3C else "utf-16-be", errors="replace")
    else:
        text = head.decode("latin-1")
        if text.startswith("\xef\xbb\xbf"):  # UTF-8 byte order mark
            text = text[3:]
    return text[1:] if text.startswith("\ufeff") else text


def _after(text: str, terminator: str, pos: int) -> int:
    """Index just past ``terminator`` found from ``pos``; -1 when absent."""
    end = text.find(terminator, pos)
    return end + len(terminator) if end >= 0 else -1


def _doctype_end(text: str, pos: int) -> int:
    """Index just past the ``>`` closing the declaration at ``pos`` (brackets and quotes
    respected); -1 when it does not end within the text."""
    depth, quote = 0, None
    for i in range(pos, len(text)):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == ">" and depth <= 0:
            return i + 1
    return -1


def declares_dtd(doctype: str | None) -> bool:
    """Anything beyond ``<!DOCTYPE name>``: an internal subset or an external DTD."""
    return bool(doctype) and re.search(r"\[|\bSYSTEM\b|\bPUBLIC\b|<!ENTITY", doctype) is not None


def parser() -> etree.XMLParser:
    """The one parser configuration for XML we read (policy point 3)."""
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                           attribute_defaults=False, huge_tree=False, remove_comments=True, remove_pis=True)


def check_prolog(source: str | Path | bytes) -> Prolog:
    """Policy points 1 and 2: the prolog, or :class:`UnsafeXMLError`."""
    prolog = scan_prolog(source)
    if prolog.problem and prolog.problem.startswith("prolog longer"):
        raise UnsafeXMLError(f"no root element within the first {PROLOG_LIMIT} bytes (comments, processing "
                             "instructions or a document type declaration of that size)", doctype=prolog.doctype)
    if declares_dtd(prolog.doctype):
        raise UnsafeXMLError("the document declares a DTD (entity declarations or an external DTD); ODM and "
                             "Define-XML use none, and entity declarations are how XML bombs and "
                             "external-entity reads work", doctype=prolog.doctype)
    return prolog


def parse(source: str | Path | bytes) -> etree._ElementTree:
    """Parse a file (path) or a document (bytes) under the policy; raises
    :class:`UnsafeXMLError`, :class:`MalformedXMLError` or ``OSError``."""
    check_prolog(source)
    try:
        if isinstance(source, bytes):
            tree = etree.fromstring(source, parser()).getroottree()
        else:
            with open(source, "rb") as fh:  # a file that cannot be opened is an OSError, as documented
                tree = _parse_file(fh)
    except etree.XMLSyntaxError as exc:
        raise MalformedXMLError(f"not well-formed XML: {exc.msg}", line=exc.lineno or None) from None
    info = tree.docinfo
    dtd = info.internalDTD
    if (dtd is not None and any(True for _ in dtd.iterentities())) or info.system_url or info.public_id:
        raise UnsafeXMLError("the document declares a DTD (entity declarations or an external DTD)",
                             doctype=info.doctype or None)
    return tree


def _parse_file(fh) -> etree._ElementTree:
    """libxml2 reports bytes that are not valid in the declared encoding as an ``OSError``
    ("Error reading file ...: Invalid bytes in character encoding") although the file was
    read: that is a malformed document, not an I/O failure (found by fuzzing)."""
    try:
        return etree.parse(fh, parser())
    except OSError as exc:
        reason = str(exc).rpartition("': ")[2] or str(exc)
        raise MalformedXMLError(f"not well-formed XML: {reason}") from None
