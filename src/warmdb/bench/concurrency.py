"""Seed 002's workload: many requests at once, each holding a connection it barely uses.

Each request connects, runs the query, holds the connection idle for ``hold`` seconds, runs
the query again and disconnects, as the seed's Lambda handler did under ``ab -c 100 -n 1000``.
Each query ends its transaction (the adapter's ``reset``: a rollback when the driver opened
one), as the seed's autocommit client did: a transaction left open across the hold would pin
a server connection through PgBouncer's transaction pooling and measure that instead.
Sync drivers run the requests on ``concurrency`` threads, async drivers as ``concurrency``
tasks on one event loop. The report gives the latency of whole requests, the failures, and the
peak number of connections the *server* had open: directly, every request in flight holds one;
through ``warmdb sidecar`` (PgBouncer in transaction mode), only the requests inside a
statement do, which is the seed's 100-vs-22 comparison.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from warmdb.bench.results import ConcurrencyResult
from warmdb.bench.stats import summarize

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from warmdb.bench.progress import Progress
    from warmdb.bench.variants import Variant

__all__ = ["Workload", "run_workload"]


class Workload:
    """What every request does, and how many run.

    :param concurrency: requests in flight at once.
    :param requests: requests in all.
    :param hold: seconds each request keeps its connection between its two queries.
    :param query: the SQL each request runs twice.
    """

    def __init__(self, *, concurrency: int, requests: int, hold: float, query: str) -> None:
        self.concurrency = concurrency
        self.requests = requests
        self.hold = hold
        self.query = query


def run_workload(
    variant: Variant,
    workload: Workload,
    kwargs: Mapping[str, Any],
    *,
    via: str,
    peak: Callable[[], int | None],
    progress: Progress | None = None,
) -> ConcurrencyResult:
    """Run *workload* with warmdb's ``connect()`` for *variant* and *kwargs*.

    :param via: ``direct`` or ``sidecar``, for the report.
    :param peak: returns the server's peak open connections during the run, when called
        after it.
    """
    started = time.perf_counter()
    if variant.is_async:
        latencies, failures = asyncio.run(_run_async(variant, workload, kwargs, progress))
    else:
        latencies, failures = _run_threads(variant, workload, kwargs, progress)
    wall = time.perf_counter() - started
    return ConcurrencyResult(
        driver=variant.name,
        via=via,
        concurrency=workload.concurrency,
        requests=workload.requests,
        hold=workload.hold,
        latency=summarize(latencies) if latencies else None,
        failures=dict(failures),
        peak_server_connections=peak(),
        wall=wall,
    )


def _run_threads(
    variant: Variant,
    workload: Workload,
    kwargs: Mapping[str, Any],
    progress: Progress | None,
) -> tuple[list[float], Counter[str]]:
    adapter = variant.sync_adapter()
    connect = functools.partial(variant.front("connect"), **kwargs)
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    lock = threading.Lock()

    def request() -> None:
        started = time.perf_counter()
        try:
            conn = connect()
            try:
                adapter.execute(conn, workload.query)
                adapter.reset(conn)
                time.sleep(workload.hold)
                adapter.execute(conn, workload.query)
                adapter.reset(conn)
            finally:
                adapter.close(conn)
        except Exception as exc:  # a failed request is counted, as ab counts them
            with lock:
                failures[type(exc).__name__] += 1
        else:
            with lock:
                latencies.append(time.perf_counter() - started)
        if progress is not None:
            with lock:
                progress.step()

    with ThreadPoolExecutor(workload.concurrency, thread_name_prefix="warmdb-bench") as pool:
        for _ in range(workload.requests):
            pool.submit(request)
    return latencies, failures


async def _run_async(
    variant: Variant,
    workload: Workload,
    kwargs: Mapping[str, Any],
    progress: Progress | None,
) -> tuple[list[float], Counter[str]]:
    adapter = variant.async_adapter()
    connect = functools.partial(variant.front("connect"), **kwargs)
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    slots = asyncio.Semaphore(workload.concurrency)

    async def request() -> None:
        async with slots:
            started = time.perf_counter()
            try:
                conn = await connect()
                try:
                    await adapter.execute(conn, workload.query)
                    await adapter.reset(conn)
                    await asyncio.sleep(workload.hold)
                    await adapter.execute(conn, workload.query)
                    await adapter.reset(conn)
                finally:
                    await adapter.close(conn)
            except Exception as exc:  # a failed request is counted, as ab counts them
                failures[type(exc).__name__] += 1
            else:
                latencies.append(time.perf_counter() - started)
            if progress is not None:
                progress.step()

    await asyncio.gather(*(request() for _ in range(workload.requests)))
    return latencies, failures
