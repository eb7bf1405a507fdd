"""One log of findings for a whole run.

Data problems never raise: they become :class:`Issue` rows and conversion goes on
(design rule 3).  Only usage and I/O failures raise :class:`TrialbridgeError`.
Rule codes are stable; ``docs/rules.md`` lists them with the CDISC CORE / FDA rule
each mirrors.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

SEVERITIES = ("error", "warning", "info")


class TrialbridgeError(Exception):
    """A usage or I/O failure that stops the run; shown to the user as one line."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Issue:
    severity: str
    code: str
    message: str
    file: str | None = None
    record: str | int | None = None  # row number (1-based, header excluded) or key
    field: str | None = None
    value: Any = None
    usubjid: str | None = None
    seq: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if out["value"] is not None and not isinstance(out["value"], (str, int, float, bool)):
            out["value"] = str(out["value"])
        return out


@dataclass
class IssueLog:
    issues: list[Issue] = field(default_factory=list)
    # every input row is accounted for: file -> Counter(status)
    accounting: dict[str, Counter] = field(default_factory=dict)
    # what produced the findings (tool and standard versions, study); no wall-clock time
    run: dict[str, Any] = field(default_factory=dict)
    # values a terminology lookup could not map: table -> Counter(value -> count); reported
    # once per distinct value at the end of a run (design rule 2), never module-global
    unmapped: dict[str, Counter] = field(default_factory=dict)

    def add(self, severity: str, code: str, message: str, **where: Any) -> Issue:
        if severity not in SEVERITIES:
            raise ValueError(f"unknown severity {severity!r}")
        issue = Issue(severity, code, message, **where)
        self.issues.append(issue)
        return issue

    def error(self, code: str, message: str, **where: Any) -> Issue:
        return self.add("error", code, message, **where)

    def warning(self, code: str, message: str, **where: Any) -> Issue:
        return self.add("warning", code, message, **where)

    def info(self, code: str, message: str, **where: Any) -> Issue:
        return self.add("info", code, message, **where)

    def extend(self, issues: Iterable[Issue]) -> None:
        self.issues.extend(issues)

    def count_row(self, file: str, status: str, n: int = 1) -> None:
        self.accounting.setdefault(file, Counter())[status] += n

    def count_unmapped(self, table: str, value: Any) -> None:
        self.unmapped.setdefault(table, Counter())[str(value)] += 1

    def merge(self, other: "IssueLog") -> None:
        """Take in the findings, row counts and unmapped counts of a log kept elsewhere (a
        worker's, one subject's); the sums do not depend on the order logs are merged in."""
        self.issues.extend(other.issues)
        for file, counts in other.accounting.items():
            self.accounting.setdefault(file, Counter()).update(counts)
        for table, counts in other.unmapped.items():
            self.unmapped.setdefault(table, Counter()).update(counts)

    def counts(self) -> Counter:
        return Counter(i.severity for i in self.issues)

    @property
    def has_errors(self) -> bool:
        return any(i.severity == "error" for i in self.issues)

    def sorted(self) -> list[Issue]:
        order = {s: n for n, s in enumerate(SEVERITIES)}
        return sorted(
            self.issues,
            key=lambda i: (
                order[i.severity], i.code, str(i.file or ""), _record_key(i.record),
                str(i.field or ""), str(i.value if i.value is not None else ""), i.message,
            ),
        )

    def to_json_obj(self) -> dict[str, Any]:
        counts = self.counts()
        return {
            "run": dict(self.run),
            "summary": {s: counts.get(s, 0) for s in SEVERITIES},
            "rows": {f: dict(sorted(c.items())) for f, c in sorted(self.accounting.items())},
            "issues": [i.as_dict() for i in self.sorted()],
        }


def schema_problem(validator, instance: Any) -> str | None:
    """The first error a JSON Schema validator finds in ``instance``, as one line naming its
    place ("at sites/0/country: … (and 2 more)"), or None when it is valid.  Used for the
    configuration files (study, ODM mapping), where the first problem is what to fix."""
    errors = sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.path])
    if not errors:
        return None
    first = errors[0]
    where = "/".join(str(p) for p in first.path) or "(top level)"
    return f"at {where}: {first.message}" + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")


def _record_key(record: Any) -> tuple[int, Any]:
    if isinstance(record, int):
        return (0, record)
    return (1, str(record or ""))
