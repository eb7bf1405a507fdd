"""The closed set of operators a rule of the catalogue (``rules.yaml``) can be written with as
data, after the CDISC CORE pattern: a rule names an operator and its parameters, and this
module turns them into a :class:`~.engine.Check` of the streaming pass.  Rules that need study
logic (indexes across datasets, subject runs) stay Python classes and name them instead.

``date_not_after`` {dataset, earlier, later}
    in ``dataset``, the date/time ``earlier`` is not after ``later`` at the precision both
    have (SDTM-RFSTDTC-AFTER-RFENDTC: RFSTDTC, RFENDTC in DM); either null: nothing to say.
``names_its_dataset`` {variable}
    ``variable`` (DOMAIN) names the dataset it sits in, or, in a split dataset (QSxx, LBUR),
    its first two letters; null is left to the Required-variable rule.
"""
from __future__ import annotations

from typing import Any, Callable

from trialbridge.converters.core import iso8601
from trialbridge.converters.validation.engine import Check, DatasetInfo, RowFn, dtc, is_null, num_text


def _date_not_after(dataset: str, earlier: str, later: str) -> type[Check]:
    class DateNotAfter(Check):
        def begin(self, ds: DatasetInfo) -> RowFn | None:
            if ds.name != dataset or not {earlier, later} <= ds.present:
                return None

            def row_fn(row_no: int, row: dict) -> None:
                start, end = row.get(earlier), row.get(later)
                if is_null(start) or is_null(end):
                    return
                if iso8601.after(dtc(start), dtc(end)):
                    self.report(ds, f"{earlier} {start} is after {later} {end}", row_no, row, earlier, start)
            return row_fn

    return DateNotAfter


def _names_its_dataset(variable: str) -> type[Check]:
    class NamesItsDataset(Check):
        def begin(self, ds: DatasetInfo) -> RowFn | None:
            if variable not in ds.present:
                return None
            name = ds.name
            accepted: set[Any] = set()  # values seen to be right: most rows repeat one

            def row_fn(row_no: int, row: dict) -> None:
                value = row.get(variable)
                if value in accepted or is_null(value):
                    return
                if not isinstance(value, str):  # a third-party file with DOMAIN as a number
                    self.report(ds, f"{variable} {num_text(value)!r} does not match dataset {ds.meta.name}", row_no,
                                row, variable, num_text(value))
                    return
                text = value
                if text == name or (len(text) == 2 and len(name) in (3, 4) and name.startswith(text)):
                    accepted.add(value)
                    return
                self.report(ds, f"{variable} {value!r} does not match dataset {ds.meta.name}", row_no, row, variable,
                            value)
            return row_fn

    return NamesItsDataset


OPERATORS: dict[str, Callable[..., type[Check]]] = {
    "date_not_after": _date_not_after,
    "names_its_dataset": _names_its_dataset,
}


def check_for(operator: dict[str, Any]) -> type[Check]:
    params = {k: v for k, v in operator.items() if k != "name"}
    return OPERATORS[operator["name"]](**params)
