"""Every extension trialbridge writes is defined by an R4 StructureDefinition shipped in
schemas/fhir/structuredefinitions/, generated from mappings/fhir/extensions.yaml.

Medplum's validator checks the written resources against them (tests/test_fhir_medplum.py);
here: the files are up to date, valid R4 StructureDefinition resources (official R4 JSON
schema), extension definitions of the right shape, and the sample's output uses exactly them.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from trialbridge.converters.core.issues import IssueLog
from trialbridge.converters.formats.fhir import io as fhir_io
from trialbridge.converters.formats.fhir import validate as fhir_validate
from trialbridge.mappings.fhir import EXT, NCIT, UCUM, assemble, extension_definitions
from tests.conftest import ROOT

FOLDER = ROOT / "schemas" / "fhir" / "structuredefinitions"


def _definitions() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text("utf-8")) for p in sorted(FOLDER.glob("*.json"))}


def test_files_are_up_to_date():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_structuredefinitions.py"), "--check"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(_definitions()) == sorted(extension_definitions()) and len(_definitions()) == 24


@pytest.mark.parametrize("name", sorted(p.stem for p in FOLDER.glob("*.json")))
def test_each_is_a_valid_r4_extension_definition(name):
    sd = _definitions()[name]
    assert fhir_validate.schema_errors(sd) == []
    assert sd["url"] == EXT + name and sd["url"].startswith("https://") and sd["id"] == name
    assert (sd["kind"], sd["type"], sd["derivation"], sd["fhirVersion"]) == (
        "complex-type", "Extension", "constraint", "4.0.1")
    assert sd["baseDefinition"] == "http://hl7.org/fhir/StructureDefinition/Extension"
    assert sd["context"] and all(c["type"] == "element" for c in sd["context"])
    for view in ("snapshot", "differential"):
        elements = sd[view]["element"]
        assert elements[0]["path"] == "Extension"
        url = next(e for e in elements if e["id"] == "Extension.url")
        assert url["fixedUri"] == sd["url"]
    value = next(e for e in sd["snapshot"]["element"] if e["id"] == "Extension.value[x]")
    spec = extension_definitions()[name]
    if "parts" in spec:
        assert value["max"] == "0"
        slices = [e["sliceName"] for e in sd["snapshot"]["element"] if e.get("sliceName")]
        assert slices == [p["name"] for p in spec["parts"]]
    else:
        assert value["min"] == 1 and [t["code"] for t in value["type"]] == [spec["value"]]


def test_sample_output_uses_only_defined_extensions_with_their_value_types(sample_records, study):
    records, _ = sample_records
    log = IssueLog()
    resources = [fhir_io.loads(fhir_io.dumps(r)) for r in assemble.records_to_fhir(records, study, log)]
    text = "\n".join(fhir_io.dumps(r) for r in resources)
    assert "urn:trialbridge" not in text and "cdisc.org/ct" not in text
    defs = _definitions()
    used: dict[str, set[str]] = {}

    def walk(node):
        if isinstance(node, dict):
            for ext in node.get("extension", []) if isinstance(node.get("extension"), list) else []:
                if ext.get("url", "").startswith("https://"):
                    used.setdefault(ext["url"], set()).update(k for k in ext if k.startswith("value"))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(resources)
    assert set(used) <= {sd["url"] for sd in defs.values()}
    for url, keys in used.items():
        spec = extension_definitions()[url.removeprefix(EXT)]
        assert keys == ({f"value{spec['value'][0].upper()}{spec['value'][1:]}"} if "value" in spec else set()), url
    # numbers are Quantities with UCUM units, CDISC-coded values carry their NCIt C-code
    dose = next(r for r in resources if r["resourceType"] == "MedicationAdministration")
    exts = {e["url"].removeprefix(EXT): e for e in dose["extension"]}
    assert exts["bsa-m2"]["valueQuantity"] == {"value": exts["bsa-m2"]["valueQuantity"]["value"], "unit": "m2",
                                               "system": UCUM, "code": "m2"}
    assert exts["planned-dose-per-bsa"]["valueQuantity"]["code"] == "[iU]/m2"
    assert exts["frequency"]["valueCodeableConcept"]["coding"][0]["system"] == NCIT
