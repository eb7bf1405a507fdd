"""Build the SDTMIG variable tables that `validate --sdtmig` checks against:
schemas/sdtm/ig/sdtmig-3.2.json, -3.3.json, -3.4.json — per dataset its label and class, and
per variable its name, label, type (Char/Num), core (Req/Exp/Perm) and order.

Sources (cited in each file):
- 3.2 and 3.3: the CDISC Library exports as ODM, cdisc-org/library-xml @ f0ca31eae065
  (`../shared/reference/sdtm/sdtmig-metadata/sdtmig-3-{2,3}_to_odm.xml`), MIT.
- 3.4: the CDISC Library SDTMIG v3.4 variables export as CSV ("Version", "Variable Order",
  "Class", "Dataset Name", "Variable Name", "Variable Label", "Type", …, "Core"), as found in
  rubentalstra/Trial-Submission-Studio @ fc2d393ba8be, `standards/sdtmig/v3_4/Variables.csv`
  (the CDISC export unchanged; no copy is kept here but these facts).

    python scripts/build_ig_metadata.py --sdtmig-3-4 PATH/Variables.csv --sdtmig-3-4-datasets PATH/Datasets.csv
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from lxml import etree

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "reference" / "sdtm" / "sdtmig-metadata"
OUT = ROOT / "schemas" / "sdtm" / "ig"
NS = {"odm": "http://www.cdisc.org/ns/odm/v1.3", "def": "http://www.cdisc.org/ns/def/v2.1"}
MDR = "{http://www.cdisc.org/ns/library-xml/v1.0}"
ODM_SOURCE = ("CDISC Library export of SDTMIG v{v} as ODM, cdisc-org/library-xml @ f0ca31eae065, "
              "examples/sdtmig-{d}_to_odm.xml (MIT)")
CSV_SOURCE = ("CDISC Library export of SDTMIG v3.4 variables as CSV, as found in rubentalstra/Trial-Submission-Studio "
              "@ fc2d393ba8be, standards/sdtmig/v3_4/Variables.csv")


def _text(el) -> str:
    """A label as SDTMIG prints it: blanks collapsed, no trailing period (the 3.3 export's
    "Lab Test or Examination Short Name." is a typo of the export)."""
    t = el.find("odm:Description/odm:TranslatedText", NS)
    return " ".join((t.text or "").split()).rstrip(".") if t is not None else ""


def from_odm(path: Path) -> dict[str, dict]:
    mdv = etree.parse(str(path)).find(".//odm:MetaDataVersion", NS)
    items = {i.get("OID"): i for i in mdv.findall("odm:ItemDef", NS)}
    out = {}
    for g in mdv.findall("odm:ItemGroupDef", NS):
        cls = g.find("def:Class", NS)
        variables = []
        for ref in sorted(g.findall("odm:ItemRef", NS), key=lambda r: int(r.get("OrderNumber"))):
            item = items[ref.get("ItemOID")]
            variables.append([item.get("Name"), _text(item), item.get(MDR + "SubmissionDataType") or "Char",
                              item.get(MDR + "Core") or "Perm"])
        out[g.get("Name")] = {"label": _text(g), "class": cls.get("Name") if cls is not None else "",
                              "variables": variables}
    return out


def from_csv(path: Path) -> dict[str, dict]:
    out: dict[str, dict] = {}
    with open(path, encoding="utf-8-sig", newline="") as fh:
        rows = sorted(csv.DictReader(fh), key=lambda r: (r["Dataset Name"], int(r["Variable Order"])))
    for r in rows:
        ds = out.setdefault(r["Dataset Name"], {"label": "", "class": r["Class"].upper(), "variables": []})
        ds["variables"].append([r["Variable Name"], r["Variable Label"], r["Type"], r["Core"]])
    return out


def write(version: str, source: str, domains: dict[str, dict]) -> Path:
    path = OUT / f"sdtmig-{version}.json"
    doc = {"version": version, "source": source, "datasets": dict(sorted(domains.items()))}
    path.write_text(json.dumps(doc, indent=0, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")
    return path


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sdtmig-3-4", type=Path, required=True, help="the SDTMIG v3.4 Variables.csv export")
    ap.add_argument("--sdtmig-3-4-datasets", type=Path, default=None, help="its Datasets.csv (dataset labels)")
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    for v, d in (("3.2", "3-2"), ("3.3", "3-3")):
        print(write(v, ODM_SOURCE.format(v=v, d=d), from_odm(REFERENCE / f"sdtmig-{d}_to_odm.xml")))
    labels = {}
    if args.sdtmig_3_4_datasets:
        with open(args.sdtmig_3_4_datasets, encoding="utf-8-sig", newline="") as fh:
            labels = {r["Dataset Name"]: r["Dataset Label"] for r in csv.DictReader(fh)}
    table34 = from_csv(args.sdtmig_3_4)
    for name, ds in table34.items():
        ds["label"] = labels.get(name, "")
    print(write("3.4", CSV_SOURCE, table34))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
