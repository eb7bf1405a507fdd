"""Every rule of converters.rules: one passing and one failing hand-built input each,
asserting the issue code, record number and field; plus a run over the CDISC pilot."""
from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from trialbridge.converters.core import iso8601
from trialbridge.converters.core.datasets import Dataset, Variable
from trialbridge.converters.core.issues import IssueLog
from trialbridge.converters.validation.rules import RULES, RULES_BY_ID, validate_datasets
from trialbridge.converters.core.sdtm_spec import load_spec

from tests.conftest import REFERENCE  # --reference / TRIALBRIDGE_REFERENCE / ../shared/reference
PILOT = REFERENCE / "sdtm" / "cdiscpilot01"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "rules.md"


def var(domain: str, name: str) -> Variable:
    """Spec metadata of a variable; a Char Perm stand-in for names the spec lacks."""
    return load_spec(domain).var(name) or Variable(name, name, "Char")


def ds(name: str, rows: list[dict[str, Any]], columns: list[str] | None = None, **kw: Any) -> Dataset:
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    spec_name = kw.pop("spec_name", name)
    return Dataset(name=name, label=kw.pop("label", name), variables=[var(spec_name, c) for c in columns],
                   rows=rows, **kw)


def dm(*subjects: str, **extra: Any) -> Dataset:
    rows = [{"STUDYID": "S1", "DOMAIN": "DM", "USUBJID": u, "SUBJID": u[-3:], "SITEID": "01",
             "SEX": "F", "COUNTRY": "USA", "RFSTDTC": "2024-01-10", "RFENDTC": "2024-03-01", **extra}
            for u in subjects]
    return ds("DM", rows)


def ae_row(usubjid: str = "S1-001", seq: float = 1.0, **kw: Any) -> dict[str, Any]:
    return {"STUDYID": "S1", "DOMAIN": "AE", "USUBJID": usubjid, "AESEQ": seq, "AETERM": "Headache",
            "AEDECOD": "HEADACHE", "AESTDTC": "2024-01-12", **kw}


def run(rule: str, *datasets: Dataset) -> list:
    log = IssueLog()
    validate_datasets({d.name: d for d in datasets}, log, only=[rule])
    return [i for i in log.issues if i.code == rule]


def where(issues: list) -> list[tuple]:
    return [(i.file, i.record, i.field) for i in issues]


# --------------------------------------------------------------------------- registry


def test_registry_ids_unique_and_documented():
    ids = [r.id for r in RULES]
    assert len(ids) == len(set(ids))
    assert all(r.severity in ("error", "warning") and r.mirrors and r.description for r in RULES)
    documented = set(re.findall(r"^\| `([A-Z0-9-]+)` \|", DOCS.read_text(encoding="utf-8"), re.M))
    assert set(ids) <= documented


def test_unknown_rule_id_is_a_usage_error():
    with pytest.raises(ValueError):
        validate_datasets({}, IssueLog(), only=["SDTM-NO-SUCH-RULE"])


# --------------------------------------------------------------------------- SDTM-REQ-MISSING


def test_req_missing_pass():
    assert run("SDTM-REQ-MISSING", dm("S1-001"), ds("AE", [ae_row()])) == []


def test_req_missing_null_value():
    issues = run("SDTM-REQ-MISSING", ds("AE", [ae_row(), ae_row(seq=2.0, AETERM="")]))
    assert where(issues) == [("ae.xpt", 2, "AETERM")]
    assert issues[0].usubjid == "S1-001" and issues[0].seq == 2 and issues[0].severity == "error"


def test_req_missing_absent_variable():
    row = ae_row()
    del row["AEDECOD"]
    assert where(run("SDTM-REQ-MISSING", ds("AE", [row]))) == [("ae.xpt", None, "AEDECOD")]


# --------------------------------------------------------------------------- SDTM-EXP-MISSING


def _dm_req_exp() -> Dataset:
    names = [v.name for v in load_spec("DM").variables if v.core in ("Req", "Exp")]
    return ds("DM", [{n: "" for n in names}], columns=names)


def test_exp_missing_pass():
    assert run("SDTM-EXP-MISSING", _dm_req_exp()) == []


def test_exp_missing_fail():
    d = _dm_req_exp()
    d.variables = [v for v in d.variables if v.name != "RFSTDTC"]
    issues = run("SDTM-EXP-MISSING", d)
    assert where(issues) == [("dm.xpt", None, "RFSTDTC")] and issues[0].severity == "warning"


# --------------------------------------------------------------------------- SDTM-KEY-DUPLICATE


def test_key_duplicate_pass():
    assert run("SDTM-KEY-DUPLICATE", ds("AE", [ae_row(), ae_row(seq=2.0, AESTDTC="2024-01-13")])) == []


def test_key_duplicate_fail():
    issues = run("SDTM-KEY-DUPLICATE", ds("AE", [ae_row(), ae_row(seq=2.0), ae_row(seq=3.0)]))
    assert where(issues) == [("ae.xpt", 2, "STUDYID, USUBJID, AEDECOD, AESTDTC"),
                             ("ae.xpt", 3, "STUDYID, USUBJID, AEDECOD, AESTDTC")]


def test_key_duplicate_uses_dataset_keys_first():
    d = ds("AE", [ae_row(), ae_row(seq=2.0, AESTDTC="2024-02-01")], keys=["USUBJID", "AEDECOD"])
    assert where(run("SDTM-KEY-DUPLICATE", d)) == [("ae.xpt", 2, "USUBJID, AEDECOD")]


# --------------------------------------------------------------------------- SDTM-USUBJID-NOT-IN-DM


def test_usubjid_in_dm_pass():
    assert run("SDTM-USUBJID-NOT-IN-DM", dm("S1-001"), ds("AE", [ae_row()])) == []


def test_usubjid_not_in_dm_fail():
    issues = run("SDTM-USUBJID-NOT-IN-DM", dm("S1-001"), ds("AE", [ae_row(), ae_row("S1-999")]))
    assert where(issues) == [("ae.xpt", 2, "USUBJID")] and issues[0].value == "S1-999"


# --------------------------------------------------------------------------- SDTM-SEQ-DUPLICATE


def test_seq_duplicate_pass():
    rows = [ae_row("S1-001", 1.0), ae_row("S1-002", 1.0), ae_row("S1-001", 2.0)]
    assert run("SDTM-SEQ-DUPLICATE", ds("AE", rows)) == []


def test_seq_duplicate_fail():
    rows = [ae_row("S1-001", 1.0), ae_row("S1-002", 1.0), ae_row("S1-001", 1.0)]
    issues = run("SDTM-SEQ-DUPLICATE", ds("AE", rows))
    assert where(issues) == [("ae.xpt", 3, "AESEQ")] and issues[0].usubjid == "S1-001"


def test_tsseq_is_unique_within_tsparmcd():
    rows = [{"STUDYID": "S1", "DOMAIN": "TS", "TSSEQ": 1.0, "TSPARMCD": p, "TSPARM": p, "TSVAL": "x"}
            for p in ("AGEMIN", "AGEMAX", "AGEMAX")]
    assert where(run("SDTM-SEQ-DUPLICATE", ds("TS", rows))) == [("ts.xpt", 3, "TSSEQ")]


# --------------------------------------------------------------------------- SDTM-DY-INCONSISTENT


def test_dy_pass():
    rows = [ae_row(AESTDTC="2024-01-09", AESTDY=-1.0, AEENDTC="2024-01-10T08:00", AEENDY=1.0),
            ae_row(seq=2.0, AESTDTC="2024-01", AESTDY=5.0)]  # partial date: not checked
    assert run("SDTM-DY-INCONSISTENT", dm("S1-001"), ds("AE", rows)) == []


def test_dy_fail():
    rows = [ae_row(AESTDTC="2024-01-10", AESTDY=1.0, AEENDTC="2024-01-12", AEENDY=2.0)]
    issues = run("SDTM-DY-INCONSISTENT", dm("S1-001"), ds("AE", rows))
    assert where(issues) == [("ae.xpt", 1, "AEENDY")] and "give 3" in issues[0].message
    assert issues[0].severity == "error"  # P21 SD1094 (--ENDY)


def test_dy_level_follows_the_p21_rule_of_the_variable():
    """P21 has --DY inconsistent as a warning (SD1086), --STDY and --ENDY as errors (SD1090,
    SD1094): LBDY 2 on the reference day is a warning."""
    lb = ds("LB", [{"STUDYID": "S1", "DOMAIN": "LB", "USUBJID": "S1-001", "LBSEQ": 1.0, "LBTESTCD": "ALT",
                    "LBTEST": "Alanine Aminotransferase", "LBDTC": "2024-01-10", "LBDY": 2.0}])
    issues = run("SDTM-DY-INCONSISTENT", dm("S1-001"), lb)
    assert [(i.field, i.severity) for i in issues] == [("LBDY", "warning")]


# --------------------------------------------------------------------------- SDTM-DTC-ISO8601


@pytest.mark.parametrize("text", ["2024", "2024-01", "2024-01-10", "2024-01-10T10", "2024-01-10T10:30",
                                  "2024-01-10T10:30:15.5", "2024-01-10T10:30+01:00", "2003---15",
                                  "--12-15", "2024-01-10/2024-01-12", "2024-01-10/P3D"])
def test_iso8601_accepts(text):
    assert iso8601.is_valid(text)  # the rule's grammar is the hub's (tests/test_iso8601.py has more)


@pytest.mark.parametrize("text", ["2024-13-01", "2024-02-30", "2024/01/10", "10JAN2024", "2024-01-",
                                  "2024-01-10T25:00", "2024-1-5", "P3D/P4D", "-",
                                  "2024-01-10T10:30+0100", "2024-01-10T10:30+01"])  # extended-format offsets only
def test_iso8601_rejects(text):
    assert not iso8601.is_valid(text)


def test_dtc_iso8601_pass():
    assert run("SDTM-DTC-ISO8601", ds("AE", [ae_row(AEENDTC="2024-01-12T10:30"), ae_row(AEENDTC="")])) == []


def test_dtc_iso8601_fail():
    issues = run("SDTM-DTC-ISO8601", ds("AE", [ae_row(), ae_row(seq=2.0, AEENDTC="12/01/2024")]))
    assert where(issues) == [("ae.xpt", 2, "AEENDTC")] and issues[0].value == "12/01/2024"


def test_dtc_iso8601_refuses_basic_format_offset():
    # "+0100" is ISO 8601 basic format inside an extended-format value; the rule's old
    # grammar let it through, the hub's (and Pinnacle 21's SD1011 pattern) does not
    issues = run("SDTM-DTC-ISO8601", ds("AE", [ae_row(seq=1.0, AEENDTC="2024-01-12T10:30+0100")]))
    assert where(issues) == [("ae.xpt", 1, "AEENDTC")]


# --------------------------------------------------------------------------- SDTM-CT-INVALID


def test_ct_pass():
    assert run("SDTM-CT-INVALID", dm("S1-001", RACE="WHITE")) == []


def test_ct_non_extensible_is_error():
    d = dm("S1-001", "S1-002")
    d.rows[1]["SEX"] = "Female"
    issues = run("SDTM-CT-INVALID", d)
    assert where(issues) == [("dm.xpt", 2, "SEX")]
    assert issues[0].severity == "error" and "'F'" in issues[0].message


def test_ct_extensible_is_warning():
    rows = [ae_row(EPOCH="TREATMENT"), ae_row(seq=2.0, EPOCH="Treatment Phase")]
    issues = run("SDTM-CT-INVALID", ds("AE", rows))
    assert where(issues) == [("ae.xpt", 2, "EPOCH")] and issues[0].severity == "warning"


def test_ct_dsdecod_codelist_follows_dscat():
    rows = [{"STUDYID": "S1", "DOMAIN": "DS", "USUBJID": "S1-001", "DSSEQ": 1.0, "DSTERM": "x",
             "DSDECOD": "COMPLETED", "DSCAT": "DISPOSITION EVENT"},
            {"STUDYID": "S1", "DOMAIN": "DS", "USUBJID": "S1-001", "DSSEQ": 2.0, "DSTERM": "x",
             "DSDECOD": "COMPLETED", "DSCAT": "PROTOCOL MILESTONE"}]
    assert where(run("SDTM-CT-INVALID", ds("DS", rows))) == [("ds.xpt", 2, "DSDECOD")]


def test_ct_unknown_codelist_is_reported_not_skipped_silently():
    d = ds("XX", [{"STUDYID": "S1", "XXTEST": "a"}],
           columns=None)
    d.variables = [Variable("STUDYID", "Study Identifier", "Char"),
                   Variable("XXTEST", "Test", "Char", codelist="NOSUCHCL")]
    log = IssueLog()
    validate_datasets({"XX": d}, log, only=["SDTM-CT-INVALID"])
    assert [(i.code, i.field, i.severity) for i in log.issues if i.code.startswith("SDTM-CT")] == [
        ("SDTM-CT-CODELIST-UNKNOWN", "XXTEST", "info")]
    assert any(i.code == "SDTM-SPEC-UNKNOWN" for i in log.issues)


# --------------------------------------------------------------------------- SDTM-XPT-*


def test_xpt_name_pass():
    assert run("SDTM-XPT-NAME", ds("AE", [ae_row()])) == []


def test_xpt_name_fail():
    d = ds("AE", [ae_row()])
    d.variables = d.variables + [Variable("AELONGNAME", "x", "Char"), Variable("1AE", "x", "Char")]
    assert where(run("SDTM-XPT-NAME", d)) == [("ae.xpt", None, "AELONGNAME"), ("ae.xpt", None, "1AE")]
    bad = ds("suppae_x", [], columns=["STUDYID"])
    assert where(run("SDTM-XPT-NAME", bad)) == [("suppae_x.xpt", None, None)]


def test_xpt_label_pass():
    assert run("SDTM-XPT-LABEL", ds("AE", [ae_row()], label="Adverse Events")) == []


def test_xpt_label_fail():
    d = ds("AE", [ae_row()], label="A" * 41)
    d.variables = d.variables + [Variable("AEXTRA", "L" * 41, "Char"), Variable("AEOK", "L" * 40, "Char")]
    assert where(run("SDTM-XPT-LABEL", d)) == [("ae.xpt", None, None), ("ae.xpt", None, "AEXTRA")]


def test_xpt_char_200_pass():
    assert run("SDTM-XPT-CHAR-200", ds("AE", [ae_row(AETERM="x" * 200)])) == []


def test_xpt_char_200_fail():
    issues = run("SDTM-XPT-CHAR-200", ds("AE", [ae_row(), ae_row(seq=2.0, AETERM="x" * 201),
                                                 ae_row(seq=3.0, AETERM="\u00e9" * 101)]))
    assert where(issues) == [("ae.xpt", 2, "AETERM"), ("ae.xpt", 3, "AETERM")]  # 202 UTF-8 bytes


def test_xpt_ascii_pass():
    assert run("SDTM-XPT-ASCII", ds("AE", [ae_row(AETERM="Alzheimer's disease")])) == []


def test_xpt_ascii_fail():
    rows = [ae_row(), ae_row(seq=2.0, AETERM="Alzheimer\u2019s disease"), ae_row(seq=3.0, AETERM="a\tb")]
    issues = run("SDTM-XPT-ASCII", ds("AE", rows))
    assert where(issues) == [("ae.xpt", 2, "AETERM"), ("ae.xpt", 3, "AETERM")]


# --------------------------------------------------------------------------- SDTM-ROW-SCHEMA


def test_row_schema_pass():
    assert run("SDTM-ROW-SCHEMA", ds("AE", [ae_row()])) == []


def test_row_schema_fail_once_per_variable_per_row():
    rows = [ae_row(), ae_row(seq="2")]  # Num variable holding text
    issues = run("SDTM-ROW-SCHEMA", ds("AE", rows))
    assert where(issues) == [("ae.xpt", 2, "AESEQ")]


def test_row_schema_unknown_variable_reported_once_per_dataset():
    rows = [ae_row(AEFOO="a"), ae_row(seq=2.0, AEFOO="b")]
    assert where(run("SDTM-ROW-SCHEMA", ds("AE", rows))) == [("ae.xpt", None, "AEFOO")]


def test_row_schema_leaves_owned_findings_to_their_rules():
    # empty Req AETERM (REQ-MISSING), bad date (DTC-ISO8601), wrong DOMAIN (DOMAIN-VALUE)
    rows = [ae_row(AETERM="", AESTDTC="2003---15", DOMAIN="CM")]
    assert run("SDTM-ROW-SCHEMA", ds("AE", rows)) == []


# --------------------------------------------------------------------------- SDTM-STUDYID-MULTIPLE


def test_studyid_single_pass():
    assert run("SDTM-STUDYID-MULTIPLE", dm("S1-001"), ds("AE", [ae_row(), ae_row(seq=2.0)])) == []


def test_studyid_multiple_fail():
    issues = run("SDTM-STUDYID-MULTIPLE", dm("S1-001"),
                 ds("AE", [ae_row(), ae_row(seq=2.0, STUDYID="S2"), ae_row(seq=3.0, STUDYID="S2")]))
    assert where(issues) == [("ae.xpt", 2, "STUDYID")] and issues[0].value == "S2"


# --------------------------------------------------------------------------- SDTM-DOMAIN-VALUE


def test_domain_value_pass():
    split = ds("QSCG", [{"STUDYID": "S1", "DOMAIN": "QS", "USUBJID": "S1-001"}], spec_name="QS")
    assert run("SDTM-DOMAIN-VALUE", ds("AE", [ae_row()]), split) == []


def test_domain_value_fail():
    issues = run("SDTM-DOMAIN-VALUE", ds("AE", [ae_row(), ae_row(seq=2.0, DOMAIN="CM")]))
    assert where(issues) == [("ae.xpt", 2, "DOMAIN")]


# --------------------------------------------------------------------------- SDTM-RFSTDTC-AFTER-RFENDTC


def test_rfstdtc_before_rfendtc_pass():
    d = dm("S1-001", "S1-002")
    d.rows[1].update(RFSTDTC="2024-02", RFENDTC="2024-02-15")  # comparable only to the month
    assert run("SDTM-RFSTDTC-AFTER-RFENDTC", d) == []


def test_rfstdtc_after_rfendtc_fail():
    d = dm("S1-001", "S1-002")
    d.rows[1].update(RFSTDTC="2024-02-01T10:00", RFENDTC="2024-01-31")
    issues = run("SDTM-RFSTDTC-AFTER-RFENDTC", d)
    assert where(issues) == [("dm.xpt", 2, "RFSTDTC")] and issues[0].usubjid == "S1-002"


# --------------------------------------------------------------------------- SDTM-SUPP-PARENT


def _supp(name: str, rdomain: str, idvar: str, idvarval: str, usubjid: str = "S1-001") -> dict:
    return {"STUDYID": "S1", "RDOMAIN": rdomain, "USUBJID": usubjid, "IDVAR": idvar, "IDVARVAL": idvarval,
            "QNAM": "AETRTEM", "QLABEL": "Treatment Emergent Flag", "QVAL": "Y", "QORIG": "Derived"}


def test_supp_parent_pass():
    suppae = ds("SUPPAE", [_supp("SUPPAE", "AE", "AESEQ", "1"), _supp("SUPPAE", "AE", "AESEQ", "2.0")])
    suppdm = ds("SUPPDM", [_supp("SUPPDM", "DM", "", "")])
    assert run("SDTM-SUPP-PARENT", dm("S1-001"), ds("AE", [ae_row(), ae_row(seq=2.0)]), suppae, suppdm) == []


def test_supp_parent_fail():
    suppae = ds("SUPPAE", [_supp("SUPPAE", "AE", "AESEQ", "1"), _supp("SUPPAE", "AE", "AESEQ", "7"),
                           _supp("SUPPAE", "AE", "AESEQ", "1", usubjid="S1-002"),
                           _supp("SUPPAE", "AE", "AEXXX", "1")])
    suppdm = ds("SUPPDM", [_supp("SUPPDM", "DM", "", "", usubjid="S1-404")])
    issues = run("SDTM-SUPP-PARENT", dm("S1-001"), ds("AE", [ae_row()]), suppae, suppdm)
    assert where(issues) == [("suppae.xpt", 2, "IDVARVAL"), ("suppae.xpt", 3, "IDVARVAL"),
                             ("suppae.xpt", 4, "IDVAR"), ("suppdm.xpt", 1, "USUBJID")]


def test_supp_parent_dataset_missing():
    suppae = ds("SUPPAE", [_supp("SUPPAE", "AE", "AESEQ", "1")])
    assert where(run("SDTM-SUPP-PARENT", dm("S1-001"), suppae)) == [("suppae.xpt", 1, "RDOMAIN")]


# --------------------------------------------------------------------------- SDTM-LABEL-MISMATCH


def test_label_mismatch_pass():
    assert run("SDTM-LABEL-MISMATCH", ds("AE", [ae_row()])) == []  # labels taken from the spec


def test_label_mismatch_fail():
    d = ds("AE", [ae_row()])
    d.variables = [Variable(v.name, "Reported Term" if v.name == "AETERM" else v.label, v.type)
                   for v in d.variables] + [Variable("AEFOO", "Sponsor label", "Char")]
    issues = run("SDTM-LABEL-MISMATCH", d)  # AEFOO is not in the spec: not this rule's finding
    assert where(issues) == [("ae.xpt", None, "AETERM")] and issues[0].severity == "warning"
    assert "'Reported Term for the Adverse Event'" in issues[0].message and issues[0].value == "Reported Term"


# --------------------------------------------------------------------------- SDTM-DUPLICATE-RECORD


def test_duplicate_record_pass():
    rows = [ae_row(), ae_row(seq=2.0, AEENDTC="2024-01-13"), ae_row("S1-002")]
    assert run("SDTM-DUPLICATE-RECORD", ds("AE", rows)) == []


def test_duplicate_record_fail():
    rows = [ae_row(AEENDTC="2024-01-13"), ae_row(seq=2.0, AEENDTC="2024-01-14"), ae_row(seq=3.0, AEENDTC="2024-01-13")]
    issues = run("SDTM-DUPLICATE-RECORD", ds("AE", rows))
    assert where(issues) == [("ae.xpt", 3, "AESEQ")] and issues[0].seq == 3
    assert "identical to record 1 except AESEQ" in issues[0].message and issues[0].severity == "warning"


# --------------------------------------------------------------------------- SDTM-AE-AFTER-LAST-CONTACT


def test_ae_after_last_contact_pass():
    d = dm("S1-001", "S1-002", RFPENDTC="2024-03-15")
    d.rows[1]["RFPENDTC"] = ""  # last contact: the latest date in DM and the other subject-level datasets
    vs = ds("VS", [{"STUDYID": "S1", "DOMAIN": "VS", "USUBJID": "S1-002", "VSSEQ": 1.0, "VSTESTCD": "SYSBP",
                    "VSTEST": "Systolic Blood Pressure", "VSDTC": "2024-04-02"}])
    rows = [ae_row(AESTDTC="2024-03-15T10:00"), ae_row("S1-002", AESTDTC="2024-04-02"),
            ae_row("S1-002", 2.0, AESTDTC="2024-04")]
    assert run("SDTM-AE-AFTER-LAST-CONTACT", d, vs, ds("AE", rows)) == []


def test_ae_after_last_contact_fail():
    d = dm("S1-001", "S1-002", RFPENDTC="2024-03-15")
    d.rows[1]["RFPENDTC"] = ""
    vs = ds("VS", [{"STUDYID": "S1", "DOMAIN": "VS", "USUBJID": "S1-002", "VSSEQ": 1.0, "VSTESTCD": "SYSBP",
                    "VSTEST": "Systolic Blood Pressure", "VSDTC": "2024-04-02"}])
    rows = [ae_row(AESTDTC="2024-03-16"), ae_row("S1-002", AESTDTC="2024-04-03"), ae_row("S1-002", 2.0)]
    issues = run("SDTM-AE-AFTER-LAST-CONTACT", d, vs, ds("AE", rows))
    assert where(issues) == [("ae.xpt", 1, "AESTDTC"), ("ae.xpt", 2, "AESTDTC")]
    assert "DM.RFPENDTC 2024-03-15" in issues[0].message and "last contact (VS.VSDTC 2024-04-02)" in issues[1].message
    assert issues[1].usubjid == "S1-002" and issues[0].severity == "warning"


# --------------------------------------------------------------------------- SDTM-AEDECOD-INCONSISTENT


def test_aedecod_consistent_pass():
    rows = [ae_row(), ae_row(seq=2.0, AETERM="HEADACHE "), ae_row(seq=3.0, AETERM="Nausea", AEDECOD="NAUSEA")]
    assert run("SDTM-AEDECOD-INCONSISTENT", ds("AE", rows)) == []


def test_aedecod_inconsistent_fail():
    rows = [ae_row(), ae_row(seq=2.0, AETERM="headache", AEDECOD="MIGRAINE"), ae_row("S1-002", AETERM="HEADACHE")]
    issues = run("SDTM-AEDECOD-INCONSISTENT", ds("AE", rows))
    assert where(issues) == [("ae.xpt", 2, "AEDECOD")] and issues[0].value == "MIGRAINE"
    assert "'HEADACHE' in 2 other record(s)" in issues[0].message


# --------------------------------------------------------------------------- SDTM-EPOCH-SE


def _se(usubjid: str = "S1-001") -> Dataset:
    elements = [("SCRN", "SCREENING", "2024-01-03", "2024-01-10T08:00"),
                ("TRT", "TREATMENT", "2024-01-10T08:00", "2024-02-01"),
                ("FU", "FOLLOW-UP", "2024-02-01", "2024-03-01")]
    return ds("SE", [{"STUDYID": "S1", "DOMAIN": "SE", "USUBJID": usubjid, "SESEQ": float(n), "ETCD": etcd,
                      "ELEMENT": etcd, "EPOCH": epoch, "SESTDTC": start, "SEENDTC": end}
                     for n, (etcd, epoch, start, end) in enumerate(elements, start=1)])


def test_epoch_se_pass():
    rows = [ae_row(AESTDTC="2024-01-10T07:59", EPOCH="SCREENING"), ae_row(seq=2.0, AESTDTC="2024-01-10T08:00",
            EPOCH="TREATMENT"), ae_row(seq=3.0, AESTDTC="2024-01-10", EPOCH="SCREENING"),  # day of the change
            ae_row(seq=4.0, AESTDTC="2024-02-01", EPOCH="TREATMENT"),  # date-only boundary: undecided
            ae_row(seq=5.0, AESTDTC="2024-01", EPOCH="FOLLOW-UP"),  # partial date: not checked
            ae_row(seq=6.0, AESTDTC="2024-03-01", EPOCH="FOLLOW-UP")]  # end day of the last element
    assert run("SDTM-EPOCH-SE", _se(), ds("AE", rows)) == []


def test_epoch_se_fail():
    rows = [ae_row(AESTDTC="2024-01-15", EPOCH="TREATMENT"), ae_row(seq=2.0, AESTDTC="2024-01-20", EPOCH="SCREENING"),
            ae_row(seq=3.0, AESTDTC="2024-01-10T09:00", EPOCH="SCREENING")]
    lb = ds("LB", [{"STUDYID": "S1", "DOMAIN": "LB", "USUBJID": "S1-001", "LBSEQ": 1.0, "LBTESTCD": "ALT",
                    "LBTEST": "Alanine Aminotransferase", "LBDTC": "2024-02-10T09:00", "EPOCH": "TREATMENT"}])
    issues = run("SDTM-EPOCH-SE", _se(), ds("AE", rows), lb)
    assert where(issues) == [("ae.xpt", 2, "EPOCH"), ("ae.xpt", 3, "EPOCH"), ("lb.xpt", 1, "EPOCH")]
    assert "falls in the SE element of EPOCH 'FOLLOW-UP'" in issues[2].message and issues[0].severity == "error"


# --------------------------------------------------------------------------- SDTM-ARMCD-NOT-IN-TA


def _ta(*arms: str) -> Dataset:
    return ds("TA", [{"STUDYID": "S1", "DOMAIN": "TA", "ARMCD": a, "ARM": a, "TAETORD": 1.0, "ETCD": "TRT",
                      "ELEMENT": "Treatment", "EPOCH": "TREATMENT"} for a in arms])


def test_armcd_in_ta_pass():
    d = dm("S1-001", "S1-002", "S1-003", "S1-004", ARMCD="A", ACTARMCD="A")
    d.rows[1].update(ARMCD="SCRNFAIL", ACTARMCD="SCRNFAIL")
    d.rows[2].update(ARMCD="B", ACTARMCD="NOTTRT")
    d.rows[3].update(ARMCD="", ACTARMCD="")
    assert run("SDTM-ARMCD-NOT-IN-TA", d, _ta("A", "B")) == []


def test_armcd_not_in_ta_fail():
    d = dm("S1-001", "S1-002", ARMCD="A", ACTARMCD="A")
    d.rows[1].update(ARMCD="C", ACTARMCD="NOTTRT")
    d.rows[0].update(ARMCD="NOTTRT")  # NOTTRT is an ACTARMCD value only
    issues = run("SDTM-ARMCD-NOT-IN-TA", d, _ta("A", "B"))
    assert where(issues) == [("dm.xpt", 1, "ARMCD"), ("dm.xpt", 2, "ARMCD")]
    assert issues[1].value == "C" and issues[1].usubjid == "S1-002"
    d.rows[1].update(ARMCD="Scrnfail", ACTARMCD="Scrnfail")  # SDTMIG 3.1.2 spelling of SCRNFAIL
    d.rows[0].update(ARMCD="A")
    assert run("SDTM-ARMCD-NOT-IN-TA", d, _ta("A", "B")) == []  # not an error: P21 says nothing either
    issues = run("SDTM-ARMCD-CASE", d, _ta("A", "B"))  # one warning for the subject, both variables named
    assert where(issues) == [("dm.xpt", 2, "ARMCD, ACTARMCD")] and issues[0].severity == "warning"
    assert "'SCRNFAIL', in upper case" in issues[0].message and issues[0].usubjid == "S1-002"


# --------------------------------------------------------------------------- SDTM-TS-SSTDTC


def _ts(value: str = "2024-01-02", parmcd: str = "SSTDTC") -> Dataset:
    return ds("TS", [{"STUDYID": "S1", "DOMAIN": "TS", "TSSEQ": 1.0, "TSPARMCD": "TITLE", "TSPARM": "Trial Title",
                      "TSVAL": "A study"},
                     {"STUDYID": "S1", "DOMAIN": "TS", "TSSEQ": 1.0, "TSPARMCD": parmcd, "TSPARM": "Study Start Date",
                      "TSVAL": value}])


def test_ts_sstdtc_pass():
    assert run("SDTM-TS-SSTDTC", dm("S1-001"), _ts()) == []


def test_ts_sstdtc_fail():
    issues = run("SDTM-TS-SSTDTC", dm("S1-001"))
    assert where(issues) == [("ts.xpt", None, None)] and "TS dataset is absent" in issues[0].message
    assert where(run("SDTM-TS-SSTDTC", _ts(parmcd="SENDTC"))) == [("ts.xpt", None, "TSPARMCD")]
    assert where(run("SDTM-TS-SSTDTC", _ts("2024-01"))) == [("ts.xpt", 2, "TSVAL")]
    assert issues[0].severity == "error"


# --------------------------------------------------------------------------- SDTM-DM-ONE-PER-SUBJECT


def test_dm_one_per_subject_pass():
    assert run("SDTM-DM-ONE-PER-SUBJECT", dm("S1-001", "S1-002")) == []


def test_dm_one_per_subject_fail():
    issues = run("SDTM-DM-ONE-PER-SUBJECT", dm("S1-001", "S1-002", "S1-001"))
    assert where(issues) == [("dm.xpt", 3, "USUBJID")] and "record 1" in issues[0].message


# --------------------------------------------------------------------------- a clean set passes everything


def test_clean_set_has_no_errors():
    log = IssueLog()
    ae = ds("AE", [ae_row(AESTDY=3.0)], source="ae.xpt")
    validate_datasets({"DM": dm("S1-001"), "AE": ae, "TS": _ts()}, log)
    assert [i for i in log.issues if i.severity == "error"] == []


# --------------------------------------------------------------------------- CDISC pilot


def _read_xpt(path: Path) -> Dataset:
    pyreadstat = pytest.importorskip("pyreadstat")
    kwargs = {"encoding": "cp1252"} if path.name == "ts.xpt" else {}
    frame, meta = pyreadstat.read_xport(str(path), **kwargs)
    variables = [
        Variable(name, meta.column_names_to_labels.get(name) or "",
                 "Num" if meta.readstat_variable_types[name] == "double" else "Char", order=n)
        for n, name in enumerate(meta.column_names, start=1)
    ]
    rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in rec.items()}
            for rec in frame.to_dict("records")]
    return Dataset(path.stem.upper(), meta.file_label or "", variables, rows, source=path.name)


@pytest.mark.skipif(not PILOT.is_dir(), reason=f"CDISC pilot reference data not found at {PILOT}")
def test_cdisc_pilot_runs_and_finds():
    datasets = {d.name: d for d in (_read_xpt(p) for p in sorted(PILOT.glob("*.xpt")))}
    log = IssueLog()
    validate_datasets(datasets, log)
    counts = Counter((i.code, i.severity) for i in log.issues)
    print("\nCDISC pilot findings by rule:")
    for (code, severity), n in sorted(counts.items()):
        print(f"  {code:30} {severity:8} {n}")
    assert log.issues
    # pilot is SDTMIG 3.1.2: Expected variables of 3.3 are missing
    assert ("dm.xpt", "ARMNRS") in {(i.file, i.field) for i in log.issues if i.code == "SDTM-EXP-MISSING"}
    # the ts.xpt right single quote is not ASCII
    assert any(i.file == "ts.xpt" and i.field == "TSVAL" for i in log.issues if i.code == "SDTM-XPT-ASCII")
    assert all(i.code in RULES_BY_ID or i.severity == "info" for i in log.issues)


def test_model_variable_added_is_a_warning_and_others_stay_errors():
    """P21 SD1076: AEDTC (a --DTC of the model) added to AE is a warning; a name outside the
    model (AEZZZ) stays an SDTM-ROW-SCHEMA error."""
    from trialbridge.converters.core.sdtm_spec import is_model_variable

    assert is_model_variable("AE", "AEDTC") and is_model_variable("DS", "VISIT") and is_model_variable("AE", "EPOCH")
    assert not is_model_variable("AE", "AEZZZ") and not is_model_variable("EX", "SPDEVID")


# --------------------------------------------------------------------------- the catalogue as data


def test_rules_doc_is_generated_from_the_catalogue():
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "scripts/build_rules_doc.py", "--check"], cwd=root, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr


_ENTRY = ("- id: SDTM-X\n  severity: error\n  kind: row\n  summary: s\n  checks: c\n  mirrors: m\n")


@pytest.mark.parametrize("text, problem", [
    (_ENTRY + "  core: [CORE-711]\n  check: row_checks.RequiredVariables\n", "does not match"),  # not a CORE id
    (_ENTRY + "  core: []\n  operator: {name: greater_than, variable: X}\n", "operator"),  # not in the closed set
    (_ENTRY + "  core: []\n  check: row_checks.RequiredVariables\n"
              "  operator: {name: names_its_dataset, variable: DOMAIN}\n", "valid under each of"),  # both
    (_ENTRY + "  core: []\n  check: row_checks.NoSuchCheck\n", "does not exist"),
])
def test_catalogue_is_checked_by_its_schema(text, problem):
    from trialbridge.converters.validation.rules import load_catalogue

    assert load_catalogue(_ENTRY + "  core: []\n  check: row_checks.RequiredVariables\n")[0].id == "SDTM-X"
    with pytest.raises(ValueError, match=problem):
        load_catalogue(text)


def test_rules_written_as_operators_are_rules_like_the_others():
    rules = {r.id: r for r in RULES}
    assert rules["SDTM-RFSTDTC-AFTER-RFENDTC"].operator == {"name": "date_not_after", "dataset": "DM",
                                                            "earlier": "RFSTDTC", "later": "RFENDTC"}
    assert rules["SDTM-RFSTDTC-AFTER-RFENDTC"].core == ("CORE-000711",)
    assert rules["SDTM-EPOCH-SE"].operator is None and rules["SDTM-EPOCH-SE"].check.__name__ == "EpochInSe"
