"""The study review page: one self-contained HTML file of an SDTM folder.

Sections, each with the validation findings of the datasets it shows beside it:

- *Enrolment and disposition* (DM, DS): subjects and treated subjects by arm and cohort, the
  DISPOSITION EVENT terms; a stacked bar chart of the same (``plot-disposition``).
- *Subjects over time* (DM, EX, SV, AE, SUPPDM): a swimmer plot on a study-day axis
  (``plot-swimmer``): one lane per subject, doses, visits, AEs by severity, relapses.
- *Trajectories* (LB, CP, … as the study configuration's ``review.trajectories`` names them):
  results by visit, one line per subject coloured by arm, the reference range shaded
  (``plot-<domain>``).
- *Adverse events by SOC and PT* with severity (AE).
- *Other findings*: those of datasets no section shows, and of the study as a whole.

The page is an lxml tree serialised once.  Plotly's JavaScript is inlined once (nothing is
fetched when the page is viewed: a Content-Security-Policy allows inline script and style
only); each figure is its JSON and one ``Plotly.newPlot`` call on a fixed div id, so the same
folder gives the same bytes.
"""
from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable

from lxml import html
from lxml.html import builder as E

from trialbridge.converters.core.datasets import Dataset
from trialbridge.converters.core.files import atomic_open
from trialbridge.converters.core.issues import SEVERITIES
from trialbridge.converters.review import summary as S
from trialbridge.converters.validation.report import _text, dataset_of
from trialbridge.converters.validation.rules import RULES_BY_ID

MAX_FINDINGS_SHOWN = 50
ARM_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
SEVERITY_COLOURS = {"MILD": "#f2c744", "MODERATE": "#f08a24", "SEVERE": "#c0392b"}
OTHER_COLOUR = "#7f7f7f"
PLOT_CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["toImage"]}

# Which datasets' findings go beside which section (the rest go to "Other findings").
SECTIONS = (
    ("enrolment", "Enrolment and disposition", ("DM", "DS", "SUPPDM")),
    ("swimmer", "Subjects over time", ("EX", "SUPPEX", "SV", "SE")),
    ("trajectories", "Trajectories by visit", ()),  # the plotted domains, filled in at build time
    ("adverse-events", "Adverse events by SOC and PT", ("AE", "SUPPAE")),
)

CSS = """
body{font-family:'DejaVu Sans','Liberation Sans',Arial,sans-serif;margin:24px;color:#1d2329;font-size:14px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d0d7de}
h3{font-size:15px;margin:16px 0 6px}
table{border-collapse:collapse;margin:4px 0 8px}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f7}td.num{text-align:right}tr.soc td{font-weight:bold;background:#f8f9fa}
.sev-error{color:#b42318;font-weight:bold}.sev-warning{color:#9a6700;font-weight:bold}.sev-info{color:#0b5cad}
.findings{border-left:4px solid #8c959f;background:#f6f8fa;padding:4px 10px;margin:8px 0}
.findings.none{color:#57606a}
details{margin:4px 0}summary{cursor:pointer}
.note{color:#57606a;font-style:italic}
.plot{width:100%}.wide{overflow-x:auto}
"""


# --------------------------------------------------------------------------- figures


def _arm_colours(arms: Iterable[str]) -> dict[str, str]:
    return {arm: ARM_COLOURS[i % len(ARM_COLOURS)] for i, arm in enumerate(sorted(set(arms)))}


def disposition_figure(enrol: S.Enrolment) -> dict:
    arms = [f"{g['arm']}" + (f" [{g['cohort']}]" if g["cohort"] else "") for g in enrol.rows]
    data = [{"type": "bar", "name": decod, "x": arms, "y": [g["disposition"][decod] for g in enrol.rows],
             "hovertemplate": "%{x}<br>" + decod.replace("%", "%%") + ": %{y}<extra></extra>"}
            for decod in enrol.decods]
    layout = {"barmode": "stack", "title": {"text": "Disposition events by arm"},
              "yaxis": {"title": {"text": "subjects"}}, "height": 380, "legend": {"orientation": "h", "y": -0.25}}
    return {"data": data, "layout": layout}


def swimmer_figure(swim: S.Swimmer) -> dict:
    lanes = swim.lanes
    colours = _arm_colours(la.arm for la in lanes)
    data: list[dict] = []
    for arm in sorted(colours):
        mine = [la for la in lanes if la.arm == arm]
        data.append({"type": "bar", "orientation": "h", "name": f"on study: {arm}", "y": [la.usubjid for la in mine],
                     "x": [la.end - la.start + 1 for la in mine], "base": [la.start for la in mine],
                     "marker": {"color": colours[arm], "opacity": 0.25}, "width": 0.6,
                     "hovertemplate": "%{y}<br>days %{base} to %{x}<extra></extra>".replace("%{x}", "%{customdata}"),
                     "customdata": [la.end for la in mine]})

    def points(name, pairs, marker, hover):
        data.append({"type": "scatter", "mode": "markers", "name": name, "x": [d for d, _ in pairs],
                     "y": [u for _, u in pairs], "marker": marker, "hovertemplate": hover})

    points("dose (EX)", [(d, la.usubjid) for la in lanes for d in la.doses],
           {"symbol": "line-ns-open", "size": 7, "color": "#2b2b2b"}, "%{y}<br>dose on day %{x}<extra></extra>")
    points("visit (SV)", [(d, la.usubjid) for la in lanes for d, _ in la.visits],
           {"symbol": "diamond-open", "size": 8, "color": "#1f5fbf"}, "%{y}<br>visit on day %{x}<extra></extra>")
    severities = [s for s in S.SEVERITY_ORDER if any(s in la.adverse_events for la in lanes)] + sorted(
        {s for la in lanes for s in la.adverse_events} - set(S.SEVERITY_ORDER))
    for sev in severities:
        points(f"AE {sev.lower()}", [(d, la.usubjid) for la in lanes for d, _ in la.adverse_events.get(sev, [])],
               {"symbol": "triangle-up", "size": 10, "color": SEVERITY_COLOURS.get(sev, OTHER_COLOUR)},
               "%{y}<br>AE (" + sev.lower() + ") on day %{x}<extra></extra>")
    if swim.relapse_variable:
        points(f"relapse (SUPPDM {swim.relapse_variable})", [(d, la.usubjid) for la in lanes for d in la.relapses],
               {"symbol": "star", "size": 13, "color": "#d62728"}, "%{y}<br>relapse on day %{x}<extra></extra>")
    layout = {"barmode": "overlay", "height": max(320, 160 + 14 * len(lanes)),
              "xaxis": {"title": {"text": "study day (day 1 = first dose, RFSTDTC)"}, "zeroline": False},
              "yaxis": {"autorange": "reversed", "type": "category", "tickfont": {"size": 9},
                        "categoryorder": "array", "categoryarray": [la.usubjid for la in lanes]},
              "legend": {"orientation": "h", "y": 1.01, "yanchor": "bottom", "x": 0},
              "margin": {"l": 170, "t": 90}}
    return {"data": data, "layout": layout}


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def trajectory_figure(trajectories: list[S.Trajectory], domain: str) -> dict:
    """One panel per test (three across); per panel one trace per arm whose subjects are
    separated by gaps (null), and the reference range as a shaded band."""
    cols = 3 if len(trajectories) > 2 else max(1, len(trajectories))
    rows = -(-len(trajectories) // cols)
    gap_x, gap_y = 0.08, 0.12 if rows > 1 else 0.0
    width, height = (1 - gap_x * (cols - 1)) / cols, (1 - gap_y * (rows - 1)) / rows
    colours = _arm_colours(arm for t in trajectories for arm in t.by_arm)
    layout: dict[str, Any] = {"title": {"text": f"{domain} trajectories by visit"}, "height": 60 + 300 * rows,
                              "showlegend": True, "shapes": [], "annotations": [],
                              "legend": {"orientation": "h", "y": -0.08 if rows > 1 else -0.25}, "margin": {"t": 90}}
    data: list[dict] = []
    shown = set()
    for i, t in enumerate(trajectories):
        r, c = divmod(i, cols)
        axis = "" if i == 0 else str(i + 1)
        x0 = c * (width + gap_x)
        y1 = 1 - r * (height + gap_y)
        layout[f"xaxis{axis}"] = {"domain": [x0, x0 + width], "anchor": f"y{axis}", "type": "category",
                                  "categoryorder": "array", "categoryarray": t.visits, "tickfont": {"size": 10}}
        layout[f"yaxis{axis}"] = {"domain": [y1 - height, y1], "anchor": f"x{axis}",
                                  "title": {"text": t.unit, "font": {"size": 11}}}
        lo, hi = t.reference_range
        shaded = (f" · range {_num(lo)}–{_num(hi)} ({t.range_results} of {t.points})"
                  if lo is not None or hi is not None else "")
        layout["annotations"].append({"text": f"<b>{t.testcd}</b> {t.test}{shaded}", "showarrow": False,
                                      "xref": "paper", "yref": "paper", "x": x0, "y": y1 + 0.01,
                                      "xanchor": "left", "yanchor": "bottom", "font": {"size": 11}})
        if lo is not None or hi is not None:
            values = [v for subjects in t.by_arm.values() for _, pts in subjects for _, v in pts]
            layout["shapes"].append({"type": "rect", "xref": f"x{axis} domain", "yref": f"y{axis}", "x0": 0, "x1": 1,
                                     "y0": lo if lo is not None else min(values),
                                     "y1": hi if hi is not None else max(values),
                                     "fillcolor": "#2ca02c", "opacity": 0.12, "line": {"width": 0}, "layer": "below"})
        for arm, subjects in t.by_arm.items():
            xs: list[Any] = []
            ys: list[Any] = []
            ids: list[Any] = []
            for usubjid, pts in subjects:
                if xs:
                    xs.append(None)
                    ys.append(None)
                    ids.append(None)
                xs.extend(v for v, _ in pts)
                ys.extend(val for _, val in pts)
                ids.extend(usubjid for _ in pts)
            data.append({"type": "scatter", "mode": "lines+markers", "name": arm, "legendgroup": arm,
                         "showlegend": arm not in shown, "x": xs, "y": ys, "customdata": ids,
                         "xaxis": f"x{axis}", "yaxis": f"y{axis}", "connectgaps": False,
                         "line": {"width": 1, "color": colours[arm]}, "opacity": 0.55,
                         "marker": {"size": 4, "color": colours[arm]}, "meta": t.testcd,
                         "hovertemplate": "%{customdata}<br>%{x}: %{y} " + t.unit.replace("%", "%%") +
                         "<extra>" + t.testcd + "</extra>"})
            shown.add(arm)
    return {"data": data, "layout": layout}


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _xml_safe_js(source: str) -> str:
    """Plotly's bundle holds two control characters (inside string and regex literals, the
    only places a script may hold them), which an lxml tree cannot; written as \\u escapes
    they mean the same character there."""
    return _NOT_XML.sub(lambda m: f"\\u{ord(m.group()):04x}", source)


def _plot(div_id: str, figure: dict) -> list[Any]:
    layout = {"template": {"layout": {"paper_bgcolor": "white", "plot_bgcolor": "#fbfbfc",
                                      "font": {"family": "DejaVu Sans, Arial, sans-serif"},
                                      "xaxis": {"gridcolor": "#e6e8eb"}, "yaxis": {"gridcolor": "#e6e8eb"}}},
              **figure["layout"]}
    spec = json.dumps({"data": figure["data"], "layout": layout}, sort_keys=True, ensure_ascii=True,
                      separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    script = E.SCRIPT(f"(function(){{var f={spec};Plotly.newPlot({json.dumps(div_id)},f.data,f.layout,"
                      f"{json.dumps(PLOT_CONFIG, sort_keys=True)});}})();")
    return [E.DIV(E.CLASS("plot"), id=div_id), script]


# --------------------------------------------------------------------------- tables


def _td(value: Any, cls: str | None = None) -> Any:
    cell = E.TD(_text(value, 300))
    if cls:
        cell.set("class", cls)
    return cell


def _table(headers: list[str], body: list[Any], **attrs: str) -> Any:
    return E.TABLE(E.THEAD(E.TR(*[E.TH(h) for h in headers])), E.TBODY(*body), **attrs)


def enrolment_table(enrol: S.Enrolment) -> Any:
    body = [E.TR(_td(g["arm"]), _td(g["armcd"]), _td(g["cohort"]), _td(g["subjects"], "num"), _td(g["treated"], "num"),
                 *[_td(g["disposition"][d], "num") for d in enrol.decods], id=f"enrol-{g['armcd'] or 'none'}")
            for g in enrol.rows]
    body.append(E.TR(E.TD(E.B("All")), _td(""), _td(""), _td(enrol.total["subjects"], "num"),
                     _td(enrol.total["treated"], "num"), *[_td(enrol.total["disposition"][d], "num")
                                                           for d in enrol.decods], id="enrol-total"))
    return _table(["arm", "ARMCD", "cohort", "subjects (DM)", "treated (RFXSTDTC)", *enrol.decods], body,
                  id="enrolment-table")


def ae_table(table: S.AeTable) -> Any:
    body = []
    for n, r in enumerate(table.rows):
        tr = E.TR(_td(r["soc"] if not r["pt"] else ""), _td(r["pt"]), _td(r["subjects"], "num"), _td(r["events"], "num"),
                  *[_td(r["by_severity"][s], "num") for s in table.severities], id=f"ae-{n}")
        if not r["pt"]:
            tr.set("class", "soc")
        body.append(tr)
    return _table(["system organ class (AEBODSYS)", "preferred term (AEDECOD)", "subjects", "events",
                   *[s.lower() for s in table.severities]], body, id="ae-table")


def findings_block(section: str, datasets: Iterable[str], issues: list[dict]) -> Any:
    """The findings about these datasets: one line per (severity, code, dataset) with its
    count and the rule's description, the findings themselves behind a <details>."""
    names = sorted(set(datasets))
    mine = [i for i in issues if dataset_of(i.get("file")) in names]
    block = E.DIV(E.CLASS("findings"), id=f"findings-{section}")
    if not mine:
        block.set("class", "findings none")
        block.append(E.P(f"No validation findings for {', '.join(names) or 'these data'}."))
        return block
    counts = Counter((i.get("severity", ""), i.get("code", ""), dataset_of(i.get("file"))) for i in mine)
    rank = {s: n for n, s in enumerate(SEVERITIES)}
    block.append(E.P(E.B(f"Validation findings for {', '.join(names)}: {len(mine)}")))
    grouped: dict[tuple, list[dict]] = defaultdict(list)
    for i in mine:
        grouped[(i.get("severity", ""), i.get("code", ""), dataset_of(i.get("file")))].append(i)
    for key in sorted(counts, key=lambda k: (rank.get(k[0], 9), k[1], k[2])):
        sev, code, ds = key
        rule = RULES_BY_ID.get(code)
        found = sorted(grouped[key], key=lambda i: (str(i.get("usubjid") or ""), str(i.get("record") or ""),
                                                    str(i.get("field") or ""), str(i.get("message") or "")))
        rows = [E.TR(_td(i.get("record")), _td(i.get("usubjid")), _td(i.get("field")), _td(i.get("value")),
                     _td(i.get("message"))) for i in found[:MAX_FINDINGS_SHOWN]]
        details = E.DETAILS(E.SUMMARY(E.SPAN(sev, E.CLASS(f"sev-{sev}")), f" {code} in {ds}: {counts[key]}",
                                      f" — {rule.description}" if rule else ""),
                            _table(["row", "USUBJID", "variable", "value", "message"], rows),
                            id=f"finding-{section}-{code}-{ds}")
        if len(found) > MAX_FINDINGS_SHOWN:
            details.append(E.P(f"{len(found) - MAX_FINDINGS_SHOWN} more in issues.json", E.CLASS("note")))
        block.append(details)
    return block


# --------------------------------------------------------------------------- the page


def build_page(datasets: dict[str, Dataset], issues: list[dict], *, study=None, title: str,
               findings_source: str) -> tuple[Any, dict[str, int]]:
    """The page as an lxml ``<html>`` element, and the number of points each plot holds
    (div id -> points: bars count their bars, lines the non-null values)."""
    from plotly.offline import get_plotlyjs

    enrol = S.enrolment(datasets, study)
    swim = S.swimmer(datasets, study)
    tests = S.trajectory_tests(datasets, study)
    by_domain: dict[str, list[S.Trajectory]] = {}
    for domain, code in tests:
        by_domain.setdefault(domain, []).append(S.trajectory(datasets, domain, code))
    ae = S.ae_table(datasets)

    head = E.HEAD(
        E.META(charset="utf-8"),
        E.META(name="generator", content="trialbridge"),
        E.META(**{"http-equiv": "Content-Security-Policy",
                  "content": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                             "img-src data:; font-src data:"}),
        E.TITLE(_text(title)),
        E.STYLE(CSS),
        E.SCRIPT(_xml_safe_js(get_plotlyjs())),
    )
    body = E.BODY(E.H1(_text(title)))
    counts: dict[str, int] = {}
    shown: set[str] = set()
    n_issues = Counter(i.get("severity") for i in issues)
    body.append(E.P(f"{enrol.total['subjects']} subjects in DM; validation: "
                    f"{n_issues.get('error', 0)} error(s), {n_issues.get('warning', 0)} warning(s), "
                    f"{n_issues.get('info', 0)} info ({findings_source}).", id="overview"))
    if study is None:
        body.append(E.P("No study configuration: cohorts are not shown and every test with numeric results is "
                        "plotted.", E.CLASS("note")))

    def section(key: str, heading: str, names: Iterable[str], *content: Any) -> None:
        names = [n for n in names]
        shown.update(names)
        body.append(E.DIV(E.H2(heading), *content, findings_block(key, names, issues), id=f"section-{key}"))

    # enrolment and disposition
    fig = disposition_figure(enrol)
    counts["plot-disposition"] = sum(1 for t in fig["data"] for y in t["y"] if y)
    section("enrolment", SECTIONS[0][1], SECTIONS[0][2], E.DIV(enrolment_table(enrol), E.CLASS("wide")),
            *_plot("plot-disposition", fig))

    # swimmer
    fig = swimmer_figure(swim)
    counts["plot-swimmer"] = sum(len(t["x"]) for t in fig["data"])
    notes = []
    if swim.undated:
        notes.append(E.P("Left off for want of a study day: " + ", ".join(
            f"{n} {name}" for name, n in sorted(swim.undated.items())) + ".", E.CLASS("note")))
    section("swimmer", SECTIONS[1][1], SECTIONS[1][2],
            E.P(f"{len(swim.lanes)} subjects with a reference start date (RFSTDTC); on-study bars from day 1 to "
                "RFPENDTC/RFENDTC or the last event.", E.CLASS("note")), *notes, *_plot("plot-swimmer", fig))

    # trajectories
    content: list[Any] = []
    if not by_domain:
        content.append(E.P("No findings dataset with numeric standard results and visits.", E.CLASS("note")))
    for domain, trajectories in by_domain.items():
        fig = trajectory_figure(trajectories, domain)
        div = f"plot-{domain.lower()}"
        counts[div] = sum(1 for t in fig["data"] for y in t["y"] if y is not None)
        content.append(E.H3(f"{domain}: " + ", ".join(t.testcd for t in trajectories)))
        content.extend(_plot(div, fig))
    section("trajectories", SECTIONS[2][1], sorted(by_domain) + [f"SUPP{d}" for d in sorted(by_domain)], *content)

    # adverse events
    section("adverse-events", SECTIONS[3][1], SECTIONS[3][2],
            ae_table(ae) if ae.rows else E.P("No adverse events.", E.CLASS("note")))

    # the rest
    others = sorted({dataset_of(i.get("file")) for i in issues} - shown)
    section("other", "Other findings (datasets not shown above, the study as a whole)", others,
            E.P("Datasets read: " + ", ".join(f"{n} ({len(ds.rows)})" for n, ds in sorted(datasets.items())) + ".",
                id="datasets-read"))
    return E.HTML(head, body, lang="en"), counts


def render_page(datasets: dict[str, Dataset], issues: list[dict], **kw) -> tuple[bytes, dict[str, int]]:
    """The page's bytes and the points of each plot (see :func:`build_page`)."""
    root, counts = build_page(datasets, issues, **kw)
    return html.tostring(root, doctype="<!DOCTYPE html>", encoding="utf-8", method="html"), counts


def write_page(datasets: dict[str, Dataset], issues: list[dict], path: Path, **kw) -> dict[str, int]:
    data, counts = render_page(datasets, issues, **kw)
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return counts
