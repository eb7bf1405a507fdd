"""AE — Adverse Events: one row per adverse event as recorded on the AE log.

Seriousness criteria (``serious_criteria``, semicolon separated) become the AES*
flags: Y for each criterion named, N for the others when AESER = Y, empty when the
event is not serious.  AETRTEM (treatment-emergent, SUPPAE, QORIG DERIVED) is Y when
the event starts on or after the first dose (an event on the day of first dose without a
time counts as on/after it, and its EPOCH is the treatment's).  Protocol category of
adverse reaction goes to AECAT.  The MedDRA names and codes (AELLT … AESOCCD) are the
record's (given, or filled from the dictionary with ``--meddra``:
mappings/terminology/meddra.py); AESOC/AESOCCD are the body system's unless the record names
a primary SOC apart from it (``soc``/``soc_code``).

Not round-tripped: a criterion given with a synonym comes back as its canonical word; an
AESPID that does not identify one event of the subject (foreign data) is replaced by AESEQ
as the record's ae_number.
"""
from __future__ import annotations

from typing import Any

from trialbridge.converters.core import iso8601
from trialbridge.converters.core.records import where
from trialbridge.mappings import derive, terminology
from trialbridge.mappings.sdtm.common import Field, backward, base_row, clean, forward, ny, subject_id_of, subject_index
from trialbridge.mappings.sdtm.context import Context

DOMAIN = "AE"
ORDER = 40
RECORD_TYPE = "adverse_event"  # what from_sdtm gives back
SUPP_QNAMS = ("AETRTEM",)  # SUPPAE qualifiers from_sdtm reads

FIELDS = (
    Field("ae_number", "AESPID"),
    Field("term", "AETERM"),
    Field("llt", "AELLT"),
    Field("llt_code", "AELLTCD", kind="number"),
    Field("decoded_term", "AEDECOD"),
    Field("pt_code", "AEPTCD", kind="number"),
    Field("hlt", "AEHLT"),
    Field("hlt_code", "AEHLTCD", kind="number"),
    Field("hlgt", "AEHLGT"),
    Field("hlgt_code", "AEHLGTCD", kind="number"),
    Field("body_system", "AEBODSYS"),
    Field("body_system_code", "AEBDSYCD", kind="number"),
    Field("category", "AECAT"),
    Field("severity", "AESEV", table="severity"),
    Field("grade", "AETOXGR"),
    Field("relatedness", "AEREL", table="relatedness"),
    Field("action_taken", "AEACN", table="action_taken"),
    Field("outcome", "AEOUT", table="outcome"),
    Field("start", "AESTDTC", kind="date"),
    Field("end", "AEENDTC", kind="date"),
)



def criteria() -> dict[str, str]:
    """Seriousness criterion -> AE flag variable, from mappings/terminology/serious_criteria.yaml."""
    return {e["criterion"]: e["variable"] for e in terminology.load_table("serious_criteria").entries}


def to_sdtm(ctx: Context) -> list[dict[str, Any]]:
    rows = []
    for rec in ctx.records["adverse_event"]:
        sid = rec["subject_id"]
        info = ctx.subjects[sid]
        row = base_row(ctx, DOMAIN, sid)
        forward(rec, FIELDS, ctx, row)
        _soc(ctx, rec, row)
        row["AESER"] = ny(rec.get("serious"))
        if rec.get("serious") and not row["AESER"]:
            ctx.log.error("TERM-UNMAPPED-NY", "serious is not Y/N; AESER left empty", **where(rec, "serious"),
                          value=rec.get("serious"))
        _criteria(ctx, rec, row)
        row["AESTDY"] = iso8601.study_day(row["AESTDTC"], info.rfstdtc)
        row["AEENDY"] = iso8601.study_day(row["AEENDTC"], info.rfstdtc)
        row["EPOCH"] = ctx.epoch(sid, row["AESTDTC"], undecided="later")  # as treatment_emergent decides
        rows.append(row)
    return rows


SOC_FIELDS = (Field("soc", "AESOC"), Field("soc_code", "AESOCCD", kind="number"))


def _soc(ctx: Context, rec: dict[str, Any], row: dict[str, Any]) -> None:
    """AESOC/AESOCCD: the record's primary SOC when it names one apart from its body system,
    else the body system (AESOC = AEBODSYS)."""
    if rec.get("soc") or rec.get("soc_code"):
        forward(rec, SOC_FIELDS, ctx, row)
    else:
        row["AESOC"], row["AESOCCD"] = row["AEBODSYS"], row["AEBDSYCD"]


def _criteria(ctx: Context, rec: dict[str, Any], row: dict[str, Any]) -> None:
    table, flags = terminology.load_table("serious_criteria"), criteria()
    named = []
    for word in (c.strip() for c in (rec.get("serious_criteria") or "").split(";")):
        if not word:
            continue
        entry = table.lookup(word)
        if entry is None:
            ctx.log.error("TERM-UNMAPPED-AECRIT", f"seriousness criterion {word.upper()!r} is not one of "
                          f"{', '.join(flags)}", **where(rec, "serious_criteria"), value=word.upper())
            named.append(word.upper())
        else:
            named.append(entry["criterion"])
    if named and row["AESER"] != "Y":
        ctx.log.warning("AE-CRITERIA-NOT-SERIOUS", "seriousness criteria given for an event not marked serious",
                        **where(rec, "serious_criteria"), value=rec.get("serious_criteria"))
    if row["AESER"] == "Y" or named:
        for word, var in flags.items():
            row[var] = "Y" if word in named else "N"


def supplemental(ctx: Context, rows: list[dict[str, Any]]) -> None:
    first = {info.usubjid: info.rfxstdtc for info in ctx.subjects.values()}
    for row in rows:
        flag = treatment_emergent(row["AESTDTC"], first.get(row["USUBJID"], ""))
        if flag:
            ctx.add_supp("AE", row["USUBJID"], "AESEQ", row["AESEQ"], "AETRTEM", "Treatment Emergent Flag", flag,
                         qorig="DERIVED")


def treatment_emergent(aestdtc: str, rfxstdtc: str) -> str:
    """Y when the event starts on or after the first dose, N before it, '' when a partial
    date cannot tell (``2020-06`` against a first dose on 5 June).  Times count when both
    have them: an event at 08:00 before an 08:30 first dose is N.  An event dated the day of
    the first dose without a time (or with a coarser one) is taken as on/after the dose —
    the usual treatment-emergent convention — and EPOCH follows it (``undecided="later"``),
    so AETRTEM Y never sits beside EPOCH SCREENING."""
    order = iso8601.compare(aestdtc, rfxstdtc)
    if order is None and iso8601.compare(aestdtc, rfxstdtc, precision="day") == 0:
        order = 0  # the day of first dose, time unknown
    return {-1: "N", 0: "Y", 1: "Y"}.get(order, "")


def seq_key(row: dict[str, Any]):
    return (row["AESTDTC"], row["AESPID"], row["AETERM"])


def from_sdtm(datasets: dict, study) -> list[dict[str, Any]]:
    ae = datasets.get("AE")
    if ae is None:
        return []
    dm = subject_index(datasets)
    spid_count: dict[tuple[str, str], int] = {}
    for row in ae.rows:
        key = (row["USUBJID"], str(row.get("AESPID") or ""))
        spid_count[key] = spid_count.get(key, 0) + 1
    out = []
    for row in ae.rows:
        rec: dict[str, Any] = {"subject_id": subject_id_of(dm, row["USUBJID"])}
        backward(row, FIELDS, rec)
        if (row.get("AESOC") or "", row.get("AESOCCD")) != (row.get("AEBODSYS") or "", row.get("AEBDSYCD")):
            backward(row, SOC_FIELDS, rec)
        # ae_number identifies the event within the subject: AESPID when it does, else AESEQ
        if not rec.get("ae_number") or spid_count[(row["USUBJID"], rec["ae_number"])] > 1:
            rec["ae_number"] = derive.format_number(row.get("AESEQ"))
        rec["serious"] = row.get("AESER", "")
        rec["serious_criteria"] = ";".join(w for w, v in criteria().items() if row.get(v) == "Y")
        out.append(clean(rec))
    return out
