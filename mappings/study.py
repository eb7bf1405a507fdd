"""Study configurations: design facts as data (``mappings/studies/<study>.yaml``).

``load_study(ref)`` takes a study id (looked up case-insensitively among the bundled
configurations) or a path to a YAML file, and checks it against
``schemas/config/study.schema.json`` before anything uses it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from converters.issues import TrialbridgeError


@lru_cache(maxsize=1)
def _schema() -> dict:
    return json.loads(resources.files("schemas").joinpath("config/study.schema.json").read_text("utf-8"))


def bundled_studies() -> dict[str, Path]:
    folder = resources.files("mappings").joinpath("studies")
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
        return self.config["usubjid_rule"].format(study_id=self.study_id, site_id=site_id, subject_id=subject_id)

    def ts_value(self, parmcd: str) -> str | None:
        return next((t["value"] for t in self.config["trial_summary"] if t["parmcd"] == parmcd), None)


def load_study(ref: str | Path) -> Study:
    path = Path(ref)
    if not (path.suffix in (".yaml", ".yml") and path.exists()):
        studies = bundled_studies()
        key = str(ref).upper()
        if key not in studies:
            known = ", ".join(sorted(studies)) or "none"
            raise TrialbridgeError(f"unknown study {ref!r}: give a study id ({known}) or a path to a study YAML file")
        path = studies[key]
    try:
        config = yaml.safe_load(path.read_text("utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise TrialbridgeError(f"{path}: cannot read study configuration: {exc}") from exc
    errors = sorted(jsonschema.Draft202012Validator(_schema()).iter_errors(config), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.path) or "(top level)"
        raise TrialbridgeError(f"{path}: study configuration invalid at {where}: {first.message}"
                               + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""))
    return Study(config, path)
