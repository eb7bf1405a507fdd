"""CDISC ODM 1.3.2 (EDC export) <-> canonical trial records.

ODM is one more reader and writer of the hub (design: hub and spoke).  Which
StudyEventOID / FormOID / ItemGroupOID / ItemOID carries which record field is data:
``mappings/odm/<study id lower>.yaml``, checked against
``schemas/config/odm-mapping.schema.json`` and chosen by the file's
``ClinicalData/@StudyOID``.  One ``ItemGroupData`` is one record; the subject key, the
study OID, the site (``SiteRef/@LocationOID``) and the visit label of the study event
fill the fields the mapping names for them.

Reading
    * Parsed under the hub's safe-XML policy (:mod:`converters.core.safexml`, shared with
      the Define-XML reader): a document type declaration with an internal subset or an
      external identifier, or a prolog beyond the scan limit, is refused before parsing
      (ODM-XML-UNSAFE); the parser has entity resolution, DTD loading, network access and
      huge trees off.  Malformed XML is one ODM-XML-PARSE error, never a traceback.
    * ``TransactionType`` Insert / Update / Remove / Upsert / Context is applied in file
      order at every level (subject, event, form, item group, item); Update and Upsert
      merge, Remove deletes, Context only locates what it holds.  Remove and conflicting
      transactions are reported (ODM-TRANSACTION-*); any other type is an error and its
      element is not applied (ODM-TRANSACTION-UNKNOWN).
    * A ClinicalData whose StudyOID has no mapping is one ODM-UNKNOWN-STUDY error; the
      ClinicalData of other studies in the file are still read.
    * ``ItemData/@Value`` and the typed ``ItemDataString``, ``ItemDataInteger`` … of ODM
      1.3.2 (value as element text) are read; ``IsNull="Yes"`` is an empty value.
    * Nothing is dropped silently: unmapped study events, forms, item groups and items are
      reported with their counts (ODM-UNMAPPED-EVENT / -FORM / -ITEMGROUP / -ITEM).
    * Every record is then checked exactly as :func:`records_io.read_records` checks a
      CSV row (REC-SCHEMA, REC-DUPLICATE, REC-ORPHAN), so the same data gives equal
      records whichever form it came in.

Writing
    :func:`write_odm` writes an ODM 1.3.2 Snapshot with the Study metadata (Protocol,
    StudyEventDefs, FormDefs, ItemGroupDefs, ItemDefs with DataType, CodeLists), AdminData
    (one Location per site) and ClinicalData, driven by the same mapping.  Output is
    deterministic: subjects, events, forms and item groups in a fixed order and a fixed
    ``CreationDateTime`` unless the caller gives one.

What does not round-trip
    Identifying fields (``x-identifying``: names, MRN, address, phone) are not written:
    an EDC does not hold them (reported as ODM-IDENTIFYING-OMITTED, info).  Visit labels
    that name no study event of the mapping cannot be placed and are reported
    (ODM-UNMAPPED-VISIT, error) with their count.  Audit trails, signatures and
    annotations of an input file are not converted.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from lxml import etree

from trialbridge.converters.core import iso8601, safexml
from trialbridge.converters.formats import records as records_io
from trialbridge.converters.core.files import atomic_open
from trialbridge.converters.core.issues import IssueLog, TrialbridgeError, schema_problem
from trialbridge.converters.core.records import RECORD_ORDER, Records, public, record_types

ODM_NS = "http://www.cdisc.org/ns/odm/v1.3"
XML_NS = "http://www.w3.org/XML/1998/namespace"
ODM_VERSION = "1.3.2"
# ODM requires a CreationDateTime; a wall-clock value would make every export differ.
# Exports carry this fixed value unless the caller passes another (design rule 6).
FIXED_CREATION_DATETIME = "2021-01-01T00:00:00+00:00"


def _q(tag: str) -> str:
    return f"{{{ODM_NS}}}{tag}"


# ---------------------------------------------------------------------------------------------
# the mapping


@dataclass(frozen=True)
class ItemMap:
    oid: str
    field: str
    datatype: str
    codelist: str | None
    question: str | None


@dataclass(frozen=True)
class FormMap:
    oid: str
    name: str
    record: str
    item_group: str
    domain: str | None
    repeating: bool
    from_study_oid: str | None
    from_site_ref: str | None
    from_study_event: str | None
    items: tuple[ItemMap, ...]


@dataclass(frozen=True)
class OdmMapping:
    data: dict[str, Any]
    source: str

    @property
    def study_oid(self) -> str:
        return self.data["study_oid"]

    @property
    def mdv_oid(self) -> str:
        return self.data["metadata_version"]["oid"]

    @property
    def subject_key(self) -> str:
        return self.data["subject_key"]

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.data["study_events"]

    @property
    def forms(self) -> dict[str, FormMap]:
        return self.data["_forms"]

    @property
    def codelists(self) -> dict[str, dict[str, Any]]:
        return self.data.get("codelists") or {}

    def event(self, oid: str) -> dict[str, Any] | None:
        return next((e for e in self.events if e["oid"] == oid), None)

    def event_for_visit(self, label: str | None) -> dict[str, Any] | None:
        return next((e for e in self.events if e["visit"] == (label or None)), None)

    def form_for_record(self, record: str) -> FormMap | None:
        return next((f for f in self.forms.values() if f.record == record), None)


@lru_cache(maxsize=1)
def _mapping_validator() -> jsonschema.Draft202012Validator:
    text = resources.files("trialbridge.schemas").joinpath("config", "odm-mapping.schema.json").read_text("utf-8")
    return jsonschema.Draft202012Validator(json.loads(text))


def mapping_resource(study_oid: str):
    """The bundled mapping file for a study id: ``mappings/odm/<study id lower>.yaml``."""
    safe = re.sub(r"[^a-z0-9_.-]", "_", study_oid.strip().lower())
    return resources.files("trialbridge.mappings").joinpath("odm", f"{safe}.yaml")


def _bundled_mapping(study_oid: str) -> OdmMapping | None:
    """The bundled mapping of a StudyOID, None when there is none (reported by the reader)."""
    if not study_oid or not mapping_resource(study_oid).is_file():
        return None
    return load_mapping(None, study_oid)


def load_mapping(ref: str | Path | dict | OdmMapping | None = None, study_oid: str | None = None) -> OdmMapping:
    """A mapping from a path, a parsed dict, or (``ref`` None) the bundled one for ``study_oid``.

    Raises :class:`TrialbridgeError` when there is none or it is invalid (usage error)."""
    if isinstance(ref, OdmMapping):
        return ref
    if isinstance(ref, dict):
        data, source = ref, "<mapping>"
    else:
        if ref is None:
            if not study_oid:
                raise TrialbridgeError("the ODM file names no StudyOID; give an ODM mapping file")
            res = mapping_resource(study_oid)
            if not res.is_file():
                raise TrialbridgeError(f"no ODM mapping for study {study_oid!r} (looked for mappings/odm/"
                                       f"{res.name}); give an ODM mapping file")
            source, text = f"mappings/odm/{res.name}", res.read_text("utf-8")
        else:
            source = str(ref)
            try:
                text = Path(ref).read_text("utf-8")
            except OSError as exc:
                raise TrialbridgeError(f"{ref}: cannot read ODM mapping: {exc}") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise TrialbridgeError(f"{source}: ODM mapping is not valid YAML: {exc}") from exc
    return _build_mapping(data, source)


def _build_mapping(data: Any, source: str) -> OdmMapping:
    problem = schema_problem(_mapping_validator(), data)
    if problem:
        raise TrialbridgeError(f"{source}: ODM mapping invalid {problem}")
    problems: list[str] = []
    types = record_types()
    codelists = data.get("codelists") or {}
    forms: dict[str, FormMap] = {}
    seen_records: dict[str, str] = {}
    for oid, spec in data["forms"].items():
        rtype = types[spec["record"]]
        if spec["record"] in seen_records:
            problems.append(f"forms {seen_records[spec['record']]} and {oid} both map {spec['record']} records")
        seen_records[spec["record"]] = oid
        items: list[ItemMap] = []
        fields_seen: set[str] = set()
        context = [spec.get(k) for k in ("from_study_oid", "from_site_ref", "from_study_event")]
        for name in [data["subject_key"], *[c for c in context if c]]:
            if name not in rtype.fields:
                problems.append(f"{oid}: {name!r} is not a field of {rtype.name} records")
            fields_seen.add(name)
        for item_oid, item in spec["items"].items():
            item = {"field": item} if isinstance(item, str) else item
            field_name = item["field"]
            if field_name not in rtype.fields:
                problems.append(f"{oid}/{item_oid}: {field_name!r} is not a field of {rtype.name} records")
            elif field_name in fields_seen:
                problems.append(f"{oid}/{item_oid}: field {field_name!r} is filled twice")
            elif rtype.schema["properties"][field_name].get("x-identifying"):
                problems.append(f"{oid}/{item_oid}: {field_name!r} is identifying and is not exported to an EDC")
            fields_seen.add(field_name)
            if item.get("codelist") and item["codelist"] not in codelists:
                problems.append(f"{oid}/{item_oid}: codelist {item['codelist']} is not defined")
            items.append(ItemMap(item_oid, field_name, item.get("datatype", "text"), item.get("codelist"),
                                 item.get("question")))
        forms[oid] = FormMap(oid, spec["name"], spec["record"], spec["item_group"], spec.get("domain"),
                             spec["repeating"], spec.get("from_study_oid"), spec.get("from_site_ref"),
                             spec.get("from_study_event"), tuple(items))
    event_oids = [e["oid"] for e in data["study_events"]]
    if len(set(event_oids)) != len(event_oids):
        problems.append("study event OIDs repeat")
    visits = [e["visit"] for e in data["study_events"]]
    if visits.count(None) != 1:
        problems.append("exactly one study event must have visit: null (subject-level and log forms)")
    if len({v for v in visits if v}) != len([v for v in visits if v]):
        problems.append("a visit label names two study events")
    if problems:
        raise TrialbridgeError(f"{source}: ODM mapping inconsistent: " + "; ".join(problems))
    return OdmMapping({**data, "_forms": forms}, source)


# ---------------------------------------------------------------------------------------------
# safety: the hub's policy (converters/core/safexml.py) looks at the prolog before any parser


def _local(name: str | None) -> str | None:
    return name.rsplit(":", 1)[-1] if name else None


def is_odm(path: str | Path) -> bool:
    """True for an XML file whose root element is ``ODM`` (found without parsing the file), or
    whose prolog runs past the safe-XML scan limit (so that the reader refuses it by name)."""
    path = Path(path)
    if not path.is_file() or path.suffix.lower() != ".xml":
        return False
    try:
        prolog = safexml.scan_prolog(path)
    except OSError:
        return False
    # no root within the scan limit: padding in front of something; the reader refuses it
    # with a finding (ODM-XML-UNSAFE) rather than the file being "not an input we know"
    return _local(prolog.root) == "ODM" or (prolog.root is None and prolog.problem is not None
                                             and "longer than" in prolog.problem)


def _parse(path: Path, log: IssueLog) -> etree._Element | None:
    fname = str(path)
    try:
        tree = safexml.parse(path)
    except safexml.UnsafeXMLError as exc:
        log.error("ODM-XML-UNSAFE", f"{exc}; file not read", file=fname,
                  value=exc.doctype[:200] if exc.doctype else None)
        return None
    except safexml.MalformedXMLError as exc:
        log.error("ODM-XML-PARSE", f"{exc}; file not read", file=fname,
                  record=f"line {exc.line}" if exc.line else None)
        return None
    except OSError as exc:
        raise TrialbridgeError(f"{fname}: cannot read: {exc}") from exc
    root = tree.getroot()
    if root.tag != _q("ODM"):
        log.error("ODM-NOT-ODM", f"root element is {root.tag!r}, not ODM 1.3 ({{{ODM_NS}}}ODM); file not read",
                  file=fname, value=str(root.tag))
        return None
    version = root.get("ODMVersion")
    if version not in ("1.3", "1.3.1", "1.3.2"):
        log.warning("ODM-VERSION", f"ODMVersion is {version!r}; read as ODM 1.3.2", file=fname, value=version)
    return root


# ---------------------------------------------------------------------------------------------
# reading


class _Node:
    """One level of ClinicalData (subject, event, form, item group) after transactions."""

    __slots__ = ("children", "attrs", "line")

    def __init__(self, line: int | None):
        self.children: dict[tuple, Any] = {}
        self.attrs: dict[str, str] = {}
        self.line = line


# ODM 1.3.2 TransactionType values: Upsert inserts or updates without complaint; Context only
# locates the data inside it (created when absent, as ODM means it), and on ItemData sets nothing.
TRANSACTION_TYPES = ("Insert", "Update", "Remove", "Upsert", "Context")

_LEVELS = (
    ("SubjectData", "SubjectKey", None),
    ("StudyEventData", "StudyEventOID", "StudyEventRepeatKey"),
    ("FormData", "FormOID", "FormRepeatKey"),
    ("ItemGroupData", "ItemGroupOID", "ItemGroupRepeatKey"),
)


class _Transactions:
    def __init__(self, log: IssueLog, fname: str):
        self.log, self.fname = log, fname
        self.counts: Counter = Counter()

    def known(self, tx: str | None, el: etree._Element, label: str) -> bool:
        if tx is None or tx in TRANSACTION_TYPES:
            return True
        if el.tag == _q("SubjectData"):  # a subject record read and not converted
            self.log.count_row(f"{self.fname}#subjects", "read")
            self.log.count_row(f"{self.fname}#subjects", "rejected")
        self.log.error("ODM-TRANSACTION-UNKNOWN", f"TransactionType {tx!r} on {etree.QName(el).localname} {label} is none of "
                       f"ODM's ({', '.join(TRANSACTION_TYPES)}): what it meant cannot be told; it and everything "
                       "inside it were not applied", file=self.fname, record=label, field="TransactionType", value=tx)
        return False

    def apply(self, parent: _Node, key: tuple, el: etree._Element, label: str) -> _Node | None:
        tx = el.get("TransactionType")
        if tx:
            self.counts[tx] += 1
        if not self.known(tx, el, label):
            return None
        if tx == "Remove":
            if parent.children.pop(key, None) is None:
                self.log.warning("ODM-TRANSACTION-CONFLICT", f"Remove of {label}, which does not exist; nothing "
                                 "removed", file=self.fname, record=label)
            else:
                self.log.info("ODM-TRANSACTION-REMOVE", f"{label} removed by a Remove transaction", file=self.fname,
                              record=label)
            return None
        node = parent.children.get(key)
        if node is None:
            if tx == "Update":
                self.log.warning("ODM-TRANSACTION-CONFLICT", f"Update of {label}, which does not exist; applied as "
                                 "Insert", file=self.fname, record=label)
            node = parent.children[key] = _Node(el.sourceline)
        return node

    def apply_item(self, group: _Node, oid: str, value: str, el: etree._Element, label: str) -> None:
        tx = el.get("TransactionType")
        if tx:
            self.counts[tx] += 1
        if not self.known(tx, el, f"{label} item {oid}") or tx == "Context":  # Context: no value of its own
            return
        items = group.attrs
        if tx == "Remove":
            if items.pop(oid, None) is None:
                self.log.warning("ODM-TRANSACTION-CONFLICT", f"Remove of item {oid} in {label}, which has no value; "
                                 "nothing removed", file=self.fname, record=label, field=oid)
            else:
                self.log.info("ODM-TRANSACTION-REMOVE", f"item {oid} in {label} removed by a Remove transaction",
                              file=self.fname, record=label, field=oid)
            return
        if tx == "Insert" and oid in items:
            self.log.warning("ODM-TRANSACTION-CONFLICT", f"Insert of item {oid} in {label}, which already has a "
                             "value; the later value is kept", file=self.fname, record=label, field=oid,
                             value=value)
        items[oid] = value


def _item_value(el: etree._Element) -> tuple[str | None, str]:
    """(ItemOID, value) of ItemData (Value attribute) or a typed ItemData* element (text)."""
    if el.get("IsNull") == "Yes":
        return el.get("ItemOID"), ""
    if el.tag == _q("ItemData"):
        return el.get("ItemOID"), (el.get("Value") or "").strip()
    return el.get("ItemOID"), (el.text or "").strip()


def _label(parts: list[str]) -> str:
    return "/".join(parts)


def _part(oid: str | None, repeat: str | None) -> str:
    return f"{oid}[{repeat}]" if repeat else str(oid)


def read_odm(path: str | Path, log: IssueLog, mapping: str | Path | dict | OdmMapping | None = None) -> Records:
    """Records from an ODM 1.3.x file; every problem becomes an issue in ``log``.

    ``mapping`` is a mapping file, a parsed mapping or None (then the bundled
    ``mappings/odm/<StudyOID lower>.yaml`` of each ClinicalData's StudyOID)."""
    path = Path(path)
    fname = str(path)
    root = _parse(path, log)
    if root is None:
        return Records()
    given = load_mapping(mapping) if mapping is not None else None
    tx = _Transactions(log, fname)
    # (StudyOID, SubjectKey) -> subject node; transactions applied in file order
    top = _Node(None)
    site_of: dict[tuple, str] = {}
    clinical = root.findall(_q("ClinicalData"))
    if not clinical:
        log.warning("ODM-NO-CLINICAL-DATA", "the file holds no ClinicalData; no records read", file=fname)
    mappings: dict[str, OdmMapping | None] = {}
    for cd in clinical:
        study_oid = (cd.get("StudyOID") or "").strip()
        if study_oid not in mappings:
            mappings[study_oid] = given or _bundled_mapping(study_oid)
        if mappings[study_oid] is None:  # no mapping: nothing of this study can be placed
            subjects = cd.findall(_q("SubjectData"))
            groups = sum(1 for _ in cd.iter(_q("ItemGroupData")))
            log.error("ODM-UNKNOWN-STUDY", f"ClinicalData of StudyOID {study_oid!r} (line {cd.sourceline}): no ODM "
                      f"mapping for this study (mappings/odm/{mapping_resource(study_oid or 'none').name}); its "
                      f"{len(subjects)} subject(s) and {groups} item group(s) were not converted", file=fname,
                      field="StudyOID", value=study_oid)
            log.count_row(f"{fname}#subjects", "read", len(subjects))
            log.count_row(f"{fname}#subjects", "rejected", len(subjects))
            continue
        for subj in cd.iterchildren(_q("SubjectData")):
            key_value = (subj.get("SubjectKey") or "").strip()
            skey = (study_oid, key_value)
            snode = tx.apply(top, skey, subj, key_value or "(no SubjectKey)")
            if snode is None:
                if subj.get("TransactionType") == "Remove":
                    site_of.pop(skey, None)
                continue
            site = subj.find(_q("SiteRef"))
            if site is not None and site.get("LocationOID"):
                site_of[skey] = site.get("LocationOID").strip()
            _read_levels(subj, snode, 1, [key_value], tx)
    if tx.counts:
        log.info("ODM-TRANSACTIONS", "transactions applied in file order: "
                 + ", ".join(f"{n} {t}" for t, n in sorted(tx.counts.items())), file=fname)
    raw = _to_raw_rows(top, site_of, mappings, log, fname)
    return _accept_all(raw, log, fname)


def _read_levels(el: etree._Element, node: _Node, level: int, label: list[str], tx: _Transactions) -> None:
    if level == len(_LEVELS):
        for item in el:
            if not isinstance(item.tag, str) or not item.tag.startswith(_q("ItemData")):
                continue
            oid, value = _item_value(item)
            tx.apply_item(node, oid or "(no ItemOID)", value, item, _label(label))
        return
    tag, oid_attr, repeat_attr = _LEVELS[level]
    for child in el.iterchildren(_q(tag)):
        oid, repeat = child.get(oid_attr), child.get(repeat_attr)
        here = [*label, _part(oid, repeat)]
        sub = tx.apply(node, (oid, repeat), child, _label(here))
        if sub is not None:
            _read_levels(child, sub, level + 1, here, tx)


def _to_raw_rows(top: _Node, site_of: dict[tuple, str], mappings: dict[str, OdmMapping], log: IssueLog,
                 fname: str) -> dict[str, list[tuple[str, dict[str, str]]]]:
    raw: dict[str, list[tuple[str, dict[str, str]]]] = {n: [] for n in RECORD_ORDER}
    unmapped_events: Counter = Counter()
    unmapped_forms: Counter = Counter()
    unmapped_groups: Counter = Counter()
    unmapped_items: Counter = Counter()
    for (study_oid, subject_key), snode in top.children.items():
        mp = mappings[study_oid]
        for (se_oid, se_rk), enode in snode.children.items():
            event = mp.event(se_oid)
            for (form_oid, form_rk), fnode in enode.children.items():
                form = mp.forms.get(form_oid)
                for (ig_oid, ig_rk), gnode in fnode.children.items():
                    ref = _label([subject_key, _part(se_oid, se_rk), _part(form_oid, form_rk), _part(ig_oid, ig_rk)])
                    if event is None:
                        unmapped_events[se_oid] += 1
                        continue
                    if form is None:
                        unmapped_forms[form_oid] += 1
                        continue
                    if ig_oid != form.item_group:
                        unmapped_groups[(form_oid, ig_oid)] += 1
                        continue
                    by_oid = {i.oid: i.field for i in form.items}
                    row: dict[str, str] = {mp.subject_key: subject_key}
                    if form.from_study_oid:
                        row[form.from_study_oid] = study_oid
                    if form.from_site_ref and (study_oid, subject_key) in site_of:
                        row[form.from_site_ref] = site_of[(study_oid, subject_key)]
                    if form.from_study_event and event["visit"]:
                        row[form.from_study_event] = event["visit"]
                    for item_oid, value in gnode.attrs.items():
                        if item_oid in by_oid:
                            row[by_oid[item_oid]] = value
                        elif value:
                            unmapped_items[(form_oid, item_oid)] += 1
                    raw[form.record].append((ref, row))
    unplaced = sum(unmapped_events.values()) + sum(unmapped_forms.values()) + sum(unmapped_groups.values())
    if unplaced:  # item groups the mapping does not take: read, out of scope (the warnings below say which)
        log.count_row(f"{fname}#unmapped", "read", unplaced)
        log.count_row(f"{fname}#unmapped", "out_of_scope", unplaced)
    for oid, n in sorted(unmapped_events.items(), key=lambda kv: str(kv[0])):
        log.warning("ODM-UNMAPPED-EVENT", f"StudyEventOID {oid} names no study event of the mapping; its {n} item "
                    "group(s) were not converted", file=fname, field=oid, value=n)
    for oid, n in sorted(unmapped_forms.items(), key=lambda kv: str(kv[0])):
        log.warning("ODM-UNMAPPED-FORM", f"FormOID {oid} is not mapped; its {n} item group(s) were not converted",
                    file=fname, field=oid, value=n)
    for (form_oid, oid), n in sorted(unmapped_groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        log.warning("ODM-UNMAPPED-ITEMGROUP", f"ItemGroupOID {oid} in form {form_oid} is not mapped; its {n} "
                    "item group(s) were not converted", file=fname, field=oid, value=n)
    for (form_oid, oid), n in sorted(unmapped_items.items(), key=lambda kv: tuple(map(str, kv[0]))):
        log.warning("ODM-UNMAPPED-ITEM", f"ItemOID {oid} in form {form_oid} is not mapped; its {n} non-empty "
                    "value(s) were not converted", file=fname, field=oid, value=n)
    return raw


def _accept_all(raw: dict[str, list[tuple[str, dict[str, str]]]], log: IssueLog, fname: str) -> Records:
    records = Records()
    types = record_types()
    subject_ids: set[str] | None = None
    for name in RECORD_ORDER:
        rows = list(records_io.accept_rows(raw[name], types[name], log, fname, subject_ids,
                                account=f"{fname}#{types[name].file}"))
        records.rows[name] = rows
        if name == "subject":
            subject_ids = {r["subject_id"] for r in rows}
            study_ids = sorted({r["study_id"] for r in rows})
            records.study_id = study_ids[0] if study_ids else None
            if len(study_ids) > 1:
                log.error("REC-SEVERAL-STUDIES", f"subjects name several studies ({', '.join(study_ids)}); "
                          f"converting with {study_ids[0]}", file=fname, field="study_id")
    return records


# ---------------------------------------------------------------------------------------------
# writing


def write_odm(records: Records, study, path: str | Path, log: IssueLog | None = None, *,
              mapping: str | Path | dict | OdmMapping | None = None,
              creation_datetime: str = FIXED_CREATION_DATETIME) -> Path:
    """Write ``records`` as an ODM 1.3.2 Snapshot (metadata + clinical data) to ``path``.

    ``study`` is the :class:`mappings.study.Study` (names, sites); the mapping defaults to
    the bundled one of its study id.  Problems go to ``log`` (a fresh one if None)."""
    log = log if log is not None else IssueLog()
    path = Path(path)
    study_id = study.study_id
    mp = load_mapping(mapping, study_id)
    root = etree.Element(_q("ODM"), nsmap={None: ODM_NS}, attrib={
        "FileType": "Snapshot", "Granularity": "All", "FileOID": f"ODM.{study_id}.EXPORT",
        "CreationDateTime": creation_datetime, "ODMVersion": ODM_VERSION, "Originator": "trialbridge",
        "SourceSystem": "trialbridge"})
    _write_study(root, mp, study)
    clinical = _clinical_groups(records, mp, study_id, log, str(path))
    _write_admin(root, mp, study, sorted({s["site"] for subjects in clinical.values()
                                          for s in subjects.values() if s["site"]}), creation_datetime[:10])
    for study_oid in sorted(clinical):
        cd = etree.SubElement(root, _q("ClinicalData"), StudyOID=study_oid, MetaDataVersionOID=mp.mdv_oid)
        for subject_id in sorted(clinical[study_oid]):
            _write_subject(cd, subject_id, clinical[study_oid][subject_id], mp, log, str(path))
    with atomic_open(path, "wb") as fh:
        etree.ElementTree(root).write(fh, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    return path


def _text_el(parent: etree._Element, tag: str, text: str) -> etree._Element:
    el = etree.SubElement(parent, _q(tag))
    tt = etree.SubElement(el, _q("TranslatedText"))
    tt.set(f"{{{XML_NS}}}lang", "en")
    tt.text = text
    return el


def _event_forms(mp: OdmMapping, event: dict[str, Any]) -> list[FormMap]:
    if event["visit"] is None:
        return list(mp.forms.values())
    return [f for f in mp.forms.values() if f.from_study_event]


def _write_study(root: etree._Element, mp: OdmMapping, study) -> None:
    cfg = getattr(study, "config", {}) or {}
    st = etree.SubElement(root, _q("Study"), OID=study.study_id)
    gv = etree.SubElement(st, _q("GlobalVariables"))
    etree.SubElement(gv, _q("StudyName")).text = cfg.get("short_title") or study.study_id
    etree.SubElement(gv, _q("StudyDescription")).text = " ".join(str(cfg.get("title") or study.study_id).split())
    etree.SubElement(gv, _q("ProtocolName")).text = study.study_id
    mdv = etree.SubElement(st, _q("MetaDataVersion"), OID=mp.mdv_oid, Name=mp.data["metadata_version"]["name"],
                           Description=mp.data["description"])
    protocol = etree.SubElement(mdv, _q("Protocol"))
    for n, event in enumerate(mp.events, start=1):
        etree.SubElement(protocol, _q("StudyEventRef"), StudyEventOID=event["oid"], OrderNumber=str(n),
                         Mandatory="Yes" if event["type"] == "Scheduled" else "No")
    for event in mp.events:
        sed = etree.SubElement(mdv, _q("StudyEventDef"), OID=event["oid"], Name=event["name"], Repeating="No",
                               Type=event["type"])
        for n, form in enumerate(_event_forms(mp, event), start=1):
            etree.SubElement(sed, _q("FormRef"), FormOID=form.oid, OrderNumber=str(n), Mandatory="No")
    for form in mp.forms.values():
        fd = etree.SubElement(mdv, _q("FormDef"), OID=form.oid, Name=form.name, Repeating="No")
        etree.SubElement(fd, _q("ItemGroupRef"), ItemGroupOID=form.item_group, Mandatory="Yes")
    types = record_types()
    for form in mp.forms.values():
        rtype = types[form.record]
        attrs = {"OID": form.item_group, "Name": form.name, "Repeating": "Yes" if form.repeating else "No"}
        if form.domain:
            attrs.update(Domain=form.domain, SASDatasetName=form.domain)
        attrs["Purpose"] = "Tabulation"
        igd = etree.SubElement(mdv, _q("ItemGroupDef"), attrib=attrs)
        _text_el(igd, "Description", f"One {rtype.name} record (a row of {rtype.file}.csv) per item group")
        for n, item in enumerate(form.items, start=1):
            etree.SubElement(igd, _q("ItemRef"), ItemOID=item.oid, OrderNumber=str(n),
                             Mandatory="Yes" if item.field in rtype.required else "No")
    for form in mp.forms.values():
        rtype = types[form.record]
        for item in form.items:
            idf = etree.SubElement(mdv, _q("ItemDef"), OID=item.oid, Name=item.field, DataType=item.datatype)
            prop = rtype.schema["properties"][item.field]
            _text_el(idf, "Question", item.question or prop.get("description", item.field))
            if item.codelist:
                etree.SubElement(idf, _q("CodeListRef"), CodeListOID=item.codelist)
            etree.SubElement(idf, _q("Alias"), Context="trialbridge", Name=f"{rtype.name}.{item.field}")
    for oid, cl in mp.codelists.items():
        cld = etree.SubElement(mdv, _q("CodeList"), OID=oid, Name=cl["name"], DataType="text")
        for entry in cl["items"]:
            cli = etree.SubElement(cld, _q("CodeListItem"), CodedValue=entry["value"])
            _text_el(cli, "Decode", entry.get("decode") or entry["value"])


def _write_admin(root: etree._Element, mp: OdmMapping, study, site_ids: list[str], effective: str) -> None:
    if not site_ids:
        return
    admin = etree.SubElement(root, _q("AdminData"), StudyOID=study.study_id)
    for site_id in site_ids:
        site = study.site(site_id) if hasattr(study, "site") else None
        loc = etree.SubElement(admin, _q("Location"), OID=site_id, Name=(site or {}).get("name") or f"Site {site_id}",
                               LocationType="Site")
        etree.SubElement(loc, _q("MetaDataVersionRef"), StudyOID=study.study_id, MetaDataVersionOID=mp.mdv_oid,
                         EffectiveDate=effective)


def _clinical_groups(records: Records, mp: OdmMapping, default_study: str, log: IssueLog,
                     fname: str) -> dict[str, dict[str, dict[str, Any]]]:
    """study OID -> subject id -> {"site": ..., "events": {event oid: {form oid: [rows]}}}."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    subject_study: dict[str, str] = {}
    types = record_types()
    unplaced: Counter = Counter()
    omitted: Counter = Counter()
    unmapped_fields: Counter = Counter()
    for name in RECORD_ORDER:
        rows = records.rows.get(name) or []
        if not rows:
            continue
        form = mp.form_for_record(name)
        rtype = types[name]
        if form is None:
            log.error("ODM-UNMAPPED-RECORD", f"no form of the ODM mapping takes {name} records; its {len(rows)} "
                      "record(s) were not written", file=fname, field=name, value=len(rows))
            continue
        used = {i.field for i in form.items} | {mp.subject_key}
        used |= {f for f in (form.from_study_oid, form.from_site_ref, form.from_study_event) if f}
        ordered = sorted(rows, key=lambda r: tuple(r.get(k, "") for k in rtype.key))
        for row in ordered:
            subject_id = row.get(mp.subject_key, "")
            study_oid = (row.get(form.from_study_oid) if form.from_study_oid else None) \
                or subject_study.get(subject_id) or default_study
            if name == "subject":
                subject_study.setdefault(subject_id, study_oid)
            visit = row.get(form.from_study_event) if form.from_study_event else None
            event = mp.event_for_visit(visit)
            if event is None:
                unplaced[(name, visit)] += 1
                continue
            for k, v in public(row).items():
                if v in ("", None) or k in used:
                    continue
                if rtype.schema["properties"].get(k, {}).get("x-identifying"):
                    omitted[(name, k)] += 1
                else:
                    unmapped_fields[(name, k)] += 1
            subject = out.setdefault(study_oid, {}).setdefault(subject_id, {"site": None, "events": {}})
            if form.from_site_ref and row.get(form.from_site_ref):
                if subject["site"] and subject["site"] != row[form.from_site_ref]:
                    log.warning("ODM-CONTEXT-CONFLICT", f"subject {subject_id} names sites {subject['site']} and "
                                f"{row[form.from_site_ref]}; SiteRef holds the first", file=fname,
                                field=form.from_site_ref, value=row[form.from_site_ref])
                subject["site"] = subject["site"] or row[form.from_site_ref]
            subject["events"].setdefault(event["oid"], {}).setdefault(form.oid, []).append(row)
    for (name, visit), n in sorted(unplaced.items()):
        log.error("ODM-UNMAPPED-VISIT", f"visit label {visit!r} names no study event of the ODM mapping; {n} {name} "
                  "record(s) were not written", file=fname, field="visit", value=visit)
    for (name, k), n in sorted(omitted.items()):
        log.info("ODM-IDENTIFYING-OMITTED", f"{n} identifying {name}.{k} value(s) not written: an EDC export does "
                 "not hold them", file=fname, field=k, value=n)
    for (name, k), n in sorted(unmapped_fields.items()):
        log.warning("ODM-UNMAPPED-FIELD", f"{name}.{k} has no ItemOID in the ODM mapping; {n} value(s) not written",
                    file=fname, field=k, value=n)
    return out


def _events_in_time_order(mp: OdmMapping, events: dict[str, dict[str, list]]) -> list[dict[str, Any]]:
    """The subject's study events as they happened: the event without a visit label first,
    then by the earliest date of its records (first ISO 8601 key field of each record type),
    ties and undated events in mapping order.  Readers then see records in time order."""
    types = record_types()

    def first_date(oid: str) -> tuple:
        dates = []
        for form_oid, rows in events[oid].items():
            rtype = types[mp.forms[form_oid].record]
            date_field = next((k for k in rtype.key if rtype.schema["properties"][k].get("x-iso8601")), None)
            dates += [r[date_field] for r in rows if date_field and r.get(date_field)]
        return iso8601.sort_key(iso8601.earliest(dates))  # undated (None) sorts last

    order = {e["oid"]: n for n, e in enumerate(mp.events)}
    present = [e for e in mp.events if events.get(e["oid"])]
    return sorted(present, key=lambda e: (e["visit"] is not None, first_date(e["oid"]), order[e["oid"]]))


def _write_subject(cd: etree._Element, subject_id: str, subject: dict[str, Any], mp: OdmMapping, log: IssueLog,
                   fname: str) -> None:
    sd = etree.SubElement(cd, _q("SubjectData"), SubjectKey=subject_id)
    if subject["site"]:
        etree.SubElement(sd, _q("SiteRef"), LocationOID=subject["site"])
    outside: Counter = Counter()
    for event in _events_in_time_order(mp, subject["events"]):
        forms = subject["events"][event["oid"]]
        sed = etree.SubElement(sd, _q("StudyEventData"), StudyEventOID=event["oid"])
        for form in mp.forms.values():
            rows = forms.get(form.oid)
            if not rows:
                continue
            fd = etree.SubElement(sed, _q("FormData"), FormOID=form.oid)
            for n, row in enumerate(rows, start=1):
                attrs = {"ItemGroupOID": form.item_group}
                if form.repeating or len(rows) > 1:
                    attrs["ItemGroupRepeatKey"] = str(n)
                ig = etree.SubElement(fd, _q("ItemGroupData"), attrib=attrs)
                for item in form.items:
                    value = row.get(item.field)
                    if value in (None, ""):
                        continue
                    if item.codelist and value not in {c["value"] for c in mp.codelists[item.codelist]["items"]}:
                        outside[(item.oid, value)] += 1
                    try:
                        etree.SubElement(ig, _q("ItemData"), ItemOID=item.oid, Value=str(value))
                    except ValueError as exc:
                        log.error("ODM-VALUE-INVALID", f"value cannot be written to XML ({exc}); not written",
                                  file=fname, record=subject_id, field=item.field, value=repr(value))
    for (oid, value), n in sorted(outside.items()):
        log.warning("ODM-CODELIST-VALUE", f"subject {subject_id}: {n} value(s) {value!r} of {oid} are not in its "
                    "codelist; written as given", file=fname, record=subject_id, field=oid, value=value)
