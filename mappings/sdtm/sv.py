"""SV — Subject Visits: one row per visit that took place.

VISITNUM/VISIT come from the study configuration's planned visits (matched by the
site's label through ``visit_aliases``); any other label is an unplanned visit,
numbered after the last planned visit before it (3.01, 3.02 …) with its reason in
SVUPDES.  A planned visit recorded as NOT DONE has no SV row in SDTMIG 3.3 (3.4 adds
SVOCCUR); it is reported (SV-VISIT-NOT-DONE) and not converted.
A dated planned visit outside its window is kept and reported (SV-OUT-OF-WINDOW).
"""
from __future__ import annotations

from typing import Any

from trialbridge.converters.core import iso8601
from trialbridge.converters.core.records import where
from trialbridge.mappings.sdtm.common import base_row, clean, subject_id_of, subject_index
from trialbridge.mappings.sdtm.context import Context

DOMAIN = "SV"
ORDER = 60
RECORD_TYPE = "visit"  # what from_sdtm gives back


def to_sdtm(ctx: Context) -> list[dict[str, Any]]:
    rows = []
    for rec in ctx.records["visit"]:
        sid = rec["subject_id"]
        info = ctx.subjects[sid]
        if rec.get("status") == "NOT DONE":
            ctx.reject(rec, "SV-VISIT-NOT-DONE", f"visit {rec['visit']!r} was not done "
                       f"({rec.get('reason') or 'no reason given'}); SDTMIG 3.3 SV holds visits that took place",
                       "status", severity="info")
            continue
        row = base_row(ctx, DOMAIN, sid)
        planned = ctx.planned_visit(rec["visit"])
        num, name = ctx.visit_for(sid, rec["start"], rec["visit"])
        row.update(VISITNUM=num, VISIT=name, SVSTDTC=rec["start"], SVENDTC=rec.get("end") or rec["start"])
        row["SVSTDY"] = iso8601.study_day(row["SVSTDTC"], info.rfstdtc)
        row["SVENDY"] = iso8601.study_day(row["SVENDTC"], info.rfstdtc)
        if planned:
            row["VISITDY"] = planned.day
            sd = row["SVSTDY"]
            if sd is not None and not planned.window[0] <= sd <= planned.window[1]:
                ctx.log.warning("SV-OUT-OF-WINDOW", f"{planned.name} on study day {sd} is outside its window "
                                f"{planned.window[0]}..{planned.window[1]}", **where(rec, "start"),
                                value=rec["start"], usubjid=row["USUBJID"])
        else:
            row["SVUPDES"] = rec.get("reason") or rec["visit"]
        rows.append(row)
    return rows


def seq_key(row: dict[str, Any]):
    return (row["VISITNUM"],)


def from_sdtm(datasets: dict, study) -> list[dict[str, Any]]:
    sv = datasets.get("SV")
    if sv is None:
        return []
    dm = subject_index(datasets)
    out = []
    for row in sv.rows:
        unplanned = bool(row.get("SVUPDES"))
        rec = {
            "subject_id": subject_id_of(dm, row["USUBJID"]),
            "visit": "UNSCHEDULED" if unplanned else row.get("VISIT", ""),
            "start": row.get("SVSTDTC", ""),
            "end": row.get("SVENDTC", "") if row.get("SVENDTC") != row.get("SVSTDTC") else "",
            "status": "DONE",
            "reason": row.get("SVUPDES", ""),
        }
        out.append(clean(rec))
    return out
