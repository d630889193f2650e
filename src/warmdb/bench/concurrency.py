"""Seed 002's workload: many requests at once, each holding a connection it barely uses.

Each request connects, runs the query, holds the connection idle for ``hold`` seconds, runs
the query again and disconnects, as the seed's Lambda handler did under ``ab -c 100 -n 1000``.
A request is written once as steps (:mod:`warmdb._steps`), performed on threads for sync
drivers and as tasks for async ones.
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

from warmdb._steps import run, run_async
from warmdb.bench.results import ConcurrencyResult
from warmdb.bench.stats import summarize

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Mapping
    from typing import Any

    from warmdb._steps import Step
    from warmdb.bench.progress import Progress
    from warmdb.bench.variants import Variant
    from warmdb.drivers import Adapter

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
    adapter = variant.adapter()
    connect = functools.partial(variant.front("connect"), **kwargs)
    tally = _Tally(progress)

    def request(sleep: Callable[[float], Any]) -> Generator[Step, Any, None]:
        return _counted(tally, _request(connect, adapter, workload, sleep))

    started = time.perf_counter()
    if variant.is_async:
        asyncio.run(_run_async(request, workload))
    else:
        _run_threads(request, workload)
    wall = time.perf_counter() - started
    latencies, failures = tally.latencies, tally.failures
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


class _Tally:
    """Latencies and failures, counted from many threads."""

    def __init__(self, progress: Progress | None) -> None:
        self.latencies: list[float] = []
        self.failures: Counter[str] = Counter()
        self._progress = progress
        self._lock = threading.Lock()

    def record(self, started: float, error: BaseException | None) -> None:
        with self._lock:
            if error is None:
                self.latencies.append(time.perf_counter() - started)
            else:
                self.failures[type(error).__name__] += 1
            if self._progress is not None:
                self._progress.step()


def _request(connect: Callable[[], Any], adapter: Adapter, workload: Workload, sleep: Any) -> Any:
    """One request, as steps (:mod:`warmdb._steps`): connect, query, hold, query, close.

    Each query ends its transaction (``adapter.reset``: a rollback when one is open).
    """
    conn = yield connect
    try:
        for hold in (workload.hold, None):
            yield functools.partial(adapter.execute, conn, workload.query)  # type: ignore[attr-defined]
            yield functools.partial(adapter.reset, conn)  # type: ignore[attr-defined]
            if hold is not None:
                yield functools.partial(sleep, hold)
    finally:
        yield functools.partial(adapter.close, conn)  # type: ignore[attr-defined]


def _counted(tally: _Tally, request: Generator[Step, Any, Any]) -> Generator[Step, Any, None]:
    """*request*'s steps, timed from their first step and counted in *tally*."""
    started = time.perf_counter()
    try:
        yield from request
    except Exception as exc:  # a failed request is counted, as ab counts them
        tally.record(started, exc)
    else:
        tally.record(started, None)


def _run_threads(request: Callable[[Any], Generator[Step, Any, None]], workload: Workload) -> None:
    """The requests on ``concurrency`` threads."""
    with ThreadPoolExecutor(workload.concurrency, thread_name_prefix="warmdb-bench") as pool:
        for _ in range(workload.requests):
            # A generator starts when first run: on its worker thread, which times it.
            pool.submit(run, request(time.sleep))


async def _run_async(
    request: Callable[[Any], Generator[Step, Any, None]], workload: Workload
) -> None:
    """The requests as tasks on this loop, ``concurrency`` at a time."""
    slots = asyncio.Semaphore(workload.concurrency)

    async def one() -> None:
        async with slots:
            await run_async(request(asyncio.sleep))

    await asyncio.gather(*(one() for _ in range(workload.requests)))
