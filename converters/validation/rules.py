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

import json
from importlib import resources
from typing import Iterable

from trialbridge.converters.core.datasets import Dataset
from trialbridge.converters.core.issues import IssueLog, schema_problem
from trialbridge.converters.validation import dataset_checks, operators, row_checks, study_checks, subject_checks
from trialbridge.converters.validation.engine import DatasetVisitor, Rule, Validator, feeding_order

__all__ = ["RULES", "RULES_BY_ID", "Rule", "StreamingValidator", "DatasetVisitor", "feeding_order", "rule_statuses",
           "validate_datasets"]

CATALOGUE = "rules.yaml"  # beside this module: the rules as data
_CHECK_MODULES = {"dataset_checks": dataset_checks, "row_checks": row_checks, "subject_checks": subject_checks,
                  "study_checks": study_checks}


def load_catalogue(text: str | None = None) -> list[Rule]:
    """The rules of ``rules.yaml`` (or of ``text``), checked against
    ``schemas/config/rules.schema.json``: each becomes a :class:`Rule` whose check is the
    named Python class or the operator's (:mod:`.operators`).  A catalogue that does not
    fit its schema, or names a class that does not exist, is a ``ValueError``: the rules are
    code's data, not a user's input."""
    import jsonschema
    import yaml

    if text is None:
        text = resources.files(__package__).joinpath(CATALOGUE).read_text(encoding="utf-8")
    entries = yaml.safe_load(text)
    schema = json.loads(resources.files("trialbridge.schemas").joinpath("config", "rules.schema.json")
                        .read_text(encoding="utf-8"))
    problem = schema_problem(jsonschema.Draft202012Validator(schema), entries)
    if problem:
        raise ValueError(f"rule catalogue {CATALOGUE}: {problem}")
    rules, seen = [], set()
    for e in entries:
        if e["id"] in seen:
            raise ValueError(f"rule catalogue {CATALOGUE}: {e['id']} is given twice")
        seen.add(e["id"])
        if "operator" in e:
            check = operators.check_for(e["operator"])
        else:
            module, name = e["check"].split(".")
            check = getattr(_CHECK_MODULES[module], name, None)
            if check is None:
                raise ValueError(f"rule catalogue {CATALOGUE}: {e['id']} names {e['check']}, which does not exist")
        rules.append(Rule(e["id"], e["severity"], e["summary"], e["mirrors"], check, e["kind"], core=tuple(e["core"]),
                          checks=e["checks"], confirmed_by=e.get("confirmed_by", ""),
                          operator=dict(e["operator"]) if "operator" in e else None))
    return rules


RULES: list[Rule] = load_catalogue()

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

    def __init__(self, log: IssueLog, only: Iterable[str] | None = None, ig: str | None = None) -> None:
        super().__init__(log, RULES, only, ig)


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
                 "core": list(rule.core), "mirrors": rule.mirrors, "found": counts.get(rule.id, 0)}
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
    datasets: dict[str, Dataset], log: IssueLog, only: Iterable[str] | None = None, ig: str | None = None
) -> "StreamingValidator":
    """Run every rule (or the ids in ``only``) over ``datasets`` (name -> Dataset, keyed by
    ``Dataset.name``): the streaming validator fed from memory, DM and SE first.  Returns the
    validator (its ``applied`` counts say which rules met a dataset)."""
    validator = StreamingValidator(log, only, ig)
    by_name = {name.upper(): ds for name, ds in datasets.items()}
    try:
        for name in feeding_order(by_name):
            validator.validate(by_name[name], by_name[name].rows)
        validator.finish()
    finally:
        validator.close()
    return validator
