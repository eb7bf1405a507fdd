"""In-memory form of one SDTM dataset, shared by mapping modules, writers, readers and rules.

Values in ``rows``: Char variables hold ``str`` ("" = missing); Num variables hold
``int``/``float`` or ``None`` (missing).  Variable metadata comes from
``schemas/sdtm/<DOMAIN>.json`` through :mod:`converters.sdtm_spec`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Variable:
    name: str
    label: str
    type: str  # "Char" | "Num"
    core: str = "Perm"  # "Req" | "Exp" | "Perm"
    role: str = ""
    codelist: str | None = None  # CDISC CT submission short name, e.g. "SEX"
    codelist_code: str | None = None  # NCI C-code of the codelist, e.g. "C66731"
    order: int = 0


@dataclass
class Dataset:
    name: str  # upper case: DM, LB, SUPPAE ...
    label: str
    variables: list[Variable]
    rows: list[dict[str, Any]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    source: str | None = None  # file it was read from, for messages
    label_given: bool = True  # False when the file had no dataset label and the spec's was filled in

    @property
    def domain(self) -> str:
        return self.name

    def column(self, name: str) -> list[Any]:
        return [r.get(name) for r in self.rows]

    def var(self, name: str) -> Variable | None:
        for v in self.variables:
            if v.name == name:
                return v
        return None

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.variables]
