"""The hub's safe-XML policy (converters/core/safexml.py), and both XML readers (ODM and
Define-XML) refusing the same hostile files for the same reason."""
from __future__ import annotations

import time

import pytest

from trialbridge.converters.core import safexml
from trialbridge.converters.core.issues import IssueLog
from trialbridge.converters.formats import define as define_xml
from trialbridge.converters.formats import odm as odm_io
from tests.xml_attacks import attack_documents

SECRET = "TOP-SECRET-CONTENT"
ATTACKS = sorted(attack_documents("file:///nowhere", safexml.PROLOG_LIMIT))
# each reader's own rule code for the two kinds of refusal
UNSAFE = {"odm": "ODM-XML-UNSAFE", "define": "DEFINE-XML-ENTITY"}
MALFORMED = {"odm": "ODM-XML-PARSE", "define": "DEFINE-XML-SYNTAX"}


@pytest.fixture
def attack(tmp_path, request):
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET, "utf-8")
    path = tmp_path / f"{request.param}.xml"
    path.write_text(attack_documents(secret.as_uri(), safexml.PROLOG_LIMIT)[request.param], "utf-8")
    return path


def _read_with(reader: str, path) -> IssueLog:
    log = IssueLog()
    if reader == "odm":
        records = odm_io.read_odm(path, log)
        assert all(not rows for _, rows in records.items())
    else:
        assert define_xml.read_define(path, log) is None
    return log


@pytest.mark.parametrize("attack", ATTACKS, indirect=True)
def test_attack_is_refused_before_parsing(attack):
    started = time.perf_counter()
    with pytest.raises(safexml.UnsafeXMLError) as caught:
        safexml.parse(attack)
    assert time.perf_counter() - started < 2
    assert SECRET not in str(caught.value) and "lollollol" not in str(caught.value)


@pytest.mark.parametrize("attack", ATTACKS, indirect=True)
def test_both_readers_refuse_the_attack_with_the_same_message(attack):
    with pytest.raises(safexml.UnsafeXMLError) as caught:
        safexml.parse(attack)
    reason = str(caught.value)
    for reader in ("odm", "define"):
        log = _read_with(reader, attack)
        assert [(i.severity, i.code) for i in log.issues] == [("error", UNSAFE[reader])], reader
        assert reason in log.issues[0].message, reader
        dump = repr(log.to_json_obj())
        assert SECRET not in dump and "lollollol" not in dump


def test_entities_are_named_in_the_refusal(tmp_path):
    path = tmp_path / "bomb.xml"
    path.write_text(attack_documents("file:///nowhere", safexml.PROLOG_LIMIT)["billion-laughs"], "utf-8")
    with pytest.raises(safexml.UnsafeXMLError) as caught:
        safexml.parse(path)
    assert caught.value.entities == ["lol"] + [f"lol{n}" for n in range(1, 10)]
    assert caught.value.doctype.startswith("<!DOCTYPE ODM [") and caught.value.doctype.endswith("]>")


@pytest.mark.parametrize("text", ["<ODM><Study></ODM>", "<ODM>", "", "not xml at all"])
def test_malformed_is_the_same_refusal_for_both_readers(tmp_path, text):
    path = tmp_path / "broken.xml"
    path.write_text(text, "utf-8")
    with pytest.raises(safexml.MalformedXMLError) as caught:
        safexml.parse(path)
    assert str(caught.value).startswith("not well-formed XML: ")
    for reader in ("odm", "define"):
        log = _read_with(reader, path)
        assert [i.code for i in log.issues] == [MALFORMED[reader]], reader
        assert str(caught.value) in log.issues[0].message


def test_huge_tree_limits_stay_on():
    # libxml2 refuses nesting deeper than 256 and text nodes over 10 MB unless asked for huge trees
    with pytest.raises(safexml.MalformedXMLError, match="depth"):
        safexml.parse(b"<a>" + b"<b>" * 300 + b"</b>" * 300 + b"</a>")
    with pytest.raises(safexml.MalformedXMLError):
        safexml.parse(b"<a>" + b"x" * (11 * 1024 * 1024) + b"</a>")


def test_plain_documents_and_a_bare_doctype_are_read(tmp_path):
    doc = b'<?xml version="1.0"?>\n<!-- c --><?pi x?>\n<!DOCTYPE ODM>\n<ODM a="1"><!-- gone --><b>t</b></ODM>'
    tree = safexml.parse(doc)
    assert tree.getroot().tag == "ODM" and [el.tag for el in tree.getroot()] == ["b"]  # comments dropped
    path = tmp_path / "utf16.xml"
    path.write_text('<?xml version="1.0" encoding="UTF-16"?>\n<ODM><b>ü</b></ODM>', "utf-16")
    assert safexml.parse(path).getroot().findtext("b") == "ü"


def test_doctype_found_whatever_the_encoding(tmp_path):
    path = tmp_path / "utf16.xml"
    path.write_text('<?xml version="1.0" encoding="UTF-16"?>\n<!DOCTYPE ODM [<!ENTITY a "b">]>\n<ODM/>', "utf-16")
    with pytest.raises(safexml.UnsafeXMLError):
        safexml.parse(path)
    assert safexml.scan_prolog(path).root == "ODM"
    bom = tmp_path / "bom.xml"
    bom.write_bytes(b'\xef\xbb\xbf<!DOCTYPE ODM SYSTEM "x.dtd"><ODM/>')
    with pytest.raises(safexml.UnsafeXMLError):
        safexml.parse(bom)


def test_prolog_scan_finds_the_root_without_parsing(tmp_path):
    assert safexml.scan_prolog(b'<?xml version="1.0"?>\n<!-- a > b -->\n<odm:ODM xmlns:odm="u"/>').root == "odm:ODM"
    assert safexml.scan_prolog(b"").problem == "empty file"
    too_long = safexml.scan_prolog(b"<!--" + b"x" * safexml.PROLOG_LIMIT)
    assert too_long.root is None and too_long.problem.startswith("prolog longer")


def test_unreadable_file_is_an_io_error_not_a_finding(tmp_path):
    with pytest.raises(OSError):
        safexml.parse(tmp_path / "absent.xml")
