"""The study review page: one self-contained HTML page of an SDTM folder for people who look
at a study's data (``trialbridge report``).  :mod:`.summary` works out what is shown from the
datasets, :mod:`.page` draws it; :func:`review_folder` is what the command calls."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from trialbridge.converters.core.files import check_file_target
from trialbridge.converters.core.issues import IssueLog, TrialbridgeError


@dataclass
class ReviewResult:
    path: Path
    study_id: str
    plots: dict[str, int]  # div id -> data points drawn
    findings: int
    findings_source: str


def _issues_from(path: Path) -> list[dict]:
    try:
        obj = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise TrialbridgeError(f"{path}: cannot read the findings: {exc}") from exc
    issues = obj.get("issues") if isinstance(obj, dict) else None
    if not isinstance(issues, list) or not all(isinstance(i, dict) for i in issues):
        raise TrialbridgeError(f"{path}: not an issues.json (no list of findings under 'issues')")
    return issues


def review_folder(folder: Path, output: Path, *, study_ref: str | None = None, issues: Path | None = None,
                  title: str | None = None) -> ReviewResult:
    """Read the SDTM folder with the SDTM readers, take the findings from ``issues`` (an
    issues.json) or from validating the folder, and write the review page to ``output``."""
    from trialbridge.converters.formats import sdtm as sdtm_io
    from trialbridge.converters.pipeline import validate
    from trialbridge.converters.review.page import write_page
    from trialbridge.mappings.study import load_study

    if not folder.is_dir():
        raise TrialbridgeError(f"{folder}: not a folder; report takes an SDTM folder (dm.xpt …)")
    check_file_target(output, [folder, issues], ours=b"trialbridge", what="review page", source="SDTM folder")
    datasets = sdtm_io.read_sdtm_folder(folder, IssueLog())
    if "DM" not in datasets:
        raise TrialbridgeError(f"{folder}: no DM dataset found; the review page needs DM")
    study_id = next((str(r.get("STUDYID")) for r in datasets["DM"].rows if r.get("STUDYID")), "")
    study = None
    if study_ref:
        study = load_study(study_ref)
    elif study_id:
        try:
            study = load_study(study_id)
        except TrialbridgeError:
            study = None  # no configuration: the page says what that leaves out
    if issues is not None:
        found, source = _issues_from(issues), f"from {issues.name}"
    else:
        found, source = validate(folder).log.to_json_obj()["issues"], "trialbridge validate on this folder"
    kw = dict(study=study, title=title or f"{study_id or folder.name} — study review", findings_source=source)
    counts = write_page(datasets, found, output, **kw)
    return ReviewResult(output, study_id, counts, len(found), source)
