"""DM — Demographics: one row per subject.

Records -> SDTM: reference dates from exposure (RFSTDTC = RFXSTDTC = first dose,
RFXENDTC = last dose, RFENDTC = RFPENDTC = last contact), AGE in years at RFICDTC
(consent: the only date every subject has, screen failures included), ARM from the
study configuration.  Identifying fields (names, MRN, address, phone) are never read.
Relapse date goes to SUPPDM (QNAM RELAPSDT) because DM has no variable for it.

Not round-tripped: identifying fields (by design), height/weight (go to VS),
``screen_failure`` is recovered from ARMNRS, ``actual_arm`` only when it differs.
"""
from __future__ import annotations

from typing import Any

from trialbridge.converters.core.records import where
from trialbridge.mappings import derive
from trialbridge.mappings.sdtm.common import Field, backward, clean, forward
from trialbridge.mappings.sdtm.context import Context

DOMAIN = "DM"
ORDER = 10
RECORD_TYPE = "subject"  # what from_sdtm gives back
SUPP_QNAMS = ("RELAPSDT",)  # SUPPDM qualifiers from_sdtm reads

FIELDS = (
    Field("subject_id", "SUBJID"),
    Field("site_id", "SITEID"),
    Field("birth_date", "BRTHDTC", kind="date"),
    Field("sex", "SEX", table="sex"),
    Field("race", "RACE", table="race"),
    Field("ethnicity", "ETHNIC", table="ethnicity"),
    Field("consent_date", "RFICDTC", kind="date"),
    Field("death_date", "DTHDTC", kind="date"),
)


def to_sdtm(ctx: Context) -> list[dict[str, Any]]:
    rows = []
    for info in ctx.subjects.values():
        s = info.row
        row: dict[str, Any] = {"STUDYID": ctx.studyid, "DOMAIN": DOMAIN, "USUBJID": info.usubjid}
        forward(s, FIELDS, ctx, row)
        row["SUBJID"] = ctx.study.subjid(s["site_id"], s["subject_id"])  # its pseudonym with a key
        row.update(RFSTDTC=info.rfstdtc, RFENDTC=info.rfendtc, RFXSTDTC=info.rfxstdtc, RFXENDTC=info.rfxendtc,
                   RFPENDTC=info.rfendtc)
        row["DTHFL"] = "Y" if s.get("death_date") else ""
        site = ctx.study.site(s["site_id"]) or {}
        row["COUNTRY"] = s.get("country") or site.get("country", "")
        age, imprecise = derive.age_years(s.get("birth_date"), s.get("consent_date"))
        row["AGE"], row["AGEU"] = (age, "YEARS") if age is not None else (None, "")
        if imprecise:
            ctx.log.info("DM-AGE-PARTIAL-BIRTHDATE", "birth date is partial; AGE is the lower of the possible ages",
                         **where(s, "birth_date"), value=s.get("birth_date"), usubjid=info.usubjid)
        _arms(ctx, info, row)
        rows.append(row)
        if s.get("relapse_date"):
            ctx.add_supp("DM", info.usubjid, "", "", "RELAPSDT", "Date of Relapse", s["relapse_date"])
    return rows


def _arms(ctx: Context, info, row: dict[str, Any]) -> None:
    s = info.row
    if s.get("screen_failure") == "Y":
        row.update(ARMCD="", ARM="", ACTARMCD="", ACTARM="", ARMNRS="SCREEN FAILURE")
        return
    planned = s.get("planned_arm") or _arm_for_cohort(ctx, s.get("cohort"))
    arm = ctx.study.arm(planned or "")
    if arm is None:
        ctx.log.error("DM-UNKNOWN-ARM", "planned arm is not an arm of the study configuration; ARMCD left empty",
                      **where(s, "planned_arm"), value=planned, usubjid=info.usubjid)
        row.update(ARMCD="", ARM="", ARMNRS="UNPLANNED TREATMENT" if info.rfxstdtc else "NOT ASSIGNED")
        return
    row.update(ARMCD=arm["code"], ARM=arm["name"])
    if not info.rfxstdtc:
        row.update(ACTARMCD="", ACTARM="", ARMNRS="ASSIGNED, NOT TREATED")
        return
    actual = ctx.study.arm(s.get("actual_arm") or arm["code"])
    if actual is None:
        ctx.log.error("DM-UNKNOWN-ARM", "actual arm is not an arm of the study configuration",
                      **where(s, "actual_arm"), value=s.get("actual_arm"), usubjid=info.usubjid)
        actual = arm
    row.update(ACTARMCD=actual["code"], ACTARM=actual["name"])


def _arm_for_cohort(ctx: Context, cohort: str | None) -> str | None:
    return next((a["code"] for a in ctx.study.config["arms"] if cohort and a.get("cohort") == cohort), None)


def from_sdtm(datasets: dict, study) -> list[dict[str, Any]]:
    dm = datasets.get("DM")
    if dm is None:
        return []
    supp = _supp_index(datasets.get("SUPPDM"))
    out = []
    for row in dm.rows:
        rec: dict[str, Any] = {"study_id": row.get("STUDYID", "")}
        backward(row, FIELDS, rec)
        rec["country"] = row.get("COUNTRY", "")
        if row.get("ARMNRS") == "SCREEN FAILURE":
            rec["screen_failure"] = "Y"
        else:
            rec["planned_arm"] = row.get("ARMCD", "")
            if row.get("ACTARMCD") and row.get("ACTARMCD") != row.get("ARMCD"):
                rec["actual_arm"] = row["ACTARMCD"]
            arm = study.arm(row.get("ARMCD", "")) if study else None
            if arm and arm.get("cohort"):
                rec["cohort"] = arm["cohort"]
        rec["relapse_date"] = supp.get((row["USUBJID"], "RELAPSDT"), "")
        out.append(clean(rec))
    return out


def _supp_index(ds) -> dict[tuple[str, str], str]:
    if ds is None:
        return {}
    return {(r["USUBJID"], r["QNAM"]): r.get("QVAL", "") for r in ds.rows}
