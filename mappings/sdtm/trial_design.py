"""Trial design domains TA, TE, TV, TI, TS — built from the study configuration only
(SDTMIG 3.4 section 7).  They carry no subject data, so there is no reverse mapping:
reading them back, the configuration is the source of truth.
"""
from __future__ import annotations

from typing import Any

from trialbridge.mappings.terminology import ct
from trialbridge.mappings.study import Study


def ta(study: Study) -> list[dict[str, Any]]:
    rows = []
    for arm in study.config["arms"]:
        for n, e in enumerate(arm["elements"], start=1):
            element = study.element(e["element"]) or {}
            rows.append({"STUDYID": study.study_id, "DOMAIN": "TA", "ARMCD": arm["code"], "ARM": arm["name"],
                         "TAETORD": n, "ETCD": e["element"], "ELEMENT": element.get("name", ""),
                         "TABRANCH": e.get("branch", ""), "TATRANS": e.get("transition", ""), "EPOCH": e["epoch"]})
    return rows


def te(study: Study) -> list[dict[str, Any]]:
    return [{"STUDYID": study.study_id, "DOMAIN": "TE", "ETCD": e["code"], "ELEMENT": e["name"],
             "TESTRL": e["start_rule"], "TEENRL": e.get("end_rule", ""), "TEDUR": e.get("duration", "")}
            for e in study.config["elements"]]


def tv(study: Study) -> list[dict[str, Any]]:
    rows = []
    for v in study.visits:
        lo, hi = v.window
        rows.append({"STUDYID": study.study_id, "DOMAIN": "TV", "VISITNUM": v.number, "VISIT": v.name,
                     "VISITDY": v.day, "TVSTRL": f"Study day {v.day} (window day {lo} to {hi})"})
    return rows


def ti(study: Study) -> list[dict[str, Any]]:
    return [{"STUDYID": study.study_id, "DOMAIN": "TI", "IETESTCD": c["code"], "IETEST": c["text"],
             "IECAT": c["category"]} for c in study.config.get("criteria", [])]


# What the output itself conforms to: SDTMIG 3.3 metadata (CP from 3.4), which goes with
# SDTM v1.7.  Added to TS unless the study configuration states them.
STANDARD_TS = ({"parmcd": "SDTIGVER", "value": "3.3"}, {"parmcd": "SDTMVER", "value": "1.7"})


def ts(study: Study) -> list[dict[str, Any]]:
    rows = []
    seq: dict[str, int] = {}
    parm = ct.codelist("TSPARM") if ct.has_codelist("TSPARM") else None
    parmcd = ct.codelist("TSPARMCD") if ct.has_codelist("TSPARMCD") else None
    given = {t["parmcd"] for t in study.config["trial_summary"]}
    for t in list(study.config["trial_summary"]) + [t for t in STANDARD_TS if t["parmcd"] not in given]:
        seq[t["parmcd"]] = seq.get(t["parmcd"], 0) + 1
        name = ""
        if parm and parmcd and t["parmcd"] in parmcd.terms:
            code = parmcd.terms[t["parmcd"]]
            name = next((v for v, c in parm.terms.items() if c == code), "")
        rows.append({"STUDYID": study.study_id, "DOMAIN": "TS", "TSSEQ": seq[t["parmcd"]], "TSPARMCD": t["parmcd"],
                     "TSPARM": name or t["parmcd"], "TSVAL": t["value"]})
    return rows


BUILDERS = {"TA": ta, "TE": te, "TV": tv, "TI": ti, "TS": ts}
