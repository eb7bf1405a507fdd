from __future__ import annotations

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
