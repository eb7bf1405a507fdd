from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from trialbridge.converters.core.sdtm_spec import (
    available_domains, load_spec, make_dataset, row_validator, spec_from_columns,
)

EXPECTED = {"DM", "EX", "LB", "AE", "DS", "SV", "SE", "TA", "TE", "TV", "TI", "TS", "SUPPQUAL", "CP"}


def test_all_schemas_present_and_valid_draft_2020_12():
    assert EXPECTED <= set(available_domains())
    folder = Path(__file__).resolve().parents[1] / "schemas" / "sdtm"
    for name in EXPECTED:
        schema = json.loads((folder / f"{name}.json").read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["additionalProperties"] is False
        for var, prop in schema["properties"].items():
            assert len(var) <= 8 and prop["x-type"] in ("Char", "Num")
            assert prop["x-core"] in ("Req", "Exp", "Perm")


def test_dm_metadata():
    dm = load_spec("dm")
    assert dm.name == "DM" and dm.label == "Demographics" and dm.class_ == "Special-Purpose"
    assert dm.keys == ["STUDYID", "USUBJID"]
    usubjid = dm.var("USUBJID")
    assert usubjid.label == "Unique Subject Identifier" and usubjid.core == "Req"
    sex = dm.var("SEX")
    assert (sex.codelist, sex.codelist_code, sex.core) == ("SEX", "C66731", "Req")
    assert dm.var("AGE").type == "Num"
    assert dm.names[:3] == ["STUDYID", "DOMAIN", "USUBJID"]


def test_lb_keys_and_codelists():
    lb = load_spec("LB")
    assert lb.keys == ["STUDYID", "USUBJID", "LBTESTCD", "LBSPEC", "VISITNUM", "LBDTC"]
    assert lb.var("LBTESTCD").codelist == "LBTESTCD"
    assert lb.var("LBTESTCD").codelist_code == "C65047"
    assert lb.var("LBLOBXFL").core == "Exp" and lb.var("LBBLFL").core == "Perm"
    assert "x-sdtmig-3.4-notes" in lb.schema
    assert [v.order for v in lb.variables] == sorted(v.order for v in lb.variables)


def test_cp_hand_written_from_sdtmig_34():
    cp = load_spec("CP")
    assert cp.label == "Cell Phenotype Findings" and cp.class_ == "Findings"
    for name in ["CPTESTCD", "CPTEST", "CPSBMRKS", "CPCELSTA", "CPCSMRKS", "CPORRES", "CPSTRESN",
                 "CPSPEC", "CPMETHOD", "CPLOBXFL", "CPBLFL", "VISITNUM", "EPOCH", "CPDTC", "CPDY"]:
        assert cp.var(name) is not None, name
    assert cp.var("CPTESTCD").codelist_code == "C181173"
    assert cp.var("CPCELSTA").codelist == "CELSTATE"
    assert cp.schema["x-sdtmig"] == "3.4"


def test_supp_domains_use_suppqual():
    supp = load_spec("SUPPAE")
    assert supp.name == "SUPPAE" and supp.label == "Supplemental Qualifiers for AE"
    assert supp.keys == ["STUDYID", "RDOMAIN", "USUBJID", "IDVAR", "IDVARVAL", "QNAM"]
    assert "QVAL" in supp.names
    assert not row_validator("SUPPAE").is_valid(
        {"STUDYID": "S", "RDOMAIN": "DM", "USUBJID": "S-1", "QNAM": "X", "QLABEL": "x",
         "QVAL": "1", "QORIG": "CRF"})


def test_unknown_domain_is_minimal_not_an_error():
    xx = load_spec("XX")
    assert not xx.known and xx.variables == []
    spec = spec_from_columns("XX", ["STUDYID", "XXVAL"])
    assert spec.names == ["STUDYID", "XXVAL"] and spec.var("XXVAL").type == "Char"
    ds = make_dataset("XX", [{"STUDYID": "S", "XXVAL": "a"}])
    assert ds.names == ["STUDYID", "XXVAL"]


def test_make_dataset_selects_req_and_populated_variables():
    rows = [
        {"STUDYID": "S", "DOMAIN": "AE", "USUBJID": "S-1", "AESEQ": 1, "AETERM": "Rash",
         "AEDECOD": "Rash", "AESEV": "MILD", "AESTDTC": "2020-06-02", "AEOUT": ""},
        {"STUDYID": "S", "DOMAIN": "AE", "USUBJID": "S-2", "AESEQ": 1, "AETERM": "Fever",
         "AEDECOD": "Pyrexia", "AESTDTC": "2020-06-03"},
    ]
    ds = make_dataset("AE", rows)
    spec = load_spec("AE")
    expected = [v.name for v in spec.variables
                if v.core in ("Req", "Exp") or v.name in {"AESEV", "AESTDTC"}]  # Perm only when populated
    assert ds.names == expected
    assert "AEOUT" not in ds.names  # Perm and empty in every row
    assert "AELLT" in ds.names and all(r["AELLT"] == "" for r in ds.rows)  # Exp: present even when null
    assert ds.rows[1]["AESEV"] == ""
    assert ds.keys == ["STUDYID", "USUBJID", "AEDECOD", "AESTDTC"]
    assert ds.label == "Adverse Events"
    for row in ds.rows:
        assert row_validator("AE").is_valid(row)
    with pytest.raises(ValueError, match="AEFOO"):
        make_dataset("AE", [{"STUDYID": "S", "AEFOO": "x"}])


def test_row_validator_checks_types_and_dates():
    v = row_validator("DM")
    good = {"STUDYID": "S", "DOMAIN": "DM", "USUBJID": "S-1", "SUBJID": "1", "SITEID": "01",
            "SEX": "M", "COUNTRY": "CHN", "AGE": 7, "RFSTDTC": "2020-06-01T08:00"}
    assert v.is_valid(good)
    assert not v.is_valid({**good, "RFSTDTC": "01/06/2020"})
    assert v.is_valid({**good, "RFSTDTC": "2020-06"})
    assert v.is_valid({**good, "RFSTDTC": ""})
    assert not v.is_valid({**good, "AGE": "7"})
    assert not v.is_valid({**good, "USUBJID": ""})
    assert not v.is_valid({**good, "DOMAIN": "AE"})


def test_every_study_day_comes_with_its_date(sample_sdtm):
    """CORE-000700: a --DY in a dataset without its --DTC.  DS has DSDY as Expected (CDISC
    Library SDTMIG 3.3) and DSDTC as Permissible, so DSDTC is written beside it, empty: the
    sample's dispositions have event dates (DSSTDTC) and no separate collection date."""
    datasets, _ = sample_sdtm
    for name, ds in datasets.items():
        names = set(ds.names)
        for var in names:
            if var.endswith("DY") and var != "VISITDY":
                assert var[:-2] + "DTC" in names, (name, var)
    ds = datasets["DS"]
    assert [v for v in ds.names if v.endswith(("DTC", "DY"))] == ["DSDTC", "DSSTDTC", "DSDY", "DSSTDY"]
    assert {r["DSDTC"] for r in ds.rows} == {""} and {r["DSDY"] for r in ds.rows} == {None}
