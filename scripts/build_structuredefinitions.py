"""Build schemas/fhir/structuredefinitions/<name>.json, one FHIR R4 StructureDefinition per
extension listed in mappings/fhir/extensions.yaml.

    python scripts/build_structuredefinitions.py [--check]

Each definition is an R4 extension definition as the R4 specification writes its own
(profiling.html#extensions, e.g. patient-birthTime, patient-nationality): kind
``complex-type``, type ``Extension``, baseDefinition ``.../StructureDefinition/Extension``,
derivation ``constraint``, ``context`` of type ``element``, and both a ``differential`` (what
the extension changes) and a ``snapshot`` (the full element list: validators such as Medplum's
need it).  A simple extension fixes ``Extension.url`` and narrows ``Extension.value[x]`` to the
one type the table declares, with ``Extension.extension`` max 0; a complex one (``parts``)
slices ``Extension.extension`` by url (closed: no other parts), each slice with its own
``url`` and ``value[x]``, and has no ``value[x]``.  The base elements (short, definition,
ele-1 / ext-1 invariants) are those of the R4 (4.0.1) Extension StructureDefinition.

Deterministic (no clock: the date is the table's): ``--check`` exits 1 when the committed
files differ from a fresh build or a file is missing or left over.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from trialbridge.mappings.fhir import extension_definitions  # noqa: E402

import yaml  # noqa: E402

TABLE = ROOT / "mappings" / "fhir" / "extensions.yaml"
TARGET = ROOT / "schemas" / "fhir" / "structuredefinitions"
FHIR = "http://hl7.org/fhir/StructureDefinition/"
FHIRPATH_STRING = "http://hl7.org/fhirpath/System.String"
FHIR_TYPE_EXT = FHIR + "structuredefinition-fhir-type"
SDTM_MAPPING = {"identity": "sdtm", "uri": "https://www.cdisc.org/standards/foundational/sdtmig", "name": "CDISC SDTM"}

# R4 (4.0.1) Element / Extension invariants, as in the specification's Extension definition
ELE_1 = {"key": "ele-1", "severity": "error", "human": "All FHIR elements must have a @value or children",
         "expression": "hasValue() or (children().count() > id.count())", "xpath": "@value|f:*|h:div",
         "source": FHIR + "Element"}
EXT_1 = {"key": "ext-1", "severity": "error", "human": "Must have either extensions or value[x], not both",
         "expression": "extension.exists() != value.exists()",
         "xpath": "exists(f:extension)!=exists(f:*[starts-with(local-name(.), \"value\")])",
         "source": FHIR + "Extension"}


def _id_element(path: str, eid: str) -> dict:
    return {"id": eid, "path": path, "representation": ["xmlAttr"],
            "short": "Unique id for inter-element referencing",
            "definition": "Unique id for the element within a resource (for internal references). This may be any "
                          "string value that does not contain spaces.",
            "min": 0, "max": "1", "base": {"path": "Element.id", "min": 0, "max": "1"},
            "type": [{"extension": [{"url": FHIR_TYPE_EXT, "valueUrl": "string"}], "code": FHIRPATH_STRING}],
            "isModifier": False, "isSummary": False}


def _extension_element(path: str, eid: str, max_: str, short: str = "Extension",
                       definition: str = "An Extension", closed: bool = False) -> dict:
    return {"id": eid, "path": path,
            "slicing": {"discriminator": [{"type": "value", "path": "url"}],
                        "description": "Extensions are always sliced by (at least) url",
                        "rules": "closed" if closed else "open"},
            "short": short, "definition": definition, "min": 0, "max": max_,
            "base": {"path": "Element.extension", "min": 0, "max": "*"}, "type": [{"code": "Extension"}],
            "constraint": [ELE_1, EXT_1], "isModifier": False, "isSummary": False}


def _url_element(path: str, eid: str, fixed: str) -> dict:
    return {"id": eid, "path": path, "representation": ["xmlAttr"],
            "short": "identifies the meaning of the extension",
            "definition": "Source of the definition for the extension code - a logical name or a URL.",
            "comment": "The definition may point directly to a computable or human-readable definition of the "
                       "extensibility codes, or it may be a logical URI as declared in some other specification. The "
                       "definition SHALL be a URI for the Structure Definition defining the extension.",
            "min": 1, "max": "1", "base": {"path": "Extension.url", "min": 1, "max": "1"},
            "type": [{"extension": [{"url": FHIR_TYPE_EXT, "valueUrl": "uri"}], "code": FHIRPATH_STRING}],
            "fixedUri": fixed, "isModifier": False, "isSummary": False}


def _value_element(path: str, eid: str, spec: dict | None) -> dict:
    element = {"id": eid, "path": path, "short": "Value of extension",
               "definition": "Value of extension - must be one of a constrained set of the data types (see "
                             "[Extensibility](http://hl7.org/fhir/extensibility.html) for a list).",
               "min": 1 if spec else 0, "max": "1" if spec else "0",
               "base": {"path": "Extension.value[x]", "min": 0, "max": "1"}}
    if spec:
        element["short"] = spec["title"]
        element["definition"] = _sentence(spec["description"])
        element["type"] = [{"code": spec["value"]}]
        if spec["value"] == "Quantity":
            element["short"] += f" ({_unit_text(spec)})"
    element.update({"constraint": [ELE_1], "isModifier": False, "isSummary": False})
    return element


def _unit_text(spec: dict) -> str:
    return f"UCUM {spec['unit']}" if "unit" in spec else f"UCUM <{spec['unit_field']}>{spec['unit_suffix']}"


def _sentence(text: str) -> str:
    return " ".join(text.split())


def _root(name: str, spec: dict) -> dict:
    root = {"id": "Extension", "path": "Extension", "short": spec["title"], "definition": _sentence(spec["description"]),
            "min": 0, "max": spec.get("max", "1"), "base": {"path": "Extension", "min": 0, "max": "*"},
            "condition": ["ele-1"], "constraint": [ELE_1, EXT_1], "isModifier": False}
    if spec.get("sdtm"):
        root["mapping"] = [{"identity": "sdtm", "map": spec["sdtm"]}]
    return root


def _part_elements(part: dict) -> list[dict]:
    name = part["name"]
    eid = f"Extension.extension:{name}"
    slice_el = {"id": eid, "path": "Extension.extension", "sliceName": name, "short": part["title"],
                "definition": _sentence(part["description"]), "min": part.get("min", 0), "max": "1",
                "base": {"path": "Element.extension", "min": 0, "max": "*"}, "type": [{"code": "Extension"}],
                "constraint": [ELE_1, EXT_1], "isModifier": False, "isSummary": False}
    if part.get("sdtm"):
        slice_el["mapping"] = [{"identity": "sdtm", "map": part["sdtm"]}]
    return [slice_el,
            _id_element("Extension.extension.id", f"{eid}.id"),
            _extension_element("Extension.extension.extension", f"{eid}.extension", "0"),
            _url_element("Extension.extension.url", f"{eid}.url", name),
            _value_element("Extension.extension.value[x]", f"{eid}.value[x]", part)]


def _snapshot(url: str, spec: dict) -> list[dict]:
    elements = [_root(spec["name"], spec), _id_element("Extension.id", "Extension.id")]
    if "parts" in spec:
        elements.append(_extension_element("Extension.extension", "Extension.extension", "*", closed=True,
                                           short="Parts of the extension",
                                           definition="The parts of this complex extension, one sub-extension each."))
        for part in spec["parts"]:
            elements.extend(_part_elements(part))
        elements.append(_url_element("Extension.url", "Extension.url", url))
        elements.append(_value_element("Extension.value[x]", "Extension.value[x]", None))
    else:
        elements.append(_extension_element("Extension.extension", "Extension.extension", "0"))
        elements.append(_url_element("Extension.url", "Extension.url", url))
        elements.append(_value_element("Extension.value[x]", "Extension.value[x]", spec))
    return elements


def _differential(url: str, spec: dict) -> list[dict]:
    root = {"id": "Extension", "path": "Extension", "short": spec["title"], "definition": _sentence(spec["description"]),
            "min": 0, "max": spec.get("max", "1")}
    out = [root]
    if "parts" in spec:
        out.append({"id": "Extension.extension", "path": "Extension.extension",
                    "slicing": {"discriminator": [{"type": "value", "path": "url"}], "rules": "closed"}, "min": 0})
        for part in spec["parts"]:
            eid = f"Extension.extension:{part['name']}"
            out += [{"id": eid, "path": "Extension.extension", "sliceName": part["name"], "short": part["title"],
                     "definition": _sentence(part["description"]), "min": part.get("min", 0), "max": "1"},
                    {"id": f"{eid}.extension", "path": "Extension.extension.extension", "max": "0"},
                    {"id": f"{eid}.url", "path": "Extension.extension.url", "fixedUri": part["name"]},
                    {"id": f"{eid}.value[x]", "path": "Extension.extension.value[x]", "min": 1,
                     "type": [{"code": part["value"]}]}]
        out += [{"id": "Extension.url", "path": "Extension.url", "fixedUri": url},
                {"id": "Extension.value[x]", "path": "Extension.value[x]", "max": "0"}]
    else:
        out += [{"id": "Extension.extension", "path": "Extension.extension", "max": "0"},
                {"id": "Extension.url", "path": "Extension.url", "fixedUri": url},
                {"id": "Extension.value[x]", "path": "Extension.value[x]", "min": 1, "type": [{"code": spec["value"]}]}]
    return out


def _computable_name(name: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in re.split(r"[^A-Za-z0-9]+", name) if p)


def structure_definition(table: dict, spec: dict) -> dict:
    url = table["base"] + spec["name"]
    sd = {"resourceType": "StructureDefinition", "id": spec["name"], "url": url, "version": table["version"],
          "name": _computable_name(spec["name"]), "title": spec["title"], "status": "active",
          "experimental": False, "date": table["date"], "publisher": table["publisher"],
          "description": _sentence(spec["description"]), "fhirVersion": "4.0.1"}
    if spec.get("sdtm") or any(p.get("sdtm") for p in spec.get("parts", [])):
        sd["mapping"] = [SDTM_MAPPING]
    sd.update({"kind": "complex-type", "abstract": False,
               "context": [{"type": "element", "expression": c} for c in spec["context"]],
               "type": "Extension", "baseDefinition": FHIR + "Extension", "derivation": "constraint",
               "snapshot": {"element": _snapshot(url, spec)},
               "differential": {"element": _differential(url, spec)}})
    return sd


def build() -> dict[str, str]:
    """File name -> JSON text of every definition."""
    extension_definitions()  # checks the table against its schema
    table = yaml.safe_load(TABLE.read_text("utf-8"))
    return {f"{spec['name']}.json": json.dumps(structure_definition(table, spec), indent=2, ensure_ascii=False) + "\n"
            for spec in table["extensions"]}


def main(argv: list[str]) -> int:
    files = build()
    if "--check" in argv:
        have = {p.name: p.read_text("utf-8") for p in TARGET.glob("*.json")} if TARGET.exists() else {}
        stale = sorted(n for n in set(files) | set(have) if files.get(n) != have.get(n))
        print("up to date" if not stale else f"differ from a fresh build: {', '.join(stale)}")
        return 1 if stale else 0
    TARGET.mkdir(parents=True, exist_ok=True)
    for old in TARGET.glob("*.json"):
        if old.name not in files:
            old.unlink()
    for name, text in files.items():
        (TARGET / name).write_text(text, "utf-8")
    print(f"wrote {len(files)} StructureDefinitions to {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
