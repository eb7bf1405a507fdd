"""Installed, trialbridge takes one top-level name: every package folder of the repository
is listed under the ``trialbridge`` namespace in pyproject.toml, and nothing generic
(``converters``, ``mappings``, ``schemas``, ``cli``) lands in site-packages."""
from __future__ import annotations

import importlib.util
import sysconfig
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_under_the_trialbridge_namespace():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"]
    assert config["package-dir"] == {"trialbridge": "."}
    on_disk = {"trialbridge." + ".".join(init.parent.relative_to(ROOT).parts)
               for top in ("converters", "mappings", "schemas") for init in (ROOT / top).rglob("__init__.py")}
    assert set(config["packages"]) == on_disk | {"trialbridge"}


def test_no_generic_top_level_name_is_installed():
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    for name in ("converters", "mappings", "schemas", "cli"):
        spec = importlib.util.find_spec(name)
        origin = Path(spec.origin).resolve() if spec is not None and spec.origin else None
        assert origin is None or site not in origin.parents, f"{name} installed at top level: {origin}"
    spec = importlib.util.find_spec("trialbridge.cli")
    assert spec is not None and Path(spec.origin).name == "cli.py"
