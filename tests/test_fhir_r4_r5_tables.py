"""The R4 <-> R5 tables are data (mappings/fhir/r4_r5.yaml) checked by their schema; the
logic in converters/formats/fhir/versions.py reads them.  Values written out by hand from the
R4 and R5 resource pages."""
from __future__ import annotations

import json
from importlib import resources

import jsonschema
import pytest
import yaml

from trialbridge.converters.core.issues import TrialbridgeError
from trialbridge.converters.formats.fhir import versions


def _table() -> dict:
    return yaml.safe_load(resources.files("trialbridge.mappings").joinpath("fhir", "r4_r5.yaml").read_text("utf-8"))


def _schema() -> dict:
    return json.loads(resources.files("trialbridge.schemas").joinpath("config", "r4_r5.schema.json").read_text("utf-8"))


def test_table_passes_its_schema_and_names_its_sources():
    jsonschema.Draft202012Validator.check_schema(_schema())
    table = _table()
    assert list(jsonschema.Draft202012Validator(_schema()).iter_errors(table)) == []
    urls = [s["url"] for s in table["source"]]
    assert "https://hl7.org/fhir/R4/" in urls and "https://hl7.org/fhir/R5/" in urls


def test_schema_catches_a_broken_table():
    table = _table()
    table["code_maps"]["encounter_status_to_r5"]["unmapped"] = "guess"
    del table["elements"]["R5"]
    messages = [e.message for e in jsonschema.Draft202012Validator(_schema()).iter_errors(table)]
    assert any("'R5' is a required property" in m for m in messages)
    assert len(messages) == 2


def test_broken_table_is_one_clear_error():
    broken = _table()
    broken["markers"]["Encounter"]["R4"] = []
    with pytest.raises(TrialbridgeError, match=r"^mappings/fhir/r4_r5.yaml: markers/Encounter/R4: \[\] should be non-empty"):
        versions.load_tables(yaml.safe_dump(broken))


def test_code_maps_declare_what_happens_to_unlisted_codes():
    # passthrough: codes both versions share stay as they are
    assert versions.ENCOUNTER_STATUS_TO_R5("finished") == "completed"
    assert versions.ENCOUNTER_STATUS_TO_R5("planned") == "planned"
    assert versions.ENCOUNTER_STATUS_TO_R4("discharged") == "finished"
    # fixed: an R4 study state without a publication-status counterpart is published "active"
    assert versions.STUDY_PUBLICATION("in-review") == "draft"
    assert versions.STUDY_PUBLICATION("active") == "active"
    assert versions.STUDY_PUBLICATION("completed") == "active"
    assert versions.STUDY_STATUS_FROM_PUBLICATION("retired") == "withdrawn"
    assert versions.STUDY_STATUS_FROM_PUBLICATION("unknown") == "active"
    # error: only sponsor and principalInvestigator have party roles
    assert versions.PARTY_ROLES("principalInvestigator") == "primary-investigator"
    with pytest.raises(KeyError):
        versions.PARTY_ROLES("site")


def test_tables_reach_the_conversion():
    r4 = {"resourceType": "AdverseEvent", "id": "a", "actuality": "actual", "subject": {"reference": "Patient/p"},
          "outcome": {"coding": [{"code": "recovering"}]}, "event": {"text": "Headache"}}
    out = versions.to_r5(r4)
    assert out["status"] == "in-progress" and out["code"] == {"text": "Headache"}
    assert versions.to_r5({**r4, "outcome": {"coding": [{"code": "notRecovered"}]}})["status"] == "unknown"
    assert versions.MARKERS["MedicationAdministration"][1] >= {"occurenceDateTime", "medication"}
