"""Define-XML 2.1 for the SDTM datasets we write, and reading/checking of Define-XML 2.0/2.1.

* :func:`build_define_from_stats` / :func:`write_define_from_stats` ``(metas, stats, study, ...)``
  — one Define-XML 2.1.0 document (ODM 1.3.2 base, ``FileType="Snapshot"``) built as one lxml
  tree and serialised once.  ``metas`` (name -> :class:`Dataset` without rows) give variables,
  labels and keys; ``stats`` (name -> :class:`~converters.formats.sdtm.ColumnStats`, gathered
  while the rows were written) give every Length, DataType, SignificantDigits, value-level item
  and codelist subset: no dataset is read or rescanned.  Every OID is derived from
  dataset/variable/codelist names, elements are emitted in a fixed (sorted) order and
  ``CreationDateTime`` is the ``created`` argument (by default the run's creation time, fixed
  by ``SOURCE_DATE_EPOCH``), so the same datasets give the same bytes.
  OIDs match :mod:`converters.formats.sdtm`'s Dataset-JSON (``IG.<DS>``, ``IT.<DS>.<VAR>``,
  ``MDV.TRIALBRIDGE``) so a Dataset-JSON file and the define describe the same items.
  :func:`build_define` / :func:`write_define` ``(datasets, study, ...)`` are the same for whole
  in-memory datasets (statistics computed from their rows).
* :func:`validate_define_xsd` — XSD validation with lxml against the schemas shipped in
  ``schemas/define-xml`` (see its README): Define-XML 2.1 against the CDISC library-xml set
  (``strict=True``: the odmlib 2.1.9 set, whose enumerations follow the Define-XML CT package 59
  and reject e.g. a Standard Name that is not in CT), Define-XML 2.0 against the 2.0.0 set.
* :func:`read_define` — Define-XML 2.0 or 2.1 into :class:`DefineMetadata`, parsed without
  entity expansion, DTD loading or network access.
* :func:`check_define_against_stats` ``(meta, metas, stats, log)`` — dataset ⇄ define agreement
  from the column statistics (lengths in the define vs longest values written, types, codelist
  values); :func:`check_define_against_datasets` the same for whole in-memory datasets (the
  Pinnacle 21 rule each check mirrors is named in ``docs/define-xml.md`` and in :data:`RULES`).

Sources: CDISC Define-XML v2.1 specification (element order and attribute rules as enforced by
the official XSD, cdisc-org/library-xml @ f0ca31eae065) and the CDISC MSG v2 Define-XML 2.1
example (``shared/reference/dataset-json/examples/sdtm/define.xml``) for conventions
(OID prefixes, Origin Type/Source pairs, external MedDRA codelist, WhereClause form).
"""
from __future__ import annotations

import re
import sys
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

from lxml import etree

from trialbridge.mappings.terminology import ct
from trialbridge.converters.formats import sdtm as sdtm_io
from trialbridge.converters.core import safexml
from trialbridge.converters.core.datasets import Dataset, Variable
from trialbridge.converters.core.clock import creation_datetime
from trialbridge.converters.core.files import atomic_path
from trialbridge.converters.core.issues import IssueLog
from trialbridge.converters.formats.sdtm.dataset_json import num_data_type
from trialbridge.converters.formats.sdtm.stats import VLM_DOMAINS, VLM_SUFFIXES, ColumnStats, VarStats
from trialbridge.converters.core.sdtm_spec import governed_codelists, load_spec, split_parent

ODM_NS = "http://www.cdisc.org/ns/odm/v1.3"
DEF21_NS = "http://www.cdisc.org/ns/def/v2.1"
DEF20_NS = "http://www.cdisc.org/ns/def/v2.0"
DEF10_NS = "http://www.cdisc.org/ns/def/v1.0"
XLINK_NS = "http://www.w3.org/1999/xlink"
XML_NS = "http://www.w3.org/XML/1998/namespace"
NSMAP = {None: ODM_NS, "def": DEF21_NS, "xlink": XLINK_NS}

DEFINE_VERSION = "2.1.0"
SDTMIG_VERSION = "3.3"
MDV_OID = "MDV.TRIALBRIDGE"  # = sdtm_io.write_dataset_json's metaDataVersionOID default
STD_IG = "STD.SDTMIG.3-3"
def _std_ct() -> str:
    return "STD.CT.SDTM." + ct.version()
DEFAULT_CREATED = sdtm_io.DEFAULT_CREATED
MAX_XSD_ISSUES = 500

# Stable rule codes -> (severity, Pinnacle 21 rule mirrored or "unconfirmed").  The P21 ids are
# confirmed from the rule list in the Pinnacle 21 report shipped with the PHUSE TDF
# (shared/reference/sdtm/phuse-tdf-sdtm-v1.0/pinnacle21-report-TDF_SDTM.xlsx).
RULES: dict[str, tuple[str, str]] = {
    "DEFINE-XSD": ("error", "Define-XML schema validation (P21 DD-series schema check; id unconfirmed)"),
    "DEFINE-XML-SYNTAX": ("error", "not well-formed XML"),
    "DEFINE-XML-ENTITY": ("error", "DOCTYPE declares entities; document refused (XXE / entity expansion)"),
    "DEFINE-VERSION-UNSUPPORTED": ("info", "Define-XML 1.0 or unknown version"),
    "DEFINE-DATASET-MISSING": ("error", "SD1063 Dataset is not present in define.xml"),
    "DEFINE-DATASET-EXTRA": ("error", "SD0061 Domain referenced in define.xml but dataset is missing"),
    "DEFINE-VARIABLE-MISSING": ("error", "SD0060 Variable in dataset is not present in define.xml"),
    "DEFINE-VARIABLE-EXTRA": ("error", "SD0054 Variable in define.xml is not present in the dataset"),
    "DEFINE-LABEL-MISMATCH": ("warning", "unconfirmed (cf. SD0063 SDTM/dataset variable label mismatch)"),
    "DEFINE-LENGTH-SHORT": ("error", "unconfirmed (values would be truncated at the define Length)"),
    "DEFINE-LENGTH-MISMATCH": ("warning", "SD1082 Variable length is too long for actual data"),
    "DEFINE-TYPE-MISMATCH": ("error", "SD0059 Define.xml/dataset variable type mismatch"),
    "DEFINE-CODELIST-VALUE": ("warning", "SD0037 Value for variable not found in user-defined codelist"),
    "DEFINE-CT-NONEXTENSIBLE": ("warning", "CT2001 Variable value not found in non-extensible codelist"),
    "DEFINE-NO-CLASS": ("info", "dataset has no SDTM class; def:Class omitted"),
    "DEFINE-TOO-MANY-VALUES": ("warning", "a coded variable with more distinct values than a codelist holds "
                               "(or more test codes than value-level metadata holds); none listed"),
    "DEFINE-TEXT-NOT-XML": ("warning", "a name, label or value holds a character XML 1.0 cannot carry (C0 "
                            "control, U+FFFE/U+FFFF); written with U+FFFD"),
    "DEFINE-VALUES-UNCHECKED": ("info", "values of a variable with a define codelist were not kept by the "
                                "column statistics; not checked"),
}

# SDTM class names as the def:Class/@Name enumeration (Define-XML 2.1 ItemGroupClass) spells them.
_CLASS_ORDER = ("TRIAL DESIGN", "SPECIAL PURPOSE", "INTERVENTIONS", "EVENTS", "FINDINGS",
                "FINDINGS ABOUT", "RELATIONSHIP", "STUDY REFERENCE")
_ROLES = {"Iden": "Identifier", "Topi": "Topic", "Timi": "Timing", "Grou": "Grouping Qualifier",
          "Resu": "Result Qualifier", "Syno": "Synonym Qualifier", "Reco": "Record Qualifier",
          "Vari": "Variable Qualifier", "Rule": "Rule"}
_TEXT_TYPES = {"text", "date", "time", "datetime", "partialDate", "partialTime", "partialDatetime",
               "incompleteDatetime", "durationDatetime", "intervalDatetime", "string", "URI"}
_NUM_TYPES = {"integer", "float", "double", "decimal"}
_LENGTH_TYPES = {"text", "integer", "float", "string"}
MEDDRA_VARIABLES = ("AELLT", "AEDECOD", "AEHLT", "AEHLGT", "AEBODSYS", "AESOC")

# ------------------------------------------------------------------------------ methods (data)
# MethodDef OID -> (name, description).  Each names the trialbridge function that implements it.
METHODS: dict[str, tuple[str, str]] = {
    "MT.USUBJID": ("Algorithm to derive USUBJID",
                   "USUBJID is built from the study configuration's usubjid_rule "
                   "({study_id}-{site_id}-{subject_id}); mappings/study.py Study.usubjid."),
    "MT.SEQ": ("Algorithm to derive --SEQ",
               "Sequence number 1..n within USUBJID after sorting the subject's records by the "
               "dataset keys; stable for the same data (mappings/derive.py assign_seq)."),
    "MT.STUDYDAY": ("Algorithm to derive study day (--DY, --STDY, --ENDY)",
                    "Study day of the date part relative to DM.RFSTDTC: date - RFSTDTC + 1 when on or "
                    "after RFSTDTC, date - RFSTDTC when before; there is no day 0. Missing when either "
                    "date is incomplete (mappings/derive.py study_day)."),
    "MT.AGE": ("Algorithm to derive AGE",
               "Age in completed years at informed consent (RFICDTC) from BRTHDTC; with a partial "
               "birth date the lower possible age is used (mappings/derive.py age_years)."),
    "MT.EPOCH": ("Algorithm to derive EPOCH",
                 "EPOCH of the SE element whose SESTDTC <= the record's date < SEENDTC for the subject "
                 "(the last element when the date is on or after its start)."),
    "MT.RFDTC": ("Algorithm to derive DM reference dates",
                 "RFSTDTC/RFXSTDTC = first EX.EXSTDTC, RFENDTC/RFXENDTC = last EX.EXENDTC (or EXSTDTC) "
                 "of the subject; RFPENDTC = last date of participation."),
    "MT.STRES": ("Algorithm to derive standardised results",
                 "--STRESC/--STRESN/--STRESU and --STNRLO/--STNRHI: the original result and range "
                 "converted to the standard unit of the test by UCUM unit conversion (factor from the "
                 "trialbridge unit map); non-numeric results are copied to --STRESC."),
    "MT.NRIND": ("Algorithm to derive --NRIND",
                 "LOW when --STRESN < --STNRLO, HIGH when > --STNRHI, else NORMAL "
                 "(mappings/derive.py reference_range_indicator)."),
    "MT.BASELINE": ("Algorithm to derive baseline flags (--LOBXFL, --BLFL)",
                    "Y on the last non-missing result of each test per subject on or before the first "
                    "exposure (DM.RFXSTDTC); otherwise null."),
    "MT.SEDTC": ("Algorithm to derive SE element dates",
                 "SESTDTC/SEENDTC from the subject's visit and exposure dates per planned element of "
                 "the study configuration."),
}

_PROTOCOL_DATASETS = {"TA", "TE", "TV", "TI", "TS"}


def _origin(ds_name: str, var: str) -> tuple[str, str | None, str | None]:
    """(def:Origin Type, Source, MethodOID) for a variable — conventions of the MSG v2 example."""
    domain = (split_parent(ds_name) or ds_name).upper()
    suffix = var[2:] if len(var) > 2 and var[:2] == domain[:2] else var
    if var in ("STUDYID",):
        return "Protocol", "Sponsor", None
    if var in ("DOMAIN", "RDOMAIN"):
        return "Assigned", "Sponsor", None
    if domain in _PROTOCOL_DATASETS:
        return "Protocol", "Sponsor", None
    if var == "VISITDY":  # planned study day of the visit (TV)
        return "Protocol", "Sponsor", None
    if var == "USUBJID":
        return "Derived", "Sponsor", "MT.USUBJID"
    if suffix == "SEQ" and var != "TSSEQ":
        return "Derived", "Sponsor", "MT.SEQ"
    if suffix in ("DY", "STDY", "ENDY"):
        return "Derived", "Sponsor", "MT.STUDYDAY"
    if var == "AGE":
        return "Derived", "Sponsor", "MT.AGE"
    if var == "EPOCH":
        return "Derived", "Sponsor", "MT.EPOCH"
    if domain == "DM" and var in ("RFSTDTC", "RFENDTC", "RFXSTDTC", "RFXENDTC", "RFPENDTC"):
        return "Derived", "Sponsor", "MT.RFDTC"
    if suffix in ("STRESC", "STRESN", "STRESU", "STNRLO", "STNRHI"):
        return "Derived", "Sponsor", "MT.STRES"
    if suffix == "NRIND":
        return "Derived", "Sponsor", "MT.NRIND"
    if suffix in ("LOBXFL", "BLFL"):
        return "Derived", "Sponsor", "MT.BASELINE"
    if domain == "SE" and var in ("SESTDTC", "SEENDTC"):
        return "Derived", "Sponsor", "MT.SEDTC"
    if domain == "SE" and var in ("ETCD", "ELEMENT", "TAETORD"):
        return "Assigned", "Sponsor", None
    if var in MEDDRA_VARIABLES or var.endswith("CD") and domain == "AE" and var != "AESPID":
        return "Assigned", "Sponsor", None
    if suffix in ("TEST", "TESTCD", "CAT", "SCAT", "LOINC") or var in (
            "ARMCD", "ARM", "ACTARMCD", "ACTARM", "ARMNRS", "ACTARMUD", "VISITNUM", "VISIT",
            "SITEID", "COUNTRY", "QNAM", "QLABEL", "QORIG", "QEVAL", "IDVAR", "IDVARVAL", "AGEU"):
        return "Assigned", "Sponsor", None
    if domain in ("LB", "CP"):
        return "Collected", "Vendor", None
    return "Collected", "Investigator", None


# ------------------------------------------------------------------------------ tree helpers
def _q(ns: str, tag: str) -> str:
    return f"{{{ns}}}{tag}"


def _o(tag: str) -> str:
    return _q(ODM_NS, tag)


def _d(tag: str) -> str:
    return _q(DEF21_NS, tag)


def _sub(parent: etree._Element, tag: str, attrs: Mapping[str, Any] | None = None,
         text: str | None = None) -> etree._Element:
    el = etree.SubElement(parent, tag)
    for k, v in (attrs or {}).items():
        if v is not None:
            el.set(k, safexml.xml_text(str(v)))
    if text is not None:
        el.text = safexml.xml_text(text)
    return el


def _description(parent: etree._Element, text: str, tag: str = "Description") -> etree._Element:
    desc = _sub(parent, _o(tag))
    tt = _sub(desc, _o("TranslatedText"), text=text)
    tt.set(_q(XML_NS, "lang"), "en")
    return desc


def _oid_part(value: str) -> str:
    """A value made safe for an OID suffix (deterministic; keeps letters, digits, '.-_')."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", value) or "_"


# ------------------------------------------------------------------------------ data typing
@dataclass(frozen=True)
class _ItemShape:
    data_type: str
    length: int | None
    significant_digits: int | None = None


def _char_data_type(name: str, vs: VarStats) -> str:
    """Define-XML DataType of a Char variable: ISO 8601 kinds for --DTC/--DUR, else text."""
    if name.endswith("DUR"):
        return "durationDatetime"
    if not name.endswith("DTC"):
        return "text"
    if vs.present and vs.all_date:
        return "date"
    if vs.present and vs.all_datetime:
        return "datetime"
    return "partialDatetime"


def _item_shape(var: Variable, vs: VarStats) -> _ItemShape:
    """DataType, Length and SignificantDigits of ``var`` from its statistics: integer (with the
    digits of the largest value) where Dataset-JSON says integer, else float with the longest
    shortest-form number; Char lengths are UTF-8 bytes (none for ISO 8601 types)."""
    if var.type == "Num":
        if num_data_type(var.name, vs) == "integer":
            return _ItemShape("integer", vs.int_digits)
        return _ItemShape("float", vs.num_length, vs.num_frac)
    dtype = _char_data_type(var.name, vs)
    if dtype not in _LENGTH_TYPES:
        return _ItemShape(dtype, None)
    return _ItemShape(dtype, vs.length)


# ------------------------------------------------------------------------------ build
def _class_name(spec_class: str) -> str | None:
    name = spec_class.strip().upper().replace("-", " ")
    return name if name in _CLASS_ORDER else None


def _dataset_order(ds: Dataset) -> tuple:
    cls = _class_name(load_spec(ds.name).class_) or ""
    rank = _CLASS_ORDER.index(cls) if cls in _CLASS_ORDER else len(_CLASS_ORDER)
    return rank, ds.name


def _leaf_href(ds: Dataset, formats: Iterable[str]) -> str:
    formats = list(formats)
    fmt = "xpt" if "xpt" in formats or not formats else formats[0]
    return sdtm_io.file_name(ds.name, fmt if fmt in sdtm_io.SUFFIX else "xpt")


def _study_facts(study: Any, stats: Mapping[str, ColumnStats]) -> dict[str, str]:
    config = dict(getattr(study, "config", None) or {})
    study_id = getattr(study, "study_id", None) or config.get("study_id")
    if not study_id:  # no configuration: the (smallest) STUDYID in the data
        ids = {v for s in stats.values() for v in (s.var("STUDYID").values or ())}
        study_id = min(ids) if ids else "UNKNOWN"
    title = " ".join(str(config.get("title") or study_id).split())
    return {
        "study_id": study_id,
        "title": title,
        "protocol": str(config.get("registry_id") or study_id),
        "sponsor": str(config.get("sponsor") or ""),
        "meddra_version": str(config.get("meddra_version") or "unspecified"),
    }


class _Builder:
    def __init__(self, metas: Mapping[str, Dataset], stats: Mapping[str, ColumnStats], study: Any, formats,
                 created: str, log: IssueLog | None, meddra_version: str | None):
        self.datasets = sorted(metas.values(), key=_dataset_order)
        self.stats = {s.name: s for s in stats.values()}
        missing = [ds.name for ds in self.datasets if ds.name not in self.stats]
        if missing:
            raise ValueError(f"no column statistics for {missing}")
        self.facts = _study_facts(study, {ds.name: self.stats[ds.name] for ds in self.datasets})
        if meddra_version:
            self.facts["meddra_version"] = meddra_version
        self.formats = tuple(formats)
        self.created = created or creation_datetime()
        self.log = log if log is not None else IssueLog()
        self.methods: set[str] = set()
        self.comments: dict[str, str] = {}
        self.codelist_values: dict[str, set[str]] = {}  # CT short name -> values used
        self.external: set[str] = set()
        self.nonstandard: set[str] = set()
        self._report_text_not_xml()

    def _report_text_not_xml(self) -> None:
        """Every data-derived text the define carries (names, labels, the values codelists,
        value-level metadata and descriptions are made of) that holds a character XML 1.0
        cannot carry: one DEFINE-TEXT-NOT-XML warning per dataset, variable and text.  The
        define writes it with U+FFFD in their place (it cannot be written otherwise); the
        datasets keep the value as given (SDTM-XPT-ASCII reports it there)."""
        seen: set[tuple[str, str, str]] = set()

        def check(ds: str, var: str | None, text: Any, what: str) -> None:
            if not isinstance(text, str) or not text:
                return
            bad = safexml.not_xml_characters(text)
            if bad and (ds, var or "", text) not in seen:
                seen.add((ds, var or "", text))
                self.log.warning("DEFINE-TEXT-NOT-XML",
                                 f"{ds}{'.' + var if var else ''}: {what} {text!r} holds "
                                 f"{', '.join(f'U+{ord(c):04X}' for c in bad)}, which XML 1.0 cannot carry; written "
                                 "in define.xml with U+FFFD in its place", file="define.xml", record=ds,
                                 field=var, value=text.encode("unicode_escape").decode("ascii"))

        for ds in self.datasets:
            check(ds.name, None, ds.name, "dataset name")
            check(ds.name, None, ds.label, "dataset label")
            cs = self.stats[ds.name]
            for var in ds.variables:
                check(ds.name, var.name, var.name, "variable name")
                check(ds.name, var.name, var.label, "label")
                values = cs.var(var.name).values if var.name in cs.vars else None
                for value in sorted(values or ()):
                    check(ds.name, var.name, value, "value")
            for by, bucket in sorted(cs.groups.items()):
                for key, group in sorted((bucket or {}).items()):
                    check(ds.name, by, key, "value")
                    for name, vs in sorted(group.items()):
                        for value in sorted(vs.values or ()):
                            check(ds.name, name, value, "value")

    # -- top level
    def build(self) -> etree._Element:
        f = self.facts
        root = etree.Element(_o("ODM"), nsmap=NSMAP)
        for k, v in (("ODMVersion", "1.3.2"), ("FileOID", f"{f['study_id']}.Define-XML_{DEFINE_VERSION}"),
                     ("FileType", "Snapshot"), ("CreationDateTime", self.created),
                     ("Originator", "trialbridge"), ("SourceSystem", "trialbridge"),
                     ("SourceSystemVersion", sdtm_io._version())):
            root.set(k, v)
        root.set(_d("Context"), "Submission")
        study_el = _sub(root, _o("Study"), {"OID": f["study_id"]})
        gv = _sub(study_el, _o("GlobalVariables"))
        _sub(gv, _o("StudyName"), text=f["study_id"])
        _sub(gv, _o("StudyDescription"), text=f["title"])
        _sub(gv, _o("ProtocolName"), text=f["protocol"])
        mdv = _sub(study_el, _o("MetaDataVersion"), {
            "OID": MDV_OID, "Name": f"Study {f['study_id']}, Data Definitions",
            "Description": f"SDTM tabulation datasets of {f['study_id']} written by trialbridge",
        })
        mdv.set(_d("DefineVersion"), DEFINE_VERSION)
        mdv.set(_d("CommentOID"), "COM.MDV")
        self.comments["COM.MDV"] = (
            f"Generated by trialbridge {sdtm_io._version()} from the converted datasets. Dataset and "
            f"variable metadata follow SDTMIG v{SDTMIG_VERSION}; controlled terminology is CDISC/NCI "
            f"SDTM CT {ct.version()}. CP (Cell Phenotype Findings) follows SDTMIG v3.4, which "
            f"introduced it, and is marked def:IsNonStandard.")
        self._standards(mdv)

        item_groups = [self._item_group(ds) for ds in self.datasets]
        vlm = [self._value_lists(ds) for ds in self.datasets if ds.name in VLM_DOMAINS]
        vlm += [self._governed_value_lists(ds) for ds in self.datasets]
        # MetaDataVersion content order (Define-XML 2.1 XSD): Standards, ValueListDef*,
        # WhereClauseDef*, ItemGroupDef*, ItemDef*, CodeList*, MethodDef*, CommentDef*, leaf*
        for value_lists, _, _ in vlm:
            for el in value_lists:
                mdv.append(el)
        for _, where_clauses, _ in vlm:
            for el in where_clauses:
                mdv.append(el)
        for ig, _ in item_groups:
            mdv.append(ig)
        vlm_items = {}
        for _, _, items in vlm:
            vlm_items.update(items)
        for ds, (_, item_defs) in zip(self.datasets, item_groups):
            for var_name, item_def in item_defs:
                mdv.append(item_def)
                for extra in vlm_items.get((ds.name, var_name), []):
                    mdv.append(extra)
        self._codelists(mdv)
        for oid in sorted(self.methods):
            name, text = METHODS[oid]
            m = _sub(mdv, _o("MethodDef"), {"OID": oid, "Name": name, "Type": "Computation"})
            _description(m, text)
        for oid in sorted(self.comments):
            c = _sub(mdv, _d("CommentDef"), {"OID": oid})
            _description(c, self.comments[oid])
        return root

    def _standards(self, mdv: etree._Element) -> None:
        stds = _sub(mdv, _d("Standards"))
        _sub(stds, _d("Standard"), {"OID": STD_IG, "Name": "SDTMIG", "Type": "IG",
                                    "Version": SDTMIG_VERSION, "Status": "Final"})
        _sub(stds, _d("Standard"), {"OID": _std_ct(), "Name": "CDISC/NCI", "Type": "CT",
                                    "PublishingSet": "SDTM", "Version": ct.version(), "Status": "Final"})

    # -- datasets
    def _item_group(self, ds: Dataset) -> tuple[etree._Element, list[tuple[str, etree._Element]]]:
        spec = load_spec(ds.name)
        domain = split_parent(ds.name) or (ds.name[4:] if ds.name.startswith("SUPP") else ds.name)
        cls = _class_name(spec.class_)
        leaf_id = f"LF.{ds.name}"
        ig = etree.Element(_o("ItemGroupDef"))
        attrs = {"OID": f"IG.{ds.name}", "Name": ds.name, "Repeating": "No" if ds.name == "DM" else "Yes",
                 "IsReferenceData": "Yes" if cls == "TRIAL DESIGN" else "No",
                 "SASDatasetName": ds.name, "Purpose": "Tabulation"}
        attrs["Domain"] = domain  # SUPPDM too: Domain="DM", as CDISC's own Define-XML 2.1 example writes it
        for k in ("OID", "Name", "Domain", "Repeating", "IsReferenceData", "SASDatasetName", "Purpose"):
            if k in attrs:
                ig.set(k, attrs[k])
        ig.set(_d("Structure"), spec.structure or "Not specified")
        sdtmig = str(spec.schema.get("x-sdtmig", SDTMIG_VERSION)) if spec.known else ""
        if spec.known and sdtmig == SDTMIG_VERSION:
            ig.set(_d("StandardOID"), STD_IG)
        else:
            ig.set(_d("IsNonStandard"), "Yes")
            oid = f"COM.IG.{ds.name}"
            ig.set(_d("CommentOID"), oid)
            self.comments[oid] = (
                f"{ds.name} is not part of SDTMIG v{SDTMIG_VERSION}; it follows SDTMIG v{sdtmig}."
                if sdtmig else f"{ds.name} is a custom dataset without a trialbridge specification.")
        ig.set(_d("ArchiveLocationID"), leaf_id)
        _description(ig, ds.label or spec.label or ds.name)
        key_seq = {k: n for n, k in enumerate(ds.keys, start=1)}
        item_defs = []
        for order, var in enumerate(ds.variables, start=1):
            origin, _, method = _origin(ds.name, var.name)
            _sub(ig, _o("ItemRef"), {
                "ItemOID": f"IT.{ds.name}.{var.name}", "OrderNumber": order,
                "Mandatory": "Yes" if var.core == "Req" else "No",
                "KeySequence": key_seq.get(var.name),
                "MethodOID": method if origin == "Derived" else None,
                # SUPP-- too: SUPPQUAL's roles (STUDYID … IDVARVAL Identifier, QNAM Topic, QLABEL
                # Synonym Qualifier, QVAL Result Qualifier, QORIG/QEVAL Record Qualifier); CORE-001081
                "Role": _ROLES.get(var.role[:4]) if var.role else None,
            })
            if method and origin == "Derived":
                self.methods.add(method)
            item_defs.append((var.name, self._item_def(ds, var)))
        if cls:
            _sub(ig, _d("Class"), {"Name": cls})
        else:
            self.log.info("DEFINE-NO-CLASS", f"{ds.name}: no SDTM class known; def:Class omitted",
                          file="define.xml", value=ds.name)
        href = _leaf_href(ds, self.formats)
        leaf = _sub(ig, _d("leaf"), {"ID": leaf_id, _q(XLINK_NS, "href"): href})
        _sub(leaf, _d("title"), text=href)
        return ig, item_defs

    def _codelist_oid(self, ds: Dataset, var: Variable, vs: VarStats) -> str | None:
        """The CodeList OID for ``var`` whose values ``vs`` describes; its values are listed."""
        if var.name in MEDDRA_VARIABLES and ds.name == "AE" and var.type == "Char":
            self.external.add("MEDDRA")
            return "CL.MEDDRA"
        if var.name == "COUNTRY":
            self.external.add("ISO3166")
            return "CL.ISO3166"
        if not var.codelist or var.type != "Char" or not ct.has_codelist(var.codelist):
            return None
        short = ct.codelist(var.codelist).short_name
        if vs.values_overflow:
            self.log.warning("DEFINE-TOO-MANY-VALUES", f"{ds.name}.{var.name}: more than {vs.max_values} "
                             f"distinct values; no codelist ({short}) listed for it", file="define.xml",
                             record=ds.name, field=var.name, value=short)
            return None
        if vs.values is None:
            raise ValueError(f"{ds.name}.{var.name}: the column statistics kept no values for this "
                             "coded variable")
        if not vs.values:  # a CodeList must list at least one item: no values, no codelist
            return None
        self.codelist_values.setdefault(short, set()).update(vs.values)
        return f"CL.{_oid_part(short)}"

    def _item_def(self, ds: Dataset, var: Variable, *, vs: VarStats | None = None, oid: str | None = None,
                  description: str | None = None, result_codelist: bool = False) -> etree._Element:
        """An ItemDef for ``var``: the dataset-level one, or with ``vs`` (the statistics of the
        rows of one test code / governing value) a value-level one.  ``result_codelist``: attach
        the variable's codelist at value level when no value reads as a number."""
        top = vs is None
        vs = self.stats[ds.name].var(var.name) if top else vs
        shape = _item_shape(var, vs)
        el = etree.Element(_o("ItemDef"))
        for k, v in (("OID", oid or f"IT.{ds.name}.{var.name}"), ("Name", var.name),
                     ("DataType", shape.data_type), ("Length", shape.length),
                     ("SignificantDigits", shape.significant_digits), ("SASFieldName", var.name[:8])):
            if v is not None:
                el.set(k, safexml.xml_text(str(v)))
        _description(el, description or var.label or var.name)
        vlm_parent = top and ((ds.name in VLM_DOMAINS and _vlm_target(ds.name, var.name)) or
                              var.name in self._governing(ds))
        if top and not vlm_parent:
            cl = self._codelist_oid(ds, var, vs)
        elif result_codelist and var.codelist and not vs.numeric_text:
            # a result codelist (e.g. LBSTRESC C102580) describes character results: it is
            # attached per test, to the tests whose results are all non-numeric
            cl = self._codelist_oid(ds, var, vs)
        else:
            cl = None
        if cl:
            _sub(el, _o("CodeListRef"), {"CodeListOID": cl})
        origin, source, _ = _origin(ds.name, var.name)
        _sub(el, _d("Origin"), {"Type": origin, "Source": source})
        if vlm_parent:
            _sub(el, _d("ValueListRef"), {"ValueListOID": f"VL.{ds.name}.{var.name}"})
        return el

    # -- value-level metadata
    def _value_lists(self, ds: Dataset):
        testcd = f"{ds.name[:2]}TESTCD"
        if testcd not in ds.names:
            return [], [], {}
        groups = self.stats[ds.name].group(testcd)
        if groups is None:
            self.log.warning("DEFINE-TOO-MANY-VALUES", f"{ds.name}: more than {self.stats[ds.name].max_groups} "
                             f"test codes; no value-level metadata by {testcd}", file="define.xml",
                             record=ds.name, field=testcd)
            groups = {}
        codes = sorted(groups)
        where_clauses = []
        for code in codes:
            wc = etree.Element(_d("WhereClauseDef"), {"OID": f"WC.{ds.name}.{testcd}.{_oid_part(code)}"})
            rc = _sub(wc, _o("RangeCheck"), {"Comparator": "EQ", "SoftHard": "Soft"})
            rc.set(_d("ItemOID"), f"IT.{ds.name}.{testcd}")
            _sub(rc, _o("CheckValue"), text=code)
            where_clauses.append(wc)
        value_lists, items = [], {}
        p = ds.name[:2]
        for var in ds.variables:
            if not _vlm_target(ds.name, var.name):
                continue
            vl = etree.Element(_d("ValueListDef"), {"OID": f"VL.{ds.name}.{var.name}"})
            extra = []
            origin, _, method = _origin(ds.name, var.name)
            for n, code in enumerate(codes, start=1):
                group = groups[code]
                item_oid = f"IT.{ds.name}.{var.name}.{_oid_part(code)}"
                ref = _sub(vl, _o("ItemRef"), {"ItemOID": item_oid, "OrderNumber": n, "Mandatory": "No",
                                               "MethodOID": method if origin == "Derived" else None})
                _sub(ref, _d("WhereClauseRef"), {"WhereClauseOID": f"WC.{ds.name}.{testcd}.{_oid_part(code)}"})
                tests = group[f"{p}TEST"].values if f"{p}TEST" in group else None
                test = min(tests) if tests else code
                unit_var = f"{p}ORRESU" if var.name.endswith("ORRES") else f"{p}STRESU"
                units = group[unit_var].values if unit_var in group else Counter()
                unit_text = ", ".join(sorted(units)) if units else \
                    "many units" if units is None else "no unit"
                kind = "original result" if var.name.endswith("ORRES") else "standardised result"
                extra.append(self._item_def(ds, var, vs=group[var.name], oid=item_oid, result_codelist=True,
                                            description=f"{test} ({code}), {kind}; unit: {unit_text}"))
            value_lists.append(vl)
            items[(ds.name, var.name)] = extra
        return value_lists, where_clauses, items

    def _governing(self, ds: Dataset) -> dict[str, tuple[str, dict[str, str]]]:
        """Variables of ``ds`` whose codelist depends on another variable (DSDECOD by
        DSCAT) and that have values to describe."""
        out = {}
        for name, (gov, table) in governed_codelists(ds.name).items():
            if name in ds.names and gov in ds.names and self.stats[ds.name].group(gov):
                out[name] = (gov, table)
        return out

    def _governed_value_lists(self, ds: Dataset):
        """Value-level metadata for codelists chosen by another variable's value: one
        WhereClause per governing value (DSCAT EQ "DISPOSITION EVENT"), one ItemDef per
        value with the codelist that value calls for (NCOMPLT, PROTMLST …)."""
        value_lists, where_clauses, items = [], [], {}
        for name, (gov, table) in sorted(self._governing(ds).items()):
            var = ds.var(name)
            groups = self.stats[ds.name].group(gov)
            vl = etree.Element(_d("ValueListDef"), {"OID": f"VL.{ds.name}.{name}"})
            extra = []
            for n, value in enumerate(sorted(groups), start=1):
                vs = groups[value][name]
                wc_oid = f"WC.{ds.name}.{gov}.{_oid_part(value)}"
                wc = etree.Element(_d("WhereClauseDef"), {"OID": wc_oid})
                rc = _sub(wc, _o("RangeCheck"), {"Comparator": "EQ", "SoftHard": "Soft"})
                rc.set(_d("ItemOID"), f"IT.{ds.name}.{gov}")
                _sub(rc, _o("CheckValue"), text=value)
                where_clauses.append(wc)
                item_oid = f"IT.{ds.name}.{name}.{_oid_part(value)}"
                ref = _sub(vl, _o("ItemRef"), {"ItemOID": item_oid, "OrderNumber": n, "Mandatory": "No"})
                _sub(ref, _d("WhereClauseRef"), {"WhereClauseOID": wc_oid})
                governed = replace(var, codelist=table[value], codelist_code=None)
                item = self._item_def(ds, replace(var, codelist=None), vs=vs, oid=item_oid,
                                      description=f"{var.label} when {gov} is {value}")
                cl = self._codelist_oid(ds, governed, vs)
                if cl:
                    # CodeListRef comes right after Description in an ItemDef
                    item.insert(list(item).index(item.find(_o("Description"))) + 1,
                                etree.Element(_o("CodeListRef"), {"CodeListOID": cl}))
                extra.append(item)
            value_lists.append(vl)
            items[(ds.name, name)] = extra
        return value_lists, where_clauses, items

    # -- codelists
    def _codelists(self, mdv: etree._Element) -> None:
        entries: list[tuple[str, etree._Element]] = []
        for short in sorted(self.codelist_values):
            cl = ct.codelist(short)
            el = etree.Element(_o("CodeList"), {"OID": f"CL.{_oid_part(short)}", "Name": cl.name,
                                                 "DataType": "text"})
            el.set(_d("StandardOID"), _std_ct())
            order = 0
            for value in sorted(self.codelist_values[short]):
                code = cl.terms.get(value)
                if code is None and not cl.extensible:
                    # listed (as an extended value) so the define describes the data as it is
                    self.log.warning("DEFINE-CT-NONEXTENSIBLE",
                                     f"value {value!r} is not in the non-extensible codelist {short} "
                                     f"({cl.code}); listed as an extended value so the define matches the data",
                                     file="define.xml", field=short, value=value)
                order += 1
                item = _sub(el, _o("EnumeratedItem"), {"CodedValue": value, "OrderNumber": order})
                if code is None:
                    item.set(_d("ExtendedValue"), "Yes")
                else:
                    _sub(item, _o("Alias"), {"Context": "nci:ExtCodeID", "Name": code})
            _sub(el, _o("Alias"), {"Context": "nci:ExtCodeID", "Name": cl.code})
            entries.append((f"CL.{_oid_part(short)}", el))
        if "ISO3166" in self.external:
            el = etree.Element(_o("CodeList"), {"OID": "CL.ISO3166", "Name": "Country Codes", "DataType": "text"})
            el.set(_d("IsNonStandard"), "Yes")
            _sub(el, _o("ExternalCodeList"), {"Dictionary": "ISO 3166", "Version": "ISO 3166-1 alpha-3",
                                              "href": "https://www.iso.org/iso-3166-country-codes.html"})
            entries.append(("CL.ISO3166", el))
        if "MEDDRA" in self.external:
            el = etree.Element(_o("CodeList"), {"OID": "CL.MEDDRA", "Name": "Adverse Event Dictionary",
                                                 "DataType": "text"})
            el.set(_d("IsNonStandard"), "Yes")
            _sub(el, _o("ExternalCodeList"), {"Dictionary": "MedDRA", "Version": self.facts["meddra_version"],
                                              "href": "https://www.meddra.org/"})
            entries.append(("CL.MEDDRA", el))
        for _, el in sorted(entries, key=lambda e: e[0]):
            mdv.append(el)


def _vlm_target(ds_name: str, var_name: str) -> bool:
    return var_name[:2] == ds_name[:2] and var_name[2:] in VLM_SUFFIXES


def stats_of(datasets: Mapping[str, Dataset], **kwargs: Any) -> dict[str, ColumnStats]:
    """Column statistics of whole in-memory datasets (name -> statistics)."""
    return {ds.name: ColumnStats.of(ds, **kwargs) for ds in datasets.values()}


def build_define_from_stats(metas: Mapping[str, Dataset], stats: Mapping[str, ColumnStats], study: Any, *,
                            formats: Iterable[str] = ("xpt",), created: str | None = DEFAULT_CREATED,
                            log: IssueLog | None = None, meddra_version: str | None = None) -> etree._Element:
    """The Define-XML 2.1 ``ODM`` root element for the datasets ``metas`` describes.

    ``metas``: name -> :class:`Dataset` (variables, labels, keys; rows are not read);
    ``stats``: name -> :class:`ColumnStats` of the rows written (every Length, DataType,
    SignificantDigits, value-level item and codelist subset comes from them).  ``study`` is a
    :class:`mappings.study.Study` (or anything with ``study_id``/``config``; None takes the
    STUDYID of the data).  ``formats`` decides the def:leaf hrefs (``.xpt`` when xpt is written,
    else the first format's suffix).  ``meddra_version`` overrides the study config's
    ``meddra_version``; without either the MedDRA version is "unspecified".
    """
    return _Builder(metas, stats, study, formats, created, log, meddra_version).build()


def build_define(datasets: Mapping[str, Dataset], study: Any, *, formats: Iterable[str] = ("xpt",),
                 created: str | None = DEFAULT_CREATED, log: IssueLog | None = None,
                 meddra_version: str | None = None) -> etree._Element:
    """:func:`build_define_from_stats` for whole in-memory datasets (statistics from their rows)."""
    return build_define_from_stats(datasets, stats_of(datasets), study, formats=formats, created=created,
                                   log=log, meddra_version=meddra_version)


STYLESHEET = "define2-1.xsl"  # CDISC's Define-XML 2.1 stylesheet (schemas/define-xml/stylesheet/)


def serialise(root: etree._Element) -> bytes:
    """The document with an ``<?xml-stylesheet?>`` instruction naming :data:`STYLESHEET`
    beside it, so the file opens as a page rather than as raw XML."""
    tree = root.getroottree()
    if not any(isinstance(n, etree._ProcessingInstruction) and n.target == "xml-stylesheet"
               for n in root.itersiblings(preceding=True)):
        root.addprevious(etree.ProcessingInstruction("xml-stylesheet", f'type="text/xsl" href="{STYLESHEET}"'))
    return etree.tostring(tree, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def stylesheet_bytes() -> bytes:
    return resources.files("trialbridge.schemas").joinpath("define-xml", "stylesheet", STYLESHEET).read_bytes()


def write_stylesheet(folder: str | Path) -> Path:
    """Write :data:`STYLESHEET` into ``folder`` (atomically), for the define.xml beside it."""
    path = Path(folder) / STYLESHEET
    with atomic_path(path) as tmp:
        tmp.write_bytes(stylesheet_bytes())
    return path


def write_define_from_stats(metas: Mapping[str, Dataset], stats: Mapping[str, ColumnStats], study: Any,
                            path: str | Path, log: IssueLog, *, formats: Iterable[str] = ("xpt",),
                            created: str | None = DEFAULT_CREATED, meddra_version: str | None = None,
                            validate: bool = True) -> Path:
    """Build (:func:`build_define_from_stats`), validate (against the shipped 2.1 XSD; problems
    become DEFINE-XSD issues) and write ``path`` atomically.  Returns the path written."""
    root = build_define_from_stats(metas, stats, study, formats=formats, created=created, log=log,
                                   meddra_version=meddra_version)
    data = serialise(root)
    path = Path(path)
    if validate:
        validate_define_xsd(etree.fromstring(data, _safe_parser()).getroottree(), log, name=path.name)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def write_define(datasets: Mapping[str, Dataset], study: Any, path: str | Path, log: IssueLog, *,
                 formats: Iterable[str] = ("xpt",), created: str | None = DEFAULT_CREATED,
                 meddra_version: str | None = None, validate: bool = True) -> Path:
    """:func:`write_define_from_stats` for whole in-memory datasets (statistics from their rows)."""
    return write_define_from_stats(datasets, stats_of(datasets), study, path, log, formats=formats,
                                   created=created, meddra_version=meddra_version, validate=validate)


# ------------------------------------------------------------------------------ parsing / XSD
def _safe_parser() -> etree.XMLParser:
    return safexml.parser()  # the hub's one policy for XML we read


_SCHEMAS = {
    "2.1": ("library-xml", "cdisc-define-2.1", "define2-1-0.xsd"),
    "2.1-strict": ("odmlib", "define", "2.1", "define2-1-0.xsd"),
    "2.0": ("odmlib", "define", "2.0", "define2-0-0.xsd"),
}


@lru_cache(maxsize=None)
def _schema(key: str) -> etree.XMLSchema:
    base = resources.files("trialbridge.schemas").joinpath("define-xml")
    path = Path(str(base.joinpath(*_SCHEMAS[key])))
    return etree.XMLSchema(etree.parse(str(path), _safe_parser()))


def _parse(path_or_tree, log: IssueLog, name: str) -> etree._ElementTree | None:
    if isinstance(path_or_tree, etree._ElementTree):
        return path_or_tree
    if isinstance(path_or_tree, etree._Element):
        return path_or_tree.getroottree()
    try:
        return safexml.parse(path_or_tree)  # the same policy and refusals as the ODM reader
    except safexml.UnsafeXMLError as exc:
        log.error("DEFINE-XML-ENTITY", f"{name}: {exc}; the document is not read", file=name,
                  value=",".join(exc.entities) or (exc.doctype or "")[:200] or None)
    except safexml.MalformedXMLError as exc:
        log.error("DEFINE-XML-SYNTAX", f"{name}: {exc}", file=name, record=exc.line)
    return None


def parse_define(path: str | Path, log: IssueLog) -> etree._ElementTree | None:
    """The tree of a define.xml read under the hub's safe-XML policy; None with one
    DEFINE-XML-ENTITY or DEFINE-XML-SYNTAX error when it cannot be (parse once, then give the
    tree to :func:`validate_define_xsd` and :func:`read_define`)."""
    return _parse(path, log, Path(path).name)


def define_version(tree: etree._ElementTree) -> tuple[str | None, str | None]:
    """(namespace version "2.1"/"2.0"/"1.0" or None, def:DefineVersion attribute or None)."""
    root = tree.getroot()
    mdv = root.find(f"{_o('Study')}/{_o('MetaDataVersion')}")
    spaces = set(root.nsmap.values())
    for ver, ns in (("2.1", DEF21_NS), ("2.0", DEF20_NS), ("1.0", DEF10_NS)):
        if ns in spaces or (mdv is not None and mdv.get(_q(ns, "DefineVersion"))):
            return ver, (mdv.get(_q(ns, "DefineVersion")) if mdv is not None else None)
    return None, None


def validate_define_xsd(path_or_tree, log: IssueLog, *, strict: bool = False,
                        name: str | None = None) -> bool:
    """Validate a define.xml (path, tree or root element) against the shipped XSD for its version.

    Each schema error is a DEFINE-XSD error with its line; Define-XML 1.0 (or no def namespace)
    gives one DEFINE-VERSION-UNSUPPORTED info and False.  ``strict`` uses the odmlib 2.1.9
    schema set for 2.1 documents.  Returns True when the document is schema-valid.
    """
    name = name or (Path(str(path_or_tree)).name if isinstance(path_or_tree, (str, Path)) else "define.xml")
    tree = _parse(path_or_tree, log, name)
    if tree is None:
        return False
    version, declared = define_version(tree)
    if version not in ("2.0", "2.1"):
        log.info("DEFINE-VERSION-UNSUPPORTED",
                 f"{name}: Define-XML {version or 'version unknown'} is not validated "
                 "(schemas shipped for 2.0 and 2.1)", file=name, value=declared or version)
        return False
    key = "2.1-strict" if version == "2.1" and strict else version
    schema = _schema(key)
    if schema.validate(tree):
        return True
    errors = list(schema.error_log)
    for err in errors[:MAX_XSD_ISSUES]:
        log.error("DEFINE-XSD", f"{name} (Define-XML {key} XSD): {err.message}", file=name,
                  record=err.line)
    if len(errors) > MAX_XSD_ISSUES:
        log.error("DEFINE-XSD", f"{name}: {len(errors) - MAX_XSD_ISSUES} more schema errors not listed",
                  file=name)
    return False


# ------------------------------------------------------------------------------ reading
@dataclass
class DefineVariable:
    name: str
    label: str
    datatype: str
    length: int | None
    mandatory: bool
    origin: str | None
    codelist: str | None  # CodeList OID
    significant_digits: int | None = None
    order: int | None = None
    value_list: str | None = None

    def __getitem__(self, key: str) -> Any:  # dict-style access, as in the brief
        return getattr(self, key)


@dataclass
class DefineDataset:
    name: str
    label: str
    structure: str
    class_: str
    keys: list[str]
    variables: list[DefineVariable]
    href: str | None
    domain: str | None = None
    purpose: str | None = None

    def var(self, name: str) -> DefineVariable | None:
        return next((v for v in self.variables if v.name == name), None)

    def __getitem__(self, key: str) -> Any:
        return getattr(self, "class_" if key == "class" else key)


@dataclass
class DefineCodelist:
    oid: str
    name: str
    datatype: str
    values: list[str]
    extended: set[str] = field(default_factory=set)
    nci_code: str | None = None
    dictionary: str | None = None  # ExternalCodeList Dictionary
    version: str | None = None


@dataclass
class DefineMetadata:
    version: str | None  # namespace version: "2.0" / "2.1"
    define_version: str | None  # def:DefineVersion as written
    study_oid: str | None
    study_name: str | None
    mdv_oid: str | None
    standards: list[dict[str, str]]
    datasets: dict[str, DefineDataset]
    codelists: dict[str, DefineCodelist]
    source: str | None = None


def _text_of(el: etree._Element | None) -> str:
    """TranslatedText (first, preferring xml:lang en) of a Description/Decode, or ''."""
    if el is None:
        return ""
    tts = el.findall(_o("TranslatedText"))
    for tt in tts:
        if tt.get(_q(XML_NS, "lang"), "en").startswith("en"):
            return (tt.text or "").strip()
    return (tts[0].text or "").strip() if tts else ""


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def read_define(path: str | Path, log: IssueLog, *, tree: etree._ElementTree | None = None) -> DefineMetadata | None:
    """Dataset, variable and codelist metadata of a Define-XML 2.0 / 2.1 file (``tree``: the
    file already parsed); None (with an issue) when the file is not well-formed or not
    Define-XML 2.x."""
    name = Path(path).name
    tree = tree if tree is not None else _parse(path, log, name)
    if tree is None:
        return None
    version, declared = define_version(tree)
    if version not in ("2.0", "2.1"):
        log.info("DEFINE-VERSION-UNSUPPORTED", f"{name}: Define-XML {version or 'version unknown'} "
                 "is not read (2.0 and 2.1 are)", file=name, value=declared or version)
        return None
    dns = DEF21_NS if version == "2.1" else DEF20_NS
    root = tree.getroot()
    study = root.find(_o("Study"))
    mdv = study.find(_o("MetaDataVersion")) if study is not None else None
    if mdv is None:
        log.error("DEFINE-XSD", f"{name}: no Study/MetaDataVersion", file=name)
        return None
    items: dict[str, etree._Element] = {el.get("OID"): el for el in mdv.findall(_o("ItemDef"))}
    standards = [dict(s.attrib) for s in mdv.iter(_q(dns, "Standard"))]
    datasets: dict[str, DefineDataset] = {}
    for ig in mdv.findall(_o("ItemGroupDef")):
        ds_name = (ig.get("Name") or ig.get("SASDatasetName") or "").upper()
        cls_el = ig.find(_q(dns, "Class"))
        cls = cls_el.get("Name", "") if cls_el is not None else ig.get(_q(dns, "Class"), "")
        leaf_id = ig.get(_q(dns, "ArchiveLocationID"))
        leaf = next((lf for lf in ig.iter(_q(dns, "leaf")) if lf.get("ID") == leaf_id or leaf_id is None), None)
        keyed, variables = [], []
        for ref in ig.findall(_o("ItemRef")):
            item = items.get(ref.get("ItemOID"))
            if item is None:
                continue
            origin_el = item.find(_q(dns, "Origin"))
            cl_ref = item.find(_o("CodeListRef"))
            vl_ref = item.find(_q(dns, "ValueListRef"))
            var = DefineVariable(
                name=item.get("Name", ""), label=_text_of(item.find(_o("Description"))),
                datatype=item.get("DataType", ""), length=_int(item.get("Length")),
                mandatory=ref.get("Mandatory") == "Yes",
                origin=origin_el.get("Type") if origin_el is not None else None,
                codelist=cl_ref.get("CodeListOID") if cl_ref is not None else None,
                significant_digits=_int(item.get("SignificantDigits")),
                order=_int(ref.get("OrderNumber")),
                value_list=vl_ref.get("ValueListOID") if vl_ref is not None else None)
            variables.append(var)
            if _int(ref.get("KeySequence")) is not None:
                keyed.append((_int(ref.get("KeySequence")), var.name))
        if any(v.order is not None for v in variables):
            variables.sort(key=lambda v: (v.order is None, v.order or 0))
        datasets[ds_name] = DefineDataset(
            name=ds_name, label=_text_of(ig.find(_o("Description"))) or ig.get(_q(dns, "Label"), ""),
            structure=ig.get(_q(dns, "Structure"), ""), class_=cls,
            keys=[n for _, n in sorted(keyed)], variables=variables,
            href=leaf.get(_q(XLINK_NS, "href")) if leaf is not None else None,
            domain=ig.get("Domain"), purpose=ig.get("Purpose"))
    codelists: dict[str, DefineCodelist] = {}
    for cl in mdv.findall(_o("CodeList")):
        values, extended = [], set()
        for item in list(cl.findall(_o("CodeListItem"))) + list(cl.findall(_o("EnumeratedItem"))):
            value = item.get("CodedValue", "")
            values.append(value)
            if item.get(_q(dns, "ExtendedValue")) == "Yes":
                extended.add(value)
        ext = cl.find(_o("ExternalCodeList"))
        alias = next((a.get("Name") for a in cl.findall(_o("Alias")) if a.get("Context") == "nci:ExtCodeID"), None)
        codelists[cl.get("OID", "")] = DefineCodelist(
            oid=cl.get("OID", ""), name=cl.get("Name", ""), datatype=cl.get("DataType", ""),
            values=values, extended=extended, nci_code=alias,
            dictionary=ext.get("Dictionary") if ext is not None else None,
            version=ext.get("Version") if ext is not None else None)
    gv = study.find(_o("GlobalVariables"))
    study_name = (gv.findtext(_o("StudyName")) or "").strip() if gv is not None else None
    return DefineMetadata(version=version, define_version=declared, study_oid=study.get("OID"),
                          study_name=study_name, mdv_oid=mdv.get("OID"), standards=standards,
                          datasets=datasets, codelists=codelists, source=str(path))


# ------------------------------------------------------------------------------ agreement check
def _add(log: IssueLog, code: str, message: str, **where: Any) -> None:
    log.add(RULES[code][0], code, message, **where)


def check_define_against_stats(meta: DefineMetadata, metas: Mapping[str, Dataset],
                               stats: Mapping[str, ColumnStats], log: IssueLog, *,
                               exact_lengths: bool = False, file: str = "define.xml") -> int:
    """Compare define metadata with datasets described by their metadata (name -> Dataset, rows
    not read) and column statistics (name -> ColumnStats); findings go to ``log``.

    ``exact_lengths=True`` (our own output) also reports a Char Length longer than the longest
    value written (DEFINE-LENGTH-MISMATCH).  Codelist values are checked for variables whose
    statistics kept their values (coded variables); others are reported as
    DEFINE-VALUES-UNCHECKED.  Returns the number of findings added.
    """
    before = len(log.issues)
    data = {name.upper(): ds for name, ds in metas.items()}
    by_name = {s.name: s for s in stats.values()}
    for name in sorted(set(data) - set(meta.datasets)):
        _add(log, "DEFINE-DATASET-MISSING", f"dataset {name} has no ItemGroupDef in {file}",
             file=file, value=name)
    for name in sorted(set(meta.datasets) - set(data)):
        _add(log, "DEFINE-DATASET-EXTRA", f"{file} defines {name} but there is no such dataset",
             file=file, value=name)
    for name in sorted(set(data) & set(meta.datasets)):
        ds, dd = data[name], meta.datasets[name]
        # a label the reader filled in (file without a label, CSV) says nothing about the data
        if ds.label_given and ds.label and ds.label != ds.name and dd.label and \
                ds.label.strip() != dd.label.strip():
            _add(log, "DEFINE-LABEL-MISMATCH", f"{name}: dataset label {ds.label!r} != define {dd.label!r}",
                 file=file, record=name, value=ds.label)
        defined = {v.name: v for v in dd.variables}
        for var in ds.variables:
            dv = defined.get(var.name)
            if dv is None:
                _add(log, "DEFINE-VARIABLE-MISSING", f"{name}.{var.name} is not defined in {file}",
                     file=file, record=name, field=var.name)
                continue
            _check_variable(log, file, name, var, by_name[ds.name].var(var.name), dv, meta, exact_lengths)
        for vname in sorted(set(defined) - set(ds.names)):
            _add(log, "DEFINE-VARIABLE-EXTRA", f"{name}.{vname} is defined in {file} but not in the dataset",
                 file=file, record=name, field=vname)
    return len(log.issues) - before


def check_define_against_datasets(meta: DefineMetadata, datasets: Mapping[str, Dataset], log: IssueLog,
                                  *, exact_lengths: bool = False, file: str = "define.xml") -> int:
    """:func:`check_define_against_stats` for whole in-memory datasets: statistics from their
    rows, keeping every value of each variable the define gives a codelist."""
    coded = {name: {v.name for v in dd.variables if v.codelist} for name, dd in meta.datasets.items()}
    stats = {ds.name: ColumnStats.of(ds, track_values=coded.get(ds.name.upper(), ()), max_values=sys.maxsize)
             for ds in datasets.values()}
    return check_define_against_stats(meta, datasets, stats, log, exact_lengths=exact_lengths, file=file)


def _check_variable(log, file, name, var: Variable, vs: VarStats, dv: DefineVariable,
                    meta: DefineMetadata, exact_lengths: bool) -> None:
    where = {"file": file, "record": name, "field": var.name}
    if var.label and dv.label and var.label.strip() != dv.label.strip():
        _add(log, "DEFINE-LABEL-MISMATCH", f"{name}.{var.name}: label {var.label!r} != define {dv.label!r}",
             value=var.label, **where)
    if var.type == "Num":
        if dv.datatype not in _NUM_TYPES:
            _add(log, "DEFINE-TYPE-MISMATCH", f"{name}.{var.name} is numeric but define DataType is "
                 f"{dv.datatype!r}", value=dv.datatype, **where)
        elif dv.datatype == "integer" and not vs.integral:
            bad = vs.non_integral_min
            _add(log, "DEFINE-TYPE-MISMATCH", f"{name}.{var.name}: define DataType integer but the "
                 f"data holds {bad!r}", value=bad, **where)
        return
    if dv.datatype in _NUM_TYPES:
        _add(log, "DEFINE-TYPE-MISMATCH", f"{name}.{var.name} is character but define DataType is "
             f"{dv.datatype!r}", value=dv.datatype, **where)
        return
    longest = vs.max_bytes
    if dv.length is not None:
        if longest > dv.length:
            _add(log, "DEFINE-LENGTH-SHORT", f"{name}.{var.name}: longest value has {longest} bytes, "
                 f"define Length is {dv.length}", value=longest, **where)
        elif exact_lengths and dv.length != max(1, longest):
            _add(log, "DEFINE-LENGTH-MISMATCH", f"{name}.{var.name}: define Length {dv.length} but the "
                 f"longest value has {longest} bytes", value=dv.length, **where)
    cl = meta.codelists.get(dv.codelist or "")
    if cl is None or cl.dictionary or not cl.values:
        return
    if vs.values is None:
        _add(log, "DEFINE-VALUES-UNCHECKED", f"{name}.{var.name}: values not checked against codelist {cl.oid} "
             f"({'more than ' + str(vs.max_values) + ' distinct values' if vs.values_overflow else 'not kept'})",
             value=cl.oid, **where)
        return
    allowed = set(cl.values)
    for v in sorted(set(vs.values) - allowed):
        _add(log, "DEFINE-CODELIST-VALUE", f"{name}.{var.name}: value {v!r} ({vs.values[v]} record(s)) is not "
             f"in define codelist {cl.oid}", value=v, **where)


def define_facts(path: str | Path, log: IssueLog) -> dict[str, Any]:
    """What a define.xml (any ODM and Define-XML version: elements matched by local name) says
    about the study for drafting its configuration: ``study_name``, ``study_description``,
    ``protocol_name`` and ``codelists`` (codelist Name -> [(CodedValue, Decode text)] in
    document order); ``{}`` when it cannot be read (the reason is in ``log``)."""
    tree = parse_define(path, log)
    if tree is None:
        return {}

    def local(el) -> str:
        return etree.QName(el).localname if isinstance(el.tag, str) else ""

    facts: dict[str, Any] = {"codelists": {}}
    for el in tree.getroot().iter():
        name = local(el)
        if name in ("StudyName", "StudyDescription", "ProtocolName"):
            key = {"StudyName": "study_name", "StudyDescription": "study_description",
                   "ProtocolName": "protocol_name"}[name]
            facts.setdefault(key, (el.text or "").strip())
        elif name == "CodeList" and el.get("Name"):
            items = []
            for item in el:
                if local(item) in ("CodeListItem", "EnumeratedItem") and item.get("CodedValue") is not None:
                    decode = next((t.text or "" for t in item.iter() if local(t) == "TranslatedText"), "")
                    items.append((item.get("CodedValue").strip(), decode.strip()))
            facts["codelists"].setdefault(el.get("Name").strip().upper(), items)
    return facts
