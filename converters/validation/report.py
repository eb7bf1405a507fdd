"""Validation report for people: one self-contained HTML page, plus the same findings as JSON
with the rule descriptions.

Input is the object :meth:`converters.issues.IssueLog.to_json_obj` returns (``summary``,
``rows``, ``issues``), so a report can be made from a live log or from an ``issues.json``
read back.  The page is built as an lxml tree and serialised once (design: no text
templating; every value is escaped by the serialiser).  It has inline CSS only, no script and
no external asset (a Content-Security-Policy meta element forbids them), and drill-down is
``<details>`` elements.  Same input, same bytes: no timestamps, every table sorted.

Page: summary counts by severity; define.xml status; the run metadata (``run``); findings by dataset (rows, errors,
warnings, info); findings by rule (code, severity, count, description and mirrored rule from
:data:`converters.rules.RULES`); per rule a ``<details>`` with the findings (dataset/file, row,
USUBJID, --SEQ, variable, value, message), at most :data:`MAX_FINDINGS_PER_RULE` of them and a
"N more" line; input row accounting when there is any.
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

import orjson
from lxml import html
from lxml.html import builder as E

from trialbridge.converters.core.files import atomic_open
from trialbridge.converters.core.issues import SEVERITIES
from trialbridge.converters.validation.rules import RULES_BY_ID

MAX_FINDINGS_PER_RULE = 200
MAX_VALUE_CHARS = 300
DATASET_SUFFIXES = (".xpt", ".json", ".csv", ".ndjson", ".xml")
NO_DATASET = "(study)"

CSS = """
body{font-family:'DejaVu Sans','Liberation Sans',Arial,sans-serif;margin:24px;color:#1d2329;font-size:14px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:24px 0 8px;border-bottom:1px solid #d0d7de}
.counts{display:flex;gap:12px;margin:12px 0}
.count{border:1px solid #d0d7de;border-radius:6px;padding:8px 16px;min-width:110px}
.count .n{display:block;font-size:26px;font-weight:bold}
.count.error .n{color:#b42318}.count.warning .n{color:#9a6700}.count.info .n{color:#0b5cad}
table{border-collapse:collapse;margin:4px 0 8px}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f7}td.num{text-align:right}td.code{white-space:nowrap}
.sev-error{color:#b42318;font-weight:bold}.sev-warning{color:#9a6700;font-weight:bold}.sev-info{color:#0b5cad}
details{margin:6px 0;border:1px solid #d0d7de;border-radius:6px;padding:4px 8px}
summary{cursor:pointer;font-weight:bold}
td.value{font-family:'DejaVu Sans Mono',monospace;max-width:320px;overflow-wrap:anywhere}
td.message{max-width:520px}.more{font-style:italic;color:#57606a}
p.define{padding:6px 10px;background:#f6f8fa;border-left:4px solid #8c959f}
"""

# Characters XML 1.0 cannot hold (lxml refuses them); shown as \\xNN instead.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _text(value: Any, limit: int | None = None) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else (
        str(int(value)) if isinstance(value, float) and value.is_integer() else str(value))
    if limit is not None and len(text) > limit:
        text = text[:limit] + "\u2026"
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else
                        f"\\u{ord(m.group()):04x}", text)


def _flat(value: Any) -> str:
    """A run-metadata value as one line: dicts as ``k: v, …`` (sorted), lists joined."""
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_flat(v)}" for k, v in sorted(value.items(), key=lambda kv: str(kv[0])))
    if isinstance(value, (list, tuple)):
        return ", ".join(_flat(v) for v in value)
    return _text(value)


def dataset_of(file: str | None) -> str:
    """Dataset name of a finding's file: ``/x/ae.xpt`` -> ``AE``; no file -> ``(study)``."""
    if not file:
        return NO_DATASET
    name = PurePosixPath(str(file).replace("\\", "/")).name
    for suffix in DATASET_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)].upper()
    return name


def _sev_rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)


def rule_descriptions(codes: Iterable[str]) -> dict[str, dict[str, str]]:
    """code -> {severity, description, mirrors} for the codes that are registered rules."""
    out = {}
    for code in sorted(set(codes)):
        rule = RULES_BY_ID.get(code)
        if rule is not None:
            out[code] = {"severity": rule.severity, "description": rule.description, "mirrors": rule.mirrors}
    return out


def _table(headers: list[str], rows: list[list[Any]], **attrs: str) -> Any:
    return E.TABLE(
        E.THEAD(E.TR(*[E.TH(h) for h in headers])),
        E.TBODY(*rows),
        **attrs,
    )


def _td(value: Any, cls: str | None = None) -> Any:
    cell = E.TD(_text(value, MAX_VALUE_CHARS))
    if cls:
        cell.set("class", cls)
    return cell


def build_report(log_json: dict, *, title: str, datasets_summary: dict[str, int] | None = None,
                 define_status: str | None = None) -> Any:
    """The report as an lxml ``<html>`` element."""
    issues: list[dict] = list(log_json.get("issues") or [])
    summary = {s: int((log_json.get("summary") or {}).get(s, 0)) for s in SEVERITIES}

    # ---- head and counts
    head = E.HEAD(
        E.META(charset="utf-8"),
        E.META(name="generator", content="trialbridge"),  # a later --report knows the file is ours
        E.META(**{"http-equiv": "Content-Security-Policy",
                  "content": "default-src 'none'; style-src 'unsafe-inline'"}),
        E.TITLE(_text(title)),
        E.STYLE(CSS),
    )
    body = E.BODY(E.H1(_text(title)))
    body.append(E.DIV(*[
        E.DIV(E.SPAN(str(summary[s]), E.CLASS("n"), id=f"count-{s}"), f"{s}s" if s != "info" else "info",
              E.CLASS(f"count {s}"))
        for s in SEVERITIES
    ], E.CLASS("counts"), id="summary"))
    body.append(E.P(f"define.xml: {_text(define_status) if define_status else 'not checked'}",
                    E.CLASS("define"), id="define-status"))

    # ---- what produced the findings (IssueLog.run: tool, SDTMIG and CT versions, input)
    run = log_json.get("run") or {}
    if run:
        body.append(E.H2("Run"))
        body.append(E.TABLE(E.TBODY(*[E.TR(E.TH(_text(k)), _td(_flat(v))) for k, v in sorted(run.items())]),
                            id="run"))

    # ---- by dataset
    by_dataset: dict[str, Counter] = defaultdict(Counter)
    for issue in issues:
        by_dataset[dataset_of(issue.get("file"))][issue.get("severity", "")] += 1
    names = sorted(set(by_dataset) | set(datasets_summary or {}), key=lambda n: (n == NO_DATASET, n))
    body.append(E.H2("Findings by dataset"))
    body.append(_table(
        ["Dataset", "Rows", "Errors", "Warnings", "Info"],
        [E.TR(E.TD(_text(n)),
              _td((datasets_summary or {}).get(n, "\u2014"), "num"),
              *[_td(by_dataset[n][s], "num") for s in SEVERITIES],
              id=f"dataset-{_text(n)}")
         for n in names],
        id="by-dataset",
    ))

    # ---- by rule
    by_code: dict[str, list[dict]] = defaultdict(list)
    for issue in issues:
        by_code[str(issue.get("code", ""))].append(issue)

    def severities(code: str) -> list[str]:
        return sorted({i.get("severity", "") for i in by_code[code]}, key=_sev_rank)

    codes = sorted(by_code, key=lambda c: (_sev_rank(severities(c)[0]), c))
    described = rule_descriptions(codes)
    body.append(E.H2("Findings by rule"))
    rule_rows = []
    for code in codes:
        sev = severities(code)
        info = described.get(code, {})
        rule_rows.append(E.TR(
            E.TD(E.A(code, href=f"#rule-{code}"), E.CLASS("code")),
            E.TD(" / ".join(sev), E.CLASS(f"sev-{sev[0]}")),
            _td(len(by_code[code]), "num"),
            _td(info.get("description", "\u2014")),
            _td(info.get("mirrors", "")),
            id=f"rulerow-{code}",
        ))
    body.append(_table(["Rule", "Severity", "Findings", "Description", "Mirrors"], rule_rows, id="by-rule"))

    # ---- per-rule drill-down
    body.append(E.H2("Findings"))
    for code in codes:
        found = by_code[code]
        shown = found[:MAX_FINDINGS_PER_RULE]
        rows = [E.TR(
            _td(dataset_of(i.get("file"))),
            _td(i.get("record"), "num"),
            _td(i.get("usubjid")),
            _td(i.get("seq"), "num"),
            _td(i.get("field")),
            _td(i.get("value"), "value"),
            _td(i.get("message"), "message"),
            E.CLASS(f"sev-row-{i.get('severity', '')}"),
        ) for i in shown]
        block = E.DETAILS(
            E.SUMMARY(f"{code} \u2014 {len(found)} finding{'s' if len(found) != 1 else ''} "
                      f"({' / '.join(severities(code))})"),
            _table(["Dataset", "Row", "USUBJID", "--SEQ", "Variable", "Value", "Message"], rows),
            id=f"rule-{code}",
        )
        if len(found) > len(shown):
            block.append(E.P(f"{len(found) - len(shown)} more not shown (see the JSON report)", E.CLASS("more")))
        body.append(block)
    if not codes:
        body.append(E.P("No findings.", id="no-findings"))

    # ---- row accounting
    accounting = log_json.get("rows") or {}
    if accounting:
        statuses = sorted({s for counts in accounting.values() for s in counts})
        body.append(E.H2("Input rows"))
        body.append(_table(["File", *statuses],
                           [E.TR(_td(f), *[_td(c.get(s, 0), "num") for s in statuses])
                            for f, c in sorted(accounting.items())], id="rows"))
    return E.HTML(head, body, lang="en")


def render_html(log_json: dict, *, title: str, datasets_summary: dict[str, int] | None = None,
                define_status: str | None = None) -> bytes:
    doc = build_report(log_json, title=title, datasets_summary=datasets_summary, define_status=define_status)
    return html.tostring(doc, doctype="<!DOCTYPE html>", encoding="utf-8", method="html") + b"\n"


def write_html_report(log_json: dict, path: str | Path, *, title: str,
                      datasets_summary: dict[str, int] | None = None, define_status: str | None = None) -> Path:
    """Write the HTML report to ``path`` (atomically) and return the path."""
    data = render_html(log_json, title=title, datasets_summary=datasets_summary, define_status=define_status)
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def json_report(log_json: dict, *, datasets_summary: dict[str, int] | None = None,
                define_status: str | None = None) -> dict:
    """``issues.json`` content plus ``rules`` (description of every registered rule code found)
    and, when given, ``datasets`` (name -> rows) and ``define``."""
    out = dict(log_json)
    out["rules"] = rule_descriptions(str(i.get("code", "")) for i in log_json.get("issues") or [])
    if datasets_summary is not None:
        out["datasets"] = dict(sorted(datasets_summary.items()))
    if define_status is not None:
        out["define"] = define_status
    return out


def write_json_report(log_json: dict, path: str | Path, *, datasets_summary: dict[str, int] | None = None,
                      define_status: str | None = None) -> Path:
    obj = json_report(log_json, datasets_summary=datasets_summary, define_status=define_status)
    with atomic_open(path, "wb") as fh:
        fh.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2) + b"\n")
    return Path(path)
