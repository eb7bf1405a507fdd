"""Study configurations: design facts as data (``mappings/studies/<study>.yaml``).

``load_study(ref)`` takes a study id (looked up case-insensitively among the bundled
configurations) or a path to a YAML file, and checks it against
``schemas/config/study.schema.json`` before anything uses it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from trialbridge.converters.core import privacy
from trialbridge.converters.core.iso8601 import study_day
from trialbridge.converters.core.issues import TrialbridgeError, schema_problem


@lru_cache(maxsize=1)
def _schema() -> dict:
    return json.loads(resources.files("trialbridge.schemas").joinpath("config/study.schema.json").read_text("utf-8"))


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    """The study schema; its ``fhir`` section refers to the FHIR dialect schema."""
    return jsonschema.Draft202012Validator(_schema(), registry=config_registry())


@lru_cache(maxsize=1)
def config_registry():
    """The configuration schemas that refer to one another (``$ref`` between files)."""
    from referencing import Registry, Resource

    folder = resources.files("trialbridge.schemas").joinpath("config")
    registry = Registry()
    for name in ("fhir_dialect.schema.json",):
        schema = json.loads(folder.joinpath(name).read_text("utf-8"))
        registry = registry.with_resource(schema["$id"], Resource.from_contents(schema))
    return registry


def bundled_studies() -> dict[str, Path]:
    folder = resources.files("trialbridge.mappings").joinpath("studies")
    return {p.name.rsplit(".", 1)[0].upper(): Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml")}


@dataclass(frozen=True)
class Visit:
    number: float
    name: str
    day: int
    window: tuple[int, int]
    element: str | None
    baseline: bool


@dataclass
class Study:
    config: dict[str, Any]
    path: Path
    # with a key, USUBJID (and SUBJID) are pseudonyms: converters.core.privacy.pseudonym
    pseudonym_key: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def study_id(self) -> str:
        return self.config["study_id"]

    @property
    def visits(self) -> list[Visit]:
        return [
            Visit(float(v["number"]), v["name"], int(v["day"]), (int(v["window"][0]), int(v["window"][1])),
                  v.get("element"), bool(v.get("baseline", False)))
            for v in self.config["visits"]
        ]

    def site(self, site_id: str) -> dict | None:
        return next((s for s in self.config["sites"] if s["site_id"] == site_id), None)

    def arm(self, code: str) -> dict | None:
        return next((a for a in self.config["arms"] if a["code"] == code), None)

    def element(self, code: str) -> dict | None:
        return next((e for e in self.config["elements"] if e["code"] == code), None)

    def element_for_course(self, course: str) -> dict | None:
        return next((e for e in self.config["elements"] if e.get("course") == course), None)

    def usubjid(self, site_id: str, subject_id: str) -> str:
        if self.pseudonym_key is not None:
            return f"{self.study_id}-{self.subjid(site_id, subject_id)}"
        return self.config["usubjid_rule"].format(study_id=self.study_id, site_id=site_id, subject_id=subject_id)

    def subjid(self, site_id: str, subject_id: str) -> str:
        """DM.SUBJID: the subject id as the site wrote it, or its pseudonym with a key (the
        site's number next to a pseudonymised USUBJID would undo the pseudonym)."""
        if self.pseudonym_key is None:
            return subject_id
        return privacy.pseudonym(self.pseudonym_key, self.study_id, site_id, subject_id)

    def ts_value(self, parmcd: str) -> str | None:
        """The first configured TSVAL of a parameter (None when absent or given as a null flavour)."""
        return next((t.get("value") for t in self.config["trial_summary"] if t["parmcd"] == parmcd), None)


def load_study(ref: str | Path) -> Study:
    path = Path(ref)
    looks_like_path = path.suffix.lower() in (".yaml", ".yml") or "/" in str(ref) or "\\" in str(ref)
    if looks_like_path and not path.is_file():
        raise TrialbridgeError(f"{path}: no such study configuration file" if not path.exists() else
                               f"{path}: not a file (a study configuration is a YAML file)")
    if not (path.suffix.lower() in (".yaml", ".yml") and path.exists()):
        studies = bundled_studies()
        key = str(ref).upper()
        if key not in studies:
            known = ", ".join(sorted(studies)) or "none"
            raise TrialbridgeError(f"unknown study {ref!r}: give a study id ({known}) or a path to a study YAML file")
        path = studies[key]
    try:
        config = yaml.safe_load(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise TrialbridgeError(f"{path}: cannot read study configuration: {exc}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise TrialbridgeError(f"{path}: study configuration is not valid YAML{where}: {what}") from exc
    if not isinstance(config, dict):
        raise TrialbridgeError(f"{path}: study configuration invalid at (top level): a YAML "
                               f"{type(config).__name__ if config is not None else 'empty document'}, not a mapping")
    problem = schema_problem(_validator(), config)
    if problem:
        raise TrialbridgeError(f"{path}: study configuration invalid {problem}")
    for n, site in enumerate(config["sites"]):
        if site.get("time_zone") and not _known_time_zone(site["time_zone"]):
            raise TrialbridgeError(f"{path}: study configuration invalid at sites/{n}/time_zone: "
                                   f"{site['time_zone']!r} is not an IANA time zone (e.g. Asia/Shanghai)")
    return Study(config, path)


def _known_time_zone(name: str) -> bool:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def study_from_sdtm(datasets: dict) -> Study:
    """A study configuration read from an SDTM folder's own trial design (TS, TA, TE, TV, TI)
    and DM, for folders whose study has no configuration file (the CDISC pilot …): the
    configuration :func:`draft_study` drafts, used as it is."""
    if not (datasets.get("DM") is not None and datasets["DM"].rows):
        raise TrialbridgeError("the SDTM folder has no DM rows and no study configuration; give --study")
    config = draft_study(datasets)
    config.pop("todo", None)
    return Study(config, Path(f"<from SDTM {config['study_id']}>"))


def _int_day(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or abs(value) > 1e6:
        return None
    return int(value)


def _mode(values) -> str | None:
    counts: dict[str, int] = {}
    for v in values:
        if v not in (None, ""):
            counts[str(v)] = counts.get(str(v), 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] if counts else None


def draft_study(datasets: dict, define: dict | None = None) -> dict:
    """A study configuration drafted from what an SDTM folder holds: TS (title, sponsor,
    phase, planned subjects, every parameter), TE (elements), TA (arms), TV (visits, with
    windows from the study days SV observed), TI (criteria), DM (study id, sites, country,
    the USUBJID rule, arms only DM names) and EX (treatment names, route, dose form); and
    from ``define`` (what :func:`converters.formats.define.define_facts` read from a
    define.xml: the study name and description, and codelists ARMCD/ARM, ETCD/ELEMENT,
    VISITNUM/VISIT, EXTRT) where the datasets say nothing.

    What neither says is left generic and listed under ``todo`` (the schema allows it; the
    converter ignores it), one line per fact to check.  The result is checked against the
    configuration schema; a draft that fails it is a bug of ours, raised as such."""
    define = define or {}
    codelists: dict[str, list[tuple[str, str]]] = define.get("codelists") or {}
    todo: list[str] = []

    def rows(name):
        ds = datasets.get(name)
        return ds.rows if ds is not None else []

    def txt(value) -> str:
        return "" if value is None or (isinstance(value, float) and value != value) else str(value).strip()

    dm = rows("DM")
    ts: dict[str, str] = {}
    for r in rows("TS"):
        if txt(r.get("TSPARMCD")) and txt(r.get("TSVAL")):
            ts.setdefault(txt(r["TSPARMCD"]), txt(r["TSVAL"]))
    study_id = next((txt(r.get("STUDYID")) for name in ("DM", "TS", "TA") for r in rows(name) if txt(r.get("STUDYID"))),
                    "") or txt(define.get("study_name")) or "UNKNOWN"
    if study_id == "UNKNOWN":
        todo.append("study_id: no STUDYID in DM/TS/TA and no define.xml StudyName")
    title = ts.get("TITLE") or txt(define.get("study_description"))
    if not ts.get("TITLE"):
        todo.append("title: TS has no TITLE" + (" (define.xml StudyDescription used)" if title else ""))
    sponsor = ts.get("SPONSOR")
    if not sponsor:
        todo.append("sponsor: TS has no SPONSOR")

    # sites, USUBJID rule
    sites = sorted({txt(r.get("SITEID")) for r in dm if txt(r.get("SITEID"))})
    countries = sorted({txt(r.get("COUNTRY")) for r in dm if len(txt(r.get("COUNTRY"))) == 3})
    country_of = {}
    for r in dm:
        if txt(r.get("SITEID")) and len(txt(r.get("COUNTRY"))) == 3:
            country_of.setdefault(txt(r["SITEID"]), txt(r["COUNTRY"]))
    prefixes = {txt(r["USUBJID"])[: -len(f"{txt(r.get('SITEID'))}-{txt(r.get('SUBJID'))}")] for r in dm
                if txt(r.get("USUBJID")).endswith(f"{txt(r.get('SITEID'))}-{txt(r.get('SUBJID'))}")}
    if dm and len(prefixes) == 1 and all(txt(r.get("SUBJID")) and txt(r.get("SITEID")) for r in dm):
        prefix = prefixes.pop()
        rule = (prefix.replace(study_id, "{study_id}", 1) if prefix.startswith(study_id) and study_id
                else prefix.replace("{", "{{").replace("}", "}}")) + "{site_id}-{subject_id}"
    else:
        rule = "{subject_id}"
        todo.append("usubjid_rule: " + ("USUBJID is not one prefix + SITEID-SUBJID for every DM row" if dm else
                                        "no DM") + "; USUBJID is taken to be the subject id")
    if sites:
        todo.append(f"sites: names{', investigators' if sites else ''} and time zones (time_zone) of the "
                    f"{len(sites)} site(s) are not in SDTM")
    else:
        todo.append("sites: " + ("DM gives no SITEID" if dm else "no DM: sites not known"))
    if dm and not countries:
        todo.append("sites: country (ISO 3166 alpha-3) not given in DM COUNTRY")

    # treatment: every EXTRT (or define's EXTRT codelist) is in scope when FHIR is read back
    ex = rows("EX")
    names = sorted({txt(r.get("EXTRT")) for r in ex if txt(r.get("EXTRT"))}) or \
        sorted({c for c, _ in codelists.get("EXTRT", []) if c})
    treatment: dict[str, Any] = {"name": _mode(txt(r.get("EXTRT")) for r in ex) or (names[0] if names else
                                                                                     "study treatment"),
                                 "dose_per_bsa": 0, "dose_unit": _mode(txt(r.get("EXDOSU")) for r in ex) or ""}
    for key, var in (("route", "EXROUTE"), ("dose_form", "EXDOSFRM")):
        value = _mode(txt(r.get(var)) for r in ex)
        if value:
            treatment[key] = value
    todo.append("treatment: dose per body surface area (dose_per_bsa) is not in SDTM; 0 means unknown"
                + (f"; EX names {len(names)} treatments ({', '.join(names)}), all taken as the study "
                   "treatment when FHIR is read (fhir: treatment: names)" if len(names) > 1 else ""))

    # elements (TE, else define ETCD/ELEMENT)
    elements = []
    for r in rows("TE"):
        if not txt(r.get("ETCD")):
            continue
        el = {"code": txt(r["ETCD"]).upper()[:8], "name": (txt(r.get("ELEMENT")) or txt(r["ETCD"]))[:40],
              "start_rule": txt(r.get("TESTRL")) or "not given"}
        if txt(r.get("TEENRL")):
            el["end_rule"] = txt(r["TEENRL"])
        if txt(r.get("TEDUR")).startswith("P"):
            el["duration"] = txt(r["TEDUR"])
        elements.append(el)
    if not elements and codelists.get("ETCD"):
        decode = dict(codelists.get("ELEMENT", []))
        elements = [{"code": c.upper()[:8], "name": (d or decode.get(c) or c)[:40], "start_rule": "not given"}
                    for c, d in codelists["ETCD"] if c]
        todo.append("elements: from define.xml's ETCD codelist; start and end rules not given")
    if not elements:
        elements = [{"code": "UNKNOWN", "name": "not given", "start_rule": "not given"}]
        todo.append("elements: no TE dataset")
    todo.append("elements: which element a dose course (initial, maintenance, re-treatment) starts (course) "
                "is not in SDTM; SE is derived from it when FHIR or records are converted to SDTM")

    # arms (TA; arms DM names but TA does not, e.g. screen failures; else define ARMCD)
    arms: dict[str, dict] = {}
    for r in sorted(rows("TA"), key=lambda r: (txt(r.get("ARMCD")), _int_day(r.get("TAETORD")) or 0)):
        if not txt(r.get("ARMCD")):
            continue
        arm = arms.setdefault(txt(r["ARMCD"]), {"code": txt(r["ARMCD"])[:20],
                                                "name": (txt(r.get("ARM")) or txt(r["ARMCD"]))[:200], "elements": []})
        step = {"element": txt(r.get("ETCD")).upper()[:8], "epoch": txt(r.get("EPOCH"))}
        if txt(r.get("TABRANCH")):
            step["branch"] = txt(r["TABRANCH"])
        if txt(r.get("TATRANS")):
            step["transition"] = txt(r["TATRANS"])
        arm["elements"].append(step)
    if not arms and codelists.get("ARMCD"):
        arm_names = [d for d, _ in codelists.get("ARM", [])]
        for n, (code, decode) in enumerate(codelists["ARMCD"]):
            arms[code] = {"code": code[:20], "name": (decode or (arm_names[n] if n < len(arm_names) else code))[:200],
                          "elements": []}
        todo.append("arms: from define.xml's ARMCD codelist; their elements are not known")
    first = next((a["elements"][0] for a in arms.values() if a["elements"]), None)
    dm_only = sorted({(txt(r.get("ARMCD")), txt(r.get("ARM"))) for r in dm if txt(r.get("ARMCD"))
                      and txt(r.get("ARMCD")) not in arms})
    for code, name in dm_only:
        arms[code] = {"code": code[:20], "name": (name or code)[:200], "elements": []}
    if dm_only:
        todo.append(f"arms: {', '.join(c for c, _ in dm_only)} named in DM but not in TA; given the first element "
                    "of the first arm")
    for arm in arms.values():
        if not arm["elements"]:
            arm["elements"] = ([{"element": first["element"], "epoch": first["epoch"]}] if first
                               else [{"element": elements[0]["code"], "epoch": ""}])
    if not arms:
        arms = {"UNKNOWN": {"code": "UNKNOWN", "name": "not given",
                            "elements": [{"element": elements[0]["code"], "epoch": ""}]}}
        todo.append("arms: no TA dataset and no ARMCD in DM")
    todo.append(f"arms: cohorts of the {len(arms)} arm(s) (cohort) are not in SDTM")

    # visits (TV; windows from the study days SV observed)
    observed: dict[float, list[int]] = {}
    reference = {txt(r.get("USUBJID")): txt(r.get("RFSTDTC")) for r in dm}
    for r in rows("SV"):
        day, number = _int_day(r.get("SVSTDY")), r.get("VISITNUM")
        if day is None:
            day = study_day(txt(r.get("SVSTDTC")) or None, reference.get(txt(r.get("USUBJID"))) or None)
        if day is not None and isinstance(number, (int, float)) and number == number:
            observed.setdefault(float(number), []).append(day)
    visits: dict[float, dict] = {}
    for r in rows("TV"):
        number = r.get("VISITNUM")
        if not isinstance(number, (int, float)) or number != number or float(number) in visits:
            continue
        number = float(number)
        day = _int_day(r.get("VISITDY"))
        seen = observed.get(number, [])
        planned = day if day is not None else (sorted(seen)[len(seen) // 2] if seen else 0)
        window = [min(seen + [planned]), max(seen + [planned])]
        visit = {"number": int(number) if number.is_integer() else number,
                 "name": txt(r.get("VISIT")) or f"VISIT {number:g}", "day": planned, "window": window}
        visits[number] = visit
    if not visits and codelists.get("VISITNUM"):
        names_of = [d for d, _ in codelists.get("VISIT", [])]
        for n, (code, decode) in enumerate(codelists["VISITNUM"]):
            try:
                number = float(code)
            except ValueError:
                continue
            visits[number] = {"number": int(number) if number.is_integer() else number,
                              "name": decode or (names_of[n] if n < len(names_of) else code), "day": 0, "window": [0, 0]}
        todo.append("visits: from define.xml's VISITNUM codelist; planned days and windows not known")
    if visits and observed:
        todo.append("visits: windows are the range of study days SV observed (and the planned day); set the "
                    "protocol's windows")
    elif visits:
        todo.append("visits: windows are the planned day only (no SV study days); set the protocol's windows")
    else:
        visits = {1.0: {"number": 1, "name": "UNKNOWN", "day": 0, "window": [0, 0]}}
        todo.append("visits: no TV dataset")
    todo.append("visits: which visit is the baseline (baseline: true) and the element of each visit")

    criteria = []
    for r in rows("TI"):
        code, category = txt(r.get("IETESTCD"))[:8], txt(r.get("IECAT")).upper()
        if code and category in ("INCLUSION", "EXCLUSION"):
            criteria.append({"code": code, "category": category, "text": (txt(r.get("IETEST")) or code)[:200]})

    trial_summary = []
    for parmcd, value in sorted(ts.items()):
        if len(value) > 200:
            todo.append(f"trial_summary: {parmcd} cut to 200 characters (TSVAL is split over several rows in TS)")
        trial_summary.append({"parmcd": parmcd[:8], "value": value[:200]})
    if not trial_summary:
        todo.append("trial_summary: no TS dataset; give the TS parameters (docs/architecture.md, Trial summary)")

    config: dict[str, Any] = {"study_id": study_id, "title": title or study_id, "sponsor": sponsor or "not given"}
    if ts.get("REGID"):
        config["registry_id"] = ts["REGID"]
    if ts.get("TPHASE"):
        config["phase"] = ts["TPHASE"]
    if ts.get("PLANSUB", "").isdigit() and int(ts["PLANSUB"]) > 0:
        config["planned_subjects"] = int(ts["PLANSUB"])
    config.update({
        "usubjid_rule": rule,
        "sites": [{"site_id": s, "name": f"Site {s}", "country": country_of.get(s) or (countries[0] if countries
                                                                                     else "UNK")}
                  for s in sites] or [{"site_id": "UNKNOWN", "name": "not given", "country": "UNK"}],
        "treatment": treatment,
        "elements": elements,
        "arms": list(arms.values()),
        "visits": [visits[k] for k in sorted(visits)],
    })
    if criteria:
        config["criteria"] = criteria
    if len(names) > 1:
        config["fhir"] = {"treatment": {"names": names}}
    config["trial_summary"] = trial_summary
    config["todo"] = todo
    problem = schema_problem(_validator(), config)
    if problem:
        raise TrialbridgeError(f"cannot draft a study configuration from the SDTM trial design {problem}; "
                               "give --study")
    return config
