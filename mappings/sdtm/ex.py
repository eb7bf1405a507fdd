"""EX — Exposure: one row per administration of study treatment.

EXDOSE is the dose actually given in the unit of EXDOSU (CDISC UNIT mapped from the
UCUM code, e.g. ``[iU]`` -> ``IU``).  The BSA the dose was calculated from and the
protocol dose per m² have no EX variable and go to SUPPEX (QNAM BSA, DOSEBSA).
The course (initial, maintenance, re-treatment) is not stored in EX: it is the subject
element (SE) the dose falls in, and it is recovered from SE on the way back.

Checks: EX-BEFORE-CONSENT (dose before informed consent, error),
EX-DOSE-VS-BSA (dose differs from protocol dose × BSA by more than 10 %, warning).
Not round-tripped: units given as aliases come back as their UCUM code.
"""
from __future__ import annotations

from typing import Any

from trialbridge.converters.core import iso8601
from trialbridge.converters.core.records import where
from trialbridge.mappings import derive, terminology
from trialbridge.mappings.sdtm.common import Field, backward, base_row, clean, forward, subject_id_of, subject_index
from trialbridge.mappings.sdtm.context import Context, dosed_before_consent, element_at

DOMAIN = "EX"
ORDER = 20
RECORD_TYPE = "exposure"  # what from_sdtm gives back
SUPP_QNAMS = ("BSA", "DOSEBSA")  # SUPPEX qualifiers from_sdtm reads

FIELDS = (
    Field("treatment", "EXTRT"),
    Field("dose", "EXDOSE", kind="number"),
    Field("dose_unit", "EXDOSU", table="units"),
    Field("dose_form", "EXDOSFRM", table="dose_form"),
    Field("frequency", "EXDOSFRQ", table="frequency"),
    Field("route", "EXROUTE", table="routes"),
    Field("lot_number", "EXLOT"),
    Field("adjustment_reason", "EXADJ"),
    Field("start", "EXSTDTC", kind="date"),
    Field("end", "EXENDTC", kind="date"),
)


def to_sdtm(ctx: Context) -> list[dict[str, Any]]:
    rows = []
    for ex in ctx.records["exposure"]:
        sid = ex["subject_id"]
        info = ctx.subjects[sid]
        row = base_row(ctx, DOMAIN, sid)
        forward(ex, FIELDS, ctx, row)
        if not row["EXENDTC"]:
            row["EXENDTC"] = row["EXSTDTC"]
        row["EXSTDY"] = iso8601.study_day(row["EXSTDTC"], info.rfstdtc)
        row["EXENDY"] = iso8601.study_day(row["EXENDTC"], info.rfstdtc)
        row["EPOCH"] = ctx.epoch(sid, row["EXSTDTC"], undecided="later")  # a dose is in the element it starts
        if dosed_before_consent(ex["start"], info.rficdtc):
            ctx.log.error("EX-BEFORE-CONSENT", f"dose on {ex['start']} is before informed consent on {info.rficdtc}",
                          **where(ex, "start"), value=ex["start"], usubjid=info.usubjid)
        _check_bsa_dose(ctx, ex, info.usubjid)
        rows.append(row)
    return rows


def supplemental(ctx: Context, rows: list[dict[str, Any]]) -> None:
    """SUPPEX rows, keyed by EXSEQ once sequence numbers are assigned."""
    by_key = {(r["USUBJID"], r["EXSTDTC"], r["EXTRT"]): r for r in rows}
    for ex in ctx.records["exposure"]:
        row = by_key.get((ctx.usubjid(ex["subject_id"]), ex["start"], ex["treatment"]))
        if row is None:
            continue
        ctx.add_supp("EX", row["USUBJID"], "EXSEQ", row["EXSEQ"], "BSA", "Body Surface Area (m2)", ex.get("bsa_m2", ""))
        ctx.add_supp("EX", row["USUBJID"], "EXSEQ", row["EXSEQ"], "DOSEBSA", "Protocol Dose per m2",
                     ex.get("planned_dose_per_bsa", ""), qorig="PROTOCOL")


def _check_bsa_dose(ctx: Context, ex: dict[str, Any], usubjid: str) -> None:
    dose, bsa, per = (derive.to_number(ex.get(k)) for k in ("dose", "bsa_m2", "planned_dose_per_bsa"))
    if dose is None or bsa is None or per is None or per == 0:
        return
    expected = per * bsa
    if abs(dose - expected) > 0.10 * expected:
        ctx.log.warning("EX-DOSE-VS-BSA", f"dose {ex['dose']} differs by more than 10 % from {per:g} x BSA "
                        f"{bsa:g} m2 = {expected:.0f}", **where(ex, "dose"), value=ex["dose"], usubjid=usubjid)


def seq_key(row: dict[str, Any]):
    return (row["EXSTDTC"], row["EXTRT"])


def from_sdtm(datasets: dict, study) -> list[dict[str, Any]]:
    ex = datasets.get("EX")
    if ex is None:
        return []
    dm = subject_index(datasets)
    supp = {}
    if datasets.get("SUPPEX") is not None:
        for r in datasets["SUPPEX"].rows:
            supp[(r["USUBJID"], str(r.get("IDVARVAL")), r["QNAM"])] = r.get("QVAL", "")
    se = _elements(datasets.get("SE"))
    out = []
    for row in ex.rows:
        rec: dict[str, Any] = {"subject_id": subject_id_of(dm, row["USUBJID"])}
        backward(row, FIELDS, rec)
        if rec.get("dose_unit"):
            rec["dose_unit"] = terminology.cdisc_to_ucum(rec["dose_unit"]) or rec["dose_unit"]
        seq = derive.format_number(row.get("EXSEQ"))
        rec["bsa_m2"] = supp.get((row["USUBJID"], seq, "BSA"), "")
        rec["planned_dose_per_bsa"] = supp.get((row["USUBJID"], seq, "DOSEBSA"), "")
        etcd = _element_at(se.get(row["USUBJID"], []), row.get("EXSTDTC", ""))
        element = study.element(etcd) if (study and etcd) else None
        if element and element.get("course"):
            rec["course"] = element["course"]
        out.append(clean(rec))
    return out


def _elements(se) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    if se is None:
        return out
    for r in se.rows:
        out.setdefault(r["USUBJID"], []).append(r)
    return out


def _element_at(elements: list[dict], dtc: str) -> str:
    """ETCD of the SE element a dose starts in (as EPOCH places a dose: ``undecided="later"``)."""
    ordered = sorted(elements, key=lambda r: iso8601.sort_key(r.get("SESTDTC")))
    el = element_at(ordered, dtc, undecided="later")
    return el["ETCD"] if el else ""
