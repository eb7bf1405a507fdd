"""Terminology tables and the loader API in mappings.terminology."""
from __future__ import annotations

import json
from collections import defaultdict
from importlib import resources

import jsonschema
import pytest
import yaml

import trialbridge.mappings.terminology as term
from trialbridge.mappings.terminology import ct
from trialbridge.converters.core.issues import IssueLog

TABLES = term.table_names()
EXPECTED_TABLES = {
    "lab_tests", "cell_phenotypes", "units", "routes", "sex", "race", "ethnicity", "severity",
    "outcome", "action_taken", "relatedness", "nrind", "disposition", "frequency", "dose_form",
    "specimen",
}
SAMPLE_LAB_TESTS = ["IgE", "IgA", "IgG", "IgM", "C3", "C4", "ALT", "AST", "Creatinine", "IL-2",
                    "IL-4", "IL-6", "IL-10", "IL-17A", "IFN-gamma", "TNF-alpha"]
SAMPLE_POPULATIONS = ["CD3+ T cells", "CD3+CD4+ T cells", "CD3+CD8+ T cells", "CD19+ B cells",
                      "CD3-CD16+CD56+ NK cells", "CD4+CD25+FOXP3+ Treg"]


def _raw(name: str) -> dict:
    text = resources.files("trialbridge.mappings.terminology").joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _schema() -> dict:
    return json.loads(resources.files("trialbridge.schemas").joinpath("config", "terminology.schema.json").read_text())


# --- schema -------------------------------------------------------------------------------


def test_all_expected_tables_exist():
    assert EXPECTED_TABLES <= set(TABLES)


@pytest.mark.parametrize("name", TABLES)
def test_table_validates_against_schema(name):
    data = _raw(name)
    jsonschema.validate(data, _schema())  # raises with the failing path
    assert data["name"] == name
    table = term.load_table(name)
    assert table.unmapped in ("error", "passthrough", "fixed")
    assert table.source and all(s.get("title") for s in table.source)


@pytest.mark.parametrize("broken, message", [
    (lambda d: d.pop("source"), "'source' is a required property"),
    (lambda d: d.update(unmapped="fixed"), "'fixed_value' is a required property"),
    (lambda d: d.update(unmapped="ignore"), "is not one of"),
    (lambda d: d["entries"][0].pop("snomed"), "'snomed' is a required property"),
])
def test_schema_rejects_broken_tables(broken, message):
    data = _raw("routes")
    broken(data)
    problems = term.validate_table_data(data)
    assert any(message in p for p in problems), problems


def test_schema_rejects_lab_test_without_loinc_note():
    data = _raw("lab_tests")
    entry = next(e for e in data["entries"] if e["loinc"] == "")
    entry.pop("note")
    assert term.validate_table_data(data)


def test_fixed_mode_needs_fixed_value():
    with pytest.raises(ValueError):
        term.TermTable(name="x", unmapped="fixed", source=[{"title": "t"}], entries=[{"cdisc": "A"}],
                       value_field="cdisc", issue_code="TERM-UNMAPPED-X")


# --- values are valid CDISC CT ------------------------------------------------------------


def test_lab_tests_cover_sample_and_are_valid_ct():
    testcd, test = ct.codelist("LBTESTCD"), ct.codelist("LBTEST")
    names = [e["name"] for e in term.load_table("lab_tests").entries]
    assert sorted(names) == sorted(SAMPLE_LAB_TESTS)
    for e in term.load_table("lab_tests").entries:
        assert e["lbtestcd"] in testcd, e["lbtestcd"]
        assert e["lbtest"] in test, e["lbtest"]
        # the code and the name are the same NCI concept
        assert testcd.terms[e["lbtestcd"]] == test.terms[e["lbtest"]], e["name"]
        assert e["specimen"] in ct.codelist("SPECTYPE")
        assert term.unit(e["standard_unit"]) is not None, e["standard_unit"]


def test_cell_phenotypes_cover_sample_and_are_valid_ct():
    testcd, test = ct.codelist("CPTESTCD"), ct.codelist("CPTEST")
    entries = term.load_table("cell_phenotypes").entries
    assert {(e["population"], e["measure"]) for e in entries} == {
        (p, m) for p in SAMPLE_POPULATIONS for m in ("COUNT", "PERCENT")}
    for e in entries:
        assert e["cptestcd"] in testcd, e["cptestcd"]
        assert e["cptest"] in test, e["cptest"]
        assert testcd.terms[e["cptestcd"]] == test.terms[e["cptest"]], e["population"]
        assert e["cpcat"] in ct.codelist("CPCAT")
        assert e["method"] in ct.codelist("METHOD")
        assert e["specimen"] in ct.codelist("SPECTYPE")
        assert term.ucum_to_cdisc(e["standard_unit"]) in ct.codelist("UNIT")


def test_units_are_valid_ct_and_unambiguous():
    unit_cl = ct.codelist("UNIT")
    seen = defaultdict(set)
    for e in term.load_table("units").entries:
        assert e["cdisc"] in unit_cl, e["cdisc"]
        for key in [e["ucum"], e["cdisc"], *(e.get("aliases") or [])]:
            seen[term._fold(key)].add(e["cdisc"])
    clashes = {k: v for k, v in seen.items() if len(v) > 1}
    assert not clashes, f"spellings that fold together but mean different CDISC units: {clashes}"


def test_every_ucum_code_parses_with_ucumvert():
    reg = term._registry()
    for e in term.load_table("units").entries:
        reg.from_ucum(e["ucum"])  # raises on an invalid UCUM code


@pytest.mark.parametrize("name", sorted(n for n in TABLES if n not in ("lab_tests", "cell_phenotypes", "units")))
def test_ct_backed_values_are_in_their_codelist(name):
    table = term.load_table(name)
    for e in table.entries:
        codelist = e.get("dsdecod_codelist") or table.codelist
        if codelist is None:  # sponsor-defined (AEREL)
            continue
        assert e[table.value_field] in ct.codelist(codelist), (name, e[table.value_field])
        if "dscat" in e:
            assert e["dscat"] in ct.codelist("DSCAT")


def test_routes_carry_snomed_codes():
    got = {e["cdisc"]: e["snomed"]["code"] for e in term.load_table("routes").entries}
    assert got == {"INTRAVENOUS": "47625008", "SUBCUTANEOUS": "34206005", "ORAL": "26643006",
                   "INTRAMUSCULAR": "78421000", "TRANSDERMAL": "45890007"}


# --- LOINC --------------------------------------------------------------------------------


def _loinc_check_digit_ok(code: str) -> bool:
    number, check = code.split("-")
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d // 10 + d % 10
    return (10 - total % 10) % 10 == int(check)


@pytest.mark.parametrize("name", ["lab_tests", "cell_phenotypes"])
def test_loinc_codes_are_sourced_and_well_formed(name):
    for e in term.load_table(name).entries:
        codes = [(e["loinc"], e["loinc_source"])]
        codes += [(alt["loinc"], alt["loinc_source"]) for alt in (e.get("loinc_by_unit_kind") or {}).values()]
        for code, where in codes:
            if code:
                assert _loinc_check_digit_ok(code), code
                assert where.startswith("http"), (code, where)
            else:
                assert e.get("note"), f"{e.get('name') or e.get('population')}: empty LOINC needs a note"


def test_loinc_check_digit_helper():
    assert _loinc_check_digit_ok("2160-0") and _loinc_check_digit_ok("2465-3")
    assert not _loinc_check_digit_ok("2465-4")


# --- lookups ------------------------------------------------------------------------------


@pytest.mark.parametrize("value, code", [
    ("IgG", "IGG"), ("Immunoglobulin G", "IGG"), ("immunoglobulin g", "IGG"), ("IFN-γ", "IFNG"),
    ("TNF-α", "TNF"), ("SGPT", "ALT"), ("Serum creatinine", "CREAT"), ("IL-17A", "INTLK17"),
    ("Interleukin 17", "INTLK17"), ("INTLK10", "INTLK10"), ("2465-3", "IGG"),
])
def test_lab_test_lookup(value, code):
    assert term.lab_test(value)["lbtestcd"] == code
    assert term.map_term("lab_tests", value) == code


def test_lab_test_by_code_and_loinc():
    assert term.lab_test_by_code("creat")["name"] == "Creatinine"
    assert term.lab_test_by_loinc("19113-0")["lbtestcd"] == "IGE"
    assert term.lab_test_by_loinc("0000-0") is None
    assert term.lab_test("Ferritin") is None
    assert term.lab_test("Creatinine")["molar_mass_g_per_mol"] == pytest.approx(113.12)


def test_cp_test_lookups():
    assert term.cp_test("CD4+ T cells", "COUNT")["cptestcd"] == "TLYH"
    assert term.cp_test("cd3+cd4+ t cells", "percent")["cptestcd"] == "TLHLY"
    assert term.cp_test("Treg", "PERCENT")["denominator"] == "CD4+ HELPER T CELLS"
    assert term.cp_test("CD19+ B cells", "COUNT")["cptest"] == "B-Lymphocytes"
    assert term.cp_test("NK cells", "PERCENT")["cptestcd"] == "NKLY"
    assert term.cp_test("Monocytes", "COUNT") is None
    assert term.cp_test_by_code("blycely")["measure"] == "PERCENT"
    assert term.cp_test_by_loinc("24467-3")["population"] == "CD3+CD4+ T cells"


@pytest.mark.parametrize("table, value, expected", [
    ("routes", "IV", "INTRAVENOUS"), ("routes", "Subcutaneous route", "SUBCUTANEOUS"),
    ("routes", "47625008", "INTRAVENOUS"),
    ("sex", "male", "M"), ("sex", "female", "F"), ("sex", "UNK", "U"),
    ("severity", "Grade 2", "MODERATE"),  # a CDISC synonym, found through the codelist
    ("severity", "3", "SEVERE"),
    ("outcome", "resolvedWithSequelae", "RECOVERED/RESOLVED WITH SEQUELAE"),
    ("outcome", "ongoing", "NOT RECOVERED/NOT RESOLVED"),
    ("nrind", "H", "HIGH"), ("nrind", "n", "NORMAL"),
    ("relatedness", "Possible", "POSSIBLY RELATED"), ("relatedness", "Certain", "RELATED"),
    ("frequency", "Q2W", "EVERY 2 WEEKS"), ("frequency", "Q2S", "EVERY 2 WEEKS"),  # CT synonym
    ("frequency", "once", "ONCE"),
    ("dose_form", "injection, powder, lyophilized, for solution", "INJECTION, POWDER, LYOPHILIZED, FOR SOLUTION"),
    ("specimen", "Whole blood", "BLOOD"), ("specimen", "Sera", "SERUM"),  # Sera: CT synonym
    ("disposition", "Informed consent", "INFORMED CONSENT OBTAINED"),
    ("disposition", "Dropout", "WITHDRAWAL BY SUBJECT"),  # CT synonym
    ("race", "Chinese", "ASIAN"), ("ethnicity", "Non-Hispanic", "NOT HISPANIC OR LATINO"),
    ("action_taken", "None", "DOSE NOT CHANGED"),
])
def test_map_term_known_values(table, value, expected):
    log = IssueLog()
    assert term.map_term(table, value, log=log) == expected
    assert not log.issues
    assert log.unmapped == {}


def test_relatedness_goes_out_as_probably_likely():
    entry = term.load_table("relatedness").lookup("RELATED")
    assert entry["fhir"]["code"] == "Probably-Likely"
    assert term.load_table("sex").lookup("F")["fhir"]["code"] == "female"


# --- unmapped values ----------------------------------------------------------------------


def test_unmapped_route_error_mode():
    log = IssueLog()
    where = {"file": "ex.csv", "record": 7, "field": "route", "usubjid": "NCT04387942-01-001"}
    assert term.map_term("routes", "Intrathecal pump", log=log, where=where) is None
    [issue] = log.issues
    assert issue.severity == "error"
    assert issue.code == "TERM-UNMAPPED-ROUTE"
    assert (issue.file, issue.record, issue.field, issue.value) == ("ex.csv", 7, "route", "Intrathecal pump")
    assert issue.usubjid == "NCT04387942-01-001"
    assert log.unmapped == {"routes": {"Intrathecal pump": 1}}


def test_unmapped_unit_passthrough_mode():
    log = IssueLog()
    for _ in range(2):
        assert term.map_term("units", "[iU]/m2", log=log, where={"field": "EXDOSU"}) == "[iU]/m2"
    assert [i.severity for i in log.issues] == ["warning", "warning"]
    assert {i.code for i in log.issues} == {"TERM-UNMAPPED-UNIT"}
    assert log.issues[0].field == "EXDOSU"
    assert log.unmapped == {"units": {"[iU]/m2": 2}}
    assert IssueLog().unmapped == {}  # counts live in the run's log, not in the module


def test_unmapped_fixed_mode():
    table = term.TermTable(name="demo", unmapped="fixed", fixed_value="OTHER", source=[{"title": "test"}],
                           entries=[{"cdisc": "A", "aliases": ["alpha"]}], value_field="cdisc",
                           issue_code="TERM-UNMAPPED-DEMO")
    log = IssueLog()
    assert table.lookup("ALPHA")["cdisc"] == "A"
    assert term.apply_unmapped(table, "zeta", log=log, where={"record": 3}) == "OTHER"
    [issue] = log.issues
    assert (issue.severity, issue.code, issue.value, issue.record) == ("warning", "TERM-UNMAPPED-DEMO", "zeta", 3)


def test_count_unmapped_for_direct_lookups():
    assert term.lab_test("Ferritin") is None  # CT knows FERRITIN, but the study table does not
    log = IssueLog()
    term.count_unmapped("lab_tests", "Ferritin", log)
    term.count_unmapped("lab_tests", "Ferritin", log)
    assert log.unmapped == {"lab_tests": {"Ferritin": 2}}


def test_empty_values_are_not_reported():
    log = IssueLog()
    assert term.map_term("routes", None, log=log) is None
    assert term.map_term("routes", "  ", log=log) is None
    assert not log.issues and log.unmapped == {}


def test_unknown_table_is_a_programming_error():
    with pytest.raises(KeyError):
        term.load_table("no_such_table")


# --- units and conversion -----------------------------------------------------------------


@pytest.mark.parametrize("value, ucum, cdisc", [
    ("[iU]/mL", "[iU]/mL", "IU/mL"), ("IU/ml", "[iU]/mL", "IU/mL"), ("mg/dl", "mg/dL", "mg/dL"),
    ("µmol/L", "umol/L", "umol/L"), ("umol/l", "umol/L", "umol/L"), ("cells/µL", "/uL", "10^6/L"),
    ("cells/uL", "/uL", "10^6/L"), ("x10^9/L", "10*9/L", "10^9/L"), ("10^6/L", "/uL", "10^6/L"), ("x10^6/L", "10*6/L", "10^6/L"),
    ("pg/mL", "pg/mL", "ng/L"), ("%", "%", "%"), ("[iU]", "[iU]", "IU"),
])
def test_unit_lookup(value, ucum, cdisc):
    assert term.unit(value) == {"ucum": ucum, "cdisc": cdisc}


def test_unit_round_trip_directions():
    assert term.ucum_to_cdisc("g/L") == "g/L"
    assert term.cdisc_to_ucum("10^6/L") == "/uL"  # first entry for the CDISC unit
    assert term.cdisc_to_ucum("ng/L") == "pg/mL"
    assert term.cdisc_to_ucum("IU/mL") == "[iU]/mL"
    assert term.unit("furlongs") is None
    assert term.unit("") is None


def test_convert_igg_mg_dl_to_g_l():
    assert term.convert_value(1250, "mg/dL", "g/L") == pytest.approx(12.5)


def test_convert_creatinine_with_molar_mass():
    assert term.convert_value(1, "mg/dL", "umol/L", molar_mass=113.12) == pytest.approx(88.4, abs=0.1)
    assert term.convert_value(88.4, "umol/L", "mg/dL", molar_mass=113.12) == pytest.approx(1.0, abs=0.001)
    # without a molar mass, mass and substance do not convert
    assert term.convert_value(1, "mg/dL", "umol/L") is None


def test_convert_cell_counts():
    assert term.convert_value(1500, "/uL", "10*9/L") == pytest.approx(1.5)
    assert term.convert_value(1500, "cells/µL", "10^6/L") == pytest.approx(1500)
    assert term.convert_value(5, "pg/mL", "ng/L") == 5.0


def test_convert_refuses_mismatched_or_unknown_units():
    assert term.convert_value(1, "g/L", "U/L") is None
    assert term.convert_value(1, "[iU]/mL", "/uL") is None  # arbitrary units are not counts
    assert term.convert_value(1, "[iU]/mL", "[iU]/L") == pytest.approx(1000)
    assert term.convert_value(1, "not-a-unit", "g/L") is None


def test_repeated_conversion_uses_cached_factor():
    term.convert_value(1, "mg/dL", "g/L")
    before = term._factor.cache_info().hits
    for v in range(1000):
        assert term.convert_value(v, "mg/dL", "g/L") == pytest.approx(v / 100)
    assert term._factor.cache_info().hits - before == 1000


def test_serious_criteria_table_maps_synonyms_to_flag_variables():
    table = term.load_table("serious_criteria")
    assert table.lookup("Hospitalisation")["variable"] == "AESHOSP"
    assert table.lookup("congenital anomaly or birth defect")["criterion"] == "CONGENITAL ANOMALY"
    assert table.lookup("AESDTH")["criterion"] == "DEATH"
    assert table.lookup("sprained ankle") is None
    assert [e["variable"] for e in table.entries] == ["AESDTH", "AESLIFE", "AESHOSP", "AESDISAB", "AESCONG", "AESMIE"]
