"""``trialbridge init-study``: a study configuration drafted from an SDTM folder's trial design
(or a define.xml), valid against the configuration schema, listing under ``todo`` what it could
not infer; and with that draft the CDISC pilot round-trips SDTM -> FHIR -> SDTM.

The pilot (``../shared/reference/sdtm/cdiscpilot01``; skipped when absent) has DM 306, AE 1191,
DS 596, EX 591, SV 3559, SUPPAE 1191, TE 7, TV 21, TI 31, TA 8 rows; 17 sites; arms Pbo,
Xan_Lo, Xan_Hi in TA and Scrnfail (52 screen failures) only in DM; EXTRT PLACEBO 226 rows and
XANOMELINE 365.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tests.conftest import reference
from trialbridge.cli import main
from trialbridge.converters.core.issues import IssueLog
from trialbridge.converters.formats import sdtm as sdtm_io
from trialbridge.mappings.study import load_study


def run(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def pilot() -> Path:
    return reference("sdtm", "cdiscpilot01")


@pytest.fixture(scope="module")
def draft(pilot, tmp_path_factory) -> tuple[Path, object]:
    path = tmp_path_factory.mktemp("draft") / "cdiscpilot01.yaml"
    return path, run("init-study", pilot, "-o", path)


def test_the_draft_is_a_valid_configuration_with_what_is_left_to_do(draft):
    path, result = draft
    assert result.exit_code == 0, result.output
    assert "7 thing(s) to check or fill in" in result.output
    config = load_study(path).config  # checked against schemas/config/study.schema.json
    assert config["study_id"] == "CDISCPILOT01" and config["usubjid_rule"] == "01-{site_id}-{subject_id}"
    assert len(config["sites"]) == 17 and {s["country"] for s in config["sites"]} == {"USA"}
    assert [a["code"] for a in config["arms"]] == ["Pbo", "Xan_Hi", "Xan_Lo", "Scrnfail"]
    assert [e["element"] for e in config["arms"][1]["elements"]] == ["SCRN", "HIS", "HIM", "HIE"]
    assert config["arms"][3]["elements"] == [{"element": "SCRN", "epoch": "Screening"}]
    assert len(config["elements"]) == 7 and len(config["visits"]) == 21 and len(config["criteria"]) == 31
    assert len(config["trial_summary"]) == 25  # distinct TSPARMCD of the pilot's 33 TS rows
    assert config["treatment"] == {"name": "XANOMELINE", "dose_per_bsa": 0, "dose_unit": "mg",
                                   "route": "TRANSDERMAL", "dose_form": "PATCH"}
    assert config["fhir"] == {"treatment": {"names": ["PLACEBO", "XANOMELINE"]}}
    # windows from the study days SV observed: BASELINE (visit 3) is study day 1 for everyone
    assert config["visits"][2] == {"number": 3, "name": "BASELINE", "day": 1, "window": [1, 1]}
    todo = [line.split(":", 1)[0] for line in config["todo"]]
    assert todo == ["sites", "treatment", "elements", "arms", "arms", "visits", "visits"]
    assert path.read_text().startswith("# Study configuration drafted by trialbridge init-study")


def test_the_draft_is_deterministic_and_replaces_only_its_own_file(draft, pilot, tmp_path):
    path, _ = draft
    first = path.read_bytes()
    again = run("init-study", pilot, "-o", path)  # our own draft: replaced, the same bytes
    assert again.exit_code == 0 and path.read_bytes() == first
    other = tmp_path / "mine.yaml"
    other.write_text("study_id: MINE\n")
    refused = run("init-study", pilot, "-o", other)
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert other.read_text() == "study_id: MINE\n"


def test_a_draft_from_define_xml_alone(pilot, tmp_path):
    out = tmp_path / "from-define.yaml"
    result = run("init-study", pilot / "define.xml", "-o", out)
    assert result.exit_code == 0, result.output
    config = load_study(out).config
    assert config["study_id"] == "CDISCPILOT01" and config["title"] == "CDISCPILOT01 Data Definition"
    assert [a["code"] for a in config["arms"]] == ["Scrnfail", "Pbo", "Xan_Lo", "Xan_Hi"]  # the ARMCD codelist
    assert [e["code"] for e in config["elements"]] == ["SCRN", "PBO", "LO", "HIS", "HIM", "HIE", "FOLO", "UNPLAN"]
    assert len(config["visits"]) == 37  # VISITNUM codelist, unscheduled visits included
    assert any(line.startswith("trial_summary: no TS dataset") for line in config["todo"])


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "missing", "give an SDTM folder or a define.xml"),
    (lambda tmp: tmp, "no SDTM datasets found"),
])
def test_inputs_it_cannot_draft_from_are_one_line(make, message, tmp_path):
    result = run("init-study", make(tmp_path), "-o", tmp_path / "out.yaml")
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


# --------------------------------------------------------------------------- the round trip

# Variables compared per dataset, row multisets (values as text).  Left out, and why:
# - DM AGE, AGEU: FHIR Patient carries birthDate, not an age; the pilot has no BRTHDTC, so the
#   round trip has no age.  RFENDTC, RFXENDTC, ACTARMCD: derived again from EX/DS on the way
#   back (the pilot's sponsor derivations differ for 75, 6 and 52 subjects).
# - AE AEREL: mapped through the relatedness table to FHIR causality and back to the CT terms
#   (PROBABLE -> RELATED …); the pilot's sponsor terms do not come back as written.
# - DS DSDECOD: FINAL LAB VISIT (254) and FINAL RETRIEVAL VISIT (36) are sponsor terms outside
#   the disposition table, reported TERM-UNMAPPED-DSDECOD and left empty; compared on the rest.
# - EX EXENDTC: the pilot's 6 doses without an end come back ending on their start day (a dose
#   with only a start lasts that day, mappings/sdtm/ex.py).
# - SV VISITNUM/VISIT of the pilot's 122 UNSCHEDULED x.y visits: renumbered by trialbridge's own
#   rule (planned window, else after the last planned visit); compared for the planned visits.
# - SE, TS: SE is derived from dose courses the draft cannot name (todo); TS is written from the
#   configuration's 25 parameters plus derived ones, not the pilot's 33 rows.
COMPARED = {
    "DM": ["USUBJID", "SUBJID", "SITEID", "SEX", "RACE", "ETHNIC", "ARMCD", "ARM", "RFSTDTC", "RFXSTDTC",
           "COUNTRY", "DTHFL"],
    "AE": ["USUBJID", "AETERM", "AEDECOD", "AEBODSYS", "AESTDTC", "AEENDTC", "AESEV", "AESER", "AEOUT", "AEACN"],
    "DS": ["USUBJID", "DSTERM", "DSCAT", "DSSTDTC"],
    "EX": ["USUBJID", "EXTRT", "EXDOSE", "EXDOSU", "EXDOSFRM", "EXROUTE", "EXSTDTC"],
    "SV": ["USUBJID", "SVSTDTC", "SVENDTC"],
    "SUPPAE": ["USUBJID", "QNAM", "QVAL"],
    "TE": ["ETCD", "ELEMENT", "TESTRL", "TEENRL", "TEDUR"],
    "TV": ["VISITNUM", "VISIT"],
    "TI": ["IETESTCD", "IETEST", "IECAT"],
}
ROWS = {"DM": 306, "AE": 1191, "DS": 596, "EX": 591, "SV": 3559, "SUPPAE": 1191, "TE": 7, "TV": 21, "TI": 31}


def _text(value) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return f"{value:g}" if isinstance(value, float) else str(value).strip()


def _rows(ds, names) -> Counter:
    return Counter(tuple(_text(r.get(n)) for n in names) for r in ds.rows)


@pytest.fixture(scope="module")
def round_trip(pilot, draft, tmp_path_factory):
    path, _ = draft
    work = tmp_path_factory.mktemp("round-trip")
    to_fhir = run("convert", pilot, "--to", "fhir", "-o", work / "fhir")
    assert to_fhir.exit_code in (0, 1) and "internal error" not in to_fhir.output, to_fhir.output
    back = run("convert", work / "fhir", "--to", "sdtm", "--study", path, "-o", work / "sdtm", "--format", "csv")
    assert "internal error" not in back.output, back.output
    original = sdtm_io.read_sdtm_folder(pilot, IssueLog())
    result = sdtm_io.read_sdtm_folder(work / "sdtm", IssueLog())
    import json

    issues = json.loads((work / "sdtm" / "issues.json").read_text())["issues"]
    return original, result, Counter(i["code"] for i in issues)


def test_the_pilot_round_trips_with_the_draft(round_trip):
    original, result, _ = round_trip
    for name, expected in ROWS.items():
        assert (len(original[name].rows), len(result[name].rows)) == (expected, expected), name
    for name, names in COMPARED.items():
        assert _rows(original[name], names) == _rows(result[name], names), name
    # TA: the pilot's 8 rows and the Scrnfail arm DM names (one element)
    ta = ["ARMCD", "TAETORD", "ETCD", "EPOCH"]
    assert _rows(result["TA"], ta) - _rows(original["TA"], ta) == Counter({("Scrnfail", "1", "SCRN", "Screening"): 1})
    assert len(result["TA"].rows) == 9


def test_what_the_round_trip_changes_is_exactly_what_the_test_says(round_trip):
    original, result, codes = round_trip
    planned = {r["VISITNUM"] for r in original["TV"].rows}
    sv = ["USUBJID", "VISITNUM", "VISIT", "SVSTDTC"]
    unscheduled = [r for r in original["SV"].rows if r["VISITNUM"] not in planned]
    assert len(unscheduled) == 122 and all(r["VISIT"].startswith("UNSCHEDULED") for r in unscheduled)
    assert not (Counter(tuple(_text(r[n]) for n in sv) for r in original["SV"].rows if r["VISITNUM"] in planned)
                - _rows(result["SV"], sv))
    lost = Counter(r["DSDECOD"] for r in original["DS"].rows) - Counter(r["DSDECOD"] for r in result["DS"].rows)
    assert lost == {"FINAL LAB VISIT": 254, "FINAL RETRIEVAL VISIT": 36}
    assert codes["TERM-UNMAPPED-DSDECOD"] == 290
    assert sum(1 for r in original["EX"].rows if not r["EXENDTC"]) == 6
    assert not [r for r in result["EX"].rows if not r["EXENDTC"]]
    # doses of both treatments in scope (fhir: treatment: names), EXTRT as written
    assert Counter(r["EXTRT"] for r in result["EX"].rows) == {"XANOMELINE": 365, "PLACEBO": 226}
    assert codes["FHIR-OUT-OF-SCOPE-MEDICATION"] == 0 and codes["DM-UNKNOWN-ARM"] == 0
    assert codes["SE-UNKNOWN-COURSE"] == 254  # every treated subject's first course: the todo line on courses
    assert codes["SV-OUT-OF-WINDOW"] == 0  # windows from what SV observed
