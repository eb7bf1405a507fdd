"""Conformance rules over SDTM datasets, as one streaming pass.

:data:`RULES` is the catalogue: each :class:`~.engine.Rule` has a stable code, a severity,
a description, the CDISC / FDA / Pinnacle 21 rule it mirrors (``docs/rules.md`` lists them
with the source that confirms each id), the check that implements it and its kind:

- ``metadata`` — names, labels, which variables are there: run once per dataset, on its
  metadata (:mod:`.dataset_checks`; the metadata parts of some row rules too);
- ``row`` — each row on its own (:mod:`.row_checks`);
- ``subject-run`` — a row against the earlier rows of its subject (:mod:`.subject_checks`);
- ``index`` — across subjects or datasets, through compact indexes: the DM subject set and
  RFSTDTC, SE elements, distinct values, counts (:mod:`.study_checks`).

:class:`StreamingValidator` runs them over datasets fed one at a time (DM first, SE second,
then SUPP--; see :mod:`.engine` for the contract); :func:`validate_datasets` feeds it from
in-memory datasets.  Findings are appended to an :class:`~converters.core.issues.IssueLog`
(design rule 3: issues are collected, never raised); only a usage error raises.

Variable metadata (core, codelist, natural keys, row schema) comes from
:mod:`converters.core.sdtm_spec`; codelists from :mod:`mappings.terminology.ct`.  A dataset
without a spec (custom domain) is checked with its own ``Dataset.variables``; spec-only rules
are then skipped for it and one ``SDTM-SPEC-UNKNOWN`` info issue says so.
"""
from __future__ import annotations

from typing import Iterable

from trialbridge.converters.core.datasets import Dataset
from trialbridge.converters.core.issues import IssueLog
from trialbridge.converters.validation import dataset_checks, row_checks, study_checks, subject_checks
from trialbridge.converters.validation.engine import DatasetVisitor, Rule, Validator, feeding_order

__all__ = ["RULES", "RULES_BY_ID", "Rule", "StreamingValidator", "DatasetVisitor", "feeding_order", "rule_statuses",
           "validate_datasets"]

RULES: list[Rule] = [
    Rule("SDTM-REQ-MISSING", "error", "Required variable absent from the dataset, or null in a record",
         "P21 SD0056 (absent) / SD0002 (null); CDISC CG0463", row_checks.RequiredVariables, "row"),
    Rule("SDTM-EXP-MISSING", "warning", "Expected variable absent from the dataset",
         "P21 SD0057; CDISC CG0016", dataset_checks.ExpectedVariables, "metadata"),
    Rule("SDTM-KEY-DUPLICATE", "warning", "Two records share the values of the dataset's natural keys",
         "P21 SD1117 / SD1201 (FDA FDAB021)", subject_checks.KeyDuplicates, "subject-run"),
    Rule("SDTM-USUBJID-NOT-IN-DM", "error", "USUBJID of a subject-level record is not in DM",
         "P21 SD0064; CDISC CG0029", study_checks.SubjectsInDm, "index"),
    Rule("SDTM-SEQ-DUPLICATE", "error", "--SEQ not unique within USUBJID (or POOLID)",
         "P21 SD0005; CDISC CG0028", subject_checks.SeqDuplicates, "subject-run"),
    Rule("SDTM-DY-INCONSISTENT", "error",
         "--DY/--STDY/--ENDY differs from the day computed from --DTC/--STDTC/--ENDTC and DM.RFSTDTC",
         "P21 SD1086 / SD1090 / SD1094; CDISC CG0006, CG0220, CG0222", study_checks.StudyDays, "index"),
    Rule("SDTM-DTC-ISO8601", "error", "--DTC value is not ISO 8601",
         "P21 SD0003; CDISC CG0238", row_checks.Iso8601Values, "row"),
    Rule("SDTM-CT-INVALID", "error",
         "Value not in the variable's codelist (error: non-extensible, warning: extensible)",
         "P21 CT2001 (non-extensible) / CT2002 (extensible)", row_checks.CodelistValues, "row"),
    Rule("SDTM-XPT-NAME", "error", "Dataset or variable name longer than 8 or not [A-Z][A-Z0-9_]*",
         "FDA Study Data TCG / SAS XPORT v5 limit (P21 id unconfirmed)", dataset_checks.XptNames, "metadata"),
    Rule("SDTM-XPT-LABEL", "error", "Dataset or variable label longer than 40 characters",
         "FDA Study Data TCG / SAS XPORT v5 limit (P21 id unconfirmed)", dataset_checks.XptLabels, "metadata"),
    Rule("SDTM-XPT-CHAR-200", "error", "Character value longer than 200 bytes",
         "FDA Study Data TCG / SAS XPORT v5 limit (P21 id unconfirmed; related SD1096)", row_checks.XptCharLength,
         "row"),
    Rule("SDTM-XPT-ASCII", "error", "Non-ASCII or non-printable character in a value or label",
         "P21 SD1029 (FDA FDAB041)", row_checks.XptAscii, "row"),
    Rule("SDTM-ROW-SCHEMA", "error", "Record fails the domain's JSON Schema (type, length, pattern)",
         "none (structural check on schemas/sdtm)", row_checks.RowSchema, "row"),
    Rule("SDTM-MODEL-VAR-ADDED", "warning", "A variable of the SDTM model that the domain's SDTMIG specification does "
         "not list (a Permissible variable of the class added to a standard domain)",
         "P21 SD1076 (FDA FDAC031)", row_checks.ModelVariablesAdded, "metadata"),
    Rule("SDTM-STUDYID-MULTIPLE", "error", "More than one STUDYID value across the datasets",
         "P21 SD1005; CDISC CG0409", study_checks.StudyIds, "index"),
    Rule("SDTM-DOMAIN-VALUE", "error", "DOMAIN value differs from the dataset name",
         "P21 SD0004; CDISC CG0413", row_checks.DomainValue, "row"),
    Rule("SDTM-RFSTDTC-AFTER-RFENDTC", "error", "DM.RFSTDTC is after DM.RFENDTC",
         "P21 SD1002 (FDA FDAB034)", row_checks.ReferencePeriod, "row"),
    Rule("SDTM-SUPP-PARENT", "error", "SUPP-- record whose RDOMAIN/USUBJID/IDVAR/IDVARVAL has no parent record",
         "P21 SD0077; CDISC CG0371", study_checks.SuppParents, "index"),
    Rule("SDTM-LABEL-MISMATCH", "warning", "Variable label differs from the SDTMIG label of the domain spec",
         "P21 SD0063; CDISC CG0303", dataset_checks.SpecLabels, "metadata"),
    Rule("SDTM-DUPLICATE-RECORD", "warning", "Record identical to an earlier one in every variable except --SEQ",
         "unconfirmed (related: P21 SD1117 / SD1201, FDA FDAB021)", subject_checks.DuplicateRecords, "subject-run"),
    Rule("SDTM-AE-AFTER-LAST-CONTACT", "warning",
         "AESTDTC after the subject's end of participation (DM.RFPENDTC; last contact date when RFPENDTC is empty)",
         "P21 SD1202 (FDA FDAB034) for AE; related SD0080", study_checks.AeAfterLastContact, "index"),
    Rule("SDTM-AEDECOD-INCONSISTENT", "warning", "The same AETERM (case-insensitive) coded to different AEDECOD values",
         "unconfirmed (related: FDA FDAB009 paired variables; P21 SD1287 --DECOD within --PTCD)",
         study_checks.AeCodingConsistency, "index"),
    Rule("SDTM-EPOCH-SE", "error", "EPOCH differs from the EPOCH of the subject's SE element holding --STDTC/--DTC",
         "unconfirmed (CDISC CG0009 defines EPOCH by the element; P21 SD1015 checks EPOCH against TA only)",
         study_checks.EpochInSe, "index"),
    Rule("SDTM-ARMCD-NOT-IN-TA", "error",
         "DM.ARMCD / ACTARMCD not in TA.ARMCD (SCRNFAIL, NOTASSGN; for ACTARMCD also NOTTRT, UNPLAN excepted)",
         "P21 SD0066 (ARMCD; CDISC CG0126) / SD2002 (ACTARMCD; CDISC CG0125)", study_checks.ArmsInTa, "index"),
    Rule("SDTM-ARMCD-CASE", "warning", "DM.ARMCD / ACTARMCD holds an exempt arm code in another case (Scrnfail)",
         "none (P21 SD0066 / SD2002 match exempt codes without case)", study_checks.ArmCodeCase, "row"),
    Rule("SDTM-TS-SSTDTC", "error", "TS absent, without a TSPARMCD SSTDTC record, or its TSVAL not a YYYY-MM-DD date",
         "FDA Technical Rejection Criteria 1734; P21 SD1115 (TS absent) / SD2232 (SSTDTC; CDISC CG0287)",
         study_checks.StudyStartDate, "index"),
    Rule("SDTM-DM-ONE-PER-SUBJECT", "error", "USUBJID occurs in more than one DM record",
         "P21 SD0083; CDISC CG0151", subject_checks.OneDmRecordPerSubject, "index"),
]

RULES_BY_ID: dict[str, Rule] = {r.id: r for r in RULES}


class StreamingValidator(Validator):
    """Every rule of :data:`RULES` (or the ids in ``only``; an unknown id is a ``ValueError``)
    over datasets fed one after another::

        validator = StreamingValidator(log)
        for name in feeding_order(names):         # DM, SE, SUPP--, then the rest
            visitor = validator.begin(meta[name])  # a Dataset without rows
            for row_no, row in enumerate(rows_of(name), start=1):
                visitor.row(row_no, row)
            visitor.end()
        validator.finish()
    """

    def __init__(self, log: IssueLog, only: Iterable[str] | None = None) -> None:
        super().__init__(log, RULES, only)


def rule_statuses(validator: "Validator | None", log: IssueLog, only: Iterable[str] | None = None,
                  excluded: Iterable[str] = ()) -> list[dict]:
    """What happened to every rule of the catalogue in one run, for the report: ``issues``
    (it found something; ``found`` says how much), ``ran`` (it looked and found nothing),
    ``skipped`` with the reason (not selected by --rules, excluded by --exclude, or no dataset
    it applies to in the folder)."""
    counts: dict[str, int] = {}
    for issue in log.issues:
        counts[issue.code] = counts.get(issue.code, 0) + 1
    wanted = None if only is None else set(only)
    excluded = set(excluded)
    out = []
    for rule in RULES:
        entry = {"id": rule.id, "severity": rule.severity, "description": rule.description,
                 "mirrors": rule.mirrors, "found": counts.get(rule.id, 0)}
        if rule.id in excluded:
            entry.update(status="skipped", reason="excluded by --exclude")
        elif wanted is not None and rule.id not in wanted:
            entry.update(status="skipped", reason="not selected by --rules")
        elif entry["found"]:
            entry.update(status="issues", reason="")
        elif validator is not None and not validator.applied.get(rule.id):
            entry.update(status="skipped", reason="no dataset it applies to")
        else:
            entry.update(status="ran", reason="")
        out.append(entry)
    return out


def validate_datasets(
    datasets: dict[str, Dataset], log: IssueLog, only: Iterable[str] | None = None
) -> "StreamingValidator":
    """Run every rule (or the ids in ``only``) over ``datasets`` (name -> Dataset, keyed by
    ``Dataset.name``): the streaming validator fed from memory, DM and SE first.  Returns the
    validator (its ``applied`` counts say which rules met a dataset)."""
    validator = StreamingValidator(log, only)
    by_name = {name.upper(): ds for name, ds in datasets.items()}
    try:
        for name in feeding_order(by_name):
            validator.validate(by_name[name], by_name[name].rows)
        validator.finish()
    finally:
        validator.close()
    return validator
