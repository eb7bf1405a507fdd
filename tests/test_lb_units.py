"""LB original vs standard results on hand-made records, with the expected standard
values computed by hand:
  IgG 1250 mg/dL = 12.5 g/L (1 mg/dL = 0.01 g/L), range 700-1600 mg/dL = 7-16 g/L;
  creatinine 0.5 mg/dL = 0.5 * 10 mg/L / 113.12 g/mol = 44.2009 umol/L;
  CD4 count 0.85 10*9/L = 850 /uL."""
from __future__ import annotations

import pytest

from trialbridge.converters.core.issues import IssueLog
from trialbridge.converters.core.records import Records
from trialbridge.converters.spokes import records_to_sdtm


def _records(labs, cells=()):
    r = Records(study_id="NCT04387942")
    r.rows["subject"] = [{"study_id": "NCT04387942", "site_id": "01", "subject_id": "900", "sex": "F",
                          "consent_date": "2020-06-01", "birth_date": "2012-01-01", "planned_arm": "HSP"}]
    r.rows["exposure"] = [{"subject_id": "900", "treatment": "rhIL-2", "start": "2020-06-02T09:00", "dose": "400000",
                           "dose_unit": "[iU]", "course": "INITIAL"}]
    r.rows["lab_result"] = [{"subject_id": "900", "collected": "2020-06-02T08:00", "_where": {"file": "t", "record": n},
                             **lab} for n, lab in enumerate(labs, start=1)]
    r.rows["cell_phenotype"] = [dict(subject_id="900", collected="2020-06-02T08:00", **c) for c in cells]
    return r


def _lb(labs, study, cells=()):
    log = IssueLog()
    datasets = records_to_sdtm(_records(labs, cells), study, log)
    return datasets, log


def test_mass_concentration_converted_to_standard_unit(study):
    datasets, log = _lb([{"test": "IgG", "result": "1250", "unit": "mg/dL", "ref_low": "700", "ref_high": "1600"}],
                        study)
    (row,) = datasets["LB"].rows
    assert (row["LBORRES"], row["LBORRESU"]) == ("1250", "mg/dL")
    assert row["LBSTRESN"] == 12.5 and row["LBSTRESC"] == "12.5" and row["LBSTRESU"] == "g/L"
    assert (row["LBSTNRLO"], row["LBSTNRHI"], row["LBNRIND"]) == (7.0, 16.0, "NORMAL")
    assert row["LBLOBXFL"] == "Y"  # 08:00 is before the 09:00 first dose


def test_mass_to_substance_uses_molar_mass(study):
    datasets, _ = _lb([{"test": "Creatinine", "result": "0.5", "unit": "mg/dL"}], study)
    (row,) = datasets["LB"].rows
    assert row["LBSTRESU"] == "umol/L"
    # 0.5 mg/dL x 10 dL/L / 113.12 g/mol x 1000 = 44.2009 umol/L, kept to 2 significant digits
    # (0.5 has one; a converted value keeps at least two)
    assert row["LBSTRESN"] == 44.0 and row["LBSTRESC"] == "44"


def test_cell_count_converted(study):
    datasets, _ = _lb([], study, cells=[{"population": "CD3+CD4+ T cells", "measure": "COUNT", "result": "0.85",
                                         "unit": "10*9/L"}])
    (row,) = datasets["CP"].rows
    assert row["CPSTRESN"] == 850.0 and row["CPORRESU"] == "10^9/L"


def test_unknown_unit_and_not_convertible_unit_are_reported(study):
    datasets, log = _lb([{"test": "IgG", "result": "12", "unit": "mq/dL"},
                         {"test": "IgG", "result": "12", "unit": "mmol/L", "collected": "2020-06-03T08:00"}], study)
    codes = sorted(i.code for i in log.issues if i.severity != "info")
    assert "TERM-UNMAPPED-UNIT" in codes and "LB-UNIT-NOT-CONVERTIBLE" in codes
    for row in datasets["LB"].rows:
        assert row["LBSTRESN"] is None and row["LBORRES"] == "12"


def test_not_done_result(study):
    datasets, _ = _lb([{"test": "IgE", "not_done_reason": "Sample haemolysed"}], study)
    (row,) = datasets["LB"].rows
    assert (row["LBSTAT"], row["LBREASND"], row["LBORRES"]) == ("NOT DONE", "Sample haemolysed", "")


def test_unit_factor_table_is_what_the_ucum_library_computes():
    import subprocess
    import sys

    from tests.conftest import ROOT

    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_unit_factors.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_molar_mass_conversion_from_the_table_matches_the_library():
    from trialbridge.mappings import terminology as term

    # creatinine, 113.12 g/mol: 1 mg/dL = 10 mg/L = 10/113.12 mmol/L = 88.4016973 umol/L (by hand)
    table = term._factor("mg/dL", "umol/L", 113.12)
    library = term.library_factor("mg/dL", "umol/L", 113.12)
    assert table[0] == pytest.approx(88.40169731, rel=1e-9) and library[0] == pytest.approx(table[0], rel=1e-12)
    assert term._factor("mg/dL", "umol/L", None) is None


def test_range_left_in_another_unit_is_a_warning(study):
    """A reviewer's case: creatinine 0.53 mg/dL with the range 44-106 copied from an umol/L
    report (88 times apart) must not pass in silence; a true abnormality, ALT 20 times its
    upper limit, is not flagged."""
    datasets, log = _lb([{"test": "Creatinine", "result": "0.53", "unit": "mg/dL", "ref_low": "44", "ref_high": "106"},
                         {"test": "ALT", "result": "800", "unit": "U/L", "ref_low": "0", "ref_high": "40",
                          "collected": "2020-06-03T08:00"}], study)
    found = [(i.code, i.value) for i in log.issues if i.code.endswith("RANGE-SCALE")]
    assert found == [("LB-RANGE-SCALE", "0.53")]
    creat = next(r for r in datasets["LB"].rows if r["LBTESTCD"] == "CREAT")
    assert creat["LBNRIND"] == "LOW"  # derived as given: 47 umol/L against 44 and 106 read as mg/dL (3,900-9,400 umol/L)
