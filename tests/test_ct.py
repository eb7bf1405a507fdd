from __future__ import annotations

from pathlib import Path

import pytest

from trialbridge.mappings.terminology.ct import CT_VERSION, codelist, codelists, has_codelist


def test_version():
    assert CT_VERSION == "2025-03-28"


def test_aesev_non_extensible():
    aesev = codelist("AESEV")
    assert set(aesev.terms) == {"MILD", "MODERATE", "SEVERE"}
    assert aesev.extensible is False and aesev.code == "C66769"
    assert codelist("C66769") is aesev


def test_sex_lookup():
    sex = codelist("SEX")
    assert sex.lookup("Male") == "M"
    assert sex.lookup("female") == "F"
    assert sex.lookup("M") == "M"
    assert sex.lookup("martian") is None and sex.lookup("") is None and sex.lookup(None) is None
    assert sex.terms["M"] == "C20197"


def test_other_codelists():
    assert codelist("ROUTE").lookup("intravenous") == "INTRAVENOUS"
    assert codelist("NY").lookup("yes") == "Y"
    assert codelist("UNIT").lookup("mg/dL") == "mg/dL"
    assert codelist("UNIT").extensible is True
    assert codelist("LBTESTCD").lookup("ALT") == "ALT"
    assert codelist("LBTESTCD").lookup("alanine aminotransferase") == "ALT"
    assert codelist("CPTESTCD").code == "C181173"
    assert codelist("TSPARMCD").lookup("SEXPOP") == "SEXPOP"
    assert codelist("SEXPOP").lookup("BOTH") == "BOTH"
    assert "SEX" in codelists() and has_codelist("c66731") and not has_codelist("NOPE")
    with pytest.raises(KeyError):
        codelist("NOPE")


def test_the_package_is_chosen_by_date(tmp_path):
    """--ct takes a bundled package date; another date is one clear line naming those there."""
    from click.testing import CliRunner

    from trialbridge.cli import main
    from trialbridge.mappings.terminology import ct

    assert ct.packages() == ["2025-03-28"] and ct.version() == "2025-03-28"
    dirty = Path(__file__).resolve().parents[1] / "samples" / "nct04387942-dirty"
    bad = CliRunner().invoke(main, ["convert", str(dirty), "--to", "sdtm", "-o", str(tmp_path / "o"), "--ct",
                                    "2025-03-25"])
    assert bad.exit_code == 2 and "--ct 2025-03-25: no CT package 2025-03-25; available: 2025-03-28" in bad.output
    assert not (tmp_path / "o").exists()
    good = CliRunner().invoke(main, ["convert", str(dirty), "--to", "sdtm", "-o", str(tmp_path / "o"), "--ct",
                                     "2025-03-28", "--quiet"])
    assert good.exit_code == 1, good.output  # the dirty sample's planted errors
    define = (tmp_path / "o" / "define.xml").read_text()
    assert 'Name="CDISC/NCI" Type="CT" PublishingSet="SDTM" Version="2025-03-28"' in define
