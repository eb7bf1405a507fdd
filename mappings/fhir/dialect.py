"""A site's FHIR dialect as data: how one hospital writes trial FHIR.

Hospitals do not write our identifier systems or our arm codes.  What a site's export
means is configuration, checked by ``schemas/config/fhir_dialect.schema.json``:

* the ``fhir:`` section of the study configuration: what every site of the study shares
  (typically the study treatment's codes: ATC, RxNorm, SNOMED CT, local);
* one file per site in ``mappings/fhir/sites/<site>.yaml`` (``name``, ``study_id``,
  ``site_id`` and the same elements): the identifier systems that carry the subject id, the
  site id and the MRN, the site's arm names and Encounter labels, the code system URIs and
  local codes it writes.  Files are found by scanning the folder (no list to edit).

:func:`choose` picks the site file whose identifier systems occur in the input (none: the
study's section alone; several: a usage error naming them) and lays it over the study's
section (:class:`Dialect`).  What the dialect leaves open is inferred where one reading is
unambiguous and reported (:mod:`.assemble`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import yaml

from trialbridge.converters.core.issues import TrialbridgeError, schema_problem

SITES_FOLDER = "fhir/sites"  # under the trialbridge.mappings package


def _fold(text: Any) -> str:
    return " ".join(str(text).split()).casefold()


@dataclass(frozen=True)
class Dialect:
    """A study's FHIR section with at most one site file laid over it."""

    name: str = "study configuration"
    source: str = ""
    site_id: str | None = None
    subject_id_systems: tuple[str, ...] = ()
    site_id_systems: tuple[str, ...] = ()
    study_id_systems: tuple[str, ...] = ()
    mrn_systems: tuple[str, ...] = ()
    sites: dict[str, str] = field(default_factory=dict)
    arms: dict[str, str] = field(default_factory=dict)  # folded site arm text -> configured arm code
    visits: dict[str, str] = field(default_factory=dict)  # folded Encounter label -> planned visit name
    treatment_codes: frozenset[tuple[str, str]] = frozenset()
    treatment_names: frozenset[str] = frozenset()  # folded
    system_aliases: dict[str, str] = field(default_factory=dict)  # written URI -> canonical URI
    local_codes: dict[tuple[str, str], dict] = field(default_factory=dict)  # (system, code) -> coding

    @property
    def systems(self) -> frozenset[str]:
        """Every identifier system the dialect names (how an input is matched to a site)."""
        return frozenset(self.subject_id_systems + self.site_id_systems + self.mrn_systems + self.study_id_systems)

    def arm_code(self, text: str | None) -> str | None:
        return self.arms.get(_fold(text)) if text else None

    def visit_name(self, label: str | None) -> str | None:
        return self.visits.get(_fold(label)) if label else None

    def canonical_system(self, system: str | None) -> str | None:
        return self.system_aliases.get(system, system) if system else system

    def normalise_codings(self, cc: dict | None) -> dict | None:
        """A copy of a CodeableConcept with canonical system URIs and, after each local code
        the dialect knows, the standard coding it stands for."""
        if not cc or not isinstance(cc, dict) or not (self.system_aliases or self.local_codes):
            return cc
        codings = []
        for c in cc.get("coding") or []:
            c = {**c, "system": self.canonical_system(c.get("system"))} if c.get("system") else dict(c)
            codings.append(c)
            means = self.local_codes.get((c.get("system"), c.get("code")))
            if means:
                codings.append(dict(means))
        return {**cc, "coding": codings}


def _section(data: dict, name: str, source: str, site_id: str | None = None) -> Dialect:
    ident = data.get("identifiers") or {}
    treatment = data.get("treatment") or {}
    aliases = {alias: canonical for canonical, others in (data.get("code_systems") or {}).items() for alias in others}
    return Dialect(
        name=name, source=source, site_id=site_id,
        subject_id_systems=tuple(ident.get("subject_id") or ()), site_id_systems=tuple(ident.get("site_id") or ()),
        study_id_systems=tuple(ident.get("study_id") or ()), mrn_systems=tuple(ident.get("mrn") or ()),
        sites=dict(data.get("sites") or {}),
        arms={_fold(a["site"]): a["arm"] for a in data.get("arms") or []},
        visits={_fold(k): v for k, v in (data.get("visits") or {}).items()},
        treatment_codes=frozenset((c["system"], c["code"]) for c in treatment.get("codes") or []),
        treatment_names=frozenset(_fold(n) for n in treatment.get("names") or []),
        system_aliases=aliases,
        local_codes={(c["system"], c["code"]): {k: v for k, v in c["means"].items()} for c in data.get("codes") or []},
    )


def _over(base: Dialect, site: Dialect) -> Dialect:
    """``site`` laid over ``base``: lists and maps of the site win where it gives them; the
    study treatment's codes and names, code system aliases and local codes are combined."""
    return Dialect(
        name=site.name, source=site.source, site_id=site.site_id,
        subject_id_systems=site.subject_id_systems or base.subject_id_systems,
        site_id_systems=site.site_id_systems or base.site_id_systems,
        study_id_systems=site.study_id_systems or base.study_id_systems,
        mrn_systems=site.mrn_systems or base.mrn_systems,
        sites={**base.sites, **site.sites}, arms={**base.arms, **site.arms}, visits={**base.visits, **site.visits},
        treatment_codes=base.treatment_codes | site.treatment_codes,
        treatment_names=base.treatment_names | site.treatment_names,
        system_aliases={**base.system_aliases, **site.system_aliases},
        local_codes={**base.local_codes, **site.local_codes},
    )


@lru_cache(maxsize=1)
def _validator():
    import jsonschema

    from trialbridge.mappings.study import config_registry

    schema = json.loads(resources.files("trialbridge.schemas").joinpath("config/fhir_dialect.schema.json")
                        .read_text("utf-8"))
    return jsonschema.Draft202012Validator(schema, registry=config_registry())


def load_site_file(path: Path | Any) -> tuple[dict, Dialect]:
    """One site file, checked against its schema (a usage error when it does not fit)."""
    try:
        data = yaml.safe_load(path.read_text("utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise TrialbridgeError(f"{path}: cannot read FHIR site dialect: {exc}") from exc
    problem = schema_problem(_validator(), data)
    if problem:
        raise TrialbridgeError(f"{path}: FHIR site dialect invalid {problem}")
    return data, _section(data, data["name"], str(path), data["site_id"])


def site_files(study_id: str) -> list[tuple[dict, Dialect]]:
    """The site dialects of ``mappings/fhir/sites/`` written for ``study_id``."""
    folder = resources.files("trialbridge.mappings").joinpath(SITES_FOLDER)
    if not folder.is_dir():
        return []
    out = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.endswith((".yaml", ".yml")):
            data, dialect = load_site_file(entry)
            if _fold(data["study_id"]) == _fold(study_id):
                out.append((data, dialect))
    return out


def study_section(study) -> Dialect:
    config = getattr(study, "config", None) or {}
    return _section(config.get("fhir") or {}, "study configuration", str(getattr(study, "path", "")))


def choose(study, systems_seen: Iterable[str], candidates: list[Dialect] | None = None) -> Dialect:
    """The dialect an input is read with: the site file whose identifier systems occur in the
    input, over the study's own section; several matching site files are a usage error.
    ``candidates``: the site dialects to choose from (default: the bundled site files)."""
    base = study_section(study)
    seen = set(systems_seen)
    if candidates is None:
        candidates = [d for _data, d in site_files(study.study_id)]
    matching = [d for d in candidates if d.systems & seen]
    if len(matching) > 1:
        names = "; ".join(f"{d.name} ({d.source})" for d in matching)
        raise TrialbridgeError(f"the input's identifier systems fit several FHIR site dialects of study "
                               f"{study.study_id}: {names}; keep one, or give the systems that tell them apart")
    return _over(base, matching[0]) if matching else base


__all__ = ["Dialect", "choose", "site_files", "study_section", "load_site_file"]
