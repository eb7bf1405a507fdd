#!/usr/bin/env python
"""Build schemas/sdtm/<DOMAIN>.json: one JSON Schema (draft 2020-12) per SDTM dataset row.

Source: the CDISC Library export of SDTMIG v3.3 as ODM (cdisc-org/library-xml @ f0ca31eae065,
``sdtmig-3-3_to_odm.xml``) for names, labels, order, role, Core, data type and codelist
references; the NCI EVS SDTM CT release 2025-03-28 (``SDTM Terminology.txt``) to turn each
codelist C-code into its CDISC submission short name.  CP (Cell Phenotype Findings) is not
in SDTMIG 3.3; it is written here by hand from SDTMIG 3.4 (see ``CP_VARIABLES``).

Usage::

    python scripts/build_sdtm_schemas.py [--reference /path/to/shared/reference] [--out schemas/sdtm]

The default reference folder is ``<repo>/../shared/reference``.  Output is deterministic
(sorted keys where order carries no meaning, fixed indentation), so a rebuild without a
source change leaves ``git diff`` empty.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from lxml import etree

REPO = Path(__file__).resolve().parents[1]


from trialbridge.converters.core.files import atomic_open  # noqa: E402

NS = {
    "odm": "http://www.cdisc.org/ns/odm/v1.3",
    "def": "http://www.cdisc.org/ns/def/v2.1",
    "mdr": "http://www.cdisc.org/ns/library-xml/v1.0",
}
MDR = "{%s}" % NS["mdr"]
DEF = "{%s}" % NS["def"]

SOURCE_COMMENT = (
    "Derived from CDISC SDTMIG v3.3 metadata (CDISC Library export, cdisc-org/library-xml @ "
    "f0ca31eae065) by scripts/build_sdtm_schemas.py"
)
CP_COMMENT = (
    "CP is not part of SDTMIG v3.3: written by hand in scripts/build_sdtm_schemas.py from the "
    "SDTMIG v3.4 CP (Cell Phenotype Findings) specification; generic Findings variables copy "
    "their SDTMIG v3.3 LB metadata (LB prefix replaced by CP). Codelists resolved against NCI "
    "EVS SDTM CT 2025-03-28."
)

DOMAINS = ["DM", "EX", "LB", "VS", "AE", "DS", "SV", "SE", "TA", "TE", "TV", "TI", "TS", "SUPPQUAL"]

KEYS = {
    "DM": ["STUDYID", "USUBJID"],
    "LB": ["STUDYID", "USUBJID", "LBTESTCD", "LBSPEC", "VISITNUM", "LBDTC"],
    "CP": ["STUDYID", "USUBJID", "CPTESTCD", "CPSPEC", "VISITNUM", "CPDTC"],
    "VS": ["STUDYID", "USUBJID", "VSTESTCD", "VISITNUM", "VSDTC"],
    "AE": ["STUDYID", "USUBJID", "AEDECOD", "AESTDTC"],
    "EX": ["STUDYID", "USUBJID", "EXTRT", "EXSTDTC"],
    "DS": ["STUDYID", "USUBJID", "DSDECOD", "DSSTDTC"],
    "SV": ["STUDYID", "USUBJID", "VISITNUM"],
    "SE": ["STUDYID", "USUBJID", "ETCD", "SESTDTC"],
    "TA": ["STUDYID", "ARMCD", "TAETORD"],
    "TE": ["STUDYID", "ETCD"],
    "TV": ["STUDYID", "VISITNUM", "ARMCD"],
    "TI": ["STUDYID", "IETESTCD", "TIVERS"],
    "TS": ["STUDYID", "TSPARMCD", "TSSEQ"],
    "SUPPQUAL": ["STUDYID", "RDOMAIN", "USUBJID", "IDVAR", "IDVARVAL", "QNAM"],
}

# Variables whose codelist depends on another variable's value (SDTMIG 3.3 DS assumptions:
# DSDECOD takes NCOMPLT for disposition events, PROTMLST for protocol milestones and
# OTHEVENT for other events, by DSCAT). The CDISC Library export names PROTMLST only.
CODELIST_BY = {
    "DS": {"DSDECOD": ("DSCAT", {"DISPOSITION EVENT": "NCOMPLT", "PROTOCOL MILESTONE": "PROTMLST",
                                 "OTHER EVENT": "OTHEVENT"})},
}

CLASS_NAMES = {
    "SPECIAL PURPOSE": "Special-Purpose",
    "FINDINGS": "Findings",
    "FINDINGS ABOUT": "Findings About",
    "EVENTS": "Events",
    "INTERVENTIONS": "Interventions",
    "TRIAL DESIGN": "Trial Design",
    "RELATIONSHIP": "Relationship",
    "STUDY REFERENCE": "Study Reference",
}

# ISO 8601 date or date/time, complete or right-truncated (SDTMIG 3.3 section 4.4.2);
# the empty string is the missing value of a Char variable.
ISO8601_DTC = (
    r"^$|^[0-9]{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12][0-9]|3[01])"
    r"(T([01][0-9]|2[0-3])(:[0-5][0-9](:[0-5][0-9](\.[0-9]+)?)?)?"
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?)?)?)?$"
)

# ISO 8601 duration (--DUR, --ELTM, TEDUR ...); --ELTM may be negative (before the reference).
ISO8601_DURATION = (
    r"^$|^-?P(?=[0-9T])([0-9]+(\.[0-9]+)?Y)?([0-9]+(\.[0-9]+)?M)?([0-9]+(\.[0-9]+)?W)?"
    r"([0-9]+(\.[0-9]+)?D)?(T(?=[0-9])([0-9]+(\.[0-9]+)?H)?([0-9]+(\.[0-9]+)?M)?"
    r"([0-9]+(\.[0-9]+)?S)?)?$"
)

LB_34_NOTES = (
    "SDTMIG v3.4 makes LBLOBXFL (Last Observation Before Exposure Flag) the expected baseline-type "
    "flag; LBBLFL stays Permissible. Both are kept here exactly as in SDTMIG v3.3 (LBLOBXFL Exp, "
    "LBBLFL Perm). v3.4 also adds --CLSIG (Clinically Significant) to Findings (not included) and "
    "uses LBTSTDTL/LBRESSCL/LBRESTYP/LBCOLSRT result-typing variables in some lab examples."
)

# ---------------------------------------------------------------------------------------------
# CP (SDTMIG v3.4, Cell Phenotype Findings).  Variable list and order: SDTMIG v3.4 CP domain
# specification (CDISC wiki, SDTMIG v3.4 "CP - Cell Phenotype Findings" specification table,
# https://wiki-test.cdisc.org/x/RdkXCw, and a CDISC Library-derived SDTMIG 3.4 variable listing);
# codelist links for CPCAT (C181171), CPCELSTA (C181172), CPTESTCD (C181173), CPTEST (C181174),
# CPTSTCND (C181175), CPRESSCL (C177910), CPRESTYP (C179588), CPCOLSRT (C177908) from the same
# CDISC Library-derived listing and checked against NCI EVS SDTM CT 2025-03-28.
# Entries with a label are CP-specific (hand-written); entries with None copy the SDTMIG v3.3
# LB variable of the same suffix (label, type, role, Core, codelist).
# tuple: (name, label, type, core, role, codelist C-code or None)
CP_VARIABLES: list[tuple] = [
    ("STUDYID", None), ("DOMAIN", None), ("USUBJID", None), ("CPSEQ", None),
    ("CPGRPID", None), ("CPREFID", None), ("CPSPID", None),
    ("CPLNKID", "Link ID", "Char", "Perm", "Identifier", None),
    ("CPLNKGRP", "Link Group ID", "Char", "Perm", "Identifier", None),
    ("CPTESTCD", "Short Name of Measurement, Test or Exam", "Char", "Req", "Topic", "C181173"),
    ("CPTEST", "Name of Measurement, Test or Examination", "Char", "Req", "Synonym Qualifier", "C181174"),
    ("CPSBMRKS", "Sublineage Marker String", "Char", "Perm", "Variable Qualifier", None),
    ("CPCELSTA", "Cell State", "Char", "Perm", "Variable Qualifier", "C181172"),
    ("CPCSMRKS", "Cell State Marker String", "Char", "Perm", "Variable Qualifier", None),
    ("CPTSTCND", "Test Condition", "Char", "Perm", "Variable Qualifier", "C181175"),
    ("CPCNDAGT", "Test Condition Agent", "Char", "Perm", "Variable Qualifier", None),
    ("CPBDAGNT", "Binding Agent", "Char", "Perm", "Variable Qualifier", None),
    ("CPABCLID", "Antibody Clone Identifier", "Char", "Perm", "Variable Qualifier", None),
    ("CPMRKSTR", "Marker String", "Char", "Exp", "Record Qualifier", None),
    ("CPGATE", "Gate Name", "Char", "Perm", "Record Qualifier", None),
    ("CPGATDEF", "Gate Definition", "Char", "Perm", "Record Qualifier", None),
    ("CPSPTSTD", "Sponsor Test Description", "Char", "Perm", "Record Qualifier", None),
    ("CPCAT", "Category for Cell Phenotyping", "Char", "Perm", "Grouping Qualifier", "C181171"),
    ("CPSCAT", None),
    ("CPTSTPNL", "Test Panel", "Char", "Perm", "Record Qualifier", None),
    ("CPORRES", None), ("CPORRESU", None),
    ("CPRESSCL", "Result Scale", "Char", "Perm", "Variable Qualifier", "C177910"),
    ("CPRESTYP", "Result Type", "Char", "Perm", "Variable Qualifier", "C179588"),
    ("CPCOLSRT", "Collected Summary Result Type", "Char", "Perm", "Variable Qualifier", "C177908"),
    ("CPORNRLO", None), ("CPORNRHI", None), ("CPSTRESC", None), ("CPSTRESN", None),
    ("CPSTRESU", None), ("CPSTNRLO", None), ("CPSTNRHI", None), ("CPNRIND", None),
    ("CPSTAT", None), ("CPREASND", None), ("CPNAM", None), ("CPLOINC", None),
    ("CPSPEC", None), ("CPSPCCND", None), ("CPMETHOD", None),
    ("CPANMETH", "Analysis Method", "Char", "Perm", "Record Qualifier", None),
    ("CPLOBXFL", None), ("CPBLFL", None), ("CPDRVFL", None),
    ("CPCLSIG", "Clinically Significant, Collected", "Char", "Perm", "Record Qualifier", "C66742"),
    ("VISITNUM", None), ("VISIT", None), ("VISITDY", None), ("TAETORD", None), ("EPOCH", None),
    ("CPDTC", None), ("CPDY", None), ("CPTPT", None), ("CPTPTNUM", None), ("CPELTM", None),
    ("CPTPTREF", None), ("CPRFTDTC", None),
]
CP_NOTES = (
    "SDTMIG v3.4 CP uses CPLOBXFL (Last Observation Before Exposure Flag) as the expected "
    "baseline-type flag; CPBLFL is kept as Permissible. CPSBMRKS, CPCELSTA and CPCSMRKS together "
    "with CPTEST define the measured cell population. Core values of the CP-only variables follow "
    "the v3.4 specification where seen and are otherwise Perm; verify against the CDISC Library "
    "before regulatory use."
)


def load_ct(path: Path) -> dict[str, dict]:
    """codelist C-code -> {short, name, extensible} from the NCI EVS tab-separated file."""
    out: dict[str, dict] = {}
    with open(path, encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if not row["Codelist Code"]:
                out[row["Code"]] = {
                    "short": row["CDISC Submission Value"],
                    "name": row["Codelist Name"],
                    "extensible": row["Codelist Extensible (Yes/No)"],
                }
    return out


def text_of(el) -> str:
    """A label as SDTMIG prints it: blanks collapsed, and no trailing period (the 3.3 export
    has one typo, "Lab Test or Examination Short Name.", that no SDTMIG table has)."""
    t = el.find("odm:Description/odm:TranslatedText", NS)
    return " ".join((t.text or "").split()).rstrip(".") if t is not None else ""


def property_for(name: str, label: str, typ: str, core: str, role: str, order: int,
                 codelist_code: str | None, ct: dict, enum: list[str] | None = None,
                 iso8601: bool = False) -> dict:
    prop: dict = {"title": label, "x-type": typ, "x-core": core, "x-role": role, "x-order": order}
    if codelist_code:
        if codelist_code not in ct:
            raise SystemExit(f"{name}: codelist {codelist_code} not in SDTM CT")
        prop["x-codelist"] = ct[codelist_code]["short"]
        prop["x-codelist-code"] = codelist_code
    if typ == "Num":
        prop["type"] = ["number", "null"]
    else:
        prop["type"] = "string"
        if core == "Req":
            prop["minLength"] = 1
        prop["maxLength"] = 200
        if enum:
            prop["enum"] = enum
        if name.endswith("DTC"):
            prop["pattern"] = ISO8601_DTC
            prop["x-format"] = "ISO 8601 date/time"
        elif iso8601:
            prop["pattern"] = ISO8601_DURATION
            prop["x-format"] = "ISO 8601 duration"
    return prop


def schema_for(domain: str, label: str, class_: str, structure: str, props: dict,
               comment: str = SOURCE_COMMENT) -> dict:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"trialbridge/sdtm/{domain}.json",
        "$comment": comment,
        "title": label,
        "x-domain": domain,
        "x-class": class_,
        "x-structure": structure,
        "x-keys": KEYS[domain],
        "x-sdtmig": "3.3" if domain != "CP" else "3.4",
        "type": "object",
        "additionalProperties": False,
        "required": [n for n, p in props.items() if p["x-core"] == "Req"],
        "properties": props,
    }


def build(reference: Path) -> dict[str, dict]:
    ct = load_ct(reference / "ct" / "nci-evs-sdtm-ct" / "SDTM Terminology.txt")
    tree = etree.parse(str(reference / "sdtm" / "sdtmig-metadata" / "sdtmig-3-3_to_odm.xml"))
    mdv = tree.find(".//odm:MetaDataVersion", NS)
    items = {i.get("OID"): i for i in mdv.findall("odm:ItemDef", NS)}
    codelists = {c.get("OID"): c for c in mdv.findall("odm:CodeList", NS)}
    groups = {g.get("Name"): g for g in mdv.findall("odm:ItemGroupDef", NS)}

    def variable(ref) -> tuple[str, dict]:
        item = items[ref.get("ItemOID")]
        name = item.get("Name")
        code, enum = None, None
        clref = item.find("odm:CodeListRef", NS)
        if clref is not None:
            cl = codelists[clref.get("CodeListOID")]
            alias = cl.find("odm:Alias[@Context='nci:ExtCodeID']", NS)
            code = alias.get("Name")
            enum = [e.get("CodedValue") for e in cl.findall("odm:EnumeratedItem", NS)] or None
        return name, property_for(
            name, text_of(item), item.get(MDR + "SubmissionDataType"), item.get(MDR + "Core"),
            ref.get("Role") or "", int(ref.get("OrderNumber")), code, ct, enum,
            item.get(MDR + "DescribedValueDomain") == "ISO 8601",
        )

    out: dict[str, dict] = {}
    for domain in DOMAINS:
        g = groups[domain]
        props = dict(variable(ref) for ref in sorted(
            g.findall("odm:ItemRef", NS), key=lambda r: int(r.get("OrderNumber"))))
        cls = CLASS_NAMES[g.find("def:Class", NS).get("Name")]
        schema = schema_for(domain, text_of(g), cls, g.get(DEF + "Structure"), props)
        if domain == "LB":
            schema["x-sdtmig-3.4-notes"] = LB_34_NOTES
        for var, (governing, by_value) in CODELIST_BY.get(domain, {}).items():
            schema["properties"][var]["x-codelist-by"] = {"variable": governing, "codelists": by_value}
        out[domain] = schema

    # CP by hand (SDTMIG v3.4), generic variables from LB.
    lb = out["LB"]["properties"]
    props = {}
    for order, entry in enumerate(CP_VARIABLES, start=1):
        name = entry[0]
        if entry[1] is None:
            src = name if name in lb else "LB" + name[2:]
            p = json.loads(json.dumps(lb[src]))
            p["title"] = p["title"].replace("LB", "CP")
            p["x-order"] = order
            if name == "DOMAIN":
                p["enum"] = ["CP"]
            if name == "CPSCAT":
                p["title"] = "Subcategory for Cell Phenotyping"
            if name == "CPBLFL":
                p["x-core"] = "Perm"
            if name == "CPSTRESC":  # LBSTRESC codelist is lab-specific
                p.pop("x-codelist", None)
                p.pop("x-codelist-code", None)
            props[name] = p
        else:
            _, label, typ, core, role, code = entry
            props[name] = property_for(name, label, typ, core, role, order, code, ct)
    cp = schema_for("CP", "Cell Phenotype Findings", "Findings",
                    "One record per test per specimen per timepoint per visit per subject",
                    props, CP_COMMENT)
    cp["x-sdtmig-3.4-notes"] = CP_NOTES
    out["CP"] = cp
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", type=Path, default=REPO.parent / "shared" / "reference")
    ap.add_argument("--out", type=Path, default=REPO / "schemas" / "sdtm")
    args = ap.parse_args(argv)
    for domain, schema in build(args.reference).items():
        with atomic_open(args.out / f"{domain}.json") as fh:
            fh.write(json.dumps(schema, indent=2, ensure_ascii=False) + "\n")
        print(f"{domain}: {len(schema['properties'])} variables")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
