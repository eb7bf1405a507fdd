"""Define-XML 2.1 writing, XSD validation, reading (2.0/2.1) and the define <-> dataset check."""
from __future__ import annotations

import copy
import dataclasses
from collections import Counter
from pathlib import Path

import pytest
from lxml import etree

from trialbridge.converters.formats import define as define_xml
from trialbridge.converters.formats import sdtm as sdtm_io
from trialbridge.converters.formats.define import DEF21_NS, ODM_NS, XLINK_NS
from trialbridge.converters.core.issues import IssueLog
from tests.xml_attacks import LAUGH_ENTITIES

from tests.conftest import REFERENCE  # --reference / TRIALBRIDGE_REFERENCE / ../shared/reference
NS = {"odm": ODM_NS, "def": DEF21_NS, "xlink": XLINK_NS}


def reference(*parts: str) -> Path:
    path = REFERENCE.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference material {path} is not on this machine (give --reference DIR or TRIALBRIDGE_REFERENCE)")
    return path


def codes(log: IssueLog) -> Counter:
    return Counter(i.code for i in log.issues)


@pytest.fixture(scope="module")
def sample_define(sample_sdtm, study, tmp_path_factory):
    datasets, _ = sample_sdtm
    path = tmp_path_factory.mktemp("define") / "define.xml"
    log = IssueLog()
    define_xml.write_define(datasets, study, path, log)
    return path, log


# ------------------------------------------------------------------------------------ writing
def test_sample_define_validates_against_official_and_strict_xsd(sample_define):
    path, write_log = sample_define
    assert not [i for i in write_log.issues if i.code == "DEFINE-XSD"]
    for strict in (False, True):
        log = IssueLog()
        assert define_xml.validate_define_xsd(path, log, strict=strict), [i.message for i in log.issues]
        assert not log.issues


def test_sample_define_content(sample_define, sample_sdtm):
    datasets, _ = sample_sdtm
    path, _ = sample_define
    root = etree.parse(str(path)).getroot()
    assert root.get("FileType") == "Snapshot" and root.get("ODMVersion") == "1.3.2"
    assert root.get(f"{{{DEF21_NS}}}Context") == "Submission"
    assert root.get("CreationDateTime") == "2026-01-01T00:00:00Z"  # SOURCE_DATE_EPOCH of conftest
    assert root.findtext("odm:Study/odm:GlobalVariables/odm:StudyName", namespaces=NS) == "NCT04387942"
    mdv = root.find("odm:Study/odm:MetaDataVersion", NS)
    stds = {s.get("Name"): s for s in mdv.findall("def:Standards/def:Standard", NS)}
    assert stds["SDTMIG"].get("Version") == "3.3" and stds["SDTMIG"].get("Type") == "IG"
    assert stds["CDISC/NCI"].get("Version") == "2025-03-28" and stds["CDISC/NCI"].get("Type") == "CT"

    groups = {ig.get("Name"): ig for ig in mdv.findall("odm:ItemGroupDef", NS)}
    assert set(groups) == set(datasets)
    lb = groups["LB"]
    assert lb.find("def:Class", NS).get("Name") == "FINDINGS"
    assert lb.find("def:leaf", NS).get(f"{{{XLINK_NS}}}href") == "lb.xpt"
    assert groups["TA"].get("IsReferenceData") == "Yes" and groups["DM"].get("Repeating") == "No"
    assert groups["TA"].find("def:Class", NS).get("Name") == "TRIAL DESIGN"
    assert groups["SUPPAE"].find("def:Class", NS).get("Name") == "RELATIONSHIP"
    assert groups["CP"].get(f"{{{DEF21_NS}}}IsNonStandard") == "Yes"  # SDTMIG 3.4 domain
    refs = {r.get("ItemOID"): r for r in lb.findall("odm:ItemRef", NS)}
    keyed = sorted((int(r.get("KeySequence")), r.get("ItemOID")) for r in refs.values() if r.get("KeySequence"))
    assert [oid.split(".")[-1] for _, oid in keyed] == datasets["LB"].keys
    assert refs["IT.LB.LBSEQ"].get("MethodOID") == "MT.SEQ"
    assert refs["IT.LB.LBDY"].get("MethodOID") == "MT.STUDYDAY"
    assert refs["IT.LB.LBTESTCD"].get("Mandatory") == "Yes" and refs["IT.LB.LBTESTCD"].get("Role") == "Topic"
    assert [r.get("OrderNumber") for r in lb.findall("odm:ItemRef", NS)] == [
        str(n) for n in range(1, len(datasets["LB"].variables) + 1)]
    methods = {m.get("OID") for m in mdv.findall("odm:MethodDef", NS)}
    assert {"MT.SEQ", "MT.STUDYDAY", "MT.AGE", "MT.EPOCH", "MT.STRES", "MT.BASELINE"} <= methods

    items = {i.get("OID"): i for i in mdv.findall("odm:ItemDef", NS)}
    longest = max(len(r["LBTESTCD"]) for r in datasets["LB"].rows)
    assert items["IT.LB.LBTESTCD"].get("Length") == str(longest)
    assert items["IT.LB.LBSTRESN"].get("DataType") == "float"
    assert items["IT.LB.LBSEQ"].get("DataType") == "integer"
    assert items["IT.DM.AGE"].find("def:Origin", NS).get("Type") == "Derived"
    assert items["IT.AE.AETERM"].find("def:Origin", NS).attrib == {"Type": "Collected", "Source": "Investigator"}
    assert items["IT.AE.AEDECOD"].find("odm:CodeListRef", NS).get("CodeListOID") == "CL.MEDDRA"
    assert items["IT.AE.AEBODSYS"].find("odm:CodeListRef", NS).get("CodeListOID") == "CL.MEDDRA"

    # value-level metadata: LBORRES by LBTESTCD, one ItemDef per test with unit in the description
    assert items["IT.LB.LBORRES"].find("def:ValueListRef", NS).get("ValueListOID") == "VL.LB.LBORRES"
    wc = mdv.find("def:WhereClauseDef[@OID='WC.LB.LBTESTCD.ALT']", NS)
    rc = wc.find("odm:RangeCheck", NS)
    assert rc.get("Comparator") == "EQ" and rc.get(f"{{{DEF21_NS}}}ItemOID") == "IT.LB.LBTESTCD"
    assert rc.findtext("odm:CheckValue", namespaces=NS) == "ALT"
    assert "U/L" in items["IT.LB.LBORRES.ALT"].findtext("odm:Description/odm:TranslatedText", namespaces=NS)
    assert mdv.find("def:ValueListDef[@OID='VL.CP.CPSTRESN']", NS) is not None

    # codelists: only terms present in the data, NCI codes as aliases, CT standard referenced
    cls = {c.get("OID"): c for c in mdv.findall("odm:CodeList", NS)}
    sex = cls["CL.SEX"]
    assert sex.get(f"{{{DEF21_NS}}}StandardOID") == "STD.CT.SDTM.2025-03-28"
    assert sorted(e.get("CodedValue") for e in sex.findall("odm:EnumeratedItem", NS)) == sorted(
        {r["SEX"] for r in datasets["DM"].rows})
    assert sex.find("odm:Alias", NS).attrib == {"Context": "nci:ExtCodeID", "Name": "C66731"}
    male = sex.find("odm:EnumeratedItem[@CodedValue='M']", NS)
    if male is not None:
        assert male.find("odm:Alias", NS).get("Name") == "C20197"
    meddra = cls["CL.MEDDRA"].find("odm:ExternalCodeList", NS)
    assert meddra.get("Dictionary") == "MedDRA" and meddra.get("Version") == "unspecified"
    used = {r.get("CodeListOID") for r in mdv.iter(f"{{{ODM_NS}}}CodeListRef")}
    assert used == set(cls), "every CodeList is referenced and every reference resolves"


def test_extended_value_flagged_for_extensible_codelist(sample_sdtm, study):
    datasets, _ = sample_sdtm
    ae = copy.deepcopy(datasets["AE"])
    ae.rows[0]["AEOUT"] = "NOT A REAL OUTCOME"  # OUT (C66768) is non-extensible
    ae.rows[1]["EPOCH"] = "RUN-IN EXTENSION"  # EPOCH (C99079) is extensible
    log = IssueLog()
    root = define_xml.build_define({"AE": ae}, study, log=log)
    cls = {c.get("OID"): c for c in root.iter(f"{{{ODM_NS}}}CodeList")}
    ext = cls["CL.EPOCH"].find("odm:EnumeratedItem[@CodedValue='RUN-IN EXTENSION']", NS)
    assert ext.get(f"{{{DEF21_NS}}}ExtendedValue") == "Yes" and ext.find("odm:Alias", NS) is None
    # listed (so the define describes the data as it is) but flagged, and reported
    bad = cls["CL.OUT"].find("odm:EnumeratedItem[@CodedValue='NOT A REAL OUTCOME']", NS)
    assert bad.get(f"{{{DEF21_NS}}}ExtendedValue") == "Yes" and bad.find("odm:Alias", NS) is None
    assert codes(log)["DEFINE-CT-NONEXTENSIBLE"] == 1


def test_leaf_points_to_dataset_json_when_only_json_written(sample_sdtm, study):
    datasets, _ = sample_sdtm
    root = define_xml.build_define({"DM": datasets["DM"]}, study, formats=("dataset-json",))
    leaf = root.find(".//def:leaf", NS)
    assert leaf.get(f"{{{XLINK_NS}}}href") == "dm.json"


def test_deterministic_bytes(sample_sdtm, study, tmp_path):
    datasets, _ = sample_sdtm
    reordered = dict(reversed(list(datasets.items())))
    a, b = tmp_path / "a.xml", tmp_path / "b.xml"
    define_xml.write_define(datasets, study, a, IssueLog())
    define_xml.write_define(reordered, study, b, IssueLog())
    assert a.read_bytes() == b.read_bytes()
    other = define_xml.serialise(define_xml.build_define(datasets, study, created="2026-01-02T03:04:05"))
    assert b'CreationDateTime="2026-01-02T03:04:05"' in other


def test_without_study_config_uses_studyid_and_validates(sample_sdtm):
    datasets, _ = sample_sdtm
    root = define_xml.build_define(datasets, None, meddra_version="27.1")
    assert root.find("odm:Study", NS).get("OID") == "NCT04387942"
    ext = root.find(".//odm:CodeList[@OID='CL.MEDDRA']/odm:ExternalCodeList", NS)
    assert ext.get("Version") == "27.1"
    log = IssueLog()
    assert define_xml.validate_define_xsd(root, log), [i.message for i in log.issues]


def test_mutated_define_fails_xsd_with_line(sample_define, tmp_path):
    path, _ = sample_define
    tree = etree.parse(str(path))
    ig = tree.find(".//odm:ItemGroupDef", NS)
    del ig.attrib[f"{{{DEF21_NS}}}Structure"]  # required by the Define-XML 2.1 schema
    bad = tmp_path / "define.xml"
    tree.write(str(bad), xml_declaration=True, encoding="UTF-8")
    log = IssueLog()
    assert define_xml.validate_define_xsd(bad, log) is False
    xsd = [i for i in log.issues if i.code == "DEFINE-XSD"]
    assert xsd and xsd[0].severity == "error" and "Structure" in xsd[0].message
    line = etree.parse(str(bad)).find(".//odm:ItemGroupDef", NS).sourceline  # the line in the file written
    assert xsd[0].record == line


# ------------------------------------------------------------------------------ agreement check
def test_own_define_agrees_with_datasets(sample_define, sample_sdtm):
    datasets, _ = sample_sdtm
    path, _ = sample_define
    log = IssueLog()
    meta = define_xml.read_define(path, log)
    assert meta.version == "2.1" and meta.define_version == "2.1.0"
    assert define_xml.check_define_against_datasets(meta, datasets, log, exact_lengths=True) == 0, [
        (i.code, i.message) for i in log.issues]
    lb = meta.datasets["LB"]
    assert lb.keys == datasets["LB"].keys and lb.class_ == "FINDINGS" and lb.href == "lb.xpt"
    assert lb["class"] == "FINDINGS" and lb.var("LBTESTCD")["codelist"] == "CL.LBTESTCD"
    assert [v.name for v in lb.variables] == datasets["LB"].names
    assert set(meta.codelists["CL.SEX"].values) == {r["SEX"] for r in datasets["DM"].rows}


def test_mutated_datasets_are_reported(sample_define, sample_sdtm):
    datasets, _ = sample_sdtm
    path, _ = sample_define
    meta = define_xml.read_define(path, IssueLog())
    mutated = dict(datasets)
    dm = copy.deepcopy(datasets["DM"])
    dm.variables = [dataclasses.replace(v, label="Sex of the Subject") if v.name == "SEX" else v
                    for v in dm.variables]
    dm.rows[0]["SITEID"] = "X" * 30  # longer than the define Length
    dm.rows[1]["SEX"] = "X"  # not in the define codelist (same length)
    dm.label = "Demography"
    dm.variables.append(dataclasses.replace(dm.variables[-1], name="DMXTRA", label="Extra"))
    ae = copy.deepcopy(datasets["AE"])
    ae.variables = [dataclasses.replace(v, type="Char") if v.name == "AESEQ" else v for v in ae.variables]
    mutated["DM"], mutated["AE"] = dm, ae
    del mutated["TI"]
    log = IssueLog()
    define_xml.check_define_against_datasets(meta, mutated, log, exact_lengths=True)
    got = codes(log)
    assert got["DEFINE-LABEL-MISMATCH"] == 2  # dataset label + SEX label
    assert got["DEFINE-LENGTH-SHORT"] == 1
    assert got["DEFINE-CODELIST-VALUE"] == 1
    assert got["DEFINE-VARIABLE-MISSING"] == 1
    assert got["DEFINE-DATASET-EXTRA"] == 1
    assert got["DEFINE-TYPE-MISMATCH"] == 1
    short = next(i for i in log.issues if i.code == "DEFINE-LENGTH-SHORT")
    assert short.severity == "error" and short.field == "SITEID" and short.value == 30
    assert next(i for i in log.issues if i.code == "DEFINE-DATASET-EXTRA").value == "TI"
    # a define Length longer than the data is reported for our own output only
    shorter = copy.deepcopy(datasets["TS"])
    shorter.rows = [dict(r, TSVAL="") for r in shorter.rows]
    log2 = IssueLog()
    define_xml.check_define_against_datasets(meta, {"TS": shorter}, log2, exact_lengths=True)
    assert codes(log2)["DEFINE-LENGTH-MISMATCH"] == 1
    log3 = IssueLog()
    define_xml.check_define_against_datasets(meta, {"TS": shorter}, log3)
    assert codes(log3)["DEFINE-LENGTH-MISMATCH"] == 0


# ------------------------------------------------------------------------------ reference files
def test_phuse_tdf_define_20_reads_and_validates():
    path = reference("sdtm", "phuse-tdf-sdtm-v1.0", "define.xml")
    log = IssueLog()
    meta = define_xml.read_define(path, log)
    assert meta.version == "2.0" and meta.define_version == "2.0.0"
    assert {"DM", "AE", "LBUR", "SUPPLBUR", "TA"} <= set(meta.datasets)
    ta = meta.datasets["TA"]
    assert ta.class_ == "TRIAL DESIGN" and ta.keys == ["STUDYID", "ARMCD", "TAETORD"] and ta.href == "ta.xpt"
    assert ta.var("STUDYID").length == 12 and ta.var("STUDYID").mandatory
    # finding: the PHUSE TDF define.xml is valid against the Define-XML 2.0.0 schema
    assert define_xml.validate_define_xsd(path, log) is True
    assert not log.issues


def test_msg_define_21_valid_official_invalid_strict():
    path = reference("dataset-json", "examples", "sdtm", "define.xml")
    meta = define_xml.read_define(path, IssueLog())
    assert meta.version == "2.1" and "LB" in meta.datasets and meta.codelists
    log = IssueLog()
    assert define_xml.validate_define_xsd(path, log) is True  # library-xml 2.1 enumerations allow any Name
    strict = IssueLog()
    assert define_xml.validate_define_xsd(path, strict, strict=True) is False
    xsd = [i for i in strict.issues if i.code == "DEFINE-XSD"]
    assert len(xsd) == 1 and "STDTMIG" in xsd[0].message and xsd[0].record == 63


def test_define_10_is_reported_unsupported():
    path = reference("sdtm", "cdiscpilot01", "define.xml")
    log = IssueLog()
    assert define_xml.validate_define_xsd(path, log) is False
    assert [i.code for i in log.issues] == ["DEFINE-VERSION-UNSUPPORTED"]
    assert log.issues[0].severity == "info"
    assert define_xml.read_define(path, IssueLog()) is None


def test_phuse_tdf_datasets_against_their_define():
    folder = reference("sdtm", "phuse-tdf-sdtm-v1.0")
    log = IssueLog()
    datasets = sdtm_io.read_sdtm_folder(folder, log)
    meta = define_xml.read_define(folder / "define.xml", log)
    findings = IssueLog()
    n = define_xml.check_define_against_datasets(meta, datasets, findings)
    for issue in findings.sorted():
        print(issue.severity, issue.code, issue.record, issue.field, issue.message)
    assert n == len(findings.issues) > 0
    got = codes(findings)
    # the define describes datasets (CM, MH, VS, QS*, ...) that the TDF folder does not ship
    extra = {i.value for i in findings.issues if i.code == "DEFINE-DATASET-EXTRA"}
    assert {"CM", "MH", "VS"} <= extra
    assert not got["DEFINE-DATASET-MISSING"] and not got["DEFINE-VARIABLE-MISSING"]
    # LBUR.LBSTRESN is integer in the define but holds 1.013 (urine specific gravity)
    assert any(i.code == "DEFINE-TYPE-MISMATCH" and i.record == "LBUR" and i.field == "LBSTRESN"
               for i in findings.issues)


# ------------------------------------------------------------------------------ XML safety
BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE ODM [
{LAUGH_ENTITIES}
 <!ENTITY xxe SYSTEM "file://{secret}">
]>
<ODM xmlns="http://www.cdisc.org/ns/odm/v1.3" xmlns:def="http://www.cdisc.org/ns/def/v2.1"
     ODMVersion="1.3.2" FileOID="F" FileType="Snapshot" CreationDateTime="1970-01-01T00:00:00"
     def:Context="Submission">
 <Study OID="S">
  <GlobalVariables><StudyName>&lol9;</StudyName><StudyDescription>&xxe;</StudyDescription>
   <ProtocolName>P</ProtocolName></GlobalVariables>
  <MetaDataVersion OID="MDV" Name="M" def:DefineVersion="2.1.0">
   <ItemGroupDef OID="IG.DM" Name="DM" Repeating="No" Purpose="Tabulation" def:Structure="&lol9;">
    <Description><TranslatedText xml:lang="en">&xxe;</TranslatedText></Description>
   </ItemGroupDef>
  </MetaDataVersion>
 </Study>
</ODM>
""".replace("{LAUGH_ENTITIES}", LAUGH_ENTITIES)


def _laughs(depth: int, secret: Path) -> str:
    """BILLION_LAUGHS with entities lol<depth+1>.. dropped and references to lol<depth>."""
    lines = [ln for ln in BILLION_LAUGHS.splitlines()
             if not any(f"ENTITY lol{n} " in ln for n in range(depth + 1, 10))]
    return "\n".join(lines).replace("&lol9;", f"&lol{depth};").replace("{secret}", str(secret))


def test_external_and_internal_entities_are_refused(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    path = tmp_path / "define.xml"
    path.write_text(_laughs(3, secret))
    log = IssueLog()
    # libxml2 substitutes internal entities inside attribute values even with
    # resolve_entities=False, so a define.xml declaring entities is refused before parsing
    assert define_xml.read_define(path, log) is None
    assert [i.code for i in log.issues] == ["DEFINE-XML-ENTITY"]
    issue = log.issues[0]
    assert issue.severity == "error" and {"lol3", "xxe"} <= set(issue.value.split(","))
    assert "TOP-SECRET" not in repr(log.to_json_obj())
    vlog = IssueLog()
    assert define_xml.validate_define_xsd(path, vlog) is False
    assert [i.code for i in vlog.issues] == ["DEFINE-XML-ENTITY"]


def test_billion_laughs_is_reported_not_expanded(tmp_path):
    path = tmp_path / "define.xml"
    path.write_text(_laughs(9, tmp_path / "absent.txt"))
    log = IssueLog()
    # refused from its DOCTYPE before any parser sees it, whatever libxml2's own limits
    # (tests/test_safexml.py: the ODM reader refuses it the same way)
    assert define_xml.read_define(path, log) is None
    assert [(i.severity, i.code) for i in log.issues] == [("error", "DEFINE-XML-ENTITY")]


def test_not_well_formed_is_an_issue(tmp_path):
    path = tmp_path / "define.xml"
    path.write_text("<ODM><Study></ODM>")
    log = IssueLog()
    assert define_xml.read_define(path, log) is None
    assert define_xml.validate_define_xsd(path, log) is False
    assert [i.code for i in log.issues] == ["DEFINE-XML-SYNTAX", "DEFINE-XML-SYNTAX"]


def test_dsdecod_codelist_by_dscat_as_value_level_metadata(sample_sdtm, study):
    """DSDECOD takes NCOMPLT for disposition events and PROTMLST for milestones (the schema's
    x-codelist-by): one ValueListDef with a WhereClause per DSCAT, no extended values."""
    datasets, _ = sample_sdtm
    log = IssueLog()
    root = define_xml.build_define({"DS": datasets["DS"]}, study, log=log)
    vl = root.find(".//def:ValueListDef[@OID='VL.DS.DSDECOD']", NS)
    assert [r.get("ItemOID") for r in vl.findall("odm:ItemRef", NS)] == [
        "IT.DS.DSDECOD.DISPOSITION_EVENT", "IT.DS.DSDECOD.PROTOCOL_MILESTONE"]
    items = {i.get("OID"): i for i in root.iter(f"{{{ODM_NS}}}ItemDef")}
    assert items["IT.DS.DSDECOD.DISPOSITION_EVENT"].find("odm:CodeListRef", NS).get("CodeListOID") == "CL.NCOMPLT"
    assert items["IT.DS.DSDECOD"].find("odm:CodeListRef", NS) is None
    cls = {c.get("OID"): c for c in root.iter(f"{{{ODM_NS}}}CodeList")}
    completed = cls["CL.NCOMPLT"].find("odm:EnumeratedItem[@CodedValue='COMPLETED']", NS)
    assert completed.get(f"{{{DEF21_NS}}}ExtendedValue") is None
    assert completed.find("odm:Alias", NS).get("Name") == "C25250"
    assert cls["CL.PROTMLST"].find("odm:EnumeratedItem[@CodedValue='INFORMED CONSENT OBTAINED']", NS) is not None
    assert not [i for i in log.issues if i.severity != "info"]
    assert define_xml.validate_define_xsd(root, IssueLog())


def test_filled_in_dataset_label_is_not_compared(sample_sdtm, study, tmp_path):
    """A dataset read from a file without a label (the reader fills in the spec's) gives no
    label finding; a label the file really has, and that differs, does."""
    datasets, _ = sample_sdtm
    meta_path = tmp_path / "define.xml"
    define_xml.write_define({"TA": datasets["TA"]}, study, meta_path, IssueLog())
    meta = define_xml.read_define(meta_path, IssueLog())
    ta = copy.deepcopy(datasets["TA"])
    ta.label, ta.label_given = "Something else", False
    log = IssueLog()
    define_xml.check_define_against_datasets(meta, {"TA": ta}, log)
    assert "DEFINE-LABEL-MISMATCH" not in codes(log)
    ta.label_given = True
    log = IssueLog()
    define_xml.check_define_against_datasets(meta, {"TA": ta}, log)
    assert codes(log)["DEFINE-LABEL-MISMATCH"] == 1


# ------------------------------------------------------------------------------ what a reviewer opens
def test_supp_datasets_name_their_parent_domain(sample_define):
    """CDISC's own Define-XML 2.1 example writes Name="SUPPDM" Domain="DM"; CORE's define
    rules cannot run on a SUPP-- ItemGroupDef without it."""
    path, _ = sample_define
    root = etree.parse(str(path)).getroot()
    domains = {ig.get("Name"): ig.get("Domain") for ig in root.iter(f"{{{ODM_NS}}}ItemGroupDef")}
    assert {k: v for k, v in domains.items() if k.startswith("SUPP")} == {"SUPPAE": "AE", "SUPPDM": "DM", "SUPPEX": "EX"}
    assert domains["LB"] == "LB" and domains["TS"] == "TS"
    # and their ItemRefs carry SUPPQUAL's roles (CORE-001081 reports a SUPP-- variable without one)
    suppdm = next(ig for ig in root.iter(f"{{{ODM_NS}}}ItemGroupDef") if ig.get("Name") == "SUPPDM")
    roles = {ref.get("ItemOID").split(".")[-1]: ref.get("Role") for ref in suppdm.iter(f"{{{ODM_NS}}}ItemRef")}
    assert roles == {"STUDYID": "Identifier", "RDOMAIN": "Identifier", "USUBJID": "Identifier", "IDVAR": "Identifier",
                     "IDVARVAL": "Identifier", "QNAM": "Topic", "QLABEL": "Synonym Qualifier", "QVAL": "Result Qualifier",
                     "QORIG": "Record Qualifier", "QEVAL": "Record Qualifier"}


def test_define_opens_as_a_page_with_cdiscs_stylesheet(tmp_path):
    """The output folder holds define2-1.xsl beside define.xml, which names it; a real XSLT
    processor (libxslt through lxml) turns the two into an HTML page listing every dataset."""
    from click.testing import CliRunner

    from trialbridge.cli import main

    out = tmp_path / "out"
    dirty = Path(__file__).resolve().parents[1] / "samples" / "nct04387942-dirty"
    result = CliRunner().invoke(main, ["convert", str(dirty), "--to", "sdtm", "-o", str(out), "--quiet"])
    assert result.exit_code == 1, result.output  # the dirty sample's planted errors
    head = (out / "define.xml").read_bytes()[:200]
    assert b'<?xml-stylesheet type="text/xsl" href="define2-1.xsl"?>' in head
    xsl = (out / "define2-1.xsl").read_bytes()
    assert b"Copyright (c) 2013-2018 Lex Jansen" in xsl  # shipped unchanged, notice kept
    page = etree.XSLT(etree.XML(xsl))(etree.parse(str(out / "define.xml")))
    html = str(page)
    written = sorted(p.stem.upper() for p in out.glob("*.xpt"))
    assert len(written) == 16  # DM AE DS CP LB EX SE SV VS, SUPPAE SUPPEX, TA TE TI TS TV
    for name in written:  # the page's table of contents links every dataset, with its label
        assert f'href="#IG.IG.{name}">{name} (' in html, name
    assert 'href="#IG.IG.LB">LB (Laboratory Test Results)</a>' in html
