"""Bulk Data ``$export`` of a study's subjects (FHIR Bulk Data Access IG 2.0), into a folder
the FHIR reader takes as it is (``convert out/fhir --to records|sdtm``).

1. Kick-off: ``POST [base]/Patient/$export`` with a Parameters body naming ``_type``,
   ``_since`` and each of the study's Patients (from its ResearchSubjects), or with
   ``--group`` ``GET [base]/Group/<id>/$export?_type=…&_since=…``; ``Prefer: respond-async``.
   The answer is 202 with ``Content-Location``.
2. Poll that URL: 202 means in progress (``X-Progress`` shown, ``Retry-After`` honoured, capped);
   200 gives the manifest.  Errors of the job are reported.
3. Download each output file, streaming to disk (only from the server's own host), and check
   its line count against the manifest.
4. Delete the job (``DELETE`` on the status URL).

The study's ResearchStudy resources are not in the Patient compartment: they are read by REST
and written beside the files as ``ResearchStudy.ndjson``, listed in the manifest written to the
folder (``manifest.json``: the server's, plus that one entry) so the reader takes them too.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from trialbridge.converters.core import jsoncodec
from trialbridge.converters.core.files import OutputStage
from trialbridge.converters.core.issues import TrialbridgeError
from trialbridge.converters.sync.client import FhirClient, ServerError, outcome_text, retry_after_seconds
from trialbridge.converters.sync.pull import study_members
from trialbridge.converters.sync.push import SyncSummary

EXPORT_TYPES = ("Patient", "ResearchSubject", "Encounter", "Observation", "MedicationAdministration", "AdverseEvent")
MAX_POLL_SECONDS = 3600.0


def export(client: FhirClient, study_id: str, output: Path, *, group: str | None = None, since: str | None = None,
           types: tuple[str, ...] = EXPORT_TYPES, poll_wait: float = 1.0,
           progress: Callable[[str], None] | None = None) -> SyncSummary:
    summary = SyncSummary("export")
    summary.extra.update({"study": study_id, "since": since})
    try:
        members, patients, _began = study_members(client, study_id)
        status_url = _kick_off(client, patients, group, since, types)
        manifest = _poll(client, status_url, poll_wait, progress)
        with OutputStage(Path(output)) as stage:
            files = []
            local = {"output": [], "error": []}
            seen: dict[str, int] = {}
            for kind in ("output", "error"):
                for item in manifest.get(kind) or []:
                    # named <Type>-<n>.ndjson here (the server's names hold its job id), the manifest
                    # rewritten to match, the server's url kept beside
                    rtype = str(item.get("type") or "OperationOutcome")
                    seen[rtype] = seen.get(rtype, 0) + 1
                    name = f"{rtype}-{seen[rtype]}.ndjson" if kind == "output" else f"error-{rtype}-{seen[rtype]}.ndjson"
                    count = _download(client, item, stage, name)
                    local[kind].append({**item, "url": name, "extension": {"server_url": item.get("url")}})
                    files.append(name)
                    if kind == "output":
                        summary.add(rtype, "created", count)
            manifest = {**manifest, **local}
            for item in local["error"]:
                name = item["url"]
                summary.log.warning("SYNC-EXPORT-ERRORS", f"the export job reports errors in {name} (OperationOutcome "
                                    "resources; the reader reports each)", file=name)
            studies = list(members["ResearchStudy"].values())
            with open(stage.file("ResearchStudy.ndjson"), "wb") as fh:
                for res in studies:
                    fh.write(jsoncodec.dumps(res) + b"\n")
            summary.add("ResearchStudy", "created", len(studies))
            manifest["output"] = [*(manifest.get("output") or []),
                                  {"type": "ResearchStudy", "url": "ResearchStudy.ndjson", "count": len(studies),
                                   "extension": {"note": "read by REST by trialbridge: not in the Patient compartment"}}]
            stage.file("manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", "utf-8")
            stage.commit()
        response = client.send("DELETE", status_url)
        summary.extra["job_deleted"] = response.status_code in (200, 202, 204)
    except ServerError as exc:
        raise TrialbridgeError(f"{client.origin}: {exc}") from None
    summary.extra["files"] = sorted(files)
    summary.requests, summary.retries = client.requests, client.retries
    return summary


def _kick_off(client: FhirClient, patients: list[str], group: str | None, since: str | None,
              types: tuple[str, ...]) -> str:
    headers = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
    if group:
        query = f"_type={','.join(types)}" + (f"&_since={since}" if since else "")
        response = client.send("GET", f"Group/{group}/$export?{query}", headers=headers)
    else:
        params = [{"name": "_type", "valueString": ",".join(types)}]
        if since:
            params.append({"name": "_since", "valueInstant": since})
        params += [{"name": "patient", "valueReference": {"reference": p}} for p in patients]
        response = client.send("POST", "Patient/$export", {"resourceType": "Parameters", "parameter": params},
                               headers=headers)
    if response.status_code != 202 or not response.headers.get("Content-Location"):
        raise ServerError(response.status_code, "the $export kick-off was not accepted: " + outcome_text(_json(response)))
    return response.headers["Content-Location"]


def _poll(client: FhirClient, status_url: str, poll_wait: float, progress) -> dict:
    started = time.monotonic()
    wait = poll_wait
    while True:
        response = client.send("GET", status_url)
        if response.status_code == 200:
            manifest = _json(response)
            if not isinstance(manifest, dict) or not isinstance(manifest.get("output"), list):
                raise ServerError(200, "the $export status answer is not a manifest")
            return manifest
        if response.status_code != 202:
            raise ServerError(response.status_code, "the $export job failed: " + outcome_text(_json(response)))
        if progress and response.headers.get("X-Progress"):
            progress(response.headers["X-Progress"])
        said = retry_after_seconds(response.headers.get("Retry-After"))
        pause = min(said if said is not None else wait, client.retry.max_wait)
        if time.monotonic() - started + pause > MAX_POLL_SECONDS:
            raise TrialbridgeError(f"{client.origin}: the $export job did not finish within an hour; its status URL "
                                   "is kept on the server")
        time.sleep(pause)
        wait = min(wait * 2, client.retry.max_wait)


def _download(client: FhirClient, item: dict, stage: OutputStage, name: str) -> int:
    url = str(item.get("url") or "")
    target = stage.file(name)
    response = client.send("GET", url, headers={"Accept": "application/fhir+ndjson"}, stream=True)
    lines = 0
    try:
        if response.status_code != 200:
            response.read()
            raise ServerError(response.status_code, f"download of {name}: " + outcome_text(_json(response)))
        with open(target, "wb") as fh:
            for chunk in response.iter_bytes():
                fh.write(chunk)
                lines += chunk.count(b"\n")
    finally:
        response.close()
    count = item.get("count")
    if isinstance(count, int) and count != lines:
        raise ServerError(200, f"{name}: the manifest says {count} resources, the file has {lines} lines")
    return lines


def _json(response):
    try:
        return jsoncodec.loads(response.content) if response.content else None
    except ValueError:
        return None
