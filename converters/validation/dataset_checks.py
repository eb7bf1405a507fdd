"""Rules on a dataset's metadata alone (names, labels, which variables it has): they run in
``begin`` and never see a row."""
from __future__ import annotations

import re

from trialbridge.converters.formats.sdtm import XPT_MAX_LABEL, XPT_MAX_NAME  # the writer's FDA limits
from trialbridge.converters.validation.engine import Check, DatasetInfo

XPT_NAME = re.compile(r"[A-Z][A-Z0-9_]*\Z")


class ExpectedVariables(Check):
    """SDTM-EXP-MISSING: an Exp variable of the domain is not in the dataset."""

    def begin(self, ds: DatasetInfo) -> None:
        for v in ds.spec_variables():
            if v.core == "Exp" and v.name not in ds.present:
                self.report(ds, f"Expected variable {v.name} is not in {ds.name}", field=v.name)


class XptNames(Check):
    """SDTM-XPT-NAME: dataset and variable names fit SAS V5 (<= 8, [A-Z][A-Z0-9_]*)."""

    def begin(self, ds: DatasetInfo) -> None:
        name = ds.meta.name
        if len(name) > XPT_MAX_NAME or not XPT_NAME.match(name):
            self.report(ds, f"Dataset name {name!r} is not a SAS V5 name (<=8, [A-Z][A-Z0-9_]*)", value=name)
        for v in ds.variables:
            if len(v.name) > XPT_MAX_NAME or not XPT_NAME.match(v.name):
                self.report(ds, f"Variable name {v.name!r} is not a SAS V5 name (<=8, [A-Z][A-Z0-9_]*)",
                            field=v.name, value=v.name)


class XptLabels(Check):
    """SDTM-XPT-LABEL: dataset and variable labels of at most 40 characters."""

    def begin(self, ds: DatasetInfo) -> None:
        if len(ds.label or "") > XPT_MAX_LABEL:
            self.report(ds, f"Dataset label is {len(ds.label)} characters (max {XPT_MAX_LABEL})", value=ds.label)
        for v in ds.variables:
            if len(v.label or "") > XPT_MAX_LABEL:
                self.report(ds, f"Label of {v.name} is {len(v.label)} characters (max {XPT_MAX_LABEL})",
                            field=v.name, value=v.label)


class SpecLabels(Check):
    """SDTM-LABEL-MISMATCH: variable labels as the SDTMIG spec gives them."""

    def begin(self, ds: DatasetInfo) -> None:
        spec = ds.spec
        if spec is None:
            return  # custom domain: its labels are the sponsor's (SDTM-SPEC-UNKNOWN says so)
        for v in ds.variables:
            expected = spec.var(v.name)
            if expected is None or not expected.label:
                continue  # a variable the spec lacks is SDTM-ROW-SCHEMA's finding
            if (v.label or "").strip() != expected.label.strip():
                self.report(ds, f"Label of {v.name} is {v.label!r}; SDTMIG label is {expected.label!r}",
                            field=v.name, value=v.label)
