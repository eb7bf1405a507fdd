"""Push a trial to a FHIR server, idempotently.

What is pushed is what ``convert --to fhir`` builds (ResearchStudy for the sponsor and each
site, Patient, ResearchSubject, Encounter, MedicationAdministration, Observation,
AdverseEvent), type by type in that order so references point at what is already there.
For each chunk of resources of one type:

1. **read what is there**, by business identifier (a batch of ``GET Type?identifier=s|v``):
   every resource we write carries one (``mappings.fhir``: subject-id, study-id, site-id,
   resource-key ...).  R4 AdverseEvent has no ``identifier`` search parameter, so an
   AdverseEvent is read by its id (uuid5 of study, subject and AE number) instead;
2. **compare** ignoring ``meta`` (and the id the server keeps): numbers by value, since a
   JavaScript server does not keep ``1.30`` apart from ``1.3``;
3. **write only what is new or changed**: new resources as ``PUT Type/<id>`` (create with our
   deterministic id, so references hold), changed ones as a conditional update
   ``PUT Type?identifier=s|v`` (AdverseEvent: ``PUT AdverseEvent/<id>``), in transaction
   Bundles cut to the server's limits; a transaction the server refuses is sent again as a
   batch, so one bad resource fails alone, with the server's OperationOutcome, and the others
   are written.

A second identical push writes nothing: every resource is unchanged and no version moves.
"""
from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import quote

from trialbridge.converters.core import jsoncodec
from trialbridge.converters.core.issues import IssueLog, TrialbridgeError
from trialbridge.converters.sync.client import FhirClient, ServerError, entry_status, outcome_text

PUSH_ORDER = ("ResearchStudy", "Patient", "ResearchSubject", "Encounter", "MedicationAdministration",
              "Observation", "AdverseEvent")
NO_IDENTIFIER_SEARCH = frozenset({"AdverseEvent"})  # R4: no `identifier` search parameter
OUTCOMES = ("created", "updated", "unchanged", "failed")


@dataclass
class Failure:
    resource_type: str
    resource_id: str
    status: int
    outcome: str


@dataclass
class SyncSummary:
    """Per resource type: created / updated / unchanged / failed, and each failure."""

    action: str
    counts: dict[str, Counter] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    planned: list[tuple[str, str, str]] = field(default_factory=list)  # dry run: (change, type, id)
    dry_run: bool = False
    requests: int = 0
    retries: int = 0
    log: IssueLog = field(default_factory=IssueLog)
    extra: dict = field(default_factory=dict)

    def add(self, rtype: str, outcome: str, n: int = 1) -> None:
        self.counts.setdefault(rtype, Counter())[outcome] += n

    def totals(self) -> Counter:
        out: Counter = Counter()
        for c in self.counts.values():
            out.update(c)
        return out

    def as_json(self) -> dict:
        return {"action": self.action, "dry_run": self.dry_run,
                "counts": {t: {k: c.get(k, 0) for k in OUTCOMES} for t, c in self.counts.items()},
                "totals": {k: self.totals().get(k, 0) for k in OUTCOMES},
                "failures": [vars(f) for f in self.failures],
                **({"planned": [list(p) for p in self.planned]} if self.dry_run else {}),
                "findings": {k: self.log.counts().get(k, 0) for k in ("error", "warning", "info")},
                "requests": self.requests, "retries": self.retries, **self.extra}


def search_key(resource: dict) -> str:
    """The read that finds this resource on the server: by business identifier, or by id for
    types that cannot be searched by identifier."""
    rtype = resource["resourceType"]
    if rtype not in NO_IDENTIFIER_SEARCH:
        ident = next((i for i in resource.get("identifier") or [] if i.get("system") and i.get("value")), None)
        if ident is not None:
            return f"{rtype}?identifier={quote(ident['system'], safe=':/')}|{quote(str(ident['value']), safe='')}"
    return f"{rtype}/{resource['id']}"


def comparable(value: Any) -> Any:
    """A resource as compared: no meta, numbers by value, keys in any order."""
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items() if k != "meta"}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float, Decimal)):
        return Decimal(str(value)).normalize()
    return value


def same_content(ours: dict, theirs: dict) -> bool:
    a, b = comparable(ours), comparable(theirs)
    a.pop("id", None)
    b.pop("id", None)
    return a == b


def ndjson_lines(path: Path) -> Iterator[bytes]:
    """The non-blank lines of an NDJSON file (none when it is absent), without their newline."""
    if not path.is_file():
        return
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                yield line.rstrip(b"\n")


def read_ndjson(folder: Path, rtype: str) -> Iterator[dict]:
    for line in ndjson_lines(folder / f"{rtype}.ndjson"):
        yield jsoncodec.loads(line)


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def push_resources(client: FhirClient, folder: Path, *, dry_run: bool = False,
                   progress: Callable[[str, int], None] | None = None,
                   summary: SyncSummary | None = None) -> SyncSummary:
    """Push the ``<Type>.ndjson`` files of ``folder`` (what ``convert --to fhir`` wrote)."""
    summary = summary or SyncSummary("push", dry_run=dry_run)
    step = client.limits.batch_reads
    for rtype in PUSH_ORDER:
        chunk: list[dict] = []
        for res in read_ndjson(folder, rtype):
            chunk.append(res)
            if len(chunk) == step:
                _push_chunk(client, rtype, chunk, summary, dry_run)
                if progress:
                    progress(rtype, len(chunk))
                chunk = []
        if chunk:
            _push_chunk(client, rtype, chunk, summary, dry_run)
            if progress:
                progress(rtype, len(chunk))
    summary.requests, summary.retries = client.requests, client.retries
    return summary


def _push_chunk(client: FhirClient, rtype: str, resources: list[dict], summary: SyncSummary, dry_run: bool) -> None:
    keys = [search_key(r) for r in resources]
    found = client.read_many(keys)
    creates: list[dict] = []
    updates: list[tuple[dict, str]] = []
    for res, key, (status, got) in zip(resources, keys, found):
        current = None
        if "?" in key:
            if status >= 300:
                _fail(summary, res, status, outcome_text(got))
                continue
            matches = [e.get("resource") for e in (got or {}).get("entry") or [] if e.get("resource")]
            if len(matches) > 1:
                _fail(summary, res, 412, f"{len(matches)} resources on the server carry its identifier; "
                                         "not written (which one to update is not known)")
                continue
            current = matches[0] if matches else None
        elif status == 200:
            current = got
        elif status not in (404, 410):
            _fail(summary, res, status, outcome_text(got))
            continue
        if current is None:
            creates.append(res)
        elif same_content(res, current):
            summary.add(rtype, "unchanged")
        else:
            body = dict(res)
            body["id"] = current.get("id") or res["id"]  # the server's resource keeps its id
            updates.append((body, key))
    if dry_run:
        for res in creates:
            summary.add(rtype, "created")
            summary.planned.append(("create", rtype, res["id"]))
        for res, _key in updates:
            summary.add(rtype, "updated")
            summary.planned.append(("update", rtype, res["id"]))
        return
    create_entries = [({"resource": r, "request": {"method": "PUT", "url": f"{rtype}/{r['id']}"}}, r, "created")
                      for r in creates]
    update_entries = [({"resource": r, "request": {"method": "PUT", "url": key if "?" in key else f"{rtype}/{r['id']}"}},
                       r, "updated") for r, key in updates]
    limits = client.limits
    for part in _chunks(create_entries, limits.transaction_writes):
        _write(client, rtype, part, summary)
    conditional = any("?" in e["request"]["url"] for e, _r, _o in update_entries)
    size = min(limits.conditional_transaction, limits.transaction_writes) if conditional else limits.transaction_writes
    for part in _chunks(update_entries, size):
        _write(client, rtype, part, summary)


def _write(client: FhirClient, rtype: str, part: list[tuple[dict, dict, str]], summary: SyncSummary) -> None:
    """One transaction; refused, the same entries as a batch, so each stands alone."""
    entries = [e for e, _r, _o in part]
    try:
        answers = client.bundle("transaction", entries)
    except ServerError as exc:
        if exc.status >= 500:
            raise
        try:
            answers = client.bundle("batch", entries)
        except ServerError as again:
            for _e, res, _o in part:
                _fail(summary, res, again.status, again.outcome)
            return
    for (_e, res, outcome), answer in zip(part, answers):
        status = entry_status(answer)
        if 200 <= status < 300:
            summary.add(rtype, outcome)
        else:
            _fail(summary, res, status, outcome_text((answer.get("response") or {}).get("outcome")))


def _fail(summary: SyncSummary, res: dict, status: int, outcome: str) -> None:
    summary.add(res["resourceType"], "failed")
    summary.failures.append(Failure(res["resourceType"], str(res.get("id")), status, outcome))
    summary.log.error("SYNC-RESOURCE-FAILED", f"the server refused {res['resourceType']}/{res.get('id')} "
                      f"(HTTP {status}): {outcome}", record=f"{res['resourceType']}/{res.get('id')}", value=status)


def push(input_path: Path, client: FhirClient, *, study_ref: str | None = None, dry_run: bool = False,
         progress: bool = False) -> SyncSummary:
    """Convert ``input_path`` to FHIR (as ``convert --to fhir``) and push it."""
    from trialbridge.converters import pipeline

    with tempfile.TemporaryDirectory(prefix="trialbridge-push-") as tmp:
        out = Path(tmp) / "fhir"
        result = pipeline.convert(Path(input_path), "fhir", out, study_ref=study_ref)
        summary = SyncSummary("push", dry_run=dry_run, log=result.log)
        summary.extra["study"] = result.study_id
        total = sum(1 for t in PUSH_ORDER for _ in read_ndjson(out, t)) if progress else 0
        bar = _bar(total, "push") if progress else None
        try:
            push_resources(client, out, dry_run=dry_run, summary=summary,
                           progress=(lambda _t, n: bar.update(n)) if bar else None)
        except ServerError as exc:  # the server refused a read or a whole Bundle: nothing to go on with
            raise TrialbridgeError(f"{client.origin}: {exc}") from None
        finally:
            if bar:
                bar.close()
    return summary


def _bar(total: int, what: str):
    from tqdm import tqdm

    return tqdm(total=total, unit="resource", desc=what, leave=False)
