"""docs/mapping.md is up to date, and the FHIR side of it (the ``x-fhir`` annotations of
schemas/internal) is what the FHIR writer really writes: the sample, with a few fields it
leaves empty filled in, is converted to FHIR NDJSON once, and every annotated element of every
record type must be present in at least one written resource."""
from __future__ import annotations

import csv
import json
import re
import importlib.util
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from trialbridge.cli import main
from trialbridge.converters.core.records import record_types
from tests.conftest import SAMPLE

ROOT = Path(__file__).resolve().parents[1]

# fields the sample leaves empty, filled in on the first row of their file so that their
# FHIR elements are written too (values the mapping accepts)
FILL = {
    "subjects": {"death_date": "2021-06-30", "actual_arm": "{planned_arm}"},
    "adverse_events": {"llt": "{term}", "llt_code": "10019211", "pt_code": "10019211"},
    "exposures": {"adjustment_reason": "TOXICITY"},
    "lab_results": {"result": "", "unit": "", "not_done_reason": "SAMPLE HAEMOLYSED"},
    "cell_phenotypes": {"result": "", "unit": "", "not_done_reason": "SAMPLE NOT RECEIVED"},
    "visits": {"end": "{start}"},
}


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, list[dict]]:
    src = tmp_path_factory.mktemp("mapref") / "records"
    shutil.copytree(SAMPLE, src)
    for stem, values in FILL.items():
        path = src / f"{stem}.csv"
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        first = rows[0]
        for field, value in values.items():  # a column the sample lacks is added
            first[field] = value.format(**first)
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(first), restval="")
            w.writeheader()
            w.writerows(rows)
    out = src.parent / "fhir"
    result = CliRunner().invoke(main, ["convert", str(src), "--to", "fhir", "-o", str(out)])
    assert result.exit_code == 0, result.output
    by_type: dict[str, list[dict]] = {}
    for f in out.glob("*.ndjson"):
        for line in f.read_text(encoding="utf-8").splitlines():
            res = json.loads(line)
            by_type.setdefault(res["resourceType"], []).append(res)
    return by_type


_STEP = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\[([^\]]+)\])?$")


def present(node, steps: list[str]) -> bool:
    """Whether the simple path ``steps`` reaches a non-empty value in ``node``.  A step is an
    element name, ``extension[name]`` (the extension whose url ends in /name, or is name for
    a sub-extension) or ``contained[Type]`` (the contained resource of that type); lists are
    walked through."""
    if isinstance(node, list):
        return any(present(n, steps) for n in node)
    if not steps:
        if isinstance(node, dict):  # an element with something in it besides its url
            return any(v not in (None, "", {}, []) for k, v in node.items() if k != "url")
        return node not in (None, "", {}, [])
    if not isinstance(node, dict):
        return False
    m = _STEP.match(steps[0])
    assert m, steps[0]
    name, selector = m.groups()
    child = node.get(name)
    if child is None:
        return False
    if selector is not None:
        items = child if isinstance(child, list) else [child]
        if name == "extension":
            child = [e for e in items if e.get("url", "").rsplit("/", 1)[-1] == selector]
        else:
            child = [e for e in items if e.get("resourceType") == selector]
    return present(child, steps[1:])


def test_walker():
    res = {"resourceType": "Patient", "extension": [{"url": "https://x/race", "valueString": "A"},
                                                     {"url": "https://x/d", "extension": [{"url": "date"}]}],
           "contained": [{"resourceType": "Medication", "code": {"text": "x"}}]}
    assert present(res, ["extension[race]"])
    assert not present(res, ["extension[ethnicity]"])
    assert not present(res, ["extension[d]", "extension[date]"])  # no value under it
    assert present(res, ["contained[Medication]", "code", "text"])
    assert not present(res, ["contained[Specimen]", "code"])


def annotations():
    for name, rtype in record_types().items():
        for field, prop in rtype.schema["properties"].items():
            if "x-fhir" in prop:
                yield name, field, prop["x-fhir"]


def test_every_record_type_with_a_fhir_writer_is_annotated():
    from trialbridge.mappings.fhir.assemble import resource_modules

    written_types = {n for m in resource_modules() if hasattr(m, "to_fhir") for n in m.RECORD_TYPES}
    written_types.add("disposition")  # on the subject's ResearchSubject (mappings/fhir/research_subject.py)
    annotated = {name for name, _, _ in annotations()}
    assert annotated == written_types, annotated ^ written_types


def test_every_fhir_element_is_written(written):
    missing = []
    for name, field, path in annotations():
        rtype, *steps = path.split(".")
        if not any(present(res, steps) for res in written.get(rtype, [])):
            missing.append(f"{name}.{field} -> {path}")
    assert not missing, missing


def test_missing_element_is_caught(written):
    assert not any(present(r, ["extension[no-such-extension]"]) for r in written["Patient"])
    assert not any(present(r, ["deceasedBoolean"]) for r in written["Patient"])


def _builder():
    spec = importlib.util.spec_from_file_location("build_mapping_doc", ROOT / "scripts" / "build_mapping_doc.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_mapping_doc_is_up_to_date(capsys):
    assert _builder().main(["--check"]) == 0, capsys.readouterr().err


def test_mapping_doc_without_the_reference_keeps_the_ig_column(tmp_path, capsys):
    assert _builder().main(["--check", "--ig", str(tmp_path / "absent.csv")]) == 0, capsys.readouterr().err
