"""The hub's ISO 8601 grammar (converters/core/iso8601.py), against cases worked out by hand."""
from datetime import date

import pytest

from trialbridge.converters.core import iso8601


# --------------------------------------------------------------------------- validity


@pytest.mark.parametrize("text", [
    "2003", "2003-12", "2003-12-15", "2003-12-15T13", "2003-12-15T13:14", "2003-12-15T13:14:17",
    "2003-12-15T13:14:17.123",                                # SDTMIG 3.4 §4.4.2, decreasing precision
    "2003---15", "--12-15", "-----T07:15", "2003-12-15T-:15",  # unknown middle parts
    "2020-02-29",                                             # 2020 is a leap year (divisible by 4)
    "2000-02-29",                                             # 2000 is one too (divisible by 400)
    "--02-29",                                                # year unknown: 29 February is possible
    "2020-07-15T08:00Z", "2020-07-15T08:00:30+08:00", "2020-07-15T08:00-05:30",
    "2020-12-31T23:59:59",
    "2024-01-10/2024-01-12", "2024-01-10/P3D", "P3D/2024-01-13", "2003-12-15T10:00/2003-12-15T10:30",
])
def test_valid(text):
    assert iso8601.is_valid(text)


@pytest.mark.parametrize("text", [
    "2021-02-29",             # 2021 is not a leap year
    "1900-02-29",             # divisible by 100, not by 400: not a leap year
    "2020-02-30", "2020-04-31", "2020-13-01", "2020-13-45", "2020-00-10", "2020-01-00", "2020-07-15T25:00",
    "--02-30",                # no month has 30 February, whatever the year
    "2020-07-15T24:00",       # 24:00 refused: the next day's 00:00 has one spelling only
    "2020-07-15T23:60", "2020-07-15T23:59:60",  # no minute 60, no leap second
    "2020-07-15T08:00+0100",  # basic-format offset in an extended-format value
    "2020-07-15T08:00+01",    # hour-only offset
    "2020-07-15Z",            # an offset needs a time
    "2020-07-15T08:00+24:00",
    "0000",                   # no year 0
    "2024-01-", "2024-01-10T", "2024-01-10T10:", "-",  # ends in nothing or in an unknown part
    "2024-1-5", "20240110", "15/07/2020", "10JAN2024", "2024/01/10", "", " 2024-01-10",
    "P3D/P4D", "2024-01-10/", "a/b/c", "2024-01-10/2024-01-12/2024-01-14",
])
def test_invalid(text):
    assert not iso8601.is_valid(text)


def test_records_form_has_no_unknown_parts_and_no_intervals():
    strict = dict(intervals=False, unknown_parts=False)
    assert iso8601.is_valid("2020-07", **strict) and iso8601.is_valid("2020-07-15T08:00:30+08:00", **strict)
    assert not iso8601.is_valid("2003---15", **strict)
    assert not iso8601.is_valid("2024-01-10/P3D", **strict)


@pytest.mark.parametrize("text, ok", [("P3D", True), ("P1Y2M10DT2H30M", True), ("PT0.5H", True), ("P2W", True),
                                      ("PT36H", True), ("P", False), ("PT", False), ("P1DT", False), ("3D", False),
                                      ("P1W2D", False), ("-P3D", False)])
def test_duration(text, ok):
    assert iso8601.is_duration(text) is ok


def test_non_text_is_never_valid():
    assert not iso8601.is_valid(None) and not iso8601.is_valid(20240110) and iso8601.date_part(3.5) is None


# --------------------------------------------------------------------------- partial values


@pytest.mark.parametrize("text, partial, day", [
    ("2020", True, None), ("2020-07", True, None), ("2003---15", True, None), ("--12-15", True, None),
    ("2020-07-15", False, date(2020, 7, 15)),
    ("2020-07-15T08", False, date(2020, 7, 15)),          # time partly collected: the date is complete
    ("2003-12-15T-:15", False, date(2003, 12, 15)),
    ("2020-02-30", False, None),                          # invalid is not "partial"
    ("2020-07-15/2020-07-20", False, None), ("", False, None), (None, False, None),
])
def test_partial_and_date_part(text, partial, day):
    assert iso8601.is_partial(text) is partial
    assert iso8601.date_part(text) == day


def test_has_time():
    assert iso8601.has_time("2020-07-15T08") and iso8601.has_time("2020-07-15T08:00Z")
    assert not iso8601.has_time("2020-07-15") and not iso8601.has_time("2003-12-15T-:15")
    assert not iso8601.has_time("-----T07:15")  # the time of an unknown day is no instant


def test_date_range():
    assert iso8601.date_range("2010-06") == (date(2010, 6, 1), date(2010, 6, 30))
    assert iso8601.date_range("2012-02") == (date(2012, 2, 1), date(2012, 2, 29))  # leap year
    assert iso8601.date_range("2010") == (date(2010, 1, 1), date(2010, 12, 31))
    assert iso8601.date_range("2010---15") == (date(2010, 1, 1), date(2010, 12, 31))  # month unknown
    assert iso8601.date_range("2010-06-11T08:00") == (date(2010, 6, 11), date(2010, 6, 11))
    assert iso8601.date_range("--06-11") is None


# --------------------------------------------------------------------------- study day


@pytest.mark.parametrize("on, reference, day", [
    ("2020-06-10", "2020-06-10", 1),             # the reference day is day 1
    ("2020-06-09", "2020-06-10", -1),            # the day before is -1: no day 0
    ("2020-06-11", "2020-06-10", 2),
    ("2020-06-08T23:59", "2020-06-10T08:30", -2),  # times play no part
    ("2020-06-16T09:00", "2020-06-10T09:00", 7),
    ("2020-09-08", "2020-06-10", 91),            # 20 (rest of June) + 31 + 31 + 8 = 90 days later
    ("2021-03-01", "2020-02-28", 368),           # 2 days to 2020-03-01 (29 Feb) + 365 = 367 days later
    ("2019-12-31", "2020-01-01", -1),            # across a year end
    ("2020-07", "2020-06-10", None),             # partial: no study day
    ("2020-07-01", "2020-06", None),
    ("", "2020-06-10", None),
])
def test_study_day(on, reference, day):
    assert iso8601.study_day(on, reference) == day


def test_study_day_of_dates_and_its_inverse():
    ref = date(2024, 1, 10)
    assert [iso8601.study_day(date(2024, 1, d), ref) for d in (8, 9, 10, 11)] == [-2, -1, 1, 2]
    assert [iso8601.date_of_study_day(n, ref) for n in (-2, -1, 1, 2)] == [date(2024, 1, d) for d in (8, 9, 10, 11)]
    with pytest.raises(ValueError):
        iso8601.date_of_study_day(0, ref)


# --------------------------------------------------------------------------- comparison


@pytest.mark.parametrize("a, b, order", [
    ("2020-06-04", "2020-06-05", -1),
    ("2020-06-05", "2020-06-05", 0),                     # the same day at the same precision
    ("2020-06-05T08:00", "2020-06-05T08:30", -1),
    ("2020-06-05T08:30", "2020-06-05T08:30", 0),
    ("2020-06-05", "2020-06-05T08:30", None),            # date-only vs a time that day: not "before" it
    ("2020-06-05T08:30", "2020-06-05", None),
    ("2020-06-04", "2020-06-05T08:30", -1),              # the whole day before ends before 08:30 next day
    ("2020-06-06", "2020-06-05T08:30", 1),
    ("2020-06", "2020-06-05T08:30", None),               # some day in June: before or after the 5th
    ("2020-05", "2020-06-05T08:30", -1),
    ("2020-07", "2020-06-05T08:30", 1),
    ("2020", "2020-06", None), ("2019", "2020-06", -1),
    ("2020-06-05T08", "2020-06-05T08:30", None),         # some minute of hour 8
    ("2020-06-05T08:30", "2020-06-05T08:30:00", None),   # some second of that minute
    ("2020-06-05T08:30:00", "2020-06-05T08:30:00.5", None),
    ("2020-06-05T08:30:00.4", "2020-06-05T08:30:00.5", -1),
    ("2003---15", "2003-12-15", None),                   # only the year of 2003---15 is placed
    ("2003---15", "2004-01-01", -1),
    ("--12-15", "2003-12-15", None),                     # no known year: never ordered
    ("2020-06-05T10:00+02:00", "2020-06-05T08:00Z", 0),  # both with offsets: the same instant in UTC
    ("2020-06-05T23:30-05:00", "2020-06-06T02:00Z", 1),  # 04:30Z on the 6th is after 02:00Z
    ("2020-06-05T10:00+02:00", "2020-06-05T09:00", 1),   # one without offset: as the clocks read
    ("2020-06-05/2020-06-07", "2020-06-10", None),       # intervals have no place in time here
    ("", "2020-06-10", None), ("2020-02-30", "2020-03-01", None),
])
def test_compare(a, b, order):
    assert iso8601.compare(a, b) == order
    assert iso8601.compare(b, a) == (None if order is None else -order)


def test_compare_to_the_day():
    # the day of 23:30-05:00 is the 5th where it was collected, though the 6th in UTC
    assert iso8601.compare("2020-06-05T23:30-05:00", "2020-06-06T02:00Z", precision="day") == -1
    assert iso8601.compare("2020-06-05", "2020-06-05T08:30", precision="day") == 0
    assert iso8601.compare("2020-06-05T07:00", "2020-06-05T08:30", precision="day") == 0
    assert iso8601.compare("2020-06", "2020-06-05T08:30", precision="day") is None
    with pytest.raises(ValueError):
        iso8601.compare("2020", "2021", precision="days")


def test_before_and_after_are_true_only_when_known():
    assert iso8601.before("2020-06-04", "2020-06-05T08:30") and not iso8601.before("2020-06-05", "2020-06-05T08:30")
    assert not iso8601.after("2020-06-05", "2020-06-05T08:30")
    assert iso8601.on_or_before("2020-06-05", "2020-06-05") and iso8601.on_or_after("2020-06-05", "2020-06-05")
    assert not iso8601.on_or_before("2020-06", "2020-06-05") and not iso8601.on_or_after("2020-06", "2020-06-05")


@pytest.mark.parametrize("value, start, end, inside", [
    ("2020-06-12T08:00", "2020-06-12", "2020-07-01", True),   # a boundary without time starts its day
    ("2020-06-12", "2020-06-12", "2020-07-01", True),
    ("2020-06-11T23:59", "2020-06-12", "2020-07-01", False),
    ("2020-07-01", "2020-06-12", "2020-07-01", False),        # the end is excluded
    ("2020-06-30T23:59", "2020-06-12", "2020-07-01", True),
    ("2020-06-05", "2020-06-04", "2020-06-05T08:30", None),   # the day of a change at 08:30
    ("2020-06-05T08:29", "2020-06-04", "2020-06-05T08:30", True),
    ("2020-06-05T08:30", "2020-06-04", "2020-06-05T08:30", False),
    ("2020-06-05", "2020-06-05T08:30", "2020-06-12", None),
    ("2020-06-05T09:00", "2020-06-05T08:30", None, True),     # open end
    ("2020-06", "2020-06-05T08:30", "2020-06-12", None),
    ("2020-05", "2020-06-05T08:30", "2020-06-12", False),
    ("", "2020-06-05", None, None),
])
def test_within(value, start, end, inside):
    assert iso8601.within(value, start, end) is inside


def test_earliest_and_latest():
    values = ["2020-06-10", "2020-06", "", "not a date", "2020-05-31T23:59", "2020-06-10T08:00"]
    assert iso8601.earliest(values) == "2020-05-31T23:59"
    # June (undetermined against the 10th) sorts before it; the 10th at 08:00 is inside the 10th
    assert iso8601.latest(values) == "2020-06-10T08:00"
    assert iso8601.latest(["", None]) is None
    rows = [{"d": "2020-06-10", "n": 1}, {"d": "2020-06-10", "n": 2}, {"d": "2020-06-09", "n": 3}]
    assert iso8601.latest(rows, key=lambda r: r["d"])["n"] == 2   # of equal values the last
    assert iso8601.earliest(rows, key=lambda r: r["d"])["n"] == 3
    assert iso8601.earliest(rows[:2], key=lambda r: r["d"])["n"] == 1  # of equal values the first
    # offsets: 23:30-05:00 is 04:30Z the next day, later than 02:00Z
    assert iso8601.latest(["2020-06-05T23:30-05:00", "2020-06-06T02:00Z"]) == "2020-06-05T23:30-05:00"


def test_sort_key_orders_like_text_for_sdtm_values():
    values = ["2020-06-10T08:00", "2020-06", "2020-06-10", "2019", "bad", "2020-06-09T23:00"]
    assert sorted(values, key=iso8601.sort_key) == ["2019", "2020-06", "2020-06-09T23:00", "2020-06-10",
                                                    "2020-06-10T08:00", "bad"]
