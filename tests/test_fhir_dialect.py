"""A site's FHIR dialect as data: the study configuration's fhir: section and the site files
of mappings/fhir/sites/, checked by schemas/config/fhir_dialect.schema.json."""
from __future__ import annotations

import pytest
import yaml

from trialbridge.converters.core.issues import TrialbridgeError
from trialbridge.mappings.fhir import dialect as dialects
from trialbridge.mappings.study import load_study


def _study_with(tmp_path, fhir):
    config = yaml.safe_load(load_study("NCT04387942").path.read_text("utf-8"))
    config["fhir"] = fhir
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config), "utf-8")
    return path


def test_study_section_is_checked_and_read(tmp_path):
    path = _study_with(tmp_path, {
        "identifiers": {"subject_id": ["https://h.example/sid/subject"]},
        "arms": [{"site": "Arm A", "arm": "HSP"}],
        "treatment": {"codes": [{"system": "http://www.whocc.no/atc", "code": "L03AC01"}], "names": ["Proleukin"]},
        "code_systems": {"http://loinc.org": ["urn:oid:2.16.840.1.113883.6.1"]},
        "codes": [{"system": "https://h.example/lab", "code": "IGG", "means": {"system": "http://loinc.org",
                                                                              "code": "2465-3"}}]})
    d = dialects.study_section(load_study(path))
    assert d.subject_id_systems == ("https://h.example/sid/subject",)
    assert d.arm_code("  arm a ") == "HSP" and d.arm_code("Arm B") is None
    assert d.treatment_codes == {("http://www.whocc.no/atc", "L03AC01")} and d.treatment_names == {"proleukin"}
    cc = d.normalise_codings({"coding": [{"system": "urn:oid:2.16.840.1.113883.6.1", "code": "718-7"},
                                         {"system": "https://h.example/lab", "code": "IGG"}], "text": "x"})
    assert cc["coding"] == [{"system": "http://loinc.org", "code": "718-7"},
                            {"system": "https://h.example/lab", "code": "IGG"},
                            {"system": "http://loinc.org", "code": "2465-3"}]


def test_study_section_with_an_unknown_key_is_a_usage_error(tmp_path):
    path = _study_with(tmp_path, {"identifers": {}})
    with pytest.raises(TrialbridgeError, match="study configuration invalid at fhir"):
        load_study(path)


def test_site_file_needs_its_site_and_study(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({"name": "H", "study_id": "NCT04387942", "identifiers": {"mrn": ["urn:m"]}}))
    with pytest.raises(TrialbridgeError, match="'site_id' is a required property"):
        dialects.load_site_file(path)


def test_the_site_file_whose_systems_the_input_uses_is_chosen(tmp_path):
    study = load_study(_study_with(tmp_path, {"treatment": {"names": ["rhIL-2"]},
                                              "identifiers": {"subject_id": ["urn:study-wide"]}}))
    files = []
    for n in (1, 2):
        path = tmp_path / f"site{n}.yaml"
        path.write_text(yaml.safe_dump({"name": f"Hospital {n}", "study_id": "NCT04387942", "site_id": "01",
                                        "identifiers": {"mrn": [f"https://h{n}.example/mrn"]},
                                        "treatment": {"names": [f"local name {n}"]}}))
        files.append(dialects.load_site_file(path)[1])
    got = dialects.choose(study, {"https://h2.example/mrn", "http://other"}, files)
    assert got.name == "Hospital 2" and got.site_id == "01"
    assert got.subject_id_systems == ("urn:study-wide",)  # the site file does not say: the study's
    assert got.treatment_names == {"rhil-2", "local name 2"}
    assert dialects.choose(study, {"http://other"}, files).name == "study configuration"
    with pytest.raises(TrialbridgeError, match="several FHIR site dialects.*Hospital 1.*Hospital 2"):
        dialects.choose(study, {"https://h1.example/mrn", "https://h2.example/mrn"}, files)
