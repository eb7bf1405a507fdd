#!/usr/bin/env python3
"""Generate the synthetic NCT04387942 sample records (internal CSV format).

Writes two sets, both SYNTHETIC (no real patient, every identifying value is fake):

* ``samples/nct04387942/``        59 subjects, clean: every row validates against
  ``schemas/internal/*.schema.json`` and passes the extra consistency checks below.
* ``samples/nct04387942-dirty/``  5 subjects (101..105) made by the same logic, then
  given exactly one copy of each mistake listed in its README (row numbers computed
  here, so the README always matches the files).

Deterministic: one ``random.Random(20200601)``, no wall clock, no set iteration.
Run from anywhere:  python scripts/generate_samples.py
Fails loudly (non-zero exit) if any generated row is invalid.
"""
from __future__ import annotations

import copy
import csv
import json
import math
import random
import sys
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parent.parent

from trialbridge.converters.core.files import atomic_open  # noqa: E402

SCHEMA_DIR = ROOT / "schemas" / "internal"
CONFIG = ROOT / "mappings" / "studies" / "nct04387942.yaml"
OUT_CLEAN = ROOT / "samples" / "nct04387942"
OUT_DIRTY = ROOT / "samples" / "nct04387942-dirty"

SEED = 20200601
STUDY_ID = "NCT04387942"
SITE_ID = "01"
DOSE_PER_BSA = 500000
TREATMENT = "rhIL-2"
DOSE_FORM = "INJECTION, POWDER, LYOPHILIZED, FOR SOLUTION"

# schema name -> record kind used below
KINDS = ["subject", "exposure", "lab_result", "cell_phenotype", "adverse_event", "visit", "disposition"]


class GenerationError(Exception):
    pass


# --------------------------------------------------------------------------- schemas
def load_schemas() -> dict[str, dict]:
    out = {}
    for kind in KINDS:
        with open(SCHEMA_DIR / f"{kind}.schema.json", encoding="utf-8") as fh:
            out[kind] = json.load(fh)
    return out


# --------------------------------------------------------------------------- helpers
def iso(d: date) -> str:
    return d.isoformat()


def dt(d: date, hhmm: str) -> str:
    return f"{d.isoformat()}T{hhmm}"


def plus_hour(hhmm: str, hours: int = 1) -> str:
    h, m = hhmm.split(":")
    return f"{int(h) + hours:02d}:{m}"


def age_on(birth: date, on: date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def fmt(v: float, places: int) -> str:
    q = Decimal(1).scaleb(-places) if places else Decimal(1)
    return str(Decimal(repr(v)).quantize(q, rounding=ROUND_HALF_UP))


def lognorm(rng: random.Random, median: float, sdlog: float) -> float:
    return median * math.exp(rng.gauss(0.0, sdlog))


def band(age: int) -> str:
    return "young" if age <= 9 else "older"


# --------------------------------------------------------------------------- subject model
@dataclass
class Subj:
    sid: str
    cohort: str
    fate: str = "completed"  # completed | screen_failure | wd_early | wd_late | ltfu | ae
    relapse_day: int | None = None  # study day of relapse
    dili: str | None = None  # serious | mild
    unscheduled_relapse: bool = False
    sex: str = "F"
    age: int = 0
    birth: date | None = None
    partial_birth: bool = False
    consent: date | None = None
    height: str = ""
    weight: str = ""
    bsa: Decimal = Decimal("0")
    first_dose: date | None = None
    d7: date | None = None
    m3: date | None = None
    m6: date | None = None
    last_contact: date | None = None
    ds_date: date | None = None
    doses: list = field(default_factory=list)  # (date, hhmm, course)
    relapse: date | None = None
    unsched: list = field(default_factory=list)  # (date, reason, labs?)
    ae_slots: list = field(default_factory=list)

    def day(self, d: date) -> int:
        """SDTM study day (day 1 = first dose, no day 0)."""
        n = (d - self.first_dose).days
        return n + 1 if n >= 0 else n

    def on_day(self, study_day: int) -> date:
        return self.first_dose + timedelta(days=study_day - 1)


AGE_WEIGHTS = [4, 7, 9, 9, 9, 8, 7, 6, 5, 4, 3, 3, 2, 2, 2]  # ages 3..17, HSP peaks 4-10


def make_demography(rng: random.Random, s: Subj, consent_lo: date, consent_hi: date) -> None:
    s.sex = rng.choice(["M", "F"])
    s.consent = consent_lo + timedelta(days=rng.randint(0, (consent_hi - consent_lo).days))
    target = rng.choices(range(3, 18), weights=AGE_WEIGHTS)[0]
    while True:
        b = s.consent - timedelta(days=int(target * 365.25) + rng.randint(1, 360))
        a = age_on(b, s.consent)
        if 3 <= a <= 17:
            break
    s.birth, s.age = b, a
    if s.sex == "M":
        h = 78 + 6.1 * a if a <= 12 else min(151 + (a - 12) * 4.5, 173)
    else:
        h = 77 + 6.1 * a if a <= 11 else min(144 + (a - 11) * 3.5, 160)
    h += rng.gauss(0, 4.5)
    bmi = min(max(15.5 + max(0, a - 7) * 0.45 + rng.gauss(0, 1.3), 13.0), 26.0)
    w = bmi * (h / 100) ** 2
    s.height, s.weight = fmt(h, 1), fmt(w, 1)
    s.bsa = Decimal(repr(math.sqrt(float(s.height) * float(s.weight) / 3600))).quantize(
        Decimal("0.01"), rounding=ROUND_HALF_UP)


LOTS = [(date(2020, 1, 1), "L20200503"), (date(2020, 10, 1), "L20200907"),
        (date(2021, 2, 1), "L20210112"), (date(2021, 6, 1), "L20210506"),
        (date(2021, 10, 1), "L20210915")]


def lot_for(d: date) -> str:
    lot = LOTS[0][1]
    for start, code in LOTS:
        if d >= start:
            lot = code
    return lot


def make_timeline(rng: random.Random, s: Subj) -> None:
    """Dates of dosing, visits, relapse, withdrawal for one subject."""
    if s.fate == "screen_failure":
        s.ds_date = s.consent + timedelta(days=rng.randint(2, 6))
        s.last_contact = s.ds_date
        return
    s.first_dose = s.consent + timedelta(days=rng.randint(1, 10))
    n_initial = 4 if s.fate == "wd_early" else 7
    for k in range(n_initial):
        s.doses.append((s.first_dose + timedelta(days=k), rng.choice(["08:30", "09:00", "09:00", "09:00", "09:30", "10:00"]), "INITIAL"))
    if s.fate == "wd_early":  # parents stopped the daily infusions after 4 doses
        s.ds_date = s.on_day(5)
        s.last_contact = s.ds_date
        return
    d7_day = 8 if s.dili else rng.choice([7, 8, 8, 9])
    s.d7 = s.on_day(d7_day)
    if s.fate == "ae":  # serious DILI found at DAY 7: drug withdrawn, no maintenance
        s.unsched.append((s.on_day(15), "Liver function follow-up after raised ALT", True))
        s.ds_date = s.on_day(21)
        s.last_contact = s.ds_date
        return
    if s.cohort == "HSPN":
        for sd in (21, 35, 49, 63, 77, 91):
            s.doses.append((s.on_day(sd), rng.choice(["08:30", "09:00", "09:00", "09:30"]), "MAINTENANCE"))
        m3_day = 91
    else:
        m3_day = 91 + rng.randint(-6, 6)
    if s.fate == "wd_late":
        s.ds_date = s.on_day(rng.randint(30, 60))
        s.last_contact = s.ds_date
        return
    s.m3 = s.on_day(m3_day)
    if s.relapse_day is not None:
        while True:
            r = rng.randint(30, 150)
            if abs(r - m3_day) > 3:
                break
        s.relapse_day = r
        s.relapse = s.on_day(r)
        start = r + rng.randint(1, 2)
        for k in range(7):
            s.doses.append((s.on_day(start + k), rng.choice(["09:00", "09:00", "09:30"]), "RETREATMENT"))
        if s.unscheduled_relapse:
            s.unsched.append((s.relapse, "Relapse of purpura (new skin rash); re-treatment with rhIL-2 started", False))
    if s.fate == "ltfu":
        s.last_contact = s.m3
        s.ds_date = s.on_day(200)
        return
    s.m6 = s.on_day(182 + rng.randint(-7, 7))
    s.last_contact = s.m6
    s.ds_date = s.m6


# --------------------------------------------------------------------------- rows
def subject_row(s: Subj) -> dict:
    n = int(s.sid)
    birth = f"{s.birth.year}-{s.birth.month:02d}" if s.partial_birth else iso(s.birth)
    return {
        "study_id": STUDY_ID, "site_id": SITE_ID, "subject_id": s.sid,
        "family_name": f"Subject{s.sid}", "given_name": "Test",
        "medical_record_number": f"MRN{9900000 + n:07d}",
        "address": f"{n} Example Street, Testville (synthetic)",
        "phone": f"000-0000-{n:04d}",
        "birth_date": birth, "sex": s.sex, "race": "ASIAN",
        "ethnicity": "NOT HISPANIC OR LATINO", "country": "CHN",
        "height_cm": s.height, "weight_kg": s.weight,
        "cohort": s.cohort, "planned_arm": s.cohort, "actual_arm": "",
        "consent_date": iso(s.consent),
        "relapse_date": iso(s.relapse) if s.relapse else "",
        "death_date": "",
        "screen_failure": "Y" if s.fate == "screen_failure" else "N",
    }


def exposure_rows(s: Subj) -> list[dict]:
    rows = []
    dose = str(int(s.bsa * DOSE_PER_BSA))
    for d, hhmm, course in sorted(s.doses):
        rows.append({
            "subject_id": s.sid, "treatment": TREATMENT,
            "start": dt(d, hhmm), "end": dt(d, plus_hour(hhmm)),
            "dose": dose, "dose_unit": "[iU]", "planned_dose_per_bsa": str(DOSE_PER_BSA),
            "bsa_m2": str(s.bsa), "route": "INTRAVENOUS", "dose_form": DOSE_FORM,
            "frequency": "Q2W" if course == "MAINTENANCE" else "QD",
            "course": course, "lot_number": lot_for(d), "adjustment_reason": "",
        })
    return rows


def planned_visits(s: Subj) -> list[tuple[str, date]]:
    v = [("SCREENING", s.consent)]
    if s.first_dose:
        v.append(("DAY 0", s.first_dose))
    for name, d in (("DAY 7", s.d7), ("MONTH 3", s.m3), ("MONTH 6", s.m6)):
        if d:
            v.append((name, d))
    return v


def visit_rows(s: Subj) -> list[dict]:
    rows = [{"subject_id": s.sid, "visit": n, "start": iso(d), "end": "", "status": "DONE", "reason": ""}
            for n, d in planned_visits(s)]
    for d, reason, _ in s.unsched:
        rows.append({"subject_id": s.sid, "visit": "UNSCHEDULED", "start": iso(d), "end": "",
                     "status": "DONE", "reason": reason})
    rows.sort(key=lambda r: r["start"])
    return rows


# reference ranges by age band: (low, high, decimals, unit)
IG_REF = {
    "young": {"IgE": ("0", "90"), "IgA": ("0.33", "2.02"), "IgG": ("5.0", "14.6"), "IgM": ("0.40", "1.80"),
              "C3": ("0.90", "1.80"), "C4": ("0.10", "0.40"), "ALT": ("5", "40"), "AST": ("15", "50"),
              "Creatinine": ("27", "62")},
    "older": {"IgE": ("0", "200"), "IgA": ("0.45", "2.85"), "IgG": ("7.0", "15.6"), "IgM": ("0.40", "2.30"),
              "C3": ("0.90", "1.80"), "C4": ("0.10", "0.40"), "ALT": ("5", "40"), "AST": ("10", "40"),
              "Creatinine": ("35", "88")},
}
UNITS = {"IgE": "[iU]/mL", "IgA": "g/L", "IgG": "g/L", "IgM": "g/L", "C3": "g/L", "C4": "g/L",
         "ALT": "U/L", "AST": "U/L", "Creatinine": "umol/L"}
PLACES = {"IgE": 1, "IgA": 2, "IgG": 1, "IgM": 2, "C3": 2, "C4": 2, "ALT": 0, "AST": 0, "Creatinine": 0}
IMMUNO = ["IgE", "IgA", "IgG", "IgM", "C3", "C4"]
SAFETY = ["ALT", "AST", "Creatinine"]
CYTOKINES = ["IL-2", "IL-4", "IL-6", "IL-10", "IL-17A", "IFN-gamma", "TNF-alpha"]
# (ref_high, DAY 0 median, DAY 7 median) pg/mL; IL-10 rises with Treg expansion, IL-6/IL-17A fall
CYTO = {"IL-2": ("5.0", 3.4, 4.6), "IL-4": ("4.5", 2.8, 2.7), "IL-6": ("5.4", 9.5, 5.2),
        "IL-10": ("5.0", 3.8, 8.6), "IL-17A": ("20.6", 17.0, 10.5), "IFN-gamma": ("7.0", 5.2, 6.6),
        "TNF-alpha": ("8.1", 6.3, 4.4)}
VISIT_FACTOR = {"DAY 0": 1.0, "DAY 7": 0.95, "MONTH 3": 0.85, "MONTH 6": 0.8, "SCREENING": 1.0, "UNSCHEDULED": 1.0}


class Accession:
    def __init__(self, start: int):
        self.n = start

    def next(self) -> str:
        self.n += 1
        return f"A{self.n:08d}"


def lab_rows(rng: random.Random, s: Subj, acc: Accession, allow_bdl: bool) -> list[dict]:
    refs = IG_REF[band(s.age)]
    base = {}
    lo_hi = {t: (float(refs[t][0]), float(refs[t][1])) for t in refs}
    base["IgA"] = lo_hi["IgA"][1] * rng.uniform(0.6, 1.45)       # IgA often raised in HSP
    base["IgE"] = lognorm(rng, 110 if band(s.age) == "older" else 70, 0.8)
    base["IgG"] = rng.uniform(*lo_hi["IgG"]) * rng.uniform(0.9, 1.05)
    base["IgM"] = rng.uniform(0.6, 1.6)
    base["C3"] = rng.uniform(0.95, 1.6)
    base["C4"] = rng.uniform(0.14, 0.36)
    base["ALT"] = rng.uniform(9, 30)
    base["AST"] = rng.uniform(18, 38) if band(s.age) == "young" else rng.uniform(14, 32)
    base["Creatinine"] = (25 + 2.6 * s.age) * rng.uniform(0.85, 1.15) * (1.1 if s.cohort == "HSPN" else 1.0)

    plan: list[tuple[str, date, list[str]]] = []
    plan.append(("SCREENING", s.consent, SAFETY))
    if s.first_dose:
        plan.append(("DAY 0", s.first_dose, IMMUNO + CYTOKINES))
    if s.d7:
        plan.append(("DAY 7", s.d7, IMMUNO + CYTOKINES + SAFETY))
    for d, _reason, with_labs in s.unsched:
        if with_labs:
            plan.append(("UNSCHEDULED", d, SAFETY))
    if s.m3:
        plan.append(("MONTH 3", s.m3, IMMUNO + SAFETY))
    if s.m6:
        plan.append(("MONTH 6", s.m6, IMMUNO + SAFETY))
    plan.sort(key=lambda p: p[1])

    rows = []
    for visit, d, tests in plan:
        a = acc.next()
        for t in tests:
            if t in CYTO:
                high, m0, m7 = CYTO[t]
                v = lognorm(rng, m0 if visit == "DAY 0" else m7, 0.4)
                res = "<2.0" if (allow_bdl and rng.random() < 0.05) else fmt(max(v, 2.1), 1)
                low, unit = "0.0", "pg/mL"
            else:
                low, high = refs[t]
                unit = UNITS[t]
                f = VISIT_FACTOR[visit] if t in ("IgA", "IgE") else 1.0  # IgA/IgE fall as HSP settles
                v = base[t] * f * rng.uniform(0.93, 1.07)
                if t == "ALT" and s.dili and visit == "DAY 7":
                    v = 265 if s.dili == "serious" else 98
                elif t == "AST" and s.dili and visit == "DAY 7":
                    v = 190 if s.dili == "serious" else 56
                elif t == "ALT" and s.dili == "serious" and visit == "UNSCHEDULED":
                    v = 121
                elif t == "AST" and s.dili == "serious" and visit == "UNSCHEDULED":
                    v = 74
                res = fmt(v, PLACES[t])
            rows.append({"subject_id": s.sid, "visit": visit, "collected": dt(d, "08:00"), "test": t,
                         "result": res, "unit": unit, "ref_low": low, "ref_high": high,
                         "specimen": "SERUM", "not_done_reason": "", "accession": a})
    return rows


POPULATIONS = ["CD3+ T cells", "CD3+CD4+ T cells", "CD3+CD8+ T cells", "CD19+ B cells",
               "CD3-CD16+CD56+ NK cells", "CD4+CD25+FOXP3+ Treg"]
# (count low, count high, percent low, percent high) by age band; Treg percent is of CD4+
CP_REF = {
    "young": {"CD3+ T cells": ("1400", "3700", "56.0", "75.0"), "CD3+CD4+ T cells": ("700", "2200", "28.0", "47.0"),
              "CD3+CD8+ T cells": ("490", "1300", "16.0", "30.0"), "CD19+ B cells": ("390", "1400", "14.0", "33.0"),
              "CD3-CD16+CD56+ NK cells": ("130", "720", "4.0", "17.0"), "CD4+CD25+FOXP3+ Treg": ("40", "150", "5.0", "10.0")},
    "older": {"CD3+ T cells": ("1000", "2200", "56.0", "84.0"), "CD3+CD4+ T cells": ("530", "1300", "31.0", "52.0"),
              "CD3+CD8+ T cells": ("330", "920", "18.0", "35.0"), "CD19+ B cells": ("110", "570", "6.0", "23.0"),
              "CD3-CD16+CD56+ NK cells": ("70", "480", "3.0", "22.0"), "CD4+CD25+FOXP3+ Treg": ("25", "100", "5.0", "10.0")},
}


def cell_rows(rng: random.Random, s: Subj) -> list[dict]:
    if not s.first_dose:
        return []
    young = band(s.age) == "young"
    lymph0 = rng.gauss(3200, 500) if young else rng.gauss(2300, 350)
    cd3 = rng.gauss(66, 4)
    cd19 = rng.gauss(20 if young else 14, 3)
    nk = rng.gauss(10, 2.5)
    cd4_of3 = rng.uniform(0.56, 0.64)
    cd8_of3 = rng.uniform(0.29, 0.36)
    treg0 = rng.gauss(4.4, 0.7)  # HSP: Treg reduced at baseline
    rows = []
    for visit, d in (("DAY 0", s.first_dose), ("DAY 7", s.d7)):
        if not d:
            continue
        if visit == "DAY 0":
            lymph, p3, p19, pnk, treg = lymph0, cd3, cd19, nk, treg0
        else:  # low-dose IL-2: Treg (and NK) expand by day 7
            lymph = lymph0 * rng.uniform(1.0, 1.12)
            pnk = nk * rng.uniform(1.1, 1.35)
            p19 = cd19 * rng.uniform(0.92, 1.02)
            p3 = cd3 - (pnk - nk) + rng.uniform(-1, 1)
            treg = treg0 * rng.uniform(1.45, 2.05)
        p4, p8 = p3 * cd4_of3 * rng.uniform(0.97, 1.03), p3 * cd8_of3 * rng.uniform(0.97, 1.03)
        pct = {"CD3+ T cells": p3, "CD3+CD4+ T cells": p4, "CD3+CD8+ T cells": p8,
               "CD19+ B cells": p19, "CD3-CD16+CD56+ NK cells": pnk}
        for pop in POPULATIONS:
            clo, chi, plo, phi = CP_REF[band(s.age)][pop]
            if pop == "CD4+CD25+FOXP3+ Treg":
                p = treg
                count = lymph * p4 / 100 * treg / 100
            else:
                p = pct[pop]
                count = lymph * p / 100
            for measure, res, unit, lo, hi in (("COUNT", fmt(count, 0), "/uL", clo, chi),
                                              ("PERCENT", fmt(p, 1), "%", plo, phi)):
                rows.append({"subject_id": s.sid, "visit": visit, "collected": dt(d, "08:00"),
                             "population": pop, "measure": measure, "result": res, "unit": unit,
                             "ref_low": lo, "ref_high": hi, "specimen": "BLOOD", "not_done_reason": ""})
    return rows


GEN = "General disorders and administration site conditions"
INF = "Infections and infestations"
AE_CATALOG = {
    "INFUSION SITE REACTION": [("redness at infusion site", "Infusion site erythema", GEN),
                                ("swelling at infusion site", "Infusion site swelling", GEN),
                                ("pain at infusion site", "Infusion site pain", GEN),
                                ("itching at infusion site", "Infusion site pruritus", GEN)],
    "INFLUENZA-LIKE SYMPTOMS": [("flu-like symptoms", "Influenza like illness", GEN),
                                ("tired after infusion", "Fatigue", GEN),
                                ("muscle aches", "Myalgia", "Musculoskeletal and connective tissue disorders"),
                                ("chills after infusion", "Chills", GEN)],
    "FEVER": [("fever", "Pyrexia", GEN), ("fever 38.5 C", "Pyrexia", GEN), ("low grade fever", "Pyrexia", GEN)],
    "INFECTION": [("upper respiratory infection", "Upper respiratory tract infection", INF),
                  ("common cold", "Nasopharyngitis", INF), ("gastroenteritis", "Gastroenteritis", INF),
                  ("tonsillitis", "Tonsillitis", INF), ("bronchitis", "Bronchitis", INF)],
    "CARDIOVASCULAR EVENT": [("fast heart rate during infusion", "Sinus tachycardia", "Cardiac disorders")],
}
SEV_GRADE = {"MILD": "1", "MODERATE": "2", "SEVERE": "3"}


def ae_events(rng: random.Random, s: Subj) -> list[dict]:
    """Turn the subject's AE slots into dated events (unnumbered)."""
    evs = []
    dose_dates = sorted(d for d, _, _ in s.doses)
    last = s.last_contact
    for slot in s.ae_slots:
        cat = slot["category"]
        ev = {"category": cat, "serious": "N", "serious_criteria": ""}
        if cat == "HEPATOTOXICITY":
            if slot["kind"] == "serious":
                ev.update(term="liver injury, ALT above 5x ULN", decoded_term="Drug-induced liver injury",
                          body_system="Hepatobiliary disorders", severity="SEVERE", serious="Y",
                          serious_criteria="HOSPITALIZATION", relatedness="RELATED",
                          action_taken="DRUG WITHDRAWN", outcome="RECOVERED/RESOLVED",
                          start=s.d7, end=s.on_day(20))
            else:
                ev.update(term="raised ALT", decoded_term="Alanine aminotransferase increased",
                          body_system="Investigations", severity="MILD", relatedness="POSSIBLY RELATED",
                          action_taken="NOT APPLICABLE", outcome="RECOVERED/RESOLVED",
                          start=s.d7, end=s.on_day(rng.randint(28, 40)))
            evs.append(ev)
            continue
        if slot.get("pneumonia"):
            term, dec, soc = "pneumonia", "Pneumonia", INF
        else:
            term, dec, soc = rng.choice(AE_CATALOG[cat])
        ev.update(term=term, decoded_term=dec, body_system=soc)
        if cat in ("INFUSION SITE REACTION", "INFLUENZA-LIKE SYMPTOMS", "CARDIOVASCULAR EVENT"):
            start = rng.choice(dose_dates)
            dur = rng.randint(0, 2)
        elif cat == "FEVER":
            start = rng.choice(dose_dates) + timedelta(days=rng.randint(0, 1))
            dur = rng.randint(0, 3)
        else:  # infection: any time on study
            lo = s.first_dose + timedelta(days=2)
            if slot.get("late"):  # well after the first dose (used by the dirty set)
                start = s.on_day(rng.randint(40, 120))
            elif slot.get("ongoing"):
                start = last - timedelta(days=rng.randint(1, 5))
            else:
                start = lo + timedelta(days=rng.randint(0, max(0, (last - lo).days - 12)))
            dur = rng.randint(8, 14) if slot.get("pneumonia") else rng.randint(3, 10)
        start = min(max(start, s.first_dose), last)
        end = start + timedelta(days=dur)
        if slot.get("pneumonia"):
            sev = "SEVERE"
            ev.update(serious="Y", serious_criteria="HOSPITALIZATION", relatedness="NOT RELATED")
        elif cat == "INFUSION SITE REACTION":
            sev = "MILD" if rng.random() < 0.9 else "MODERATE"
            ev["relatedness"] = "RELATED"
        elif cat == "INFLUENZA-LIKE SYMPTOMS":
            sev = "MILD" if rng.random() < 0.8 else "MODERATE"
            ev["relatedness"] = rng.choice(["RELATED", "RELATED", "RELATED", "POSSIBLY RELATED", "POSSIBLY RELATED"])
        elif cat == "FEVER":
            sev = "MILD" if rng.random() < 0.7 else "MODERATE"
            ev["relatedness"] = rng.choice(["RELATED", "POSSIBLY RELATED", "POSSIBLY RELATED", "NOT RELATED"])
        elif cat == "CARDIOVASCULAR EVENT":
            sev = "MILD"
            ev["relatedness"] = "POSSIBLY RELATED"
        else:
            sev = "MILD" if rng.random() < 0.6 else "MODERATE"
            ev["relatedness"] = "NOT RELATED" if rng.random() < 0.7 else "POSSIBLY RELATED"
        ev["severity"] = sev
        on_treatment = any(start <= d <= end for d in dose_dates)
        if cat == "CARDIOVASCULAR EVENT":
            ev["action_taken"] = "DRUG INTERRUPTED"
        elif on_treatment:
            ev["action_taken"] = "DOSE NOT CHANGED"
        else:
            ev["action_taken"] = "NOT APPLICABLE"
        if slot.get("ongoing") or end > last:
            ev.update(start=start, end=None, outcome=slot.get("ongoing_outcome", "NOT RECOVERED/NOT RESOLVED"))
        else:
            ev.update(start=start, end=end, outcome="RECOVERED/RESOLVED")
        evs.append(ev)
    return evs


def ae_rows(rng: random.Random, s: Subj) -> list[dict]:
    evs = ae_events(rng, s)
    evs.sort(key=lambda e: (e["start"], e["term"]))
    rows = []
    for n, e in enumerate(evs, 1):
        rows.append({
            "subject_id": s.sid, "ae_number": str(n), "term": e["term"],
            "decoded_term": e["decoded_term"], "body_system": e["body_system"], "category": e["category"],
            "start": iso(e["start"]), "end": iso(e["end"]) if e["end"] else "",
            "severity": e["severity"], "grade": SEV_GRADE[e["severity"]], "serious": e["serious"],
            "serious_criteria": e["serious_criteria"], "relatedness": e["relatedness"],
            "action_taken": e["action_taken"], "outcome": e["outcome"],
        })
    return rows


DS_TEXT = {
    "completed": ("COMPLETED", "Completed month 6 follow-up"),
    "screen_failure": ("SCREEN FAILURE", "Active severe infection at screening (exclusion criterion EXCL01)"),
    "wd_early": ("WITHDRAWAL BY PARENT/GUARDIAN", "Parents declined further daily infusions after 4 doses"),
    "wd_late": ("WITHDRAWAL BY PARENT/GUARDIAN", "Parents withdrew consent; family moved to another city"),
    "ltfu": ("LOST TO FOLLOW-UP", "Did not attend month 6 visit; family could not be reached by telephone"),
    "ae": ("ADVERSE EVENT", "Withdrawn by investigator after drug-induced liver injury"),
}


def disposition_rows(s: Subj) -> list[dict]:
    ev, verb = DS_TEXT[s.fate]
    return [
        {"subject_id": s.sid, "event": "INFORMED CONSENT OBTAINED", "category": "PROTOCOL MILESTONE",
         "verbatim": "Informed consent signed by parent/guardian", "date": iso(s.consent)},
        {"subject_id": s.sid, "event": ev, "category": "DISPOSITION EVENT", "verbatim": verb, "date": iso(s.ds_date)},
    ]


# --------------------------------------------------------------------------- study plans
def plan_main(rng: random.Random) -> list[Subj]:
    ids = [f"{i:03d}" for i in range(1, 60)]
    hspn = set(rng.sample(ids, 19))
    subs = [Subj(sid=i, cohort="HSPN" if i in hspn else "HSP") for i in ids]
    hsp = [s for s in subs if s.cohort == "HSP"]
    hspn_l = [s for s in subs if s.cohort == "HSPN"]
    picks_hsp = rng.sample(hsp, 10)
    picks_hspn = rng.sample(hspn_l, 2)
    picks_hsp[0].fate = "screen_failure"
    picks_hsp[1].fate = "wd_early"
    picks_hsp[2].fate = "wd_late"
    picks_hspn[0].fate = "ltfu"
    picks_hspn[1].fate, picks_hspn[1].dili = "ae", "serious"
    picks_hsp[3].dili = "mild"
    for k, s in enumerate(picks_hsp[4:10]):
        s.relapse_day = -1  # placeholder: drawn in make_timeline
        s.unscheduled_relapse = k < 2
    # consent dates spread over the enrolment period, in subject-number order
    lo, hi = date(2020, 6, 1), date(2021, 6, 30)
    for s in subs:
        make_demography(rng, s, lo, hi)
    consents = sorted(s.consent for s in subs)
    for s, c in zip(subs, consents):
        shift = c - s.consent
        s.consent, s.birth = c, s.birth + shift  # keep the drawn age
    for s in subs:
        make_timeline(rng, s)
    # 2 partial birth dates (YYYY-MM), chosen so the age at consent is still determinable
    cands = [s for s in subs if s.fate == "completed" and s.birth.month != s.consent.month]
    for s in rng.sample(cands, 2):
        s.partial_birth = True
    # adverse events: 2 DILI + 43 others over 25 subjects
    treated = [s for s in subs if s.first_dose]
    dili = [s for s in subs if s.dili]
    others = rng.sample([s for s in treated if not s.dili], 23)
    ae_subs = sorted(dili + others, key=lambda s: s.sid)
    for s in dili:
        s.ae_slots.append({"category": "HEPATOTOXICITY", "kind": s.dili})
    pool = (["INFUSION SITE REACTION"] * 11 + ["INFLUENZA-LIKE SYMPTOMS"] * 10 + ["FEVER"] * 9
            + ["INFECTION"] * 12 + ["CARDIOVASCULAR EVENT"])
    rng.shuffle(pool)
    slots = [{"category": c} for c in pool]
    # special infections: one serious pneumonia, two ongoing at last contact
    inf = [sl for sl in slots if sl["category"] == "INFECTION"]
    inf[0]["pneumonia"] = True
    inf[1]["ongoing"] = True
    inf[2]["ongoing"], inf[2]["ongoing_outcome"] = True, "RECOVERING/RESOLVING"
    for s in others:  # every AE subject gets at least one
        s.ae_slots.append(slots.pop())
    while slots:
        s = rng.choice(ae_subs)
        if len(s.ae_slots) < 4:
            s.ae_slots.append(slots.pop())
    return subs


def plan_dirty(rng: random.Random) -> list[Subj]:
    cohorts = {"101": "HSP", "102": "HSPN", "103": "HSP", "104": "HSPN", "105": "HSP"}
    aes = {"101": ["INFECTION", "INFUSION SITE REACTION"], "102": ["FEVER"],
           "103": ["INFLUENZA-LIKE SYMPTOMS", "INFECTION"], "104": ["INFUSION SITE REACTION"],
           "105": ["FEVER", "INFECTION"]}
    subs = [Subj(sid=i, cohort=c) for i, c in cohorts.items()]
    for s in subs:
        make_demography(rng, s, date(2020, 6, 10), date(2020, 7, 10))
    consents = sorted(s.consent for s in subs)
    for s, c in zip(subs, consents):
        shift = c - s.consent
        s.consent, s.birth = c, s.birth + shift
    for s in subs:
        make_timeline(rng, s)
        s.ae_slots = [{"category": c} for c in aes[s.sid]]
    subs[0].ae_slots[0]["late"] = True  # 101's infection: gets the partial start date
    return subs


def build(rng: random.Random, subs: list[Subj], acc_start: int, allow_bdl: bool) -> dict[str, list[dict]]:
    acc = Accession(acc_start)
    data = {k: [] for k in KINDS}
    for s in subs:
        data["subject"].append(subject_row(s))
        data["exposure"].extend(exposure_rows(s))
        data["visit"].extend(visit_rows(s))
        data["lab_result"].extend(lab_rows(rng, s, acc, allow_bdl))
        data["cell_phenotype"].extend(cell_rows(rng, s))
        data["adverse_event"].extend(ae_rows(rng, s))
        data["disposition"].extend(disposition_rows(s))
    return data


# --------------------------------------------------------------------------- checks
def _d(text: str) -> date:
    return date.fromisoformat(text[:10])


def check_schema(schemas: dict, data: dict[str, list[dict]]) -> list[str]:
    errs = []
    for kind, rows in data.items():
        schema = schemas[kind]
        v = Draft202012Validator(schema)
        cols = list(schema["properties"])
        for n, row in enumerate(rows, 1):
            if list(row) != cols:
                errs.append(f"{kind} row {n}: columns {list(row)} != schema {cols}")
            rec = {k: val for k, val in row.items() if val != ""}
            for e in v.iter_errors(rec):
                errs.append(f"{kind} row {n}: {e.message}")
    return errs


def check_consistency(data: dict[str, list[dict]], config: dict) -> list[str]:
    """Checks beyond the JSON schema; the clean set must pass all of them."""
    errs = []
    subj = {r["subject_id"]: r for r in data["subject"]}
    date_fields = {"subject": ["birth_date", "consent_date", "relapse_date", "death_date"],
                   "exposure": ["start", "end"], "lab_result": ["collected"], "cell_phenotype": ["collected"],
                   "adverse_event": ["start", "end"], "visit": ["start", "end"], "disposition": ["date"]}
    for kind, fields in date_fields.items():
        for n, r in enumerate(data[kind], 1):
            for f in fields:
                v = r[f]
                if not v:
                    continue
                try:
                    if len(v) == 7:
                        datetime.strptime(v, "%Y-%m")
                    else:
                        datetime.fromisoformat(v)
                except ValueError:
                    errs.append(f"{kind} row {n}: {f}={v!r} is not a calendar date")
                if kind != "subject" and r["subject_id"] not in subj:
                    errs.append(f"{kind} row {n}: orphan subject {r['subject_id']}")
    if errs:
        return errs
    # keys unique
    for kind in KINDS:
        schema_key = {"subject": ["study_id", "subject_id"], "exposure": ["subject_id", "start", "treatment"],
                      "lab_result": ["subject_id", "collected", "test"],
                      "cell_phenotype": ["subject_id", "collected", "population", "measure"],
                      "adverse_event": ["subject_id", "ae_number"], "visit": ["subject_id", "visit", "start"],
                      "disposition": ["subject_id", "event", "date"]}[kind]
        seen = set()
        for n, r in enumerate(data[kind], 1):
            k = tuple(r[f] for f in schema_key)
            if k in seen:
                errs.append(f"{kind} row {n}: duplicate key {k}")
            seen.add(k)
    first = {}
    last_contact = {}
    for r in data["exposure"]:
        sid = r["subject_id"]
        if r["start"] < subj[sid]["consent_date"]:
            errs.append(f"exposure {sid} {r['start']} before consent")
        first[sid] = min(first.get(sid, r["start"][:10]), r["start"][:10])
        bsa = Decimal(r["bsa_m2"])
        if r["dose"] != str(int(bsa * DOSE_PER_BSA)):
            errs.append(f"exposure {sid} {r['start']}: dose {r['dose']} != 500000*{bsa}")
    for r in data["visit"] + data["lab_result"] + data["cell_phenotype"]:
        sid = r["subject_id"]
        d = (r.get("start") or r.get("collected"))[:10]
        last_contact[sid] = max(last_contact.get(sid, d), d)
    for s, r in subj.items():
        if r["screen_failure"] == "Y" and s in first:
            errs.append(f"screen failure {s} has exposure")
        b = r["birth_date"]
        bd = date.fromisoformat(b) if len(b) == 10 else date(int(b[:4]), int(b[5:7]), 1)
        a = age_on(bd, _d(r["consent_date"]))
        if not 3 <= a <= 17:
            errs.append(f"subject {s}: age {a}")
    windows = {v["name"]: v["window"] for v in config["visits"]}
    for r in data["visit"]:
        sid = r["subject_id"]
        if r["visit"] in windows and sid in first:
            n = (_d(r["start"]) - _d(first[sid])).days
            sd = n + 1 if n >= 0 else n
            lo, hi = windows[r["visit"]]
            if not lo <= sd <= hi:
                errs.append(f"visit {sid} {r['visit']} study day {sd} outside {lo}..{hi}")
    for r in data["lab_result"]:
        if r["test"] in CYTO and r["visit"] == "DAY 0" and r["collected"][:10] != first.get(r["subject_id"]):
            errs.append(f"lab {r['subject_id']} DAY 0 not on first dose day")
    for r in data["adverse_event"]:
        sid = r["subject_id"]
        if sid not in first or r["start"] < first[sid]:
            errs.append(f"AE {sid}/{r['ae_number']} starts before first dose")
        if r["start"] > last_contact[sid]:
            errs.append(f"AE {sid}/{r['ae_number']} starts after last contact {last_contact[sid]}")
        if r["end"] and r["end"] < r["start"]:
            errs.append(f"AE {sid}/{r['ae_number']} ends before start")
        if not r["end"] and r["outcome"] == "RECOVERED/RESOLVED":
            errs.append(f"AE {sid}/{r['ae_number']} resolved without end date")
    return errs


def fail_if(errs: list[str], what: str) -> None:
    if errs:
        for e in errs[:50]:
            print(f"INVALID {what}: {e}", file=sys.stderr)
        raise GenerationError(f"{len(errs)} invalid rows/facts in {what}")


# --------------------------------------------------------------------------- output
def write_csvs(schemas: dict, data: dict[str, list[dict]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for kind, rows in data.items():
        schema = schemas[kind]
        cols = list(schema["properties"])
        with atomic_open(out / f"{schema['x-file']}.csv") as fh:
            w = csv.DictWriter(fh, fieldnames=cols, quoting=csv.QUOTE_MINIMAL, lineterminator="\n",
                               extrasaction="raise")
            w.writeheader()
            w.writerows(rows)


def write_text(path: Path, text: str) -> None:
    with atomic_open(path) as fh:
        fh.write(text)


def counts_table(schemas: dict, data: dict[str, list[dict]]) -> str:
    lines = ["| file | rows |", "|---|---|"]
    for kind in KINDS:
        lines.append(f"| {schemas[kind]['x-file']}.csv | {len(data[kind])} |")
    return "\n".join(lines)


def readme_clean(schemas: dict, data: dict, subs: list[Subj]) -> str:
    sf = [s.sid for s in subs if s.fate == "screen_failure"]
    rel = [s.sid for s in subs if s.relapse]
    drop = [(s.sid, DS_TEXT[s.fate][0]) for s in subs if s.fate in ("wd_early", "wd_late", "ltfu", "ae")]
    part = [s.sid for s in subs if s.partial_birth]
    dili = [(s.sid, s.dili) for s in subs if s.dili]
    bdl = sum(1 for r in data["lab_result"] if r["result"].startswith("<"))
    ncyto = sum(1 for r in data["lab_result"] if r["test"] in CYTO)
    ae_subj = len({r["subject_id"] for r in data["adverse_event"]})
    cats = {}
    for r in data["adverse_event"]:
        cats[r["category"]] = cats.get(r["category"], 0) + 1
    cat_lines = "\n".join(f"  - {c}: {n}" for c, n in sorted(cats.items()))
    serious = [(r["subject_id"], r["ae_number"], r["decoded_term"]) for r in data["adverse_event"] if r["serious"] == "Y"]
    ongoing = [(r["subject_id"], r["ae_number"], r["outcome"]) for r in data["adverse_event"] if not r["end"]]
    unsched = [(r["subject_id"], r["start"], r["reason"]) for r in data["visit"] if r["visit"] == "UNSCHEDULED"]
    n_hsp = sum(1 for s in subs if s.cohort == "HSP")
    return f"""# NCT04387942 sample records (synthetic)

**Synthetic data. No real patient.** Every value in this folder was made up by
`scripts/generate_samples.py`; names ("Test" / "SubjectNNN"), medical record numbers
(MRN99000NN), addresses ("NN Example Street, Testville (synthetic)") and phone numbers
(000-0000-NNNN) are deliberately fake. Clinical values are plausible for children with
Henoch-Schonlein purpura treated with low-dose rhIL-2 but are not taken from any source
and must not be used for any clinical or scientific conclusion.

Study: NCT04387942, open-label low-dose rhIL-2 (500,000 IU/m2, BSA by Mosteller) in
children with HSP; configuration `mappings/studies/nct04387942.yaml`.

## How it was generated

    python scripts/generate_samples.py

Deterministic (`random.Random({SEED})`, no clock). The generator validates every row
against `schemas/internal/*.schema.json` (empty cell = absent) and checks calendar
dates, key uniqueness, subject references, exposure after consent, dose =
500000 x bsa_m2, visit windows of the study configuration, AE start between first dose
and last contact; it exits non-zero if anything fails. Re-running rewrites identical files.

## Files (internal CSV format, header = schema property order, UTF-8, comma, minimal quoting)

{counts_table(schemas, data)}

## What is in it

- 59 subjects, site "01", ids 001-059; cohort HSP {n_hsp}, HSPN {59 - n_hsp}; planned_arm = cohort,
  actual_arm empty (= planned). Consent 2020-06-01..2021-06-30 in subject order; age 3-17.
- Partial birth dates (YYYY-MM) for subjects {", ".join(part)} (birth month differs from the
  consent month, so the age at consent is still determinable).
- Screen failure: {", ".join(sf)} (screen_failure Y, SCREENING visit and safety labs only, no exposure,
  disposition SCREEN FAILURE).
- Early terminations: {"; ".join(f"{a} {b}" for a, b in drop)}. Their visits/labs stop at
  last contact; the LOST TO FOLLOW-UP disposition date is after the last visit (date the site gave up).
- Relapse and RETREATMENT course (7 daily doses starting 1-2 days after relapse_date): {", ".join(rel)}.
- Exposures: one row per administration, start 08:30-10:00, end +1 h; dose = 500000 x bsa_m2
  (BSA from screening height/weight, 2 decimals) as integer text; INITIAL QD x 7 (x 4 for the
  early withdrawal); HSPN MAINTENANCE Q2W on study days 21, 35, 49, 63, 77, 91 (none for the
  subject withdrawn for DILI). Lot numbers change over calendar time.
- Visits SCREENING (consent date), DAY 0 (first dose date), DAY 7 (study day 7-9),
  MONTH 3 (study day 85-97; HSPN day 91, same day as the last maintenance dose, labs pre-dose),
  MONTH 6 (study day 175-189). Unscheduled visits: {"; ".join(f"{a} {b} ({c})" for a, b, c in unsched)}.
- Labs (SERUM, collected 08:00, pre-dose): IgE/IgA/IgG/IgM/C3/C4 at DAY 0, DAY 7, MONTH 3, MONTH 6;
  cytokines IL-2, IL-4, IL-6, IL-10, IL-17A, IFN-gamma, TNF-alpha at DAY 0 and DAY 7 (IL-10 rises,
  IL-6/IL-17A fall by DAY 7); ALT/AST/Creatinine at SCREENING, DAY 7, MONTH 3, MONTH 6 (and the
  unscheduled liver follow-up). Reference ranges depend on age band (3-9, 10-17). Results keep
  their precision as text ("1.30"). {bdl} of {ncyto} cytokine results are below detection, written
  "<2.0" (expected: LB-NONNUMERIC-RESULT info findings). IgA is often above range (typical of HSP).
- Raised ALT/AST at DAY 7 around the DILI adverse events: {", ".join(f"{a} ({b})" for a, b in dili)}.
- Cell phenotypes (BLOOD, DAY 0 and DAY 7): 6 populations x COUNT (/uL) and PERCENT (% of
  lymphocytes; Treg % of CD4+). Treg percent rises roughly 1.5-2x by DAY 7; NK cells rise a little.
- Adverse events: {len(data["adverse_event"])} events in {ae_subj} subjects, by category:
{cat_lines}
  Serious (HOSPITALIZATION): {"; ".join(f"{a} AE {b} {c}" for a, b, c in serious)}.
  Ongoing at last contact (end empty): {"; ".join(f"{a} AE {b} {c}" for a, b, c in ongoing)}.
  No TUMOUR and no NEPHROTOXICITY events occurred (0 is realistic for a 6-month
  paediatric study of low-dose IL-2); those protocol categories are simply absent.
- Dispositions: INFORMED CONSENT OBTAINED (PROTOCOL MILESTONE) at consent for everyone, and one
  DISPOSITION EVENT per subject (COMPLETED at the MONTH 6 visit date otherwise).

Expected on conversion: no errors and no warnings; info findings only for the "<2.0"
cytokine results and the two partial birth dates (if the converter reports those).
"""


# --------------------------------------------------------------------------- dirty set
def make_dirty(data: dict[str, list[dict]], subs: list[Subj]) -> tuple[dict, list[dict]]:
    d = copy.deepcopy(data)
    by = {s.sid: s for s in subs}
    mistakes = []

    # 1. partial AE start (month only) on subject 101's infection, which starts in a later
    #    month than the first dose (so no before-first-dose ambiguity).
    ae = d["adverse_event"]
    i = next(n for n, r in enumerate(ae) if r["subject_id"] == "101" and r["category"] == "INFECTION")
    r = ae[i]
    if r["start"][:7] <= by["101"].first_dose.isoformat()[:7]:
        raise GenerationError("dirty: 101 infection AE not in a later month than first dose")
    r["start"] = r["start"][:7]
    mistakes.append(("adverse_events.csv", ("ae", i), "start", r["start"], "SDTM-PARTIAL-DATE", "info",
                     "start date has month precision only; kept as partial AESTDTC, AESTDY left empty"))

    # 8. subject_id "999" on the last AE of subject 105 (typo on the AE log)
    i = max(n for n, r in enumerate(ae) if r["subject_id"] == "105")
    ae[i]["subject_id"] = "999"
    mistakes.append(("adverse_events.csv", ("ae", i), "subject_id", "999", "REC-ORPHAN", "error",
                     "subject 999 is not in subjects.csv; row rejected"))

    # 4. exposure start before consent: month typo on subject 103's first administration
    ex = d["exposure"]
    i = next(n for n, r in enumerate(ex) if r["subject_id"] == "103")
    r = ex[i]
    good = _d(r["start"])
    bad = (date(good.year, good.month - 1, min(good.day, 28)) if good.month > 1
           else date(good.year - 1, 12, good.day))
    r["start"] = bad.isoformat() + r["start"][10:]
    r["end"] = bad.isoformat() + r["end"][10:]
    if r["start"][:10] >= by["103"].consent.isoformat():
        raise GenerationError("dirty: 103 typo date not before consent")
    mistakes.append(("exposures.csv", ("ex", i), "start", r["start"], "EX-BEFORE-CONSENT", "error",
                     f"month typo (true date {good.isoformat()}); before consent_date "
                     f"{by['103'].consent.isoformat()}. The same typo is in end ({r['end']})"))

    # 7. impossible date in visits: subject 104 DAY 7
    vi = d["visit"]
    i = next(n for n, r in enumerate(vi) if r["subject_id"] == "104" and r["visit"] == "DAY 7")
    vi[i]["start"] = "2020-13-45"
    mistakes.append(("visits.csv", ("vi", i), "start", "2020-13-45", "REC-SCHEMA", "error",
                     "not a calendar date; row rejected"))

    lb = d["lab_result"]
    # 2. unknown unit: subject 102 C3 at MONTH 3 reported as "mq/dL" (typo of mg/dL, keys g and q side by side) (value and range in mg/dL)
    i = next(n for n, r in enumerate(lb) if r["subject_id"] == "102" and r["visit"] == "MONTH 3" and r["test"] == "C3")
    r = lb[i]
    r["result"] = fmt(float(r["result"]) * 100, 0)
    r["ref_low"], r["ref_high"], r["unit"] = "90", "180", "mq/dL"
    lab_c3 = r
    # 3. IgE below detection, subject 103 DAY 7
    i = next(n for n, r in enumerate(lb) if r["subject_id"] == "103" and r["visit"] == "DAY 7" and r["test"] == "IgE")
    lb[i]["result"] = "<0.5"
    lab_ige = lb[i]
    # 5. unknown test name: an extra ferritin result with a typo, subject 104 DAY 0
    i = max(n for n, r in enumerate(lb) if r["subject_id"] == "104" and r["visit"] == "DAY 0")
    base = lb[i]
    ferr = dict(base, test="Ferritinn", result="38.6", unit="ug/L", ref_low="7", ref_high="140")
    lb.insert(i + 1, ferr)
    # 6. exact duplicate: subject 105 SCREENING ALT sent twice
    i = next(n for n, r in enumerate(lb) if r["subject_id"] == "105" and r["visit"] == "SCREENING" and r["test"] == "ALT")
    dup = dict(lb[i])
    lb.insert(i + 1, dup)
    # row numbers after all insertions (identity lookup)
    def rowno(rows, obj):
        return next(n for n, r in enumerate(rows, 1) if r is obj)
    lab_mist = [
        (lab_c3, "unit", "mq/dL", "TERM-UNMAPPED-UNIT", "warning",
         f"C3 reported as {lab_c3['result']} mq/dL (range 90-180): unit unknown; LBORRESU kept as given, LBSTRESN empty"),
        (lab_ige, "result", "<0.5", "LB-NONNUMERIC-RESULT", "info",
         "IgE below detection limit; LBSTRESC \"<0.5\", LBSTRESN empty"),
        (ferr, "test", "Ferritinn", "TERM-UNMAPPED-LABTEST", "error",
         "misspelt ferritin (extra test the site sent); row rejected"),
        (dup, "(whole row)", "copy of row %d" % (rowno(lb, dup) - 1), "REC-DUPLICATE", "warning",
         "exact duplicate of the previous row (same subject, collected, test, result); second copy rejected"),
    ]
    out = []
    rows_of = {"ae": ae, "ex": ex, "vi": vi}
    final = {"ae": {id(r): n for n, r in enumerate(ae, 1)}, "ex": {id(r): n for n, r in enumerate(ex, 1)},
             "vi": {id(r): n for n, r in enumerate(vi, 1)}}
    # resolve row numbers of non-lab mistakes (no insertions in those files)
    for f, (k, i), fld, val, code, sev, note in mistakes:
        out.append({"file": f, "row": final[k][id(rows_of[k][i])], "subject": rows_of[k][i]["subject_id"],
                    "field": fld, "value": val, "code": code, "severity": sev, "note": note})
    for obj, fld, val, code, sev, note in lab_mist:
        out.append({"file": "lab_results.csv", "row": rowno(lb, obj), "subject": obj["subject_id"],
                    "field": fld, "value": val, "code": code, "severity": sev, "note": note})
    order = ["SDTM-PARTIAL-DATE", "TERM-UNMAPPED-UNIT", "LB-NONNUMERIC-RESULT", "EX-BEFORE-CONSENT",
             "TERM-UNMAPPED-LABTEST", "REC-DUPLICATE", "REC-SCHEMA", "REC-ORPHAN"]
    out.sort(key=lambda m: order.index(m["code"]))
    return d, out


def readme_dirty(schemas: dict, data: dict, mistakes: list[dict]) -> str:
    lines = ["| # | file | row | subject | field | bad value | finding code | severity | expected handling |",
             "|---|---|---|---|---|---|---|---|---|"]
    for n, m in enumerate(mistakes, 1):
        lines.append(f"| {n} | {m['file']} | {m['row']} | {m['subject']} | {m['field']} | `{m['value']}` | "
                     f"{m['code']} | {m['severity']} | {m['note']} |")
    table = "\n".join(lines)
    return f"""# NCT04387942 dirty sample (synthetic)

**Synthetic data. No real patient.** Made by `scripts/generate_samples.py` with the same
logic as `../nct04387942/` (5 subjects, ids 101-105, site "01", consent June-July 2020,
no dropouts, no relapses, no below-detection cytokines), and then given the mistakes
sites really make: exactly one of each below, nothing else wrong. The clean version of
these rows was validated (schema + consistency checks) before the mistakes were added.

Row numbers are 1-based data rows (header excluded), as in the issue log.

{table}

Notes for the converter/tests:

- `2020-13-45` matches the regular-expression `pattern` in `visit.schema.json` (it only
  checks digit shape), so plain JSON-schema validation accepts it; REC-SCHEMA has to come
  from a calendar check of date fields (e.g. a `format` check or an explicit parse).
- The exposure typo is the subject's earliest administration by date. trialbridge keeps the
  row in EX but derives reference dates only from doses on or after consent, so subject
  103's study days do not shift by a month.
- REC-DUPLICATE: the duplicated row is an exact copy of the row before it; the
  first copy must be kept.
- The AE with subject_id 999 was subject 105's last AE (typo in the subject number), so
  subject 105 has no gap in ae_number.

## Findings that follow from the mistakes above

Two mistakes have a second, consequential finding, and the run adds one count line per
unmapped value. These are the only other findings a conversion of this folder gives:

| follows from | file | row | field | value | finding code | severity | why |
|---|---|---|---|---|---|---|---|
| 2 | lb.xpt | 85 | LBORRESU | `mq/dL` | SDTM-CT-INVALID | warning | the unit kept as given is not in CDISC UNIT (validation of the written LB; row 85 of LB after sorting) |
| 4 | visits.csv | 12 | start | `2020-07-01` | SV-OUT-OF-WINDOW | warning | DAY 0 was the day of the mistyped dose; without it the first valid dose is a day later, so DAY 0 falls on study day -1 |
| 2 | (run summary) | | units | `mq/dL` | TERM-UNMAPPED-COUNT | info | one unmapped unit value, counted |
| 5 | (run summary) | | lab_tests | `Ferritinn` | TERM-UNMAPPED-COUNT | info | one unmapped lab test, counted |

## Files

{counts_table(schemas, data)}
"""


# --------------------------------------------------------------------------- main
def main() -> int:
    schemas = load_schemas()
    with open(CONFIG, encoding="utf-8") as fh:
        config = yaml.safe_load(fh)
    rng = random.Random(SEED)

    subs = plan_main(rng)
    data = build(rng, subs, acc_start=20060000, allow_bdl=True)
    fail_if(check_schema(schemas, data), "clean set (schema)")
    fail_if(check_consistency(data, config), "clean set (consistency)")
    # sanity of the design numbers the brief asks for
    facts = {
        "subjects": len(data["subject"]) == 59,
        "screen failures": sum(s.fate == "screen_failure" for s in subs) == 1,
        "relapses": sum(1 for s in subs if s.relapse) == 6,
        "unscheduled visits": sum(1 for r in data["visit"] if r["visit"] == "UNSCHEDULED") == 3,
        "AEs": len(data["adverse_event"]) == 45,
        "serious AEs": sum(r["serious"] == "Y" for r in data["adverse_event"]) == 2,
        "partial birth dates": sum(len(r["birth_date"]) == 7 for r in data["subject"]) == 2,
    }
    fail_if([k for k, ok in facts.items() if not ok], "clean set (design facts)")
    write_csvs(schemas, data, OUT_CLEAN)
    write_text(OUT_CLEAN / "README.md", readme_clean(schemas, data, subs))

    dsubs = plan_dirty(rng)
    ddata = build(rng, dsubs, acc_start=20069000, allow_bdl=False)
    fail_if(check_schema(schemas, ddata), "dirty set before mistakes (schema)")
    fail_if(check_consistency(ddata, config), "dirty set before mistakes (consistency)")
    dirty, mistakes = make_dirty(ddata, dsubs)
    # after the mistakes, every row is still schema-valid except as intended: the JSON schemas
    # accept all eight mistakes (see README), so any schema error here is a generator bug.
    fail_if(check_schema(schemas, dirty), "dirty set (schema)")
    write_csvs(schemas, dirty, OUT_DIRTY)
    write_text(OUT_DIRTY / "README.md", readme_dirty(schemas, dirty, mistakes))

    for name, dd in (("nct04387942", data), ("nct04387942-dirty", dirty)):
        print(name + ": " + ", ".join(f"{schemas[k]['x-file']}={len(dd[k])}" for k in KINDS))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except GenerationError as exc:
        print(f"generate_samples: {exc}", file=sys.stderr)
        sys.exit(1)
