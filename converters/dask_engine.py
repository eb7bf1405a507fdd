"""The same engine on a dask.distributed cluster: groups of subjects go to the cluster's
workers as tasks running :func:`trialbridge.converters.engine.process_group` — the very
function the local engine runs — and come back in submission order, so the sinks receive
the same rows and the output is the same bytes as a local run.

* ``scheduler`` given: connect to that cluster (``tcp://host:8786``).  Its workers need
  trialbridge installed (the same version): the job and the subjects' items are sent as
  pickles, the mapping code is imported on the worker.
* ``scheduler`` not given: a ``LocalCluster`` of ``workers`` processes, one thread each,
  bound to 127.0.0.1 with no dashboard — for trying the cluster path on one machine.  Starting
  one needs the calling program to be guarded by ``if __name__ == "__main__":`` (the
  ``trialbridge`` command is).

At most ``2 × workers`` chunks are in flight, so memory on this side stays bounded; each
chunk holds about ``chunk_items`` input items of whole subjects.
"""
from __future__ import annotations

from collections import deque
from typing import Iterable, Iterator

from trialbridge.converters.core.issues import TrialbridgeError
from trialbridge.converters.engine import GroupResult, Job, _item_chunks, fold_stats, process_group


def _run_chunk(job: Job, chunk: list) -> list[GroupResult]:
    return fold_stats([process_group(job, group, items) for group, items in chunk])


def run(job: Job, groups: Iterable, *, scheduler: str | None = None, workers: int = 2,
        chunk_items: int = 2000) -> Iterator[GroupResult]:
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:  # the extra is not installed
        raise TrialbridgeError("--engine dask needs dask.distributed: pip install 'trialbridge[dask]'") from exc
    cluster = None
    try:
        if scheduler:
            client = Client(scheduler, timeout="30s")
        else:
            cluster = LocalCluster(n_workers=max(1, workers), threads_per_worker=1, processes=True,
                                   host="127.0.0.1", dashboard_address=None)
            client = Client(cluster)
    except (OSError, TimeoutError, ValueError) as exc:
        raise TrialbridgeError(f"cannot reach the Dask scheduler {scheduler or '(local cluster)'}: {exc}") from exc
    try:
        n_workers = max(1, len(client.scheduler_info().get("workers", {})) or workers)
        [job_ref] = client.scatter([job], broadcast=True)
        pending: deque = deque()
        for n, chunk in enumerate(_item_chunks(groups, chunk_items)):
            # a unique key per chunk: dask would otherwise reuse the result of an identical task
            pending.append(client.submit(_run_chunk, job_ref, chunk, key=f"trialbridge-chunk-{n}", pure=False))
            if len(pending) >= 2 * n_workers:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
