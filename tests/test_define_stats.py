"""define.xml from column statistics: no dataset rows are read to describe a dataset.  The
same bytes as the whole-dataset entry point for the sample; lengths, types and value-level
metadata worked out by hand on a small LB; caps; the statistics-based agreement check."""
from __future__ import annotations

from collections import Counter

from lxml import etree

from trialbridge.converters.core.issues import IssueLog
from trialbridge.converters.formats import define as define_xml
from trialbridge.converters.formats.define import DEF21_NS, ODM_NS, XLINK_NS
from trialbridge.converters.formats.sdtm import ColumnStats, dataset_meta

NS = {"odm": ODM_NS, "def": DEF21_NS, "xlink": XLINK_NS}

LB_ROWS = [  # HIV first: the whole-dataset builder raised ValueError on this order
    {"STUDYID": "S1", "DOMAIN": "LB", "USUBJID": "S1-001", "LBSEQ": 1, "LBTESTCD": "HIV",
     "LBTEST": "HIV Antibody", "LBORRES": "NEGATIVE", "LBSTRESC": "NEGATIVE", "LBDTC": "2020-06-02T09:00"},
    {"STUDYID": "S1", "DOMAIN": "LB", "USUBJID": "S1-001", "LBSEQ": 2, "LBTESTCD": "CD4",
     "LBTEST": "CD4 Cells", "LBORRES": "1.30", "LBORRESU": "10^9/L", "LBSTRESC": "1.3", "LBSTRESN": 1.3,
     "LBSTRESU": "10^9/L", "LBDTC": "2020-06-01T08:30"},
    {"STUDYID": "S1", "DOMAIN": "LB", "USUBJID": "S1-002", "LBSEQ": 1, "LBTESTCD": "CD4",
     "LBTEST": "CD4 Cells", "LBORRES": "12.25", "LBORRESU": "10^9/L", "LBSTRESC": "12.25", "LBSTRESN": 12.25,
     "LBSTRESU": "10^9/L", "LBDTC": "2020-06-02T09:00"},
]


def streamed(rows_by_domain: dict[str, list[dict]]):
    """Metadata without rows and statistics gathered row by row, as the engine will hold them."""
    metas, stats = {}, {}
    for domain, rows in rows_by_domain.items():
        s = ColumnStats(domain)
        for row in rows:
            s.add(row)
        metas[domain], stats[domain] = dataset_meta(domain, s), s
        assert metas[domain].rows == []
    return metas, stats


def items_of(root) -> dict[str, etree._Element]:
    return {i.get("OID"): i for i in root.iter(f"{{{ODM_NS}}}ItemDef")}


def test_sample_define_from_stats_is_byte_identical(sample_sdtm, study, tmp_path):
    datasets, _ = sample_sdtm
    metas, stats = streamed({name: ds.rows for name, ds in datasets.items()})
    log = IssueLog()
    define_xml.write_define_from_stats(metas, stats, study, tmp_path / "a.xml", log,
                                       formats=["xpt", "dataset-json"])
    define_xml.write_define(datasets, study, tmp_path / "b.xml", IssueLog(), formats=["xpt", "dataset-json"])
    assert (tmp_path / "a.xml").read_bytes() == (tmp_path / "b.xml").read_bytes()
    assert not [i for i in log.issues if i.severity != "info"]
    meta = define_xml.read_define(tmp_path / "a.xml", IssueLog())
    check = IssueLog()
    assert define_xml.check_define_against_stats(meta, metas, stats, check, exact_lengths=True) == 0, check.issues


def test_lengths_types_and_value_level_metadata_by_hand():
    metas, stats = streamed({"LB": LB_ROWS})
    log = IssueLog()
    root = define_xml.build_define_from_stats(metas, stats, None, log=log)
    assert define_xml.validate_define_xsd(root, IssueLog())
    items = items_of(root)
    orres = items["IT.LB.LBORRES"]
    assert (orres.get("DataType"), orres.get("Length")) == ("text", "8")  # NEGATIVE
    assert orres.find("def:ValueListRef", NS).get("ValueListOID") == "VL.LB.LBORRES"
    assert orres.find("odm:CodeListRef", NS) is None
    assert items["IT.LB.LBORRES.CD4"].get("Length") == "5"  # 12.25
    assert items["IT.LB.LBORRES.HIV"].get("Length") == "8"
    text = lambda oid: items[oid].findtext("odm:Description/odm:TranslatedText", namespaces=NS)  # noqa: E731
    assert text("IT.LB.LBORRES.CD4") == "CD4 Cells (CD4), original result; unit: 10^9/L"
    assert text("IT.LB.LBSTRESN.HIV") == "HIV Antibody (HIV), standardised result; unit: no unit"
    # 1.3 and 12.25: at most 2 + 2 digits, 2 after the point
    stresn = items["IT.LB.LBSTRESN"]
    assert (stresn.get("DataType"), stresn.get("Length"), stresn.get("SignificantDigits")) == ("float", "4", "2")
    assert (items["IT.LB.LBSTRESN.CD4"].get("Length"), items["IT.LB.LBSTRESN.CD4"].get("SignificantDigits")) == (
        "4", "2")
    assert (items["IT.LB.LBSTRESN.HIV"].get("Length"), items["IT.LB.LBSTRESN.HIV"].get("SignificantDigits")) == (
        "1", "0")  # no value for this test
    assert (items["IT.LB.LBSEQ"].get("DataType"), items["IT.LB.LBSEQ"].get("Length")) == ("integer", "1")
    assert (items["IT.LB.LBDTC"].get("DataType"), items["IT.LB.LBDTC"].get("Length")) == ("datetime", None)
    # LBSTRESC's result codelist goes to the test whose results are all non-numeric
    assert items["IT.LB.LBSTRESC.HIV"].find("odm:CodeListRef", NS).get("CodeListOID") == "CL.LBSTRESC"
    assert items["IT.LB.LBSTRESC.CD4"].find("odm:CodeListRef", NS) is None
    cls = {c.get("OID"): c for c in root.iter(f"{{{ODM_NS}}}CodeList")}
    negative = cls["CL.LBSTRESC"].find("odm:EnumeratedItem", NS)
    assert negative.get("CodedValue") == "NEGATIVE" and negative.find("odm:Alias", NS).get("Name") == "C38757"
    assert [e.get("CodedValue") for e in cls["CL.LBTESTCD"].findall("odm:EnumeratedItem", NS)] == ["CD4", "HIV"]
    assert root.find("odm:Study", NS).get("OID") == "S1"  # STUDYID of the data without a study


def test_partial_dates_and_dates():
    rows = [dict(LB_ROWS[1], LBDTC="2020-06-01"), dict(LB_ROWS[2], LBDTC="2020-06-02")]
    metas, stats = streamed({"LB": rows})
    items = items_of(define_xml.build_define_from_stats(metas, stats, None))
    assert items["IT.LB.LBDTC"].get("DataType") == "date"
    metas, stats = streamed({"LB": [rows[0], dict(rows[1], LBDTC="2020-06")]})
    items = items_of(define_xml.build_define_from_stats(metas, stats, None))
    assert items["IT.LB.LBDTC"].get("DataType") == "partialDatetime"


def test_codelist_over_the_cap_is_not_listed(study):
    rows = [dict(LB_ROWS[1], LBSEQ=n, LBTESTCD=f"T{n}") for n in range(1, 5)]
    stats = ColumnStats("LB", max_values=3, max_groups=3)
    stats.add_rows(rows)
    metas = {"LB": dataset_meta("LB", stats)}
    log = IssueLog()
    root = define_xml.build_define_from_stats(metas, {"LB": stats}, study, log=log)
    items = items_of(root)
    assert items["IT.LB.LBTESTCD"].find("odm:CodeListRef", NS) is None
    assert items["IT.LB.LBORRES"].find("def:ValueListRef", NS) is not None
    assert root.find(".//def:ValueListDef[@OID='VL.LB.LBORRES']/odm:ItemRef", NS) is None
    found = Counter((i.code, i.field) for i in log.issues)
    assert found[("DEFINE-TOO-MANY-VALUES", "LBTESTCD")] == 2  # the codelist and the value-level metadata
    assert "CL.LBTESTCD" not in {c.get("OID") for c in root.iter(f"{{{ODM_NS}}}CodeList")}


def test_check_against_stats_finds_longer_values_and_unkept_values(tmp_path, study):
    metas, stats = streamed({"LB": LB_ROWS})
    define_xml.write_define_from_stats(metas, stats, study, tmp_path / "define.xml", IssueLog())
    meta = define_xml.read_define(tmp_path / "define.xml", IssueLog())
    longer = ColumnStats("LB")
    longer.add_rows(LB_ROWS + [dict(LB_ROWS[1], LBSEQ=3, LBORRES="1234567890", LBTESTCD="XX", LBSTRESN=0.5)])
    log = IssueLog()
    define_xml.check_define_against_stats(meta, metas, {"LB": longer}, log, exact_lengths=True)
    found = {(i.code, i.field, i.value) for i in log.issues}
    assert ("DEFINE-LENGTH-SHORT", "LBORRES", 10) in found
    assert ("DEFINE-CODELIST-VALUE", "LBTESTCD", "XX") in found
    unkept = ColumnStats("LB", max_values=1)
    unkept.add_rows(LB_ROWS)
    log = IssueLog()
    define_xml.check_define_against_stats(meta, metas, {"LB": unkept}, log)
    assert sorted((i.code, i.field, i.severity) for i in log.issues) == [  # 2 tests, 2 names: over 1
        ("DEFINE-VALUES-UNCHECKED", "LBTEST", "info"), ("DEFINE-VALUES-UNCHECKED", "LBTESTCD", "info")]
