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
    """A study configuration read from an SDTM folder's own trial design (TS, TA, TE, TV)
    and DM, for folders whose study has no configuration file (the CDISC pilot …).

    What SDTM does not say is left generic and visible as such: the treatment is the first
    EXTRT with dose per BSA 0 (unknown), element start rules come from TE.  The result is
    checked against the same schema as a hand-written configuration."""
    def rows(name):
        ds = datasets.get(name)
        return ds.rows if ds is not None else []

    dm = rows("DM")
    if not dm:
        raise TrialbridgeError("the SDTM folder has no DM rows and no study configuration; give --study")
    study_id = str(dm[0].get("STUDYID") or "UNKNOWN")
    ts = {}
    for r in rows("TS"):
        ts.setdefault(r.get("TSPARMCD"), str(r.get("TSVAL") or ""))
    sites = sorted({str(r.get("SITEID") or "") for r in dm if r.get("SITEID")})
    country = next((str(r["COUNTRY"]) for r in dm if r.get("COUNTRY")), "UNK")
    prefixes = {str(r["USUBJID"])[: -len(f"{r.get('SITEID')}-{r.get('SUBJID')}")] for r in dm
                if str(r.get("USUBJID", "")).endswith(f"{r.get('SITEID')}-{r.get('SUBJID')}")}
    if len(prefixes) == 1 and len([r for r in dm if r.get("SUBJID")]) == len(dm):
        rule = prefixes.pop().replace("{", "{{").replace("}", "}}") + "{site_id}-{subject_id}"
    else:
        rule = "{subject_id}"
    elements = [{"code": str(r["ETCD"])[:8], "name": str(r.get("ELEMENT") or r["ETCD"])[:40],
                 "start_rule": str(r.get("TESTRL") or "not given")} for r in rows("TE") if r.get("ETCD")]
    arms: dict[str, dict] = {}
    for r in sorted(rows("TA"), key=lambda r: (str(r.get("ARMCD")), r.get("TAETORD") or 0)):
        arm = arms.setdefault(str(r["ARMCD"]), {"code": str(r["ARMCD"])[:20], "name": str(r.get("ARM") or r["ARMCD"]),
                                                "elements": []})
        arm["elements"].append({"element": str(r.get("ETCD")), "epoch": str(r.get("EPOCH") or "")})
    visits = {}
    for r in rows("TV"):
        if r.get("VISITNUM") is not None and r.get("VISITNUM") not in visits:
            day = int(r["VISITDY"]) if isinstance(r.get("VISITDY"), (int, float)) and r["VISITDY"] == r["VISITDY"] else 0
            visits[r["VISITNUM"]] = {"number": r["VISITNUM"], "name": str(r.get("VISIT") or r["VISITNUM"]), "day": day,
                                     "window": [day, day]}
    extrt = next((str(r["EXTRT"]) for r in rows("EX") if r.get("EXTRT")), "study treatment")
    config = {
        "study_id": study_id,
        "title": ts.get("TITLE") or study_id,
        "sponsor": ts.get("SPONSOR") or "not given",
        "usubjid_rule": rule,
        "sites": [{"site_id": s, "name": f"Site {s}", "country": country if len(country) == 3 else "UNK"}
                  for s in sites] or [{"site_id": "UNKNOWN", "name": "not given", "country": "UNK"}],
        "treatment": {"name": extrt, "dose_per_bsa": 0, "dose_unit": ""},
        "elements": elements or [{"code": "UNKNOWN", "name": "not given", "start_rule": "not given"}],
        "arms": list(arms.values()) or [{"code": "UNKNOWN", "name": "not given",
                                          "elements": [{"element": "UNKNOWN", "epoch": ""}]}],
        "visits": sorted(visits.values(), key=lambda v: v["number"]) or
        [{"number": 1, "name": "UNKNOWN", "day": 0, "window": [0, 0]}],
        "trial_summary": [{"parmcd": str(k)[:8], "value": v[:200]} for k, v in sorted(ts.items()) if k and v],
    }
    problem = schema_problem(_validator(), config)
    if problem:
        raise TrialbridgeError(f"cannot build a study configuration from the SDTM trial design {problem}; "
                               "give --study")
    return Study(config, Path(f"<from SDTM {study_id}>"))
