"""The validation report as an Excel workbook with the sheets a Pinnacle 21 user knows:
**Dataset Summary** (per dataset: records, errors, warnings, notices), **Issue Summary** (per
dataset and rule: the rule it mirrors, message, severity, how many), **Details** (one row per
finding: dataset, record, USUBJID, --SEQ, variable, value, rule, message, severity) and
**Rules** (every rule of the catalogue: what it mirrors, severity, status in this run —
issues, ran, skipped and why — and how many findings).

Written with openpyxl.  An .xlsx is a zip whose entries carry a time and whose document
properties carry a creation time; both are the run's creation time
(:mod:`trialbridge.converters.core.clock`, fixed by ``SOURCE_DATE_EPOCH``), so the same
findings give the same bytes.  Identifying values never reach it: it shows what
``issues.json`` holds.
"""
from __future__ import annotations

import io
import re
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

from trialbridge.converters.core.clock import creation_datetime, creation_time
from trialbridge.converters.core.files import atomic_path
from trialbridge.converters.validation.report import _NOT_XML, dataset_of

SEVERITY_NAMES = {"error": "Error", "warning": "Warning", "info": "Notice"}
MAX_CELL = 32_000  # Excel holds at most 32,767 characters in a cell


def _cell(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    text = _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))
    return text[:MAX_CELL]


def build_workbook(log_json: dict, *, title: str, rules: list[dict], datasets_summary: dict[str, int] | None = None):
    from openpyxl import Workbook
    from openpyxl.styles import Font

    issues = log_json.get("issues") or []
    wb = Workbook()
    bold = Font(bold=True)

    def sheet(name: str, header: list[str], rows: list[list[Any]], first: bool = False):
        ws = wb.active if first else wb.create_sheet()
        ws.title = name
        ws.append([title])
        ws["A1"].font = Font(bold=True, size=13)
        ws.append([])
        ws.append(header)
        for c in ws[3]:
            c.font = bold
        for row in rows:
            ws.append([_cell(v) for v in row])
        ws.freeze_panes = "A4"
        return ws

    by_dataset: dict[str, Counter] = {}
    for i in issues:
        by_dataset.setdefault(dataset_of(i.get("file")), Counter())[i.get("severity")] += 1
    names = sorted(set(by_dataset) | set(datasets_summary or {}))
    sheet("Dataset Summary", ["Dataset", "Records", "Errors", "Warnings", "Notices"],
          [[n, (datasets_summary or {}).get(n), by_dataset.get(n, Counter())["error"],
            by_dataset.get(n, Counter())["warning"], by_dataset.get(n, Counter())["info"]] for n in names], first=True)
    mirrors = {r["id"]: r["mirrors"] for r in rules}
    core = {r["id"]: ", ".join(r.get("core") or []) for r in rules}
    summary = Counter((dataset_of(i.get("file")), i.get("code"), i.get("severity")) for i in issues)
    first_message: dict[tuple, str] = {}
    for i in issues:
        first_message.setdefault((dataset_of(i.get("file")), i.get("code"), i.get("severity")), i.get("message") or "")
    sheet("Issue Summary", ["Dataset", "Rule", "CDISC CORE", "Mirrors", "Message (first)", "Severity", "Found"],
          [[d, code, core.get(code, ""), mirrors.get(code, ""), first_message[(d, code, sev)],
            SEVERITY_NAMES.get(sev, sev), n] for (d, code, sev), n in sorted(summary.items())])
    sheet("Details", ["Dataset", "Record", "USUBJID", "SEQ", "Variable", "Value", "Rule", "Message", "Severity",
                      "CDISC CORE"],
          [[dataset_of(i.get("file")), i.get("record"), i.get("usubjid"), i.get("seq"), i.get("field"),
            i.get("value"), i.get("code"), i.get("message"), SEVERITY_NAMES.get(i.get("severity"), i.get("severity")),
            core.get(i.get("code"), "")] for i in issues])
    sheet("Rules", ["Rule", "CDISC CORE", "Mirrors", "Description", "Severity", "Status", "Reason", "Found"],
          [[r["id"], core.get(r["id"], ""), r["mirrors"], r["description"], SEVERITY_NAMES.get(r["severity"], r["severity"]),
            r["status"], r.get("reason", ""), r["found"]] for r in rules])
    when = creation_time().replace(tzinfo=None)
    wb.properties.creator = "trialbridge"
    wb.properties.created = when
    wb.properties.modified = when
    wb.properties.lastModifiedBy = "trialbridge"
    return wb


CORE_PROPERTIES = "docProps/core.xml"  # holds the creator, "trialbridge"
_MODIFIED = re.compile(rb"(<dcterms:modified[^>]*>)[^<]*(</dcterms:modified>)")


def _fixed_zip(data: bytes) -> bytes:
    """The same workbook with every zip entry stamped with the run's creation time.  The
    document properties (creator trialbridge) come first and uncompressed, so a later run
    recognises the file as its own report and may replace it (a file it did not write it
    never overwrites: ``files.check_file_target``)."""
    stamp = creation_time().timetuple()[:6]
    stamp = max(stamp, (1980, 1, 1, 0, 0, 0))  # the zip format starts in 1980
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        infos = sorted(src.infolist(), key=lambda i: i.filename != CORE_PROPERTIES)
        for info in infos:
            entry = zipfile.ZipInfo(info.filename, date_time=stamp)
            entry.compress_type = zipfile.ZIP_STORED if info.filename == CORE_PROPERTIES else zipfile.ZIP_DEFLATED
            entry.external_attr = 0o600 << 16
            content = src.read(info.filename)
            if info.filename == CORE_PROPERTIES:  # openpyxl stamps "modified" with the wall clock on save
                content = _MODIFIED.sub(b"\\g<1>" + creation_datetime().encode() + b"\\g<2>", content)
            dst.writestr(entry, content)
    return out.getvalue()


def write_excel_report(log_json: dict, path: str | Path, *, title: str, rules: list[dict],
                       datasets_summary: dict[str, int] | None = None) -> Path:
    wb = build_workbook(log_json, title=title, rules=rules, datasets_summary=datasets_summary)
    buf = io.BytesIO()
    wb.save(buf)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(_fixed_zip(buf.getvalue()))
    return Path(path)
