"""DS — Disposition: one row per disposition event or protocol milestone.

DSDECOD from the disposition table (CDISC NCOMPLT C66727 and protocol milestones),
DSTERM = the site's verbatim reason (or the event when none), DSCAT = DISPOSITION
EVENT unless the record says PROTOCOL MILESTONE.
"""
from __future__ import annotations

from typing import Any

from trialbridge.converters.core import iso8601
from trialbridge.mappings.sdtm.common import Field, backward, base_row, clean, forward, subject_id_of, subject_index
from trialbridge.mappings.sdtm.context import Context

DOMAIN = "DS"
ORDER = 50
RECORD_TYPE = "disposition"  # what from_sdtm gives back

FIELDS = (
    Field("event", "DSDECOD", table="disposition"),
    Field("date", "DSSTDTC", kind="date"),
)


def to_sdtm(ctx: Context) -> list[dict[str, Any]]:
    rows = []
    for rec in ctx.records["disposition"]:
        sid = rec["subject_id"]
        row = base_row(ctx, DOMAIN, sid)
        forward(rec, FIELDS, ctx, row)
        row["DSTERM"] = rec.get("verbatim") or rec["event"]
        row["DSCAT"] = (rec.get("category") or "DISPOSITION EVENT").upper()
        row["DSSTDY"] = iso8601.study_day(row["DSSTDTC"], ctx.subjects[sid].rfstdtc)
        row["EPOCH"] = ctx.epoch(sid, row["DSSTDTC"], undecided="earlier")
        rows.append(row)
    return rows


def seq_key(row: dict[str, Any]):
    return (row["DSSTDTC"], row["DSCAT"] != "PROTOCOL MILESTONE", row["DSDECOD"])


def from_sdtm(datasets: dict, study) -> list[dict[str, Any]]:
    ds = datasets.get("DS")
    if ds is None:
        return []
    dm = subject_index(datasets)
    out = []
    for row in ds.rows:
        rec: dict[str, Any] = {"subject_id": subject_id_of(dm, row["USUBJID"])}
        backward(row, FIELDS, rec)
        rec["category"] = row.get("DSCAT", "")
        if row.get("DSTERM") and row.get("DSTERM") != row.get("DSDECOD"):
            rec["verbatim"] = row["DSTERM"]
        out.append(clean(rec))
    return out
