"""Pull a trial's subjects' data from a FHIR server into a records folder, incrementally.

1. The study: ``ResearchStudy?identifier=<study id>`` and its sites
   (``ResearchStudy?partof=ResearchStudy/<id>``); its subjects: ``ResearchSubject?study=…``
   for each; their Patients, read by id (the Patient references of the ResearchSubjects).
2. Per subject and type (Encounter, Observation, MedicationAdministration, AdverseEvent):
   ``Type?subject=Patient/<id>&_lastUpdated=ge<watermark>`` (Observation also ``&code=`` when
   codes are given), searches sent as batch Bundles; each result is paged by its ``next``
   link, or by ``_count``/``_offset`` when the server gives none.
3. What came is merged into the folder's copy of the server's resources
   (``sync-fhir-<Type>.ndjson``, one line per resource, the newest version by id) and the whole
   copy is read into records through the real-world FHIR reader (as ``convert --to records``).
4. The watermark (``sync-state.json``) is the server's clock when this run began (its ``Date``
   header): the next run asks for what changed since.  Records, copy and watermark are
   published together, in one swap of the output folder, after everything was fetched: a run
   that fails midway publishes nothing, the next run starts from the same watermark, and a
   resource fetched twice is one line, by id — nothing lost, nothing doubled.
"""
from __future__ import annotations

import email.utils
import json
import shutil
import tempfile
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from trialbridge.converters.core import jsoncodec
from trialbridge.converters.core.files import MANIFEST, OutputStage
from trialbridge.converters.core.issues import TrialbridgeError
from trialbridge.converters.sync.client import FhirClient, ServerError, entry_status, outcome_text
from trialbridge.converters.sync.push import SyncSummary, ndjson_lines, same_content

STATE_FILE = "sync-state.json"
COPY_PREFIX = "sync-fhir-"
STUDY_TYPES = ("ResearchStudy", "ResearchSubject", "Patient")
CLINICAL_TYPES = ("Encounter", "Observation", "MedicationAdministration", "AdverseEvent")


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def server_clock(client: FhirClient, response_date: str | None) -> str:
    """The server's time from its ``Date`` header (our own clock, a minute back, without one)."""
    if response_date:
        try:
            return _iso(email.utils.parsedate_to_datetime(response_date))
        except (TypeError, ValueError):
            pass
    return _iso(datetime.now(timezone.utc) - timedelta(minutes=1))


def read_state(folder: Path) -> dict:
    path = folder / STATE_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise TrialbridgeError(f"{path}: unreadable sync state ({exc}); remove the folder to pull everything") \
            from None


def search_all(client: FhirClient, queries: list[str]) -> Iterator[tuple[str, dict]]:
    """Every resource matching each query (query, resource): batch Bundles of searches, each
    result followed by its ``next`` link, else by ``_offset`` while the server's total (or a
    full page) says more is there."""
    page = client.limits.page_size
    pending = [_with(q, _count=page) for q in queries]
    origin = {p: q for p, q in zip(pending, queries)}
    while pending:
        step = client.limits.batch_reads
        batch, pending = pending[:step], pending[step:]
        answers = client.bundle("batch", [{"request": {"method": "GET", "url": q}} for q in batch])
        for query, answer in zip(batch, answers):
            status = entry_status(answer)
            bundle = answer.get("resource") or {}
            if status >= 300:
                raise ServerError(status, f"{query.split('?')[0]} search: "
                                          f"{outcome_text((answer.get('response') or {}).get('outcome'))}")
            entries = [e["resource"] for e in bundle.get("entry") or [] if e.get("resource")
                       and (e.get("search") or {}).get("mode", "match") == "match"]
            for res in entries:
                yield origin[query], res
            nxt = next((link.get("url") for link in bundle.get("link") or [] if link.get("relation") == "next"), None)
            if nxt:
                follow = _relative(client, nxt)
            else:
                offset = int(dict(parse_qsl(urlsplit(query).query)).get("_offset", 0)) + len(entries)
                total = bundle.get("total")
                more = offset < total if isinstance(total, int) else len(entries) >= page
                follow = _with(query, _offset=offset) if more and entries else None
            if follow:
                origin[follow] = origin[query]
                pending.append(follow)


def _relative(client: FhirClient, url: str) -> str:
    full = client.url(url)  # a link to another host is refused there
    return full[len(client.base) + 1:] if full.startswith(client.base + "/") else full


def _with(query: str, **params) -> str:
    path, _, qs = query.partition("?")
    pairs = [(k, v) for k, v in parse_qsl(qs, keep_blank_values=True) if k not in params]
    pairs += [(k, str(v)) for k, v in params.items()]
    return path + "?" + urlencode(pairs, safe=":/|,")


def study_members(client: FhirClient, study_id: str) -> tuple[dict[str, dict[str, dict]], list[str], str]:
    """The study's ResearchStudy resources (sponsor and sites), ResearchSubjects and Patients,
    by type and id; the Patient references; the server's clock when the first answer came."""
    first = client.send("GET", f"ResearchStudy?identifier={quote(study_id, safe='')}")
    began = server_clock(client, first.headers.get("Date"))
    if first.status_code >= 300:
        raise ServerError(first.status_code, outcome_text(_json(first)))
    got: dict[str, dict[str, dict]] = {t: {} for t in STUDY_TYPES}
    sponsors = [e["resource"] for e in (_json(first) or {}).get("entry") or [] if e.get("resource")]
    if not sponsors:
        raise TrialbridgeError(f"{client.origin}: no ResearchStudy with identifier {study_id!r} on the server")
    for res in sponsors:
        got["ResearchStudy"][res["id"]] = res
    for _q, res in search_all(client, [f"ResearchStudy?partof=ResearchStudy/{r['id']}" for r in sponsors]):
        got["ResearchStudy"][res["id"]] = res
    studies = [f"ResearchStudy/{i}" for i in got["ResearchStudy"]]
    for _q, res in search_all(client, [f"ResearchSubject?study={s}" for s in studies]):
        got["ResearchSubject"][res["id"]] = res
    patients = sorted({(r.get("individual") or {}).get("reference") for r in got["ResearchSubject"].values()} - {None})
    for status, res in client.read_many(patients):
        if status == 200 and isinstance(res, dict) and res.get("resourceType") == "Patient":
            got["Patient"][res["id"]] = res
    return got, patients, began


def fetch(client: FhirClient, study_id: str, since: str | None, codes: list[str] | None = None,
          progress: Callable[[int], None] | None = None) -> tuple[dict[str, dict[str, dict]], str]:
    """The study's resources changed since ``since`` (all when None), by type and id, and the
    server's clock when the fetch began."""
    members, patients, began = study_members(client, study_id)
    got: dict[str, dict[str, dict]] = {**members, **{t: {} for t in CLINICAL_TYPES}}
    if progress:
        progress(sum(len(v) for v in got.values()))
    window = {"_lastUpdated": f"ge{since}"} if since else {}
    for rtype in CLINICAL_TYPES:
        extra = dict(window)
        if rtype == "Observation" and codes:
            extra["code"] = ",".join(codes)
        queries = [_with(f"{rtype}?subject={p}", **extra) for p in patients]
        n = 0
        for _q, res in search_all(client, queries):
            got[rtype][res["id"]] = res
            n += 1
        if progress:
            progress(n)
    return got, began


def _json(response):
    try:
        return jsoncodec.loads(response.content) if response.content else None
    except ValueError:
        return None


def _copy_lines(folder: Path, rtype: str) -> Iterator[tuple[str, bytes]]:
    for line in ndjson_lines(folder / f"{COPY_PREFIX}{rtype}.ndjson"):
        yield jsoncodec.loads(line)["id"], line


def merge(previous: Path | None, fetched: dict[str, dict[str, dict]], into: Path, summary: SyncSummary) -> None:
    """``previous`` copy (may be None) + what was fetched -> ``into``: one line per resource,
    the fetched version replacing the old; counted created / updated / unchanged."""
    for rtype, new in fetched.items():
        summary.counts.setdefault(rtype, Counter())
        left = dict(new)
        lines: list[bytes] = []
        for rid, line in (_copy_lines(previous, rtype) if previous else ()):
            if rid in left:
                res = left.pop(rid)
                summary.add(rtype, "unchanged" if same_content(res, jsoncodec.loads(line)) else "updated")
                lines.append(jsoncodec.dumps(res))
            else:
                lines.append(line)
        for rid in sorted(left):
            summary.add(rtype, "created")
            lines.append(jsoncodec.dumps(left[rid]))
        if lines:
            (into / f"{COPY_PREFIX}{rtype}.ndjson").write_bytes(b"\n".join(lines) + b"\n")


def pull(client: FhirClient, study_id: str, output: Path, *, since: str | None = None,
         codes: list[str] | None = None, progress: bool = False) -> SyncSummary:
    """Pull (or bring up to date) the records folder ``output`` from the server."""
    from trialbridge.converters import pipeline

    output = Path(output)
    state = read_state(output) if output.is_dir() else {}
    if state and state.get("study") != study_id:
        raise TrialbridgeError(f"{output}: holds a pull of study {state.get('study')!r}, not {study_id!r}")
    if state and state.get("server") != client.base:
        raise TrialbridgeError(f"{output}: holds a pull from another server; pull into a new folder")
    if since is not None and not state:
        try:
            moment = datetime.fromisoformat(since.replace("Z", "+00:00"))
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            raise TrialbridgeError(f"--since {since!r}: give an instant with its offset, e.g. 2021-03-01T00:00:00Z")
        since = _iso(moment)
    watermark = state.get("watermark") or since
    summary = SyncSummary("pull")
    summary.extra.update({"study": study_id, "since": watermark})
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(unit="resource", desc="pull", leave=False)
    try:
        fetched, began = fetch(client, study_id, watermark, codes, progress=bar.update if bar else None)
    except ServerError as exc:
        raise TrialbridgeError(f"{client.origin}: {exc}; nothing was published, the next run starts from the "
                               "same watermark") from None
    finally:
        if bar:
            bar.close()
    with tempfile.TemporaryDirectory(prefix="trialbridge-pull-") as tmp:
        copy = Path(tmp) / "fhir"
        copy.mkdir()
        merge(output if state else None, fetched, copy, summary)
        records = Path(tmp) / "records"
        # the copy, named as the FHIR reader expects, is read whole into records
        reading = Path(tmp) / "read"
        reading.mkdir()
        for p in copy.iterdir():
            shutil.copyfile(p, reading / p.name[len(COPY_PREFIX):])
        result = pipeline.convert(reading, "records", records, study_ref=study_id)
        summary.log = result.log
        with OutputStage(output) as stage:
            for p in sorted(records.iterdir()):
                if p.is_file() and p.name != MANIFEST and not p.name.startswith("."):
                    shutil.copyfile(p, stage.file(p.name))
            for p in sorted(copy.iterdir()):
                shutil.copyfile(p, stage.file(p.name))
            new_state = {"study": study_id, "server": client.base, "watermark": began,
                         "previous_watermark": watermark}
            stage.file(STATE_FILE).write_text(json.dumps(new_state, indent=1) + "\n", "utf-8")
            stage.commit()
    summary.extra["watermark"] = began
    summary.requests, summary.retries = client.requests, client.retries
    return summary
