"""Hostile XML shared by the safe-XML, define.xml and ODM reader tests.

``LAUGH_ENTITIES``: the entity declarations of a "billion laughs" document (ten levels, each
entity ten copies of the one below).  :func:`attack_documents`: one document per attack,
each with an ``ODM`` root so that both readers (ODM and Define-XML) take it."""
from __future__ import annotations

LAUGH_ENTITIES = "\n".join(
    [' <!ENTITY lol "lol">']
    + [f' <!ENTITY lol{n} "{("&lol" + (str(n - 1) if n > 1 else "") + ";") * 10}">' for n in range(1, 10)]
)

_ROOT = ('<ODM xmlns="http://www.cdisc.org/ns/odm/v1.3" FileOID="{attr}" ODMVersion="1.3.2">'
         '<Study OID="S"><GlobalVariables><StudyName>{text}</StudyName></GlobalVariables></Study></ODM>\n')


def _document(doctype: str, attr: str = "F", text: str = "x") -> str:
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + doctype + _ROOT.format(attr=attr, text=text)


def attack_documents(secret_uri: str, prolog_limit: int) -> dict[str, str]:
    """name -> document text; ``secret_uri`` names a local file an XXE would read."""
    return {
        "billion-laughs": _document(f"<!DOCTYPE ODM [\n{LAUGH_ENTITIES}\n]>\n", attr="&lol9;", text="&lol9;"),
        "external-entity": _document(f'<!DOCTYPE ODM [<!ENTITY xxe SYSTEM "{secret_uri}">]>\n',
                                     attr="&xxe;", text="&xxe;"),
        "parameter-entity": _document(f'<!DOCTYPE ODM [<!ENTITY % remote SYSTEM "{secret_uri}"> %remote;]>\n'),
        "external-dtd": _document('<!DOCTYPE ODM SYSTEM "http://example.invalid/odm.dtd">\n'),
        "public-dtd": _document('<!DOCTYPE ODM PUBLIC "-//EXAMPLE//DTD ODM//EN" "odm.dtd">\n'),
        # a DOCTYPE with entities hidden behind a comment longer than the prolog scan
        "oversized-prolog": _document("<!--" + "x" * prolog_limit + '-->\n<!DOCTYPE ODM [<!ENTITY a "b">]>\n'),
    }
