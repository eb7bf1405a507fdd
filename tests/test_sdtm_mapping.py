"""Records -> SDTM on the bundled sample, with values worked out by hand from the
sample CSVs (subject 001: consent 2020-06-04, first dose 2020-06-05T08:30, born
2015-05-01, BSA 0.63 m2, dose 315000 IU; see samples/nct04387942/README.md for who
relapsed, who is HSPN and who failed screening)."""
from __future__ import annotations

from collections import Counter

import pytest

from trialbridge.converters.core.issues import IssueLog
from trialbridge.converters.core.records import Records
from trialbridge.converters.spokes import records_to_sdtm
from trialbridge.mappings.sdtm.ae import treatment_emergent


def rows_of(datasets, name, usubjid=None, **match):
    out = [r for r in datasets[name].rows if usubjid is None or r.get("USUBJID") == usubjid]
    return [r for r in out if all(r.get(k) == v for k, v in match.items())]


U = "NCT04387942-01-{}".format


def test_sample_converts_with_no_errors_or_warnings(sample_sdtm, sample_records):
    _, read_log = sample_records
    datasets, log = sample_sdtm
    counts = Counter(i.severity for i in read_log.issues + log.issues)
    assert counts.get("error", 0) == 0, [i for i in log.issues if i.severity == "error"][:5]
    assert counts.get("warning", 0) == 0, [i for i in log.issues if i.severity == "warning"][:5]
    expected = {"AE", "CP", "DM", "DS", "EX", "LB", "SE", "SUPPAE", "SUPPDM", "SUPPEX", "SV", "TA", "TE", "TI",
                "TS", "TV", "VS"}
    assert set(datasets) == expected


def test_row_counts_match_the_input(sample_sdtm):
    datasets, _ = sample_sdtm
    assert len(datasets["DM"].rows) == 59
    assert len(datasets["EX"].rows) == 553
    assert len(datasets["LB"].rows) == 2827
    assert len(datasets["CP"].rows) == 1380
    assert len(datasets["AE"].rows) == 45
    assert len(datasets["DS"].rows) == 118
    assert len(datasets["SV"].rows) == 286


def test_dm_subject_001(sample_sdtm):
    datasets, _ = sample_sdtm
    (dm,) = rows_of(datasets, "DM", U("001"))
    assert dm["SUBJID"] == "001" and dm["SITEID"] == "01"
    assert dm["RFICDTC"] == "2020-06-04"
    assert dm["RFSTDTC"] == dm["RFXSTDTC"] == "2020-06-05T08:30"
    assert dm["AGE"] == 5 and dm["AGEU"] == "YEARS"  # 2015-05-01 -> 2020-06-04
    assert dm["SEX"] == "M" and dm["COUNTRY"] == "CHN"
    assert dm["ARMCD"] == dm["ACTARMCD"] == "HSP"


def test_dm_screen_failure_has_no_arm_and_no_reference_start(sample_sdtm):
    datasets, _ = sample_sdtm
    (dm,) = rows_of(datasets, "DM", U("037"))
    assert dm["ARMNRS"] == "SCREEN FAILURE"
    assert dm["ARMCD"] == "" and dm["ACTARMCD"] == ""
    assert dm["RFSTDTC"] == "" and dm["RFXSTDTC"] == ""
    assert not rows_of(datasets, "EX", U("037"))


def test_no_identifying_data_reaches_sdtm(sample_sdtm, sample_records):
    datasets, _ = sample_sdtm
    records, _ = sample_records
    secrets = set()
    for s in records["subject"]:
        secrets.update(s[k] for k in ("family_name", "medical_record_number", "address", "phone") if s.get(k))
    for ds in datasets.values():
        for row in ds.rows:
            for value in row.values():
                assert not (isinstance(value, str) and value in secrets), (ds.name, value)


def test_ex_dose_and_study_days(sample_sdtm):
    datasets, _ = sample_sdtm
    ex = rows_of(datasets, "EX", U("001"))
    assert len(ex) == 7
    first = ex[0]
    assert first["EXSEQ"] == 1 and first["EXSTDTC"] == "2020-06-05T08:30"
    assert first["EXDOSE"] == 315000 and first["EXDOSU"] == "IU"
    assert first["EXROUTE"] == "INTRAVENOUS" and first["EXDOSFRQ"] == "QD"
    assert first["EXSTDY"] == 1 and ex[-1]["EXSTDY"] == 7
    assert first["EPOCH"] == "TREATMENT"
    supp = [r for r in datasets["SUPPEX"].rows if r["USUBJID"] == U("001") and r["IDVARVAL"] == "1"]
    assert {r["QNAM"]: r["QVAL"] for r in supp} == {"BSA": "0.63", "DOSEBSA": "500000"}


def test_no_study_day_zero_anywhere(sample_sdtm):
    datasets, _ = sample_sdtm
    for ds in datasets.values():
        for v in ds.names:
            if v.endswith("DY") and v != "VISITDY":
                assert 0 not in ds.column(v), (ds.name, v)


def test_lb_values_checked_by_hand(sample_sdtm):
    datasets, _ = sample_sdtm
    (igg,) = rows_of(datasets, "LB", U("001"), LBTESTCD="IGG", VISIT="DAY 7")
    assert igg["LBORRES"] == "10.5" and igg["LBORRESU"] == "g/L"
    assert igg["LBSTRESN"] == 10.5 and igg["LBSTRESC"] == "10.5" and igg["LBSTRESU"] == "g/L"
    assert (igg["LBSTNRLO"], igg["LBSTNRHI"], igg["LBNRIND"]) == (5.0, 14.6, "NORMAL")
    assert igg["LBLOINC"] == "2465-3" and igg["LBSPEC"] == "SERUM"
    assert igg["VISITNUM"] == 3 and igg["LBDTC"] == "2020-06-12T08:00"
    assert igg["LBDY"] == 8  # 2020-06-05 is day 1
    assert igg["EPOCH"] == "FOLLOW-UP"  # last dose 2020-06-11; follow-up starts the day after
    (il10,) = rows_of(datasets, "LB", U("001"), LBTESTCD="INTLK10", VISIT="DAY 7")
    assert il10["LBSTRESN"] == 9.2 and il10["LBNRIND"] == "HIGH"  # range 0.0-5.0


def test_lb_baseline_is_last_value_before_first_dose(sample_sdtm):
    datasets, _ = sample_sdtm
    flagged = rows_of(datasets, "LB", U("001"), LBLOBXFL="Y")
    # DAY 0 (pre-dose, 08:00 < 08:30) for Ig/complement/cytokines; SCREENING for ALT/AST/creatinine
    assert {r["LBTESTCD"]: r["VISIT"] for r in flagged}["IGG"] == "DAY 0"
    assert {r["LBTESTCD"]: r["VISIT"] for r in flagged}["ALT"] == "SCREENING"
    assert all(r["LBBLFL"] == "Y" for r in flagged)
    assert len({r["LBTESTCD"] for r in flagged}) == len(flagged)
    (day0,) = rows_of(datasets, "LB", U("001"), LBTESTCD="IGG", VISIT="DAY 0")
    assert day0["EPOCH"] == "SCREENING"


def test_lb_comparator_result_keeps_text_and_has_no_number(sample_sdtm):
    datasets, _ = sample_sdtm
    below = [r for r in datasets["LB"].rows if r["LBORRES"].startswith("<")]
    assert len(below) == 44
    assert all(r["LBSTRESC"] == "<2.0" and r["LBSTRESN"] is None for r in below)


def test_flow_cytometry_goes_to_cp_not_lb(sample_sdtm):
    datasets, _ = sample_sdtm
    assert len(rows_of(datasets, "CP", U("001"))) == 24  # 6 populations x 2 measures x 2 visits
    lb_codes = {r["LBTESTCD"] for r in datasets["LB"].rows}
    cp_codes = {r["CPTESTCD"] for r in datasets["CP"].rows}
    assert not lb_codes & cp_codes
    assert len(cp_codes) == 12
    (treg,) = rows_of(datasets, "CP", U("001"), CPTESTCD="TLYHR", VISIT="DAY 0")
    assert treg["CPMRKSTR"] == "CD3+CD4+CD25+FOXP3+" and treg["CPSPEC"] == "BLOOD"


def test_se_for_relapse_and_hspn_subjects(sample_sdtm):
    datasets, _ = sample_sdtm
    relapse = [r["ETCD"] for r in sorted(rows_of(datasets, "SE", U("002")), key=lambda r: r["SESEQ"])]
    assert relapse == ["SCRN", "IL2C1", "FU", "IL2RT", "FU"]
    hspn = [r["ETCD"] for r in sorted(rows_of(datasets, "SE", U("010")), key=lambda r: r["SESEQ"])]
    assert hspn == ["SCRN", "IL2C1", "IL2MNT", "FU"]
    supp = [r for r in datasets["SUPPDM"].rows if r["USUBJID"] == U("002")]
    assert [(r["QNAM"], r["QVAL"]) for r in supp] == [("RELAPSDT", "2020-09-25")]


def test_sv_unplanned_visit_numbered_after_last_planned(sample_sdtm):
    datasets, _ = sample_sdtm
    (unplanned,) = [r for r in rows_of(datasets, "SV", U("002")) if r["SVUPDES"]]
    assert unplanned["SVSTDTC"] == "2020-09-25"
    assert 4 < unplanned["VISITNUM"] < 5 and unplanned["VISIT"] == f"UNSCHEDULED {unplanned['VISITNUM']:.2f}"


def test_ae_serious_flags_and_treatment_emergence(sample_sdtm):
    datasets, _ = sample_sdtm
    serious = [r for r in datasets["AE"].rows if r["AESER"] == "Y"]
    assert len(serious) == 2
    assert all(r["AESHOSP"] == "Y" and r["AESDTH"] == "N" for r in serious)
    assert all(r["AESHOSP"] == "" for r in datasets["AE"].rows if r["AESER"] == "N")
    temergent = {(r["USUBJID"], r["IDVARVAL"]) for r in datasets["SUPPAE"].rows if r["QVAL"] == "Y"}
    assert len(temergent) == 45  # every sample AE starts on/after the first dose


@pytest.mark.parametrize("start, first, flag", [("2020-06-05", "2020-06-05T08:30", "Y"),  # day of dose, no time
                                                ("2020-06-04", "2020-06-05T08:30", "N"),
                                                ("2020-06", "2020-06-05T08:30", ""),
                                                ("2020-07", "2020-06-05T08:30", "Y"),
                                                ("2020-06-10", "", ""),
                                                ("2020-06-05T08:00", "2020-06-05T08:30", "N"),  # half an hour before
                                                ("2020-06-05T08:30", "2020-06-05T08:30", "Y"),
                                                ("2020-06-05T08", "2020-06-05T08:30", "Y"),  # hour 8: undecided
                                                ("2020-06-05", "2020-06-05", "Y")])
def test_treatment_emergent(start, first, flag):
    assert treatment_emergent(start, first) == flag


def test_ae_on_the_first_dose_day_is_emergent_and_in_treatment(sample_sdtm):
    # subject 004: first dose 2020-06-08T09:00, fever from 2020-06-08 (no time).  Compared as
    # strings, "2020-06-08" < "2020-06-08T09:00" put it in SCREENING while AETRTEM said Y.
    datasets, _ = sample_sdtm
    (fever,) = rows_of(datasets, "AE", U("004"), AESTDTC="2020-06-08")
    assert fever["EPOCH"] == "TREATMENT"
    (flag,) = rows_of(datasets, "SUPPAE", U("004"), IDVARVAL=str(fever["AESEQ"]), QNAM="AETRTEM")
    assert flag["QVAL"] == "Y"


def test_treatment_emergent_events_are_never_in_screening(sample_sdtm):
    datasets, _ = sample_sdtm
    emergent = {(r["USUBJID"], r["IDVARVAL"]) for r in datasets["SUPPAE"].rows
                if r["QNAM"] == "AETRTEM" and r["QVAL"] == "Y"}
    epochs = {r["EPOCH"] for r in datasets["AE"].rows if (r["USUBJID"], str(r["AESEQ"])) in emergent}
    assert epochs and "SCREENING" not in epochs


def _one_subject(study, *, exposures, labs=(), events=()):
    """SDTM of one hand-made subject: consent 2020-06-04, the given doses, labs and AEs."""
    r = Records(study_id="NCT04387942")
    r.rows["subject"] = [{"study_id": "NCT04387942", "site_id": "01", "subject_id": "900", "sex": "F",
                          "consent_date": "2020-06-04", "birth_date": "2012-01-01", "planned_arm": "HSP"}]
    r.rows["exposure"] = [{"subject_id": "900", "treatment": "rhIL-2", "dose": "400000", "dose_unit": "[iU]",
                           "course": "INITIAL", "_where": {"file": "exposures", "record": n}, **e}
                          for n, e in enumerate(exposures, start=1)]
    r.rows["lab_result"] = [{"subject_id": "900", "test": "IgG", "result": "10", "unit": "g/L",
                             "_where": {"file": "labs", "record": n}, **lab} for n, lab in enumerate(labs, start=1)]
    r.rows["adverse_event"] = [{"subject_id": "900", "ae_number": str(n), "term": "fever",
                                "_where": {"file": "aes", "record": n}, **ae} for n, ae in enumerate(events, start=1)]
    log = IssueLog()
    return records_to_sdtm(r, study, log), log


def test_day_of_first_dose_without_time(study):
    # first dose 2020-06-05T08:30.  A lab and an AE dated 2020-06-05 without a time cannot be
    # placed before or after it: the lab is taken as pre-dose (baseline, SCREENING), the AE as
    # on/after the dose (treatment-emergent, TREATMENT) -- each domain's flag and EPOCH agree.
    datasets, _ = _one_subject(study, exposures=[{"start": "2020-06-05T08:30"}],
                               labs=[{"collected": "2020-06-05"}], events=[{"start": "2020-06-05"}])
    (lab,) = datasets["LB"].rows
    assert (lab["EPOCH"], lab["LBLOBXFL"], lab["LBDY"]) == ("SCREENING", "Y", 1)
    (ae,) = datasets["AE"].rows
    assert (ae["EPOCH"], ae["AESTDY"]) == ("TREATMENT", 1)
    assert [r["QVAL"] for r in datasets["SUPPAE"].rows if r["QNAM"] == "AETRTEM"] == ["Y"]


def test_ae_half_an_hour_before_first_dose(study):
    # 08:00 < 08:30: not treatment-emergent and in SCREENING (the day-level string compare
    # said Y while EPOCH said SCREENING)
    datasets, _ = _one_subject(study, exposures=[{"start": "2020-06-05T08:30"}], events=[{"start": "2020-06-05T08:00"}])
    (ae,) = datasets["AE"].rows
    assert ae["EPOCH"] == "SCREENING"
    assert [r["QVAL"] for r in datasets["SUPPAE"].rows if r["QNAM"] == "AETRTEM"] == ["N"]


def test_trial_design_from_config(sample_sdtm):
    datasets, _ = sample_sdtm
    ta = datasets["TA"].rows
    assert [r["ETCD"] for r in ta if r["ARMCD"] == "HSPN"] == ["SCRN", "IL2C1", "IL2MNT", "FU", "IL2RT"]
    planned = {r["VISIT"]: r["VISITDY"] for r in datasets["TV"].rows}
    # protocol day N after day 0 (study day 1) is study day N + 1: no day 0 in SDTM, and
    # day 0 -> day 7 is the same seven days as in the protocol (reviewer's finding on TV)
    assert planned == {"SCREENING": -7, "DAY 0": 1, "DAY 7": 8, "MONTH 3": 91, "MONTH 6": 182}
    ts = {r["TSPARMCD"]: r["TSVAL"] for r in datasets["TS"].rows}
    assert ts["SSTDTC"] == "2020-06-01" and ts["REGID"] == "NCT04387942"
    assert ts["SDTIGVER"] == "3.3" and ts["SDTMVER"] == "1.7"  # added by trialbridge, not the config
    assert {r["TSPARMCD"]: r["TSPARM"] for r in datasets["TS"].rows}["SSTDTC"] == "Study Start Date"


def test_seq_unique_and_rows_sorted(sample_sdtm):
    datasets, _ = sample_sdtm
    for name in ("AE", "EX", "LB", "CP", "DS", "VS"):
        keys = [(r["USUBJID"], r[f"{name}SEQ"]) for r in datasets[name].rows]
        assert len(keys) == len(set(keys)) and keys == sorted(keys), name


def test_partial_date_is_no_baseline_unless_known_before_the_dose(study):
    # first dose 2020-06-05T08:30.  "2020-06" may be any day of June: not known to be pre-dose
    # (as text "2020-06" <= "2020-06-05T08:30" made it the baseline); 20 May is.
    datasets, _ = _one_subject(study, exposures=[{"start": "2020-06-05T08:30"}],
                               labs=[{"collected": "2020-05-20"}, {"collected": "2020-06"}])
    assert {r["LBDTC"]: r["LBLOBXFL"] for r in datasets["LB"].rows} == {"2020-05-20": "Y", "2020-06": ""}
    alone, _ = _one_subject(study, exposures=[{"start": "2020-06-05T08:30"}], labs=[{"collected": "2020-06"}])
    assert [r["LBLOBXFL"] for r in alone["LB"].rows] == [""]


def test_partial_dose_date_before_consent_is_reported_and_not_the_first_dose(study):
    # consent 2020-06-04; a dose in May 2020 is before it whatever the day.  As text,
    # "2020-05" sorted first and became RFXSTDTC, and the day-only check missed it.
    datasets, log = _one_subject(study, exposures=[{"start": "2020-05"}, {"start": "2020-06-05T08:30"}])
    (dm,) = datasets["DM"].rows
    assert (dm["RFXSTDTC"], dm["RFSTDTC"]) == ("2020-06-05T08:30", "2020-06-05T08:30")
    assert [i.value for i in log.issues if i.code == "EX-BEFORE-CONSENT"] == ["2020-05"]
    # a dose some day in June is not known to be before 4 June consent: no finding
    _, log = _one_subject(study, exposures=[{"start": "2020-06"}, {"start": "2020-06-05T08:30"}])
    assert not [i for i in log.issues if i.code == "EX-BEFORE-CONSENT"]


def test_course_read_back_from_the_element_a_date_only_dose_starts(study):
    # SDTM -> records: the course of a dose comes from its SE element.  A dose dated
    # 2020-06-05 without a time, on the day the treatment element starts at 08:30, is in
    # that element (as EPOCH places doses); as text it fell in SCREENING, which has no course.
    from trialbridge.mappings.sdtm import ex
    datasets, _ = _one_subject(study, exposures=[{"start": "2020-06-05T08:30"}])
    assert [(r["ETCD"], r["SESTDTC"]) for r in datasets["SE"].rows][:2] == [("SCRN", "2020-06-04"),
                                                                             ("IL2C1", "2020-06-05T08:30")]
    datasets["EX"].rows[0]["EXSTDTC"] = "2020-06-05"
    assert [r.get("course") for r in ex.from_sdtm(datasets, study)] == ["INITIAL"]
