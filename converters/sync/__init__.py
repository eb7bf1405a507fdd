"""Keep a FHIR server and the trial in step (docs/sync.md).

* :mod:`.client` — the REST client (httpx, retries with tenacity, limits, token).
* :mod:`.push` — records -> FHIR (as ``convert --to fhir``) -> the server, idempotently.
* :mod:`.pull` — the server -> a records folder through the real-world FHIR reader,
  incrementally (watermark in the folder).
* :mod:`.export` — Bulk Data ``$export`` into a folder the FHIR reader takes.

The FHIR server is one more reader and writer of FHIR: push writes what the FHIR writer
builds, pull reads what the server holds through the real-world FHIR reader.
"""
from __future__ import annotations


def summary_lines(summary) -> list[str]:
    """The text summary: one line per resource type, the failures, the totals."""
    verb = "would be " if summary.dry_run else ""
    lines = [f"{summary.action}{' (dry run: nothing written)' if summary.dry_run else ''}"
             + (f" study {summary.extra['study']}" if summary.extra.get("study") else "")]
    lines.append(f"  {'resource type':26} {'created':>8} {'updated':>8} {'unchanged':>10} {'failed':>7}")
    for rtype, c in summary.counts.items():
        lines.append(f"  {rtype:26} {c.get('created', 0):8} {c.get('updated', 0):8} {c.get('unchanged', 0):10} "
                     f"{c.get('failed', 0):7}")
    t = summary.totals()
    lines.append(f"  {'total':26} {t.get('created', 0):8} {t.get('updated', 0):8} {t.get('unchanged', 0):10} "
                 f"{t.get('failed', 0):7}")
    for change, rtype, rid in summary.planned[:50]:
        lines.append(f"  {verb}{change}d: {rtype}/{rid}")
    if len(summary.planned) > 50:
        lines.append(f"  ... and {len(summary.planned) - 50} more")
    for f in summary.failures[:50]:
        lines.append(f"  failed {f.resource_type}/{f.resource_id}: HTTP {f.status}: {f.outcome}")
    if len(summary.failures) > 50:
        lines.append(f"  ... and {len(summary.failures) - 50} more failures")
    found = summary.log.counts()
    lines.append(f"{summary.requests} request(s), {summary.retries} retried; findings: {found.get('error', 0)} "
                 f"error(s), {found.get('warning', 0)} warning(s), {found.get('info', 0)} info")
    return lines
