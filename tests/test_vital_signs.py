"""Vital signs: the vital_sign record type and VS rows made from it (values worked out by hand)."""
from __future__ import annotations

import pytest

from trialbridge.converters.core.issues import IssueLog
from trialbridge.converters.core.records import RECORD_ORDER, Records, record_types
from trialbridge.converters.spokes import records_to_sdtm
from trialbridge.mappings import terminology


def _records(*vital_signs):
    r = Records(study_id="NCT04387942")
    r.rows["subject"] = [{"study_id": "NCT04387942", "site_id": "01", "subject_id": "001", "sex": "M",
                          "consent_date": "2020-06-01", "height_cm": "120", "planned_arm": "HSP"}]
    r.rows["exposure"] = [{"subject_id": "001", "treatment": "rhIL-2", "start": "2020-06-05T08:30", "dose": "1",
                           "dose_unit": "[iU]"}]
    r.rows["vital_sign"] = list(vital_signs)
    return r


def test_record_type_is_found_by_its_schema():
    assert RECORD_ORDER[-1] == "vital_sign" and RECORD_ORDER[0] == "subject"
    assert record_types()["vital_sign"].file == "vital_signs"
    assert record_types()["vital_sign"].key == ("subject_id", "collected", "test")


@pytest.mark.parametrize("value, code", [("8302-2", "HEIGHT"), ("29463-7", "WEIGHT"), ("3141-9", None),
                                         ("39156-5", "BMI"), ("8480-6", "SYSBP"), ("8462-4", "DIABP"),
                                         ("8867-4", "HR"), ("8310-5", "TEMP"), ("9279-1", "RESP"),
                                         ("Body weight", "WEIGHT"), ("Pulse Rate", None)])
def test_vital_signs_table(value, code):
    entry = terminology.load_table("vital_signs").lookup(value)
    assert (entry or {}).get("vstestcd") == code


def test_vs_rows_from_vital_sign_records(study):
    log = IssueLog()
    ds = records_to_sdtm(_records(
        {"subject_id": "001", "collected": "2020-06-04T09:00", "test": "Weight", "result": "154", "unit": "[lb_av]"},
        {"subject_id": "001", "collected": "2020-06-04T09:00", "test": "8310-5", "result": "98.6", "unit": "[degF]"},
        {"subject_id": "001", "collected": "2020-06-04T09:00", "test": "SYSBP", "result": "120", "unit": "mm[Hg]",
         "position": "sitting"},
        {"subject_id": "001", "collected": "2020-06-06", "test": "HR", "not_done_reason": "device broken"},
    ), study, log)
    rows = {(r["VSTESTCD"], r["VSDTC"]): r for r in ds["VS"].rows}
    assert len(rows) == 5  # the screening height of the subject record, and the four measurements
    height = rows[("HEIGHT", "2020-06-01")]  # the screening row: the only height before the first dose
    assert (height["VSORRES"], height["VSSTRESN"], height["VISIT"], height.get("VSLOBXFL", "")) == \
        ("120", 120.0, "SCREENING", "Y")
    weight = rows[("WEIGHT", "2020-06-04T09:00")]
    # 154 lb x 0.45359237 kg/lb = 69.85322498 kg, kept to the 3 significant digits of 154
    assert (weight["VSORRES"], weight["VSORRESU"], weight["VSSTRESN"], weight["VSSTRESU"]) == \
        ("154", "LB", 69.9, "kg")
    assert weight["VSLOBXFL"] == "Y" and weight["VSBLFL"] == "Y" and weight["EPOCH"] == "SCREENING"
    temp = rows[("TEMP", "2020-06-04T09:00")]
    # (98.6 - 32) x 5/9 = 37 °C
    assert (temp["VSTEST"], temp["VSORRESU"], temp["VSSTRESC"], temp["VSSTRESN"], temp["VSSTRESU"]) == \
        ("Temperature", "F", "37", 37.0, "C")
    sysbp = rows[("SYSBP", "2020-06-04T09:00")]
    assert (sysbp["VSPOS"], sysbp["VSORRESU"], sysbp["VSSTRESU"], sysbp["VSSTRESC"]) == ("SITTING", "mmHg", "mmHg", "120")
    hr = rows[("HR", "2020-06-06")]
    assert (hr["VSSTAT"], hr["VSREASND"], hr["VSORRES"], hr["VSSTRESN"]) == ("NOT DONE", "device broken", "", None)
    assert [r["VSSEQ"] for r in ds["VS"].rows] == [1, 2, 3, 4, 5]
    assert not [i for i in log.issues if i.severity != "info"]


def test_unknown_vital_sign_is_rejected(study):
    log = IssueLog()
    ds = records_to_sdtm(_records({"subject_id": "001", "collected": "2020-06-06", "test": "Pulse rate",
                                   "result": "80"}), study, log)
    assert [r["VSTESTCD"] for r in ds["VS"].rows] == ["HEIGHT"]
    assert [(i.code, i.value) for i in log.issues if i.severity == "error"] == [("TERM-UNMAPPED-VSTEST", "Pulse rate")]


def test_screening_height_and_weight_are_the_baseline(sample_sdtm):
    """A reviewer found VSLOBXFL never set: the records sample has only the screening height
    and weight (dated the consent day, before every first dose), so each is its subject's
    baseline.  58 subjects were dosed (59 less the screen failure), each with one height and
    one weight: 116 flagged rows; the screen failure's two rows are not flagged (no dose)."""
    datasets, _ = sample_sdtm
    vs = datasets["VS"].rows
    flagged = [r for r in vs if r.get("VSLOBXFL") == "Y"]
    assert len(vs) == 118 and len(flagged) == 116
    assert {r["VSTESTCD"] for r in flagged} == {"HEIGHT", "WEIGHT"}
    assert len({(r["USUBJID"], r["VSTESTCD"]) for r in flagged}) == 116  # one per subject and test
