"""The hub's JSON codec: numbers keep their exact text on both paths, our own errors for
documents we cannot take, output byte-identical to the writer it replaces.

Expected values are written out by hand (the JSON text a human reads), never computed by
the codec under test."""
from __future__ import annotations

import json
import pickle
import random
from decimal import Decimal

import pytest

from trialbridge.converters.core import jsoncodec
from trialbridge.converters.core.issues import IssueLog
from trialbridge.converters.formats import records as records_io
from trialbridge.converters.formats.fhir import io as fhir_io

# token -> (type after loads, value it must equal)
EXACT_TEXT = {
    "1.30": (Decimal, Decimal("1.30")),            # trailing zero: a float would say 1.3
    "1e3": (jsoncodec.ExactDecimal, 1000),         # exponent: Decimal alone would say 1E+3
    "0.1": (float, 0.1),                           # a float's shortest text is 0.1
    "-0": (Decimal, 0),                            # an int has no negative zero
    "12345678901234567890": (int, 12345678901234567890),      # 20 digits, beyond int64
    "18446744073709551616": (int, 2**64),                     # beyond uint64: orjson gives a float
    "3.14159265358979323846264338327950288": (Decimal, Decimal("3.14159265358979323846264338327950288")),
    "5.0": (float, 5.0),
    "-0.0": (float, -0.0),
    "0.00001": (float, 0.00001),                   # compact: orjson writes it back the same way
    "2.5E-7": (Decimal, Decimal("0.00000025")),     # str(Decimal) gives 2.5E-7 back
    "0.0000001": (jsoncodec.ExactDecimal, Decimal("1E-7")),  # str(Decimal) would say 1E-7
    "100": (int, 100),
}


@pytest.mark.parametrize("token", sorted(EXACT_TEXT))
def test_number_keeps_its_text_compact(token):
    kind, value = EXACT_TEXT[token]
    doc = jsoncodec.loads('{"valueQuantity":{"value":' + token + ',"unit":"g/L"}}')
    got = doc["valueQuantity"]["value"]
    assert type(got) is kind and got == value
    assert jsoncodec.number_text(got) == token
    assert jsoncodec.dumps(doc) == b'{"valueQuantity":{"value":' + token.encode() + b',"unit":"g/L"}}'


@pytest.mark.parametrize("token", sorted(EXACT_TEXT))
def test_number_keeps_its_text_pretty_printed(token):
    """Pretty-printed input takes the regex path (the compact rewrite differs)."""
    text = '{\n  "valueQuantity": {\n    "value": ' + token + ',\n    "unit": "g/L"\n  },\n  "n": [ ' + token + ' ]\n}\n'
    doc = jsoncodec.loads(text.encode())
    assert jsoncodec.number_text(doc["valueQuantity"]["value"]) == token
    assert jsoncodec.number_text(doc["n"][0]) == token
    assert float(doc["valueQuantity"]["value"]) == float(EXACT_TEXT[token][1])


def test_bare_number_documents_keep_their_text():
    assert jsoncodec.number_text(jsoncodec.loads("1.30")) == "1.30"
    assert jsoncodec.number_text(jsoncodec.loads(b" -0 ")) == "-0"


def test_regex_ignores_times_in_strings_and_finds_real_tokens():
    assert not jsoncodec.needs_exact(b'{"effectiveDateTime": "2020-06-05T08:30:15.000Z", "v": 4.5}')
    assert jsoncodec.needs_exact(b'{"v": 4.50}')
    assert jsoncodec.needs_exact(b'{"v": [1, 2, 1e3]}')
    assert jsoncodec.needs_exact(b'{"v":\n  -0\n}')
    assert jsoncodec.needs_exact(b'{"v": 12345.67890123456}')    # 16 digits
    assert not jsoncodec.needs_exact(b'{"v": 12345.6789012345}')  # 15 digits always round-trip
    assert jsoncodec.needs_exact(b'{"v": 0.00009}')               # below 1e-4


def test_random_tokens_round_trip_on_both_paths():
    rng = random.Random(20200605)
    for _ in range(3000):
        int_part = rng.choice(["0", str(rng.randint(1, 10 ** rng.randint(1, 18)))])
        frac = str(rng.randint(0, 10 ** rng.randint(1, 17))).zfill(rng.randint(1, 12))
        exp = rng.choice(["", "", "", f"e{rng.randint(-30, 30)}", f"E+{rng.randint(0, 30)}"])
        token = rng.choice(["", "-"]) + int_part + (("." + frac) if rng.random() < 0.8 else "") + exp
        for text in ('{"v":[' + token + "]}", '{ "v" : [ ' + token + " ] }\n" + " " * 40):
            got = jsoncodec.loads(text)["v"][0]
            assert jsoncodec.number_text(got) == token, (text, got)
            assert jsoncodec.dumps(got).decode() == token


def test_exact_decimal_keeps_text_through_pickle():
    value = jsoncodec.loads('{"v":1e3}')["v"]
    again = pickle.loads(pickle.dumps(value))
    assert type(again) is jsoncodec.ExactDecimal and again.text == "1e3" and again == 1000
    assert type(value + 1) is Decimal and value + 1 == 1001


@pytest.mark.parametrize("line, kind", [("[1, 2]", "array"), ('"text"', "string"), ("3", "number"),
                                        ("null", "null"), ("true", "boolean")])
def test_non_object_document_is_our_error(line, kind):
    with pytest.raises(jsoncodec.JsonNotObjectError, match=f"a JSON {kind}, not an object"):
        jsoncodec.loads_object(line)


@pytest.mark.parametrize("text", ["[" * 300 + "]" * 300,
                                  '{"a":' * 300 + "1.30" + "}" * 300,
                                  "[" * 5000 + "]" * 5000,
                                  "[" * 200_000 + "]" * 200_000])
def test_deep_nesting_is_our_error(text):
    with pytest.raises(jsoncodec.JsonDepthError):
        jsoncodec.loads(text)


def test_nesting_up_to_the_limit_is_read():
    depth = jsoncodec.MAX_DEPTH
    assert jsoncodec.loads("[" * depth + "1.30" + "]" * depth) is not None
    with pytest.raises(jsoncodec.JsonDepthError):
        jsoncodec.loads("[" * (depth + 1) + "]" * (depth + 1))


def test_bad_json_is_our_error_and_a_value_error():
    for text in ('{"a":', b'{"a":1.30', b'{"a":"\xff"}', b'{"a":1.30,"b":"\xff"}'):
        with pytest.raises(jsoncodec.JsonSyntaxError):
            jsoncodec.loads(text)
    assert issubclass(jsoncodec.JsonError, ValueError)


def test_dumps_matches_the_writer_it_replaced():
    """Strings, ints, booleans and null exactly as json.dumps(ensure_ascii=False) compact."""
    doc = {"resourceType": "Patient", "name": [{"text": "Zoë \"Q\" Ødegård\\/ \u2028 \x7f 日本"}],
           "ctl": "a\x00b\x1fc\n\t\b\f\r", "n": -3, "big": 2**70, "ok": True, "no": False, "none": None,
           "emoji": "\U0001f600", "nested": {"b": 1, "a": [1, {"z": 0}]}}
    want = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    assert jsoncodec.dumps(doc) == want


def test_dumps_writes_decimals_exactly_and_refuses_noise():
    doc = {"a": Decimal("1.30"), "b": [Decimal("-0"), Decimal("1E+3"), Decimal("315000")],
           "c": jsoncodec.ExactDecimal("1e3"), "d": 0.1, "big": 2**70}
    assert jsoncodec.dumps(doc) == b'{"a":1.30,"b":[-0,1E+3,315000],"c":1e3,"d":0.1,"big":1180591620717411303424}'
    # a string equal to the internal placeholder does not confuse the writer
    assert jsoncodec.dumps({"x": "\x1ftb-number\x1f", "v": Decimal("1.30")}) == \
        b'{"x":"\\u001ftb-number\\u001f","v":1.30}'
    for bad in (float("nan"), float("inf"), Decimal("NaN"), Decimal("-Infinity")):
        with pytest.raises(ValueError):
            jsoncodec.dumps({"v": [bad]})
    with pytest.raises(TypeError):
        jsoncodec.dumps({"v": object()})


def test_fhir_ndjson_reader_reports_non_object_and_deep_lines(tmp_path):
    path = tmp_path / "Observation.ndjson"
    ok = '{"resourceType":"Observation","id":"o1","valueQuantity":{"value":1.30}}'
    path.write_text("\n".join([ok, "[1, 2]", "[" * 1000 + "]" * 1000, '"text"', "{nope"]) + "\n")
    log = IssueLog()
    got = list(fhir_io.read_fhir(path, log))
    assert [fhir_io.dumps(r) for r in got] == [ok]
    assert [(i.code, i.record) for i in log.issues] == [("FHIR-JSON", 2), ("FHIR-JSON", 3), ("FHIR-JSON", 4),
                                                        ("FHIR-JSON", 5)]
    assert "not a resource: a JSON array" in log.issues[0].message
    assert "nested deeper than" in log.issues[1].message


def test_records_json_reader_keeps_number_text(tmp_path):
    path = tmp_path / "lab_results.ndjson"
    path.write_text('{"result": 1.30, "low": 1e3, "high": -0, "n": 12345678901234567890, "x": 0.1, "ok": true}\n'
                    "[1]\n")
    rows = list(records_io._iter_json(path, "lab_results"))
    assert rows[0][1] == {"result": "1.30", "low": "1e3", "high": "-0", "n": "12345678901234567890", "x": "0.1",
                          "ok": True}
    assert isinstance(rows[1][1], records_io.BadRow) and rows[1][2] == []  # rejected by the caller
    assert rows[1][1].message.startswith("row is not an object but a JSON array")


def _tokens(text: str):
    """Every number token of a document as written, in document order (stdlib hooks)."""
    found = []
    json.loads(text, parse_float=found.append, parse_int=found.append)
    return found


def _numbers(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from _numbers(v)
    elif isinstance(node, list):
        for v in node:
            yield from _numbers(v)
    elif isinstance(node, (int, float, Decimal)) and not isinstance(node, bool):
        yield node


def test_real_world_documents_keep_every_number_token():
    """HL7's R4 examples and Synthea bundles (pretty-printed, several number styles)."""
    from tests.conftest import reference

    paths = sorted(reference("fhir-r4", "examples-hl7").glob("*.json"))[:400]
    paths += sorted(reference("fhir-r4", "synthea-bundles").glob("*.json"))[:3]
    checked = 0
    for path in paths:
        raw = path.read_bytes()
        tokens = _tokens(raw.decode("utf-8"))
        got = [jsoncodec.number_text(n) for n in _numbers(jsoncodec.loads(raw))]
        assert got == tokens, path.name
        compact = jsoncodec.dumps(jsoncodec.loads(raw))
        assert _tokens(compact.decode("utf-8")) == tokens, path.name
        checked += len(tokens)
    assert checked > 1000
