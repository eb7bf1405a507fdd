"""TS complete from the study configuration: every expected parameter, values coded from CDISC
CT (C-codes checked by hand against SDTM Terminology.txt, package 2025-03-28), the codes the
configuration gives (SNOMED, ClinicalTrials.gov), null flavours, and ACTSUB / SENDTC from DM."""
from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path

import pytest
import yaml

from trialbridge.converters import spokes
from trialbridge.converters.core.issues import IssueLog, TrialbridgeError
from trialbridge.mappings.sdtm import trial_design
from trialbridge.mappings.study import load_study
from trialbridge.mappings.terminology import ct

STUDY_YAML = Path(__file__).resolve().parents[1] / "mappings" / "studies" / "nct04387942.yaml"

# Every parameter the NCT04387942 TS carries: SDTMIG 3.3 App. C1 / FDA TCG ones, the pediatric
# and relapse ones, plus TSPARMCDs the study adds (OUTMSPRI, OUTMSSEC, DOSE ...).
SAMPLE_PARAMETERS = {
    "ACTSUB", "ADAPT", "ADDON", "AGEMAX", "AGEMIN", "CURTRT", "DCUTDESC", "DCUTDTC", "DOSE", "DOSFRQ",
    "DOSU", "FCNTRY", "HLTSUBJI", "INDIC", "INTMODEL", "INTTYPE", "LENGTH", "NARMS", "OBJPRIM", "OBJSEC",
    "OUTMSPRI", "OUTMSSEC", "PCLAS", "PDPSTIND", "PDSTIND", "PIPIND", "PLANSUB", "RANDOM", "RANDQT",
    "REGID", "RLPSCRIT", "ROUTE", "SDTIGVER", "SDTMVER", "SENDTC", "SEXPOP", "SPONSOR", "SSTDTC",
    "STOPRULE", "STYPE", "TBLIND", "TCNTRL", "TDIGRP", "TINDTP", "TITLE", "TPHASE", "TRT", "TTYPE",
}


def ts_rows(datasets) -> dict[str, dict]:
    rows = datasets["TS"].rows
    assert len(rows) == len({r["TSPARMCD"] for r in rows})  # one value per parameter in this study
    return {r["TSPARMCD"]: r for r in rows}


def minimal_config(tmp_path: Path, trial_summary: list[dict]) -> Path:
    """The sample study's configuration with another trial_summary (a configuration written
    before TS took codes: parmcd and value only)."""
    config = yaml.safe_load(STUDY_YAML.read_text("utf-8"))
    config["trial_summary"] = trial_summary
    path = tmp_path / "older.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), "utf-8")
    return path


# ------------------------------------------------------------------------ the sample's TS


def test_sample_ts_has_every_expected_parameter(sample_sdtm):
    datasets, _ = sample_sdtm
    ts = ts_rows(datasets)
    assert set(ts) == SAMPLE_PARAMETERS
    assert len(ts) == 48
    assert set(trial_design.ts_table()["expected"]) <= set(ts)


def test_cdisc_ct_values_carry_the_ct_c_codes(sample_sdtm):
    datasets, _ = sample_sdtm
    ts = ts_rows(datasets)
    # worked out by hand from SDTM Terminology.txt (Code column of each codelist's term)
    by_hand = {
        "TPHASE": "C48660",    # C66737 NOT APPLICABLE
        "STYPE": "C98388",     # C99077 INTERVENTIONAL
        "TTYPE": "C49666",     # C66739 EFFICACY
        "TINDTP": "C49656",    # C66736 TREATMENT
        "TBLIND": "C49659",    # C66735 OPEN LABEL
        "TCNTRL": "C41132",    # C66785 NONE
        "INTMODEL": "C82639",  # C99076 PARALLEL
        "INTTYPE": "C307",     # C99078 BIOLOGIC
        "SEXPOP": "C49636",    # C66732 BOTH
        "ROUTE": "C38276",     # C66729 INTRAVENOUS
        "DOSFRQ": "C25473",    # C71113 QD
        "RANDOM": "C49487",    # C66742 N
        "ADDON": "C49487",
        "ADAPT": "C49487",
        "HLTSUBJI": "C49487",
        "PIPIND": "C49487",
        "PDPSTIND": "C49487",
        "PDSTIND": "C49488",   # C66742 Y
    }
    coded = {p: r["TSVALCD"] for p, r in ts.items() if r["TSVCDREF"] == "CDISC CT"}
    assert coded == by_hand
    assert {ts[p]["TSVCDVER"] for p in by_hand} == {"2025-03-28"}


def test_configured_codes_and_formats(sample_sdtm):
    datasets, _ = sample_sdtm
    ts = ts_rows(datasets)
    code = {p: (r["TSVALCD"], r["TSVCDREF"], r["TSVCDVER"]) for p, r in ts.items()}
    assert code["INDIC"] == ("191306005", "SNOMED", "2025-02-01")
    assert code["TDIGRP"] == ("191306005", "SNOMED", "2025-02-01")  # the diagnosis group is the disorder (CORE-000564)
    assert code["REGID"] == ("NCT04387942", "ClinicalTrials.gov", "")
    assert code["FCNTRY"] == ("CHN", "ISO 3166-1 alpha-3", "")  # the name CORE-000339 asks for
    iso = {p for p, c in code.items() if c == ("", "ISO 8601", "")}
    assert iso == {"AGEMAX", "AGEMIN", "LENGTH", "SSTDTC", "SENDTC"}
    # not coded, and the study file says why: no UNII for an unnamed rhIL-2 product, no
    # confirmed MED-RT NUI, IU/m2 not a UNIT term
    assert code["TRT"] == code["PCLAS"] == code["DOSU"] == ("", "", "")


def test_null_flavours(sample_sdtm, study):
    assert study.ts_value("RANDQT") is None and study.ts_value("RANDOM") == "N"
    datasets, _ = sample_sdtm
    ts = ts_rows(datasets)
    flavoured = {p: (r["TSVAL"], r["TSVALNF"]) for p, r in ts.items() if r["TSVALNF"]}
    # RANDOM = N, so there is no randomisation quotient: NA, as are the data cutoff and CURTRT
    assert flavoured == {"RANDQT": ("", "NA"), "DCUTDTC": ("", "NA"), "DCUTDESC": ("", "NA"), "CURTRT": ("", "NA")}
    assert ts["RANDOM"]["TSVAL"] == "N"


def test_derived_parameters(sample_sdtm):
    datasets, _ = sample_sdtm
    ts = ts_rows(datasets)
    dm = datasets["DM"].rows
    # the sample has 59 subjects, one of them a screen failure: 58 entered the trial
    assert len(dm) == 59 and Counter(r["ARMNRS"] for r in dm)["SCREEN FAILURE"] == 1
    assert ts["ACTSUB"]["TSVAL"] == "58"
    # the latest end of participation in the sample's DM (RFPENDTC 2021-12-24T08:00)
    assert max(r["RFPENDTC"] for r in dm) == "2021-12-24T08:00"
    assert ts["SENDTC"]["TSVAL"] == "2021-12-24"
    assert ts["NARMS"]["TSVAL"] == "2" and ts["PLANSUB"]["TSVAL"] == "59"


def test_sample_ts_findings(sample_sdtm):
    _, log = sample_sdtm
    ts_issues = [(i.severity, i.code, i.field, i.value) for i in log.issues if i.file == "ts"]
    assert ts_issues == [("info", "TS-VALUE-CT-EXTENSION", "DOSU", "IU/m2")]


def test_streaming_conversion_writes_the_same_ts(tmp_path):
    from trialbridge.converters import pipeline
    from trialbridge.converters.formats.sdtm.folder import read_dataset

    out = tmp_path / "out"
    pipeline.convert(Path(__file__).resolve().parents[1] / "samples" / "nct04387942", "sdtm", out)
    ts = {r["TSPARMCD"]: r for r in read_dataset(out / "ts.xpt", IssueLog()).rows}
    assert ts["ACTSUB"]["TSVAL"] == "58" and ts["SENDTC"]["TSVAL"] == "2021-12-24"
    assert (ts["RANDQT"]["TSVALNF"], ts["INDIC"]["TSVALCD"], ts["TPHASE"]["TSVCDVER"]) == ("NA", "191306005", "2025-03-28")


# ------------------------------------------------------------------------ TS on its own


def test_older_configuration_still_loads_and_is_coded(tmp_path):
    study = load_study(minimal_config(tmp_path, [
        {"parmcd": "TITLE", "value": "A trial"},
        {"parmcd": "TBLIND", "value": "DOUBLE BLIND"},
        {"parmcd": "RANDOM", "value": "Y"},
    ]))
    rows = {r["TSPARMCD"]: r for r in trial_design.ts(study)}
    # configured, derived from the configuration (no subjects: no ACTSUB, no SENDTC), standards
    assert set(rows) == {"TITLE", "TBLIND", "RANDOM", "NARMS", "PLANSUB", "FCNTRY", "SDTIGVER", "SDTMVER"}
    assert (rows["TBLIND"]["TSVALCD"], rows["TBLIND"]["TSVCDREF"]) == ("C15228", "CDISC CT")  # C66735 DOUBLE BLIND
    assert rows["RANDOM"]["TSVALCD"] == "C49488"  # C66742 Y
    assert rows["TITLE"]["TSVALCD"] == rows["TITLE"]["TSVCDREF"] == rows["TITLE"]["TSVALNF"] == ""


def test_missing_expected_parameters_are_reported(tmp_path):
    study = load_study(minimal_config(tmp_path, [{"parmcd": "TITLE", "value": "A trial"}]))
    log = IssueLog()
    trial_design.ts(study, log, trial_design.SubjectTally())
    missing = [i.value for i in log.issues if i.code == "TS-PARM-MISSING"]
    # a tally of no subjects: ACTSUB is 0, but there is no end date for SENDTC
    present = {"TITLE", "NARMS", "PLANSUB", "FCNTRY", "ACTSUB", "SDTIGVER", "SDTMVER"}
    assert missing == [p for p in trial_design.ts_table()["expected"] if p not in present]
    assert len(missing) == 48 - 7 and "SENDTC" in missing  # the table expects 48 parameters; 7 are here
    assert {i.severity for i in log.issues} == {"warning"}


@pytest.mark.parametrize("parmcd, value, extension, expect", [
    ("RANDOM", "No", False, ("error", "TS-VALUE-NOT-IN-CT", "'N'")),          # NY is non-extensible
    ("TBLIND", "OPEN", False, ("warning", "TS-VALUE-NOT-IN-CT", None)),       # TBLIND is extensible
    ("DOSU", "IU/m2", True, ("info", "TS-VALUE-CT-EXTENSION", None)),         # declared extension
    ("RANDOM", "MAYBE", True, ("error", "TS-VALUE-NOT-IN-CT", None)),         # no extension of NY
])
def test_value_not_in_its_codelist_is_a_finding(tmp_path, parmcd, value, extension, expect):
    assert ct.codelist("NY").extensible is False and ct.codelist("TBLIND").extensible is True
    item = {"parmcd": parmcd, "value": value, **({"ct_extension": True} if extension else {})}
    study = load_study(minimal_config(tmp_path, [item]))
    log = IssueLog()
    rows = {r["TSPARMCD"]: r for r in trial_design.ts(study, log)}
    found = [i for i in log.issues if i.field == parmcd]
    assert [(i.severity, i.code) for i in found] == [expect[:2]]
    if expect[2]:
        assert expect[2] in found[0].message
    assert rows[parmcd]["TSVAL"] == value and rows[parmcd]["TSVALCD"] == ""


def test_configured_value_that_the_data_contradict(tmp_path):
    study = load_study(minimal_config(tmp_path, [{"parmcd": "ACTSUB", "value": "59"}]))
    tally = trial_design.SubjectTally.of([{"ARMNRS": ""}, {"ARMNRS": "SCREEN FAILURE"}])
    log = IssueLog()
    rows = {r["TSPARMCD"]: r for r in trial_design.ts(study, log, tally)}
    assert rows["ACTSUB"]["TSVAL"] == "59"
    assert [(i.code, i.value) for i in log.issues if i.code == "TS-DERIVED-DIFFERS"] == [("TS-DERIVED-DIFFERS", "1")]


def test_subject_tally():
    tally = spokes.subject_tally([
        {"ARMNRS": "", "RFPENDTC": "2021-03-01T10:00"},
        {"ARMNRS": "SCREEN FAILURE", "RFPENDTC": "2021-05-02"},       # counted for the end, not ACTSUB
        {"ARMNRS": "NOT ASSIGNED", "RFPENDTC": ""},
        {"ARMNRS": "ASSIGNED, NOT TREATED", "RFENDTC": "2021-04-30"},  # entered the trial
    ])
    assert (tally.subjects, tally.enrolled, tally.last_date) == (4, 2, "2021-05-02")


@pytest.mark.parametrize("item, where", [
    ({"parmcd": "RANDQT", "value": "1:1", "null_flavor": "NA"}, "trial_summary/0"),  # a value or a null flavour
    ({"parmcd": "INDIC", "value": "x", "code": "123"}, "trial_summary/0"),           # a code needs its system
    ({"parmcd": "RANDQT", "null_flavor": "NOTAPPLICABLE"}, "trial_summary/0"),       # ISO 21090 codes only
    ({"parmcd": "INDIC", "value": "x", "code": "1", "code_system": "SNOMED-CT"}, "trial_summary/0"),
])
def test_schema_rejects_inconsistent_items(tmp_path, item, where):
    with pytest.raises(TrialbridgeError, match=where):
        load_study(minimal_config(tmp_path, [item]))


def test_every_table_codelist_is_in_the_ct_extract():
    table = trial_design.ts_table()
    assert all(ct.has_codelist(cl) for cl in table["codelists"].values())
    parmcds = ct.codelist("TSPARMCD").terms
    named = set(table["codelists"]) | set(table["formats"]) | set(table["self_coded"]) | set(table["expected"]) \
        | set(table["derived"])
    assert named <= set(parmcds)
