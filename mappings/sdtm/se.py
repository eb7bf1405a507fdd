"""SE — Subject Elements: the actual sequence of elements each subject went through,
derived from consent and exposure (see mappings/sdtm/context.py): screening from
consent to first dose, one treatment element per course, follow-up from the day after
the last dose of a course until the next course or the end of participation.
Derived only: nothing in SE is a record field, so there is no SE -> records mapping.
"""
from __future__ import annotations

from typing import Any

from trialbridge.mappings.sdtm.context import Context

DOMAIN = "SE"
ORDER = 70


def to_sdtm(ctx: Context) -> list[dict[str, Any]]:
    rows = []
    for info in ctx.subjects.values():
        # a screen failure has no arm (DM.ARMNRS), so no position in one (TAETORD null)
        arm = None if info.row.get("screen_failure") == "Y" else \
            ctx.study.arm(info.row.get("actual_arm") or info.row.get("planned_arm") or "")
        order = {e["element"]: n for n, e in enumerate(arm["elements"], start=1)} if arm else {}
        for el in info.elements:
            element = ctx.study.element(el["ETCD"]) or {}
            rows.append({
                "STUDYID": ctx.studyid, "DOMAIN": DOMAIN, "USUBJID": info.usubjid, "ETCD": el["ETCD"],
                "ELEMENT": element.get("name", ""), "TAETORD": order.get(el["ETCD"]), "EPOCH": el["EPOCH"],
                "SESTDTC": el["SESTDTC"], "SEENDTC": el["SEENDTC"],
            })
    return rows


def seq_key(row: dict[str, Any]):
    return (row["SESTDTC"], row["ETCD"])
