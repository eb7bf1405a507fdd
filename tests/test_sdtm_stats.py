"""Column statistics gathered while rows pass (converters/formats/sdtm/stats.py): values worked
out by hand on small datasets, equality with the whole-dataset computations they replace, and
merge results independent of chunking and order."""
from __future__ import annotations

import copy
import pickle
import random
from collections import Counter
from decimal import Decimal, InvalidOperation

import pytest

from trialbridge.converters.core.datasets import Variable
from trialbridge.converters.core.sdtm_spec import make_dataset
from trialbridge.converters.formats.sdtm import ColumnStats, dataset_meta, format_number
from trialbridge.converters.formats.sdtm.stats import number_shape

ROWS = [
    {"STUDYID": "NCT04387942", "DOMAIN": "LB", "USUBJID": "NCT04387942-001", "LBSEQ": 1,
     "LBTESTCD": "CD4", "LBTEST": "CD4 Cells", "LBORRES": "1.30", "LBORRESU": "10^9/L",
     "LBSTRESC": "1.3", "LBSTRESN": 1.3, "LBSTRESU": "10^9/L", "LBSPEC": "BLOOD",
     "VISITNUM": 1, "LBDTC": "2020-06-01T08:30", "LBDY": 1},
    {"STUDYID": "NCT04387942", "DOMAIN": "LB", "USUBJID": "NCT04387942-001", "LBSEQ": 2,
     "LBTESTCD": "IGE", "LBTEST": "Immunoglobulin E", "LBORRES": "", "LBSTAT": "NOT DONE",
     "LBREASND": "Sample hemolysed", "LBSPEC": "SERUM", "VISITNUM": 2.5,
     "LBDTC": "2020-06-08", "LBDY": None, "LBSTRESN": 0.1 + 0.2},
    {"STUDYID": "NCT04387942", "DOMAIN": "LB", "USUBJID": "NCT04387942-002", "LBSEQ": 1,
     "LBTESTCD": "CD8", "LBTEST": "CD8 Cells", "LBORRES": "123456789.125", "LBSTRESN": 123456789.125,
     "LBSPEC": "BLOOD", "VISITNUM": 1, "LBDTC": "2020-06", "LBDY": -3},
]


def lb_stats() -> ColumnStats:
    stats = ColumnStats("LB")
    for row in ROWS:
        stats.add(row)
    return stats


def test_hand_counted_lb():
    stats = lb_stats()
    assert stats.rows == 3
    usubjid = stats.var("USUBJID")
    assert (usubjid.given, usubjid.present, usubjid.max_bytes, usubjid.length) == (3, 3, 15, 15)
    orres = stats.var("LBORRES")
    assert (orres.given, orres.present, orres.max_bytes) == (2, 2, len("123456789.125"))
    # 1.3 -> 1+1 digits; 0.30000000000000004 -> 1 + 17; 123456789.125 -> 9 + 3
    stresn = stats.var("LBSTRESN")
    assert (stresn.integral, stresn.num_length, stresn.num_frac) == (False, 18, 17)
    assert stresn.non_integral_min == 0.1 + 0.2
    visitnum = stats.var("VISITNUM")  # 1, 2.5, 1
    assert (visitnum.integral, visitnum.num_length, visitnum.num_frac) == (False, 2, 1)
    seq, day = stats.var("LBSEQ"), stats.var("LBDY")
    assert (seq.integral, seq.int_digits) == (True, 1)
    assert (day.given, day.present, day.integral, day.max_abs_integral, day.int_digits) == (2, 2, True, 3, 1)
    dtc = stats.var("LBDTC")  # a datetime, a date and a partial date
    assert (dtc.all_date, dtc.all_datetime) == (False, False)
    assert stats.var("LBTESTCD").values == Counter({"CD4": 1, "IGE": 1, "CD8": 1})  # coded (LBTESTCD)
    assert stats.var("USUBJID").values is None  # not coded: no values kept
    assert stats.var("STUDYID").values == Counter({"NCT04387942": 3})
    assert stats.var("LBNAM").given == 0 and not stats.has_value("LBNAM")


def test_value_level_groups_by_test_code():
    groups = lb_stats().group("LBTESTCD")
    assert sorted(groups) == ["CD4", "CD8", "IGE"]
    cd4 = groups["CD4"]
    assert sorted(cd4) == ["LBORRES", "LBORRESU", "LBSTRESC", "LBSTRESN", "LBSTRESU", "LBTEST"]
    assert cd4["LBORRES"].max_bytes == 4 and cd4["LBORRESU"].values == Counter({"10^9/L": 1})
    assert cd4["LBSTRESC"].numeric_text is True  # "1.3" reads as a number: no result codelist
    assert groups["IGE"]["LBORRES"].present == 0 and groups["IGE"]["LBSTRESN"].num_frac == 17
    assert groups["CD8"]["LBSTRESN"].num_length == 12
    assert groups["CD8"]["LBTEST"].values == Counter({"CD8 Cells": 1})


def test_dsdecod_grouped_by_dscat_only_for_governed_values():
    rows = [{"STUDYID": "S", "DOMAIN": "DS", "USUBJID": "S-1", "DSSEQ": 1, "DSTERM": "t", "DSDECOD": "COMPLETED",
             "DSCAT": "DISPOSITION EVENT"},
            {"STUDYID": "S", "DOMAIN": "DS", "USUBJID": "S-1", "DSSEQ": 2, "DSTERM": "t",
             "DSDECOD": "INFORMED CONSENT OBTAINED", "DSCAT": "PROTOCOL MILESTONE"},
            {"STUDYID": "S", "DOMAIN": "DS", "USUBJID": "S-1", "DSSEQ": 3, "DSTERM": "t", "DSDECOD": "X",
             "DSCAT": "UNSCHEDULED"}]
    stats = ColumnStats("DS")
    stats.add_rows(rows)
    groups = stats.group("DSCAT")
    assert sorted(groups) == ["DISPOSITION EVENT", "PROTOCOL MILESTONE"]  # no codelist for UNSCHEDULED
    assert groups["DISPOSITION EVENT"]["DSDECOD"].values == Counter({"COMPLETED": 1})
    assert stats.group("LBTESTCD") == {}


def test_non_ascii_lengths():
    stats = ColumnStats("DM")
    stats.add({"STUDYID": "S1", "DOMAIN": "DM", "USUBJID": "S1-001", "INVNAM": "Zoë Müller 李"})
    inv = stats.var("INVNAM")
    # 12 characters; ë and ü take 2 bytes, 李 3: 16 bytes; "Zoe Muller ?" in the XPT: 12
    assert (inv.max_bytes, inv.max_ascii, inv.non_ascii) == (16, 12, 1)


def test_dataset_meta_chooses_variables_as_make_dataset():
    meta = dataset_meta("LB", lb_stats())
    made = make_dataset("LB", ROWS)
    assert meta.variables == made.variables and meta.keys == made.keys and meta.rows == []
    assert "LBNAM" not in meta.names and "LBSTAT" in meta.names  # Perm without / with a value


def test_unknown_key_raises_like_make_dataset():
    with pytest.raises(ValueError, match=r"LB row 2: variables not in the LB spec: \['LBXX'\]"):
        ColumnStats("LB").add_rows([ROWS[0], dict(ROWS[1], LBXX="1")])
    with pytest.raises(ValueError, match="variables not in the LB spec"):
        make_dataset("LB", [ROWS[0], dict(ROWS[1], LBXX="1")])


def test_dataset_without_spec_takes_columns_first_seen():
    stats = ColumnStats("ZZ")
    stats.add_rows([{"B": "1", "A": ""}, {"C": "x", "A": "y"}])
    meta = dataset_meta("ZZ", stats)
    assert meta.names == ["B", "A", "C"] == make_dataset("ZZ", [{"B": "1", "A": ""}, {"C": "x", "A": "y"}]).names
    assert {v.type for v in meta.variables} == {"Char"}


def test_row_is_copied_when_added():
    stats = ColumnStats("LB")
    row = dict(ROWS[0])
    stats.add(row)
    row["LBORRES"] = "a much longer value"
    assert stats.var("LBORRES").max_bytes == 4


def test_number_shape_equals_decimal_reading():
    """define.xml's Length/SignificantDigits used to be read from Decimal(format_number(v))."""
    def decimal_shape(v):
        try:
            t = Decimal(format_number(v)).as_tuple()
        except InvalidOperation:
            return None
        if not isinstance(t.exponent, int):
            return None
        return max(1, len(t.digits) + t.exponent), max(0, -t.exponent)

    rng = random.Random(7)
    values = [0, 0.0, -0.0, 1, -1, 2 ** 53, 2.0 ** 53, 2.0 ** 53 + 2, 2 ** 70, 1e-7, 1e-300, 1e300, -0.05,
              0.1 + 0.2, float("inf"), float("-inf"), float("nan"), None, "", "1.50", 5e-324, 1e16, 1e15]
    values += [round(rng.uniform(-1e6, 1e6), rng.randint(0, 8)) for _ in range(3000)]
    values += [rng.randint(-10 ** 20, 10 ** 20) for _ in range(500)]
    values += [rng.uniform(-1, 1) * 10.0 ** rng.randint(-30, 30) for _ in range(3000)]
    assert [number_shape(v) for v in values] == [decimal_shape(v) for v in values]
    assert number_shape(123.456) == (3, 3) and number_shape(1e-7) == (1, 7) and number_shape(-5) == (1, 0)


def test_numeric_shape_of_a_column_is_the_largest_value_shape():
    rng = random.Random(11)
    pools = [[rng.randint(-10 ** 6, 10 ** 6) for _ in range(50)],  # Python ints
             [float(rng.randint(-10 ** 6, 10 ** 6)) for _ in range(50)] + [None, "", float("nan")],
             [2 ** 60, 3.0, -7],  # a whole number past 2**53 prints as 1152921504606846976
             [2.0 ** 60, 5.0, None],  # ... and as a float 1.152921504606847e+18
             ["12", "0.125", 4.5, 1e-7, 0, -0.0],
             [round(rng.uniform(-100, 100), rng.randint(0, 6)) for _ in range(200)]]
    for values in pools:
        stats = ColumnStats("ZZ", [Variable("X", "X", "Num")])
        stats.add_rows([{"X": v} for v in values])
        shapes = [number_shape(v) for v in values if number_shape(v) is not None]
        vs = stats.var("X")
        assert (vs.num_length, vs.num_frac) == (max([1] + [w + f for w, f in shapes]),
                                                max([0] + [f for _, f in shapes])), values


def test_caps_do_not_depend_on_chunking():
    rows = [dict(ROWS[0], LBTESTCD=code) for code in ("A", "B", "C")]
    whole = ColumnStats("LB", max_values=2, max_groups=2)
    whole.add_rows(rows)
    assert whole.var("LBTESTCD").values is None and whole.var("LBTESTCD").values_overflow
    assert whole.group("LBTESTCD") is None
    left, right = ColumnStats("LB", max_values=2, max_groups=2), ColumnStats("LB", max_values=2, max_groups=2)
    left.add_rows(rows[:2])
    right.add_rows(rows[2:])
    assert left.var("LBTESTCD").values == Counter({"A": 1, "B": 1}) and not left.var("LBTESTCD").values_overflow
    assert left.merge(right) == whole
    # past the cap, whether a result reads as a number is still followed (value-level codelists)
    texts = [dict(ROWS[0], LBSTRESC=t) for t in ("A", "B", "C", "1.5")]
    whole = ColumnStats("LB", max_values=2)
    whole.add_rows(texts)
    assert whole.var("LBSTRESC").values_overflow and whole.var("LBSTRESC").numeric_text
    parts = [ColumnStats("LB", max_values=2) for _ in texts]
    for part, row in zip(parts, texts):
        part.add_rows([row])
    merged = parts[0].merge(parts[1]).merge(parts[2]).merge(parts[3])
    assert merged == whole and merged.group("LBTESTCD") == whole.group("LBTESTCD")
    late = ColumnStats("LB", max_values=2)
    late.add_rows(texts[:3])  # over the cap ...
    late.add_rows(texts[3:])  # ... before the numeric result comes
    assert late == whole
    under = ColumnStats("LB", max_values=3)
    under.add_rows(rows)
    assert under.var("LBTESTCD").values == Counter({"A": 1, "B": 1, "C": 1})


def _chunked(ds, rng) -> ColumnStats:
    rows = list(ds.rows)
    cuts = sorted(rng.sample(range(1, len(rows)), min(len(rows) - 1, rng.randint(0, 6)))) if len(rows) > 1 else []
    chunks = [rows[a:b] for a, b in zip([0] + cuts, cuts + [len(rows)])]
    rng.shuffle(chunks)
    parts = []
    for chunk in chunks:
        part = ColumnStats(ds.name, ds.variables)
        for row in chunk:
            part.add(row)
        parts.append(pickle.loads(pickle.dumps(part)))  # as if gathered by another worker
    total = ColumnStats(ds.name, ds.variables)
    while parts:  # merge in a random tree shape
        i = rng.randrange(len(parts))
        a = parts.pop(i)
        if parts:
            j = rng.randrange(len(parts))
            parts[j] = a.merge(parts[j]) if rng.random() < 0.5 else parts[j].merge(a)
        else:
            total = total.merge(a)
    return total


def test_merge_is_independent_of_chunks_order_and_workers(sample_sdtm):
    datasets, _ = sample_sdtm
    rng = random.Random(2024)
    for name, ds in datasets.items():
        whole = ColumnStats.of(ds)
        assert whole.rows == len(ds.rows)
        for _ in range(3):
            assert _chunked(ds, rng) == whole, name
    assert ColumnStats.of(datasets["LB"]) == pickle.loads(pickle.dumps(ColumnStats.of(datasets["LB"])))


def test_spec_stats_of_sample_give_make_dataset_variables(sample_sdtm):
    datasets, _ = sample_sdtm
    for name, ds in datasets.items():
        stats = ColumnStats(name)
        for row in ds.rows:
            stats.add(row)
        meta = dataset_meta(name, stats)
        assert meta.variables == ds.variables and meta.keys == ds.keys, name


def test_merge_refuses_other_dataset():
    with pytest.raises(ValueError):
        ColumnStats("LB").merge(ColumnStats("DM"))
    other = copy.deepcopy(lb_stats())
    assert other == lb_stats()
