"""The engine: records stream from a reader into a spill grouped by subject, each subject is
mapped on its own (in this process, in worker processes, or on Dask), and the rows of every
output table go into a sorted sink that the writers read in their final order.

    reader --(group key, item)--> SortedSpill --groups--> process_group() --rows--> sinks --> writers

* **Items** are what readers give: a record of the internal model, a FHIR resource, or an
  SDTM row, each as bytes with its kind (see :func:`pack`).  They are spilled under the key
  ``(group, file number, record number)``, so a group's items come back in input order.
* **A group** is everything one subject owns: the subject id for records, the Patient
  reference for FHIR, USUBJID for SDTM.  ``process_group`` turns a group into canonical
  records through the source side's spoke, then into output rows through the target side's
  spoke, and returns them with the findings of that group.  It is a pure function of the
  group and the :class:`Job` (picklable), so any worker can run it.
* **Sinks** are sorted spills too: each output row carries a key (USUBJID and its index
  within the subject for SDTM; the record type's natural key for records and FHIR) so the
  output order never depends on which worker finished first.  Same input, same bytes.

Memory depends on the largest subject and the spill's chunk size, not on the input.
"""
from __future__ import annotations

import multiprocessing
import os
import pickle
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Callable, Iterable, Iterator

import orjson

from trialbridge.converters.core import privacy
from trialbridge.converters.core.issues import IssueLog
from trialbridge.converters.core.records import RECORD_ORDER, Records, record_types
from trialbridge.converters.core.spill import SortedSpill, right_sized, sort_key
from trialbridge.mappings import chronology

SEP = b"\x00"


def pack(kind: str, data: bytes) -> bytes:
    """An item as spilled: its kind (record type, ``fhir``, SDTM dataset name) and its JSON."""
    return kind.encode() + SEP + data


def unpack(payload: bytes) -> tuple[str, bytes]:
    kind, _, data = payload.partition(SEP)
    return kind.decode(), data


@dataclass
class Job:
    """What every group needs besides its own items (sent to each worker once)."""

    source: str  # records | fhir | sdtm
    target: str  # sdtm | records | fhir
    study: Any = None  # mappings.study.Study (None for SDTM -> SDTM)
    files: list[str] = field(default_factory=list)  # file number -> path, for findings
    facts: Any = None  # FHIR input: mappings.fhir.assemble.StudyFacts
    links: dict | None = None  # FHIR input: medical record number -> trial subject record
    include_identifiers: bool = False
    input_fhir_version: str = "auto"  # FHIR input: auto (by each resource's shape), R4 or R5
    sdtm_variables: dict[str, list[str]] = field(default_factory=dict)  # SDTM input: dataset -> its variables
    sdtm_sources: dict[str, str] = field(default_factory=dict)  # SDTM input: dataset -> file
    ct_package: str | None = None  # the CT package of the run (--ct); each worker selects it too
    meddra: str | None = None  # --meddra: the dictionary's folder (each process loads it once)
    meddra_version: str | None = None  # --meddra-version: overrides the distribution's own


@dataclass
class GroupResult:
    tables: dict[str, list[tuple[tuple, bytes]]]
    log: IssueLog
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------- one group


def process_group(job: Job, group: str, items: list[tuple[tuple, bytes]]) -> GroupResult:
    """Map one subject's items to output rows (see the module docstring)."""
    from trialbridge.converters import spokes
    from trialbridge.mappings.terminology import ct

    ct.select(job.ct_package)  # a worker process uses the run's package (a no-op once selected)
    log = IssueLog()
    extra: dict[str, Any] = {}
    identifying: list[tuple[str, str]] = []  # the subject's own names, phones … (never written)
    if job.source == "sdtm":
        rows = _sdtm_rows(job, items)
        if job.target == "sdtm":
            return GroupResult({name: [((r.get("USUBJID") or "", n), right_sized(orjson.dumps(r)))
                                       for n, r in enumerate(rs)]
                                for name, rs in rows.items()}, log)
        records, extra["unread"] = spokes.sdtm_subject_to_records(rows, job.study, log)
    elif job.source == "fhir":
        records, extra["versions"] = spokes.fhir_group_to_records(job, items, log, identifying)
        if records is None:  # resources only checked (study-level, or types with no mapping)
            privacy.scrub_log(log, identifying)
            return GroupResult({}, log, extra)
    else:
        records = Records(study_id=job.study.study_id if job.study else None)
        from trialbridge.converters.formats.records import reject_repeats

        for _key, payload in items:
            kind, data = unpack(payload)
            records.rows[kind].append(orjson.loads(data))
        for name, rows in records.rows.items():
            records.rows[name] = reject_repeats(rows, log, record_types()[name])
    # free text never carries the subject's own identifying values to any output, findings
    # included: redacted in the records before they are mapped, scrubbed from the group's log
    identifying += privacy.subject_values(records)
    privacy.redact_records(records, identifying, log)
    chronology.check(records, log)  # where every source's records meet, before any target
    extra["meddra"] = code_meddra(job, records, log)
    out = _map_group(job, records, log, extra)
    privacy.scrub_log(log, identifying)
    return GroupResult(out, log, extra)


def _map_group(job: Job, records: Records, log: IssueLog, extra: dict[str, Any]) -> dict[str, list]:
    """One subject's records -> the rows of each output table, with their sort keys."""
    from trialbridge.converters import spokes

    if job.target == "sdtm":
        from trialbridge.converters.formats.sdtm.stats import ColumnStats

        tables = spokes.records_to_sdtm_rows(records, job.study, log)
        out = {name: [((r["USUBJID"], n), right_sized(orjson.dumps(r))) for n, r in enumerate(rows)]
               for name, rows in tables.items()}
        stats = {}
        for name, rows in tables.items():  # gathered here, in the worker, merged in any order
            stats[name] = ColumnStats(name)
            stats[name].add_rows(rows)
        extra["stats"] = stats
    elif job.target == "records":
        out = {}
        for name, rows in records.items():
            key = record_types()[name].key
            out[name] = [(sort_key([*(r.get(k, "") for k in key), n]), right_sized(orjson.dumps(r)))
                         for n, r in enumerate(rows)]
    else:
        out = {}
        for n, (rtype, key, res) in enumerate(spokes.records_to_fhir_rows(records, job.study, log,
                                                                          job.include_identifiers)):
            out.setdefault(rtype, []).append((sort_key([*key, n]), spokes.fhir_dumps(res)))
    return out


def code_meddra(job: Job, records: Records, log: IssueLog) -> Counter:
    """MedDRA codes of the subject's adverse events: given codes checked, the rest coded from
    the dictionary when the job has one.  Counts coded and not coded events per input file,
    for the run's summary (:mod:`trialbridge.converters.pipeline`)."""
    from trialbridge.mappings.terminology import meddra

    tally: Counter = Counter()
    events = records.rows.get("adverse_event") or []
    dictionary = meddra.load(job.meddra, job.meddra_version) if job.meddra and events else None
    for rec in events:
        if dictionary is not None:
            coded = meddra.code_event(rec, dictionary, log)
        else:
            meddra.check_codes(rec, log)
            coded = meddra.has_codes(rec)
        tally[(str((rec.get("_where") or {}).get("file") or ""), "coded" if coded else "not coded")] += 1
    return tally


def _sdtm_rows(job: Job, items: list[tuple[tuple, bytes]]) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    for _key, payload in items:
        kind, data = unpack(payload)
        rows.setdefault(kind, []).append(orjson.loads(data))
    return rows


# ------------------------------------------------------------------------------- executors


def _chunks(groups: Iterator, size: int) -> Iterator[list]:
    while True:
        chunk = list(islice(groups, size))
        if not chunk:
            return
        yield chunk


_WORKER_JOB: Job | None = None
# Workers start as fresh interpreters that import only what mapping a group needs (the
# engine, the spokes, the mapping modules, the FHIR schema when the input is FHIR), not
# copies of this process: a forked worker starts with every page of its parent resident
# (the whole pipeline imported, lxml and the define.xml and rules machinery, the reader's
# buffers) and shows them all in its RSS however little it touches them.  Also the same on
# every platform (macOS and Windows spawn anyway) and safe with threads in the parent.
WORKER_START = "spawn"


def _init_worker(job_bytes: bytes) -> None:
    global _WORKER_JOB
    _WORKER_JOB = pickle.loads(job_bytes)


def _run_chunk(chunk: list) -> list[GroupResult]:
    assert _WORKER_JOB is not None
    return fold_stats([process_group(_WORKER_JOB, group, items) for group, items in chunk])


def fold_stats(results: list[GroupResult]) -> list[GroupResult]:
    """One set of column statistics per chunk instead of one per subject: merged here, in the
    worker (merging is order-free), so a chunk's result carries a few statistics objects back,
    not hundreds (they are far larger than a subject's rows)."""
    folded: dict[str, Any] = {}
    for result in results:
        for name, stats in result.extra.pop("stats", {}).items():
            if name in folded:
                folded[name].merge(stats)
            else:
                folded[name] = stats
    if results and folded:
        results[0].extra["stats"] = folded
    return results


def run_local(job: Job, groups: Iterable, workers: int = 1, *, chunk_items: int = 2000) -> Iterator[GroupResult]:
    """Results of every group, in group order.  ``workers`` > 1 runs groups in that many
    processes, at most two chunks per worker in flight (memory stays bounded).  The workers
    are spawned (:data:`WORKER_START`): a script that calls this, directly or through
    ``pipeline.convert``, needs the ``if __name__ == "__main__":`` guard."""
    if workers <= 1:
        for group, items in groups:
            yield process_group(job, group, items)
        return
    chunks = _item_chunks(groups, chunk_items)
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(WORKER_START),
                             initializer=_init_worker, initargs=(pickle.dumps(job),)) as pool:
        pending = []
        for chunk in chunks:
            pending.append(pool.submit(_run_chunk, chunk))
            if len(pending) >= 2 * workers:
                yield from pending.pop(0).result()
        for fut in pending:
            yield from fut.result()


def _item_chunks(groups: Iterable, chunk_items: int) -> Iterator[list]:
    """Groups packed into chunks of about ``chunk_items`` items (never splitting a group)."""
    chunk: list = []
    size = 0
    for group, items in groups:
        chunk.append((group, items))
        size += len(items)
        if size >= chunk_items:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


# ------------------------------------------------------------------------------- sinks


SINKS_BUDGET = 16 << 20  # payload bytes all sinks together hold in memory


class Sinks:
    """One sorted spill per output table; takes group results in any order.  What groups
    report besides rows is merged as it arrives (sums and unions, so the order results arrive
    in does not matter): column statistics per SDTM dataset, FHIR versions seen, SDTM variables
    no mapping read.

    The sinks share one memory budget: each spill alone would hold up to its chunk size, and
    a dozen SDTM datasets (SUPP-- included) that all grow with the input would then hold a
    dozen chunks once the input is large enough to fill them (so memory still grew with the
    input up to a dozen chunks).  Over ``budget`` payload bytes in all, the largest buffer is
    written as a run.  Run boundaries never change the order rows come back in."""

    def __init__(self, budget: int | None = None) -> None:
        self.budget = SINKS_BUDGET if budget is None else budget
        self.tables: dict[str, SortedSpill] = {}
        self.stats: dict[str, Any] = {}
        self.versions: Counter = Counter()
        self.unread: dict[str, dict[str, Any]] = {}
        self.meddra: Counter = Counter()  # (input file, coded / not coded) -> adverse events

    def take(self, result: GroupResult, log: IssueLog) -> None:
        from trialbridge.converters import spokes

        log.merge(result.log)
        for name, rows in result.tables.items():
            sink = self.tables.get(name)
            if sink is None:
                sink = self.tables[name] = SortedSpill(name.lower())
            sink.extend(rows)
        if result.tables:
            self._keep_to_budget()
        for name, stats in result.extra.get("stats", {}).items():
            if name in self.stats:
                self.stats[name].merge(stats)
            else:
                self.stats[name] = stats
        self.versions.update(result.extra.get("versions", {}))
        self.meddra.update(result.extra.get("meddra", {}))
        if "unread" in result.extra:
            spokes.merge_unread(self.unread, result.extra["unread"])

    def _keep_to_budget(self) -> None:
        held = sum(sink.buffered_bytes for sink in self.tables.values())
        while held > self.budget:
            largest = max(self.tables.values(), key=lambda sink: sink.buffered_bytes)
            held -= largest.buffered_bytes
            largest.flush()

    def rows(self, name: str) -> Iterator[dict]:
        sink = self.tables.get(name)
        if sink is None:
            return iter(())
        return (orjson.loads(p) for p in sink.payloads())

    def payloads(self, name: str) -> Iterator[bytes]:
        sink = self.tables.get(name)
        return sink.payloads() if sink is not None else iter(())

    def close(self) -> None:
        for sink in self.tables.values():
            sink.close()


def run(job: Job, spill: SortedSpill, log: IssueLog, *, workers: int = 1, engine: str = "local",
        scheduler: str | None = None, progress: Callable[[int], None] | None = None) -> Sinks:
    """Process every group of ``spill`` and gather the rows into sinks."""
    sinks = Sinks()
    groups = spill.groups()
    if engine == "dask":
        from trialbridge.converters import dask_engine

        results = dask_engine.run(job, groups, scheduler=scheduler, workers=workers)
    else:
        results = run_local(job, groups, workers)
    for result in results:
        sinks.take(result, log)
        if progress is not None:
            progress(1)
    return sinks


__all__ = ["Job", "GroupResult", "process_group", "run", "run_local", "Sinks", "pack", "unpack", "RECORD_ORDER"]
