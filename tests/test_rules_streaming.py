"""The rules as a streaming pass: the feeding contract, the subject-run indexes and their
fallback for input not grouped by subject, and datasets fed as row iterators.

Expected findings are worked out by hand from the rows written here."""
from __future__ import annotations

from typing import Any, Iterator

import pytest

from trialbridge.converters.core.datasets import Dataset, Variable
from trialbridge.converters.core.issues import IssueLog
from trialbridge.converters.core.sdtm_spec import load_spec
from trialbridge.converters.validation import subject_checks
from trialbridge.converters.validation.rules import StreamingValidator, feeding_order, validate_datasets

DUPLICATES = ["SDTM-KEY-DUPLICATE", "SDTM-SEQ-DUPLICATE", "SDTM-DUPLICATE-RECORD"]


def var(domain: str, name: str) -> Variable:
    return load_spec(domain).var(name) or Variable(name, name, "Char")


def ds(name: str, rows: list[dict[str, Any]], **kw: Any) -> Dataset:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    return Dataset(name=name, label=name, variables=[var(name, c) for c in columns], rows=rows, **kw)


def lb(usubjid: str, seq: float, testcd: str, day: str, result: str) -> dict[str, Any]:
    return {"STUDYID": "S1", "DOMAIN": "LB", "USUBJID": usubjid, "LBSEQ": seq, "LBTESTCD": testcd,
            "LBTEST": {"ALT": "Alanine Aminotransferase", "AST": "Aspartate Aminotransferase"}[testcd],
            "LBORRES": result, "VISITNUM": 1.0, "LBDTC": day}


def found(log: IssueLog, codes: list[str] | None = None) -> list[tuple]:
    return [(i.code, i.record, i.field, i.value, i.usubjid, i.seq, i.message) for i in log.issues
            if codes is None or i.code in codes]


LB_KEYS = "STUDYID, USUBJID, LBTESTCD, VISITNUM, LBDTC"  # the spec's keys present (no LBSPEC here)

# S1-001 comes back after S1-002 (row 4) and again after it (row 6): a file not grouped by subject
UNSORTED = [lb("S1-001", 1.0, "ALT", "2024-01-10", "30"),   # 1
            lb("S1-001", 2.0, "AST", "2024-01-10", "25"),   # 2
            lb("S1-002", 1.0, "ALT", "2024-01-11", "40"),   # 3
            lb("S1-001", 2.0, "ALT", "2024-01-10", "30"),   # 4: row 1 again (keys, all but LBSEQ); LBSEQ of row 2
            lb("S1-002", 2.0, "AST", "2024-01-11", "41"),   # 5
            lb("S1-001", 3.0, "AST", "2024-01-10", "25")]   # 6: row 2 again (keys, all but LBSEQ)

UNSORTED_FINDINGS = [
    ("SDTM-KEY-DUPLICATE", 4, LB_KEYS, "S1 | S1-001 | ALT | 1 | 2024-01-10", "S1-001", 2,
     f"Duplicate record over keys ({LB_KEYS}): same as record 1"),
    ("SDTM-SEQ-DUPLICATE", 4, "LBSEQ", 2.0, "S1-001", 2, "Duplicate LBSEQ 2 within USUBJID (first at record 2)"),
    ("SDTM-DUPLICATE-RECORD", 4, "LBSEQ", None, "S1-001", 2, "Record is identical to record 1 except LBSEQ"),
    ("SDTM-KEY-DUPLICATE", 6, LB_KEYS, "S1 | S1-001 | AST | 1 | 2024-01-10", "S1-001", 3,
     f"Duplicate record over keys ({LB_KEYS}): same as record 2"),
    ("SDTM-DUPLICATE-RECORD", 6, "LBSEQ", None, "S1-001", 3, "Record is identical to record 2 except LBSEQ"),
]


# --------------------------------------------------------------------------- subject runs


def test_duplicates_planted_across_the_gap_of_an_unsorted_file_are_found():
    log = IssueLog()
    validate_datasets({"LB": ds("LB", UNSORTED)}, log, only=DUPLICATES)
    assert found(log) == UNSORTED_FINDINGS


def test_unsorted_file_with_runs_moved_to_sqlite_gives_the_same_findings(monkeypatch):
    monkeypatch.setattr(subject_checks, "MIN_RUN", 1)  # every run overflows at its first key
    monkeypatch.setattr(subject_checks, "CELL_BUDGET", 1)
    log = IssueLog()
    validate_datasets({"LB": ds("LB", UNSORTED)}, log, only=DUPLICATES)
    assert found(log) == UNSORTED_FINDINGS


def test_same_values_under_two_subjects_are_not_duplicates():
    rows = [lb("S1-001", 1.0, "ALT", "2024-01-10", "30"), lb("S1-001", 2.0, "AST", "2024-01-10", "25"),
            lb("S1-002", 1.0, "ALT", "2024-01-10", "30"), lb("S1-002", 2.0, "AST", "2024-01-10", "25")]
    log = IssueLog()
    validate_datasets({"LB": ds("LB", rows)}, log, only=DUPLICATES)
    assert found(log) == []


# --------------------------------------------------------------------------- the feeding contract


def dm(*subjects: str) -> Dataset:
    return ds("DM", [{"STUDYID": "S1", "DOMAIN": "DM", "USUBJID": u, "SUBJID": u[-3:], "SITEID": "01", "SEX": "F",
                      "COUNTRY": "USA", "RFSTDTC": "2024-01-10"} for u in subjects])


def meta(d: Dataset) -> Dataset:
    """The dataset without its rows: what ``begin`` is given."""
    return Dataset(d.name, d.label, d.variables, [], keys=d.keys, source=d.source)


def test_feeding_order_puts_dm_then_se_then_supp_first():
    assert feeding_order(["AE", "LB", "SUPPAE", "SE", "DM", "SUPPDM", "TS"]) == \
        ["DM", "SE", "SUPPAE", "SUPPDM", "AE", "LB", "TS"]


def test_dm_or_se_after_another_dataset_is_a_usage_error():
    lb_meta = meta(ds("LB", UNSORTED))
    for late in ("DM", "SE"):
        validator = StreamingValidator(IssueLog())
        validator.begin(lb_meta).end()
        with pytest.raises(ValueError, match=f"{late} must be fed"):
            validator.begin(Dataset(late, late, []))
        validator.close()


def test_a_dataset_must_end_before_the_next_begins_or_finish():
    validator = StreamingValidator(IssueLog())
    validator.begin(meta(dm("S1-001")))
    with pytest.raises(ValueError, match="still being fed"):
        validator.begin(meta(ds("LB", UNSORTED)))
    with pytest.raises(ValueError, match="still being fed"):
        validator.finish()
    validator.close()


def rows_of(rows: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    yield from (dict(r) for r in rows)  # a stream: each row made when asked for, never a list


def test_rows_fed_one_at_a_time_from_a_stream_give_the_findings_of_validate_datasets():
    datasets = {"DM": dm("S1-001"), "LB": ds("LB", UNSORTED)}
    expected = IssueLog()
    validate_datasets(datasets, expected)
    log = IssueLog()
    validator = StreamingValidator(log)
    for name in feeding_order(datasets):
        visitor = validator.begin(meta(datasets[name]))
        for row_no, row in enumerate(rows_of(datasets[name].rows), start=1):
            visitor.row(row_no, row)
        visitor.end()
    validator.finish()
    assert found(log) == found(expected)
    assert ("SDTM-USUBJID-NOT-IN-DM", 3, "USUBJID", "S1-002", "S1-002", 1, "Subject S1-002 is not present in DM") \
        in found(log)


def _supp_lb(usubjid: str, seq: str) -> dict[str, Any]:
    return {"STUDYID": "S1", "RDOMAIN": "LB", "USUBJID": usubjid, "IDVAR": "LBSEQ", "IDVARVAL": seq,
            "QNAM": "LBNAM", "QLABEL": "Laboratory Name", "QVAL": "Central", "QORIG": "CRF"}


def test_supp_fed_before_its_parent_is_checked_against_its_values():
    suppl = ds("SUPPLB", [_supp_lb("S1-001", "1"), _supp_lb("S1-001", "9")])
    log = IssueLog()
    validator = StreamingValidator(log, only=["SDTM-SUPP-PARENT"])
    for d in (dm("S1-001", "S1-002"), suppl, ds("LB", UNSORTED)):
        validator.validate(meta(d), rows_of(d.rows))
    validator.finish()
    assert found(log) == [("SDTM-SUPP-PARENT", 2, "IDVARVAL", "9", "S1-001", None,
                           "No LB record with LBSEQ = 9 for subject S1-001")]


def test_supp_fed_after_its_parent_says_its_values_were_not_checked():
    suppl = ds("SUPPLB", [_supp_lb("S1-001", "1"), _supp_lb("S1-001", "9"), _supp_lb("S1-003", "1")])
    log = IssueLog()
    validator = StreamingValidator(log, only=["SDTM-SUPP-PARENT"])
    for d in (dm("S1-001", "S1-002"), ds("LB", UNSORTED), suppl):
        validator.validate(meta(d), rows_of(d.rows))
    validator.finish()
    assert [(i.severity, i.code, i.file, i.field, i.value, i.message) for i in log.issues] == [
        ("info", "SDTM-SUPP-PARENT-UNCHECKED", "supplb.xpt", "IDVARVAL", "LBSEQ",
         "3 record(s) of SUPPLB refer to LB by LBSEQ: LB was fed before SUPPLB, so their IDVARVAL was not checked "
         "(feed SUPP-- datasets before their parents)")]


# --------------------------------------------------------------------------- last contact


@pytest.mark.parametrize("order", [["DM", "DS", "SV", "AE"], ["DM", "SV", "AE", "DS"]])
def test_last_contact_of_equal_dates_names_the_dataset_first_by_name_whatever_the_order(order):
    """S1-001 has no RFPENDTC; its latest dates are DS.DSSTDTC and SV.SVENDTC, both
    2024-04-02; the AE on 2024-04-03 is after that last contact, named from DS."""
    datasets = {
        "DM": dm("S1-001"),
        "DS": ds("DS", [{"STUDYID": "S1", "DOMAIN": "DS", "USUBJID": "S1-001", "DSSEQ": 1.0,
                         "DSTERM": "COMPLETED", "DSDECOD": "COMPLETED", "DSSTDTC": "2024-04-02"}]),
        "SV": ds("SV", [{"STUDYID": "S1", "DOMAIN": "SV", "USUBJID": "S1-001", "VISITNUM": 9.0,
                         "SVSTDTC": "2024-04-01", "SVENDTC": "2024-04-02"}]),
        "AE": ds("AE", [{"STUDYID": "S1", "DOMAIN": "AE", "USUBJID": "S1-001", "AESEQ": 1.0, "AETERM": "Headache",
                         "AEDECOD": "HEADACHE", "AESTDTC": "2024-04-03"}]),
    }
    log = IssueLog()
    validator = StreamingValidator(log, only=["SDTM-AE-AFTER-LAST-CONTACT"])
    for name in order:
        validator.validate(meta(datasets[name]), rows_of(datasets[name].rows))
    validator.finish()
    assert found(log) == [("SDTM-AE-AFTER-LAST-CONTACT", 1, "AESTDTC", "2024-04-03", "S1-001", 1,
                           "AESTDTC 2024-04-03 is after the subject's last contact (DS.DSSTDTC 2024-04-02)")]


def test_remembered_key_texts_keep_bools_apart_from_numbers():
    from trialbridge.converters.validation.engine import KeyTexts, key_text

    texts = KeyTexts()
    values = [1.0, True, 1, 0.0, False, 0, 2.0, 2, " 2.00", "2", " x ", None, float("nan")]
    assert [texts[v] for v in values + values] == [key_text(v) for v in values + values]
    assert [texts[v] for v in (1.0, True, 0, False)] == ["1", "True", "0", "False"]
