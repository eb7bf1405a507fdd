"""CDISC ODM 1.3.2 reader and writer (converters/odm_io.py, mappings/odm/nct04387942.yaml).

The acceptance test of the issue: the EDC export sample converts to the same SDTM as the
CSV sample (``test_sdtm_from_odm_equals_sdtm_from_csv``).
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from lxml import etree

from trialbridge.converters.core import safexml
from trialbridge.converters.formats import odm as odm_io
from trialbridge.converters.formats import records as records_io
from trialbridge.converters.core.issues import IssueLog, TrialbridgeError
from trialbridge.converters.core.records import RECORD_ORDER, public, record_types
from trialbridge.converters.spokes import records_to_sdtm
from trialbridge.mappings.study import load_study
from tests.conftest import ROOT, SAMPLE, reference
from tests.xml_attacks import LAUGH_ENTITIES

ODM_SAMPLE = ROOT / "samples" / "nct04387942-odm" / "edc-export.xml"
XSD_PARTS = ("define-xml", "define-2.1-library-xml", "schema", "cdisc-odm-1.3.2", "ODM1-3-2.xsd")


# ---------------------------------------------------------------------------------------------
# helpers


def _comparable(records, drop_identifying: bool) -> dict[str, list]:
    out = {}
    for name in RECORD_ORDER:
        ident = set(record_types()[name].identifying) if drop_identifying else set()
        out[name] = sorted(sorted((k, v) for k, v in public(r).items() if k not in ident) for r in records.rows[name])
    return out


def _odm(clinical: str, study_oid: str = "NCT04387942", prolog: str = "") -> str:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n{prolog}'
            f'<ODM xmlns="http://www.cdisc.org/ns/odm/v1.3" FileType="Transactional" FileOID="T" '
            f'CreationDateTime="2021-01-01T00:00:00+00:00" ODMVersion="1.3.2">'
            f'<ClinicalData StudyOID="{study_oid}" MetaDataVersionOID="MDV.NCT04387942.1">{clinical}'
            f'</ClinicalData></ODM>')


def _dm(subject: str, sex: str = "M", extra: str = "", tx: str = "") -> str:
    tx_attr = f' TransactionType="{tx}"' if tx else ""
    return (f'<SubjectData SubjectKey="{subject}"{tx_attr}><SiteRef LocationOID="01"/>'
            f'<StudyEventData StudyEventOID="SE.COMMON"><FormData FormOID="FORM.DM"><ItemGroupData ItemGroupOID="IG.DM">'
            f'<ItemData ItemOID="IT.DM.SEX" Value="{sex}"/><ItemData ItemOID="IT.DM.RFICDTC" Value="2020-06-04"/>'
            f'{extra}</ItemGroupData></FormData></StudyEventData></SubjectData>')


def _lb(subject: str, groups: str, tx: str = "") -> str:
    tx_attr = f' TransactionType="{tx}"' if tx else ""
    return (f'<SubjectData SubjectKey="{subject}"{tx_attr}><StudyEventData StudyEventOID="SE.DAY0">'
            f'<FormData FormOID="FORM.LB">{groups}</FormData></StudyEventData></SubjectData>')


def _lb_group(key: int, test: str, result: str, tx: str = "") -> str:
    tx_attr = f' TransactionType="{tx}"' if tx else ""
    return (f'<ItemGroupData ItemGroupOID="IG.LB" ItemGroupRepeatKey="{key}"{tx_attr}>'
            f'<ItemData ItemOID="IT.LB.LBDTC" Value="2020-06-05T08:00"/>'
            f'<ItemData ItemOID="IT.LB.LBTEST" Value="{test}"/><ItemData ItemOID="IT.LB.LBORRES" Value="{result}"/>'
            f'</ItemGroupData>')


def _read(tmp_path: Path, text: str, name: str = "export.xml") -> tuple:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    log = IssueLog()
    return odm_io.read_odm(path, log), log


def _codes(log: IssueLog) -> list[str]:
    return [i.code for i in log.issues]


@pytest.fixture(scope="module")
def odm_sample():
    log = IssueLog()
    return odm_io.read_odm(ODM_SAMPLE, log), log


@pytest.fixture(scope="module")
def csv_sample():
    log = IssueLog()
    return records_io.read_records(SAMPLE, log), log


# ---------------------------------------------------------------------------------------------
# the sample


def test_sample_validates_against_odm_132_xsd():
    xsd = reference(*XSD_PARTS)
    schema = etree.XMLSchema(etree.parse(str(xsd), etree.XMLParser(no_network=True, resolve_entities=False)))
    doc = etree.parse(str(ODM_SAMPLE), etree.XMLParser(no_network=True, resolve_entities=False))
    assert schema.validate(doc), [str(e) for e in schema.error_log][:5]


def test_sample_is_what_the_script_builds(tmp_path, csv_sample):
    records, _ = csv_sample
    log = IssueLog()
    out = odm_io.write_odm(records, load_study("NCT04387942"), tmp_path / "edc-export.xml", log)
    assert out.read_bytes() == ODM_SAMPLE.read_bytes(), "run scripts/build_odm_sample.py"
    assert not log.has_errors
    # identifying fields are left out on purpose, and said so with their count
    omitted = {i.field: i.value for i in log.issues if i.code == "ODM-IDENTIFYING-OMITTED"}
    assert omitted == {f: 59 for f in record_types()["subject"].identifying}
    text = ODM_SAMPLE.read_text("utf-8")
    assert "MRN99000" not in text and "Example Street" not in text and "Subject001" not in text
    assert 'CreationDateTime="2021-01-01T00:00:00+00:00"' in text


def test_read_odm_equals_read_records_minus_identifying(odm_sample, csv_sample):
    from_odm, odm_log = odm_sample
    from_csv, _ = csv_sample
    assert odm_log.issues == []
    assert from_odm.study_id == from_csv.study_id == "NCT04387942"
    got, want = _comparable(from_odm, False), _comparable(from_csv, True)
    for name in RECORD_ORDER:
        assert len(got[name]) == len(want[name]), name
        assert got[name] == want[name], name
    assert sum(len(v) for v in got.values()) == 59 + 553 + 2827 + 1380 + 45 + 286 + 118


def test_sdtm_from_odm_equals_sdtm_from_csv(odm_sample, csv_sample):
    study = load_study("NCT04387942")
    odm_log, csv_log = IssueLog(), IssueLog()
    from_odm = records_to_sdtm(odm_sample[0], study, odm_log)
    from_csv = records_to_sdtm(csv_sample[0], study, csv_log)
    assert sorted(from_odm) == sorted(from_csv)
    assert {"DM", "EX", "LB", "CP", "AE", "SV", "DS"} <= set(from_odm)
    for name in from_csv:
        assert from_odm[name].rows == from_csv[name].rows, name
    strip = lambda log: sorted((i.severity, i.code, i.message, i.field, str(i.value)) for i in log.issues)  # noqa: E731
    assert strip(odm_log) == strip(csv_log)


def test_records_carry_odm_location(odm_sample):
    records, _ = odm_sample
    first = records.rows["lab_result"][0]
    assert first["_where"]["file"] == str(ODM_SAMPLE)
    assert first["_where"]["record"].startswith(f"{first['subject_id']}/SE.")
    assert "/FORM.LB/IG.LB[" in first["_where"]["record"]


def test_write_read_round_trip_is_identity(tmp_path, odm_sample):
    records, _ = odm_sample
    path = odm_io.write_odm(records, load_study("NCT04387942"), tmp_path / "again.xml")
    log = IssueLog()
    again = odm_io.read_odm(path, log)
    assert log.issues == []
    assert _comparable(again, False) == _comparable(records, False)
    assert path.read_bytes() == ODM_SAMPLE.read_bytes()


def test_is_odm(tmp_path):
    assert odm_io.is_odm(ODM_SAMPLE)
    assert not odm_io.is_odm(SAMPLE)
    assert not odm_io.is_odm(SAMPLE / "subjects.csv")
    other = tmp_path / "define.xml"
    other.write_text('<?xml version="1.0"?><!-- <ODM> in a comment --><Other/>', encoding="utf-8")
    assert not odm_io.is_odm(other)
    prefixed = tmp_path / "prefixed.xml"
    prefixed.write_text('<?xml version="1.0"?>\n<odm:ODM xmlns:odm="http://www.cdisc.org/ns/odm/v1.3"/>', "utf-8")
    assert odm_io.is_odm(prefixed)


# ---------------------------------------------------------------------------------------------
# the mapping


def test_bundled_mapping_is_chosen_by_study_oid():
    mp = odm_io.load_mapping(None, "NCT04387942")
    assert mp.study_oid == "NCT04387942"
    # every record type but vital signs: the EDC sample has no vital signs form (height and
    # weight are captured with the subject); vital_sign records come from FHIR Observations
    assert {f.record for f in mp.forms.values()} == set(RECORD_ORDER) - {"vital_sign"}
    assert mp.event("SE.DAY0")["visit"] == "DAY 0"
    with pytest.raises(TrialbridgeError, match="no ODM mapping for study 'NCT00000000'"):
        odm_io.load_mapping(None, "NCT00000000")


def test_mapping_naming_an_unknown_field_is_refused(tmp_path):
    import yaml

    data = yaml.safe_load(odm_io.mapping_resource("NCT04387942").read_text("utf-8"))
    data["forms"]["FORM.DM"]["items"]["IT.DM.SHOE"] = "shoe_size"
    with pytest.raises(TrialbridgeError, match="'shoe_size' is not a field of subject records"):
        odm_io.load_mapping(data)
    data["forms"]["FORM.DM"]["items"] = {"IT.DM.NAME": "family_name"}
    with pytest.raises(TrialbridgeError, match="identifying"):
        odm_io.load_mapping(data)
    del data["study_events"]
    with pytest.raises(TrialbridgeError, match="ODM mapping invalid"):
        odm_io.load_mapping(data)


def test_unknown_study_oid_is_a_finding_and_other_studies_still_convert(tmp_path):
    path = tmp_path / "x.xml"
    other = ('</ClinicalData><ClinicalData StudyOID="NCT00000000" MetaDataVersionOID="M">'
             + _dm("900") + _dm("901"))
    path.write_text(_odm(_dm("001") + other), "utf-8")
    log = IssueLog()
    records = odm_io.read_odm(path, log)
    assert [r["subject_id"] for r in records["subject"]] == ["001"]
    [issue] = [i for i in log.issues if i.code == "ODM-UNKNOWN-STUDY"]
    assert (issue.severity, issue.field, issue.value) == ("error", "StudyOID", "NCT00000000")
    assert "its 2 subject(s) and 2 item group(s) were not converted" in issue.message
    assert log.accounting[f"{path}#subjects"] == {"read": 3, "rejected": 2}


# ---------------------------------------------------------------------------------------------
# nothing dropped silently


def test_unmapped_items_forms_and_events_are_reported_with_counts(tmp_path):
    color = '<ItemData ItemOID="IT.DM.FAVCOLOR" Value="blue"/>'
    extra_form = ('<SubjectData SubjectKey="001"><StudyEventData StudyEventOID="SE.COMMON">'
                  '<FormData FormOID="FORM.MH"><ItemGroupData ItemGroupOID="IG.MH" ItemGroupRepeatKey="1"/>'
                  '<ItemGroupData ItemGroupOID="IG.MH" ItemGroupRepeatKey="2"/></FormData></StudyEventData>'
                  '<StudyEventData StudyEventOID="SE.WEEK52"><FormData FormOID="FORM.LB">'
                  + _lb_group(1, "ALT", "20") + '</FormData></StudyEventData></SubjectData>')
    records, log = _read(tmp_path, _odm(_dm("001", extra=color) + _dm("002", extra=color) + extra_form))
    assert [r["subject_id"] for r in records.rows["subject"]] == ["001", "002"]
    assert all("FAVCOLOR" not in str(r) for r in records.rows["subject"])
    by_code = {i.code: i for i in log.issues}
    assert by_code["ODM-UNMAPPED-ITEM"].field == "IT.DM.FAVCOLOR"
    assert by_code["ODM-UNMAPPED-ITEM"].value == 2
    assert "2 non-empty value(s)" in by_code["ODM-UNMAPPED-ITEM"].message
    assert (by_code["ODM-UNMAPPED-FORM"].field, by_code["ODM-UNMAPPED-FORM"].value) == ("FORM.MH", 2)
    assert (by_code["ODM-UNMAPPED-EVENT"].field, by_code["ODM-UNMAPPED-EVENT"].value) == ("SE.WEEK52", 1)
    assert records.rows["lab_result"] == []


def test_writer_reports_what_it_cannot_place(tmp_path, csv_sample):
    records, _ = csv_sample
    some = type(records)(study_id=records.study_id)
    some.rows["subject"] = [dict(r) for r in records.rows["subject"][:1]]
    sid = some.rows["subject"][0]["subject_id"]
    some.rows["visit"] = [{"subject_id": sid, "visit": "WEEK 52", "start": "2021-06-01"},
                          {"subject_id": sid, "visit": "DAY 0", "start": "2020-06-05"}]
    log = IssueLog()
    path = odm_io.write_odm(some, load_study("NCT04387942"), tmp_path / "w.xml", log)
    issue = next(i for i in log.issues if i.code == "ODM-UNMAPPED-VISIT")
    assert issue.severity == "error" and issue.value == "WEEK 52" and "1 visit record(s)" in issue.message
    back = odm_io.read_odm(path, IssueLog())
    assert [(r["visit"], r["start"]) for r in back.rows["visit"]] == [("DAY 0", "2020-06-05")]


# ---------------------------------------------------------------------------------------------
# transactions, typed item data, record checks


def test_transactions_apply_in_file_order(tmp_path):
    text = _odm(
        _dm("001") + _dm("002") + _dm("003")
        + _lb("001", _lb_group(1, "ALT", "20") + _lb_group(2, "AST", "30") + _lb_group(3, "CREAT", "40"))
        # later in the file: remove one lab group, correct one value, drop a whole subject
        + _lb("001", _lb_group(2, "AST", "", tx="Remove")
              + '<ItemGroupData ItemGroupOID="IG.LB" ItemGroupRepeatKey="3" TransactionType="Update">'
                '<ItemData ItemOID="IT.LB.LBORRES" Value="41" TransactionType="Update"/></ItemGroupData>', tx="Update")
        + '<SubjectData SubjectKey="003" TransactionType="Remove"/>'
        + _dm("002", sex="F", tx="Update"))
    records, log = _read(tmp_path, text)
    assert [(r["subject_id"], r["sex"]) for r in records.rows["subject"]] == [("001", "M"), ("002", "F")]
    assert [(r["test"], r["result"], r["visit"]) for r in records.rows["lab_result"]] == [
        ("ALT", "20", "DAY 0"), ("CREAT", "41", "DAY 0")]
    removes = [i for i in log.issues if i.code == "ODM-TRANSACTION-REMOVE"]
    assert sorted(i.record for i in removes) == ["001/SE.DAY0/FORM.LB/IG.LB[2]", "003"]
    summary = next(i for i in log.issues if i.code == "ODM-TRANSACTIONS")
    assert "2 Remove" in summary.message and "4 Update" in summary.message
    assert not log.has_errors


def test_remove_of_missing_data_is_reported(tmp_path):
    records, log = _read(tmp_path, _odm(_dm("001") + '<SubjectData SubjectKey="009" TransactionType="Remove"/>'))
    assert len(records.rows["subject"]) == 1
    assert "ODM-TRANSACTION-CONFLICT" in _codes(log)


def test_typed_item_data_and_is_null(tmp_path):
    dm = ('<SubjectData SubjectKey="001"><SiteRef LocationOID="01"/><StudyEventData StudyEventOID="SE.COMMON">'
          '<FormData FormOID="FORM.DM"><ItemGroupData ItemGroupOID="IG.DM">'
          '<ItemDataString ItemOID="IT.DM.SEX">F</ItemDataString>'
          '<ItemDataPartialDate ItemOID="IT.DM.BRTHDTC">2012-03</ItemDataPartialDate>'
          '<ItemData ItemOID="IT.DM.RACE" IsNull="Yes"/>'
          '<ItemData ItemOID="IT.DM.RFICDTC" Value="2020-06-04"/></ItemGroupData></FormData></StudyEventData>'
          '</SubjectData>')
    records, log = _read(tmp_path, _odm(dm))
    assert public(records.rows["subject"][0]) == {
        "study_id": "NCT04387942", "site_id": "01", "subject_id": "001", "sex": "F", "birth_date": "2012-03",
        "consent_date": "2020-06-04"}
    assert log.issues == []


def test_records_are_checked_like_csv_rows(tmp_path):
    bad_date = _dm("004").replace('Value="2020-06-04"', 'Value="2020-13-45"')
    orphan = _lb("099", _lb_group(1, "ALT", "20"))
    dup = _lb("001", _lb_group(1, "ALT", "20") + _lb_group(2, "ALT", "20"))
    records, log = _read(tmp_path, _odm(_dm("001") + bad_date + orphan + dup))
    assert [r["subject_id"] for r in records.rows["subject"]] == ["001"]
    assert len(records.rows["lab_result"]) == 1
    schema = next(i for i in log.issues if i.code == "REC-SCHEMA")
    assert (schema.record, schema.field, schema.value) == ("004/SE.COMMON/FORM.DM/IG.DM", "consent_date", "2020-13-45")
    assert next(i for i in log.issues if i.code == "REC-ORPHAN").value == "099"
    assert next(i for i in log.issues if i.code == "REC-DUPLICATE").record == "001/SE.DAY0/FORM.LB/IG.LB[2]"
    counts = log.accounting[f"{tmp_path / 'export.xml'}#lab_results"]
    assert (counts["read"], counts["rejected"]) == (3, 2)


# ---------------------------------------------------------------------------------------------
# hostile and broken files


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE ODM [
{LAUGH_ENTITIES}
]>
<ODM xmlns="http://www.cdisc.org/ns/odm/v1.3" FileOID="&lol9;"><ClinicalData StudyOID="NCT04387942"
 MetaDataVersionOID="M"><SubjectData SubjectKey="&lol9;"/></ClinicalData></ODM>
""".replace("{LAUGH_ENTITIES}", LAUGH_ENTITIES)


def test_xml_bomb_is_reported_not_expanded(tmp_path):
    path = tmp_path / "bomb.xml"
    path.write_text(BILLION_LAUGHS, "utf-8")
    assert odm_io.is_odm(path)  # so the runner hands it to read_odm, which reports it
    log = IssueLog()
    started = time.perf_counter()
    records = odm_io.read_odm(path, log)
    assert time.perf_counter() - started < 2
    assert _codes(log) == ["ODM-XML-UNSAFE"]
    assert log.issues[0].severity == "error"
    assert all(not rows for _, rows in records.items())
    assert "lollollol" not in str(log.to_json_obj())


def test_external_entity_is_reported_not_read(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT", "utf-8")
    dm = _dm("001").replace('Value="M"', 'Value="&xxe;"')
    records, log = _read(tmp_path, _odm(dm, prolog=f'<!DOCTYPE ODM [<!ENTITY xxe SYSTEM "{secret.as_uri()}">]>\n'))
    assert _codes(log) == ["ODM-XML-UNSAFE"]
    assert records.rows["subject"] == []
    assert "TOP-SECRET-CONTENT" not in str(log.to_json_obj())
    # an external DTD is refused the same way
    _, log = _read(tmp_path, _odm(_dm("001"), prolog='<!DOCTYPE ODM SYSTEM "http://example.invalid/odm.dtd">\n'),
                   name="dtd.xml")
    assert _codes(log) == ["ODM-XML-UNSAFE"]


def test_oversized_prolog_is_refused_unparsed(tmp_path):
    padding = "<!--" + "x" * safexml.PROLOG_LIMIT + "-->\n"
    _, log = _read(tmp_path, _odm(_dm("001"), prolog=padding + '<!DOCTYPE ODM [<!ENTITY a "b">]>\n'))
    assert _codes(log) == ["ODM-XML-UNSAFE"]


def test_bare_doctype_is_harmless(tmp_path):
    records, log = _read(tmp_path, _odm(_dm("001"), prolog="<!DOCTYPE ODM>\n"))
    assert log.issues == [] and len(records.rows["subject"]) == 1


@pytest.mark.parametrize("text", [
    _odm(_dm("001"))[:-40],  # truncated
    _odm(_dm("001")).replace("</FormData>", "", 1),  # mismatched tag
    "",  # empty file
])
def test_malformed_xml_gives_one_clear_issue(tmp_path, text):
    records, log = _read(tmp_path, text)
    assert len(log.issues) == 1
    issue = log.issues[0]
    assert (issue.severity, issue.code) == ("error", "ODM-XML-PARSE")
    assert issue.message.startswith("not well-formed XML") and "Traceback" not in issue.message
    assert records.rows["subject"] == []


def test_other_xml_is_not_read_as_odm(tmp_path):
    records, log = _read(tmp_path, '<?xml version="1.0"?><ODM xmlns="http://www.cdisc.org/ns/odm/v2.0"/>')
    assert _codes(log) == ["ODM-NOT-ODM"]
