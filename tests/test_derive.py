"""Derivations, checked against values worked out by hand.  Date grammar and study day:
tests/test_iso8601.py (the hub)."""
import math

import pytest

from trialbridge.mappings import derive


def test_age_complete_and_partial_birth_dates():
    assert derive.age_years("2010-06-11", "2020-06-10") == (9, False)   # birthday tomorrow
    assert derive.age_years("2010-06-10", "2020-06-10") == (10, False)  # birthday today
    # born some day in June 2010: 10 if born by the 10th, 9 if later -> lower age, flagged
    assert derive.age_years("2010-06", "2020-06-10") == (9, True)
    assert derive.age_years("2010-03", "2020-06-10") == (10, False)     # whole month before
    assert derive.age_years(None, "2020-06-10") == (None, False)


def test_bsa_mosteller_by_hand():
    # sqrt(120 * 25 / 3600) = sqrt(0.8333...) = 0.91287...
    assert derive.bsa_mosteller(120, 25) == pytest.approx(0.912871, abs=1e-6)


@pytest.mark.parametrize("text, number", [("1.30", 1.3), ("-2", -2.0), ("1e3", 1000.0), ("<0.5", None),
                                          ("NEGATIVE", None), ("", None), (None, None)])
def test_to_number(text, number):
    assert derive.to_number(text) == number


def test_format_number_and_rounding():
    assert derive.format_number(500000.0) == "500000"
    assert derive.format_number(12.5) == "12.5"
    assert derive.format_number(None) == ""
    assert derive.format_number(math.nan) == ""
    assert derive.round_sig(12.499999999999998) == 12.5
    assert derive.round_sig(0.0001234567890123) == pytest.approx(0.000123456789)


def test_assign_seq_is_stable_and_per_subject():
    rows = [{"USUBJID": "B", "X": 2}, {"USUBJID": "A", "X": 9}, {"USUBJID": "B", "X": 1}]
    derive.assign_seq(rows, "XXSEQ", lambda r: r["X"])
    assert [(r["USUBJID"], r["X"], r["XXSEQ"]) for r in rows] == [("A", 9, 1), ("B", 1, 1), ("B", 2, 2)]


@pytest.mark.parametrize("value, low, high, ind", [(5, 1, 10, "NORMAL"), (0.5, 1, 10, "LOW"), (11, 1, 10, "HIGH"),
                                                   (10, 1, 10, "NORMAL"), (5, None, None, ""), (None, 1, 2, "")])
def test_reference_range_indicator(value, low, high, ind):
    assert derive.reference_range_indicator(value, low, high) == ind


@pytest.mark.parametrize("text, why", [("1e400", "too large"), ("-1e400", "too large"), ("9" * 400, "too large"),
                                       ("1e-400", "too small"), ("1e-310", "too small"), ("0.1e-330", "too small")])
def test_numbers_a_float_cannot_hold_give_none_and_say_why(text, why):
    # 1e400 and 400 nines would be inf; 1e-400 would be 0.0; 1e-310 is subnormal (precision lost)
    assert derive.to_number(text) is None
    kind, reason = derive.number_problem(text)
    assert kind == "range" and reason.startswith(why)


@pytest.mark.parametrize("text", ["1,5", "1.234,5", "1 234", "1'234", "1_000", "0x1A", "12,345"])
def test_numbers_in_other_notations_are_named_not_read(text):
    assert derive.to_number(text) is None
    assert derive.number_problem(text)[0] == "format"


@pytest.mark.parametrize("text, number", [("0", 0.0), ("0.000", 0.0), ("0e-999", 0.0), ("2.5e-308", 2.5e-308),
                                          ("1.7e308", 1.7e308), ("-12.50", -12.5)])
def test_numbers_at_the_edges_still_read(text, number):
    assert derive.to_number(text) == number and derive.number_problem(text) is None


@pytest.mark.parametrize("text", ["NEGATIVE", "<0.5", "NaN", "inf", "", "1.2.3"])
def test_text_that_is_no_number_has_no_number_problem(text):
    assert derive.to_number(text) is None and derive.number_problem(text) is None


@pytest.mark.parametrize("text, digits", [("0.53", 2), ("1.30", 3), ("0.0050", 2), ("150", 3), ("1.2e3", 2),
                                          ("0", 1), ("-4.75", 3), ("007", 1), (".5", 1), ("<0.5", None),
                                          ("NEGATIVE", None), ("", None)])
def test_significant_digits_as_written(text, digits):
    assert derive.significant_digits(text) == digits


def test_converted_results_keep_the_source_precision():
    """The reviewer's case: creatinine 0.53 mg/dL is 46.85289958 umol/L in ten digits, 47 in
    the two digits the lab gave (0.53 x 10 / 113.12 x 1000 = 46.8529, by hand)."""
    assert derive.round_sig(46.85289958, derive.converted_digits("0.53")) == 47.0
    assert derive.converted_digits("5") == 2  # at least two
    assert derive.converted_digits("<0.5") == 10  # not a number: no rounding asked
    assert derive.converted_digits("1050.123456789012345678901234567") == 15  # what a float holds
    assert derive.round_sig(1050.1234567890123, 40) == 1050.1234567890123  # beyond the decimal context: as is
