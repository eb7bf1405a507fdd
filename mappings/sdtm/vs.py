"""VS — Vital Signs: the height and weight measured at screening (recorded with the
subject, used for BSA dosing) as HEIGHT and WEIGHT at the SCREENING visit dated on
the consent date.  VSTESTCD/VSTEST/VSORRESU are CDISC CT (VSTESTCD C66741, UNIT).
"""
from __future__ import annotations

from typing import Any

from trialbridge.converters.core import iso8601
from trialbridge.mappings import derive
from trialbridge.mappings.sdtm.common import base_row, subject_id_of, subject_index
from trialbridge.mappings.sdtm.context import Context

DOMAIN = "VS"
ORDER = 80
RECORD_TYPE = "subject"  # from_sdtm gives fields of the subject records (height, weight)
FILLS_RECORDS = True  # its records fill in fields of records another domain gave, matched by subject_id

TESTS = (("height_cm", "HEIGHT", "Height", "cm"), ("weight_kg", "WEIGHT", "Weight", "kg"))


def to_sdtm(ctx: Context) -> list[dict[str, Any]]:
    rows = []
    screening = next((v for v in ctx.study.visits if v.day < 1), None)
    for sid, info in ctx.subjects.items():
        s = info.row
        for field, code, name, unit in TESTS:
            if not s.get(field):
                continue
            value = derive.to_number(s[field])
            row = base_row(ctx, DOMAIN, sid)
            row.update(VSTESTCD=code, VSTEST=name, VSORRES=s[field], VSORRESU=unit,
                       VSSTRESC=derive.format_number(value), VSSTRESN=value, VSSTRESU=unit,
                       VISITNUM=screening.number if screening else None, VISIT=screening.name if screening else "",
                       EPOCH=ctx.epoch(sid, s.get("consent_date"), undecided="earlier"),
                       VSDTC=s.get("consent_date", ""),
                       VSDY=iso8601.study_day(s.get("consent_date"), info.rfstdtc))
            rows.append(row)
    return rows


def seq_key(row: dict[str, Any]):
    return (row["VSDTC"], row["VSTESTCD"])


def from_sdtm(datasets: dict, study=None) -> list[dict[str, str]]:
    """{subject_id, height_cm, weight_kg} per subject with a screening height or weight."""
    return [{"subject_id": sid, **fields} for sid, fields in sorted(subject_fields(datasets).items())]


def subject_fields(datasets: dict) -> dict[str, dict[str, str]]:
    """subject_id -> {height_cm, weight_kg} for SDTM -> records."""
    vs = datasets.get("VS")
    if vs is None:
        return {}
    dm = subject_index(datasets)
    out: dict[str, dict[str, str]] = {}
    for row in vs.rows:
        for field, code, _name, _unit in TESTS:
            if row.get("VSTESTCD") == code and row.get("VSORRES"):
                out.setdefault(subject_id_of(dm, row["USUBJID"]), {})[field] = row["VSORRES"]
    return out
