"""The in-process matrix: every pattern of one driver variant, timed iteration by iteration.

All patterns of a variant run interleaved, round-robin, in one loop (one event loop for async
variants), the order rotating every round so that drift and caches hit every pattern alike;
each pattern first runs one iteration that is not counted (imports, TLS contexts, the first
token), and garbage is collected between rounds, not inside them (:func:`_no_collection`).
An iteration times the connect (for reuse patterns: the checkout) and then the query with
:func:`time.perf_counter`, as the seeds' handler does; closing or giving the connection back
is not timed.

A pattern that cannot run (aurora-dsql not installed, a driver SQLAlchemy does not serve)
becomes a :class:`~warmdb.bench.results.Skip` with the reason, before the loop starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import importlib
import importlib.util
import time
from dataclasses import dataclass

from warmdb.bench.results import Cell, Skip
from warmdb.bench.stats import cell_stats

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
    from typing import Any

    from warmdb.bench.progress import Progress
    from warmdb.bench.server import BenchServer
    from warmdb.bench.variants import Variant

    SyncIteration = Callable[[], tuple[float, float]]
    AsyncIteration = Callable[[], Awaitable[tuple[float, float]]]

__all__ = ["MatrixOptions", "run_variant"]

_perf = time.perf_counter


@dataclass(frozen=True)
class MatrixOptions:
    """How the matrix runs.

    :ivar iterations: timed iterations per pattern.
    :ivar query: the SQL every iteration runs.
    :ivar patterns: the in-process patterns to run.
    :ivar static_password: what the raw driver logs in with.
    """

    iterations: int
    query: str
    patterns: tuple[str, ...]
    static_password: str | None


def aurora_args(variant: Variant, server: BenchServer) -> tuple[dict[str, Any] | None, str]:
    """aurora-dsql's connect arguments for *variant*, or ``None`` and why not."""
    if variant.family != "postgresql":
        return None, "the connector serves Aurora DSQL, through PostgreSQL drivers only"
    if importlib.util.find_spec("aurora_dsql_psycopg2") is None:
        return None, "aurora-dsql-python-connector is not installed (warmdb[compare])"
    if importlib.util.find_spec(variant.aurora_module) is None:
        return None, f"the connector has no {variant.aurora_module} module"
    if variant.is_async and variant.entry.sync is not None:
        return None, "the connector's async psycopg connect is not measured"
    has_hostaddr = "hostaddr" in variant.adapter().driver_keys
    return server.aurora_kwargs(has_hostaddr=has_hostaddr)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# Sync patterns ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _sync_cases(
    variant: Variant, server: BenchServer, options: MatrixOptions, skips: list[Skip]
) -> Iterator[dict[str, tuple[SyncIteration, float | None]]]:
    """Open each sync pattern's resources; yield pattern -> (iteration, setup seconds)."""
    adapter = variant.sync_adapter()
    query = options.query
    cases: dict[str, tuple[SyncIteration, float | None]] = {}

    def every_connect(connect: Callable[[], Any]) -> SyncIteration:
        def iteration() -> tuple[float, float]:
            started = _perf()
            conn = connect()
            connected = _perf()
            try:
                adapter.execute(conn, query)
                return connected - started, _perf() - connected
            finally:
                adapter.close(conn)

        return iteration

    def checkout(checkout: Callable[[], contextlib.AbstractContextManager[Any]]) -> SyncIteration:
        def iteration() -> tuple[float, float]:
            started = _perf()
            with checkout() as conn:
                connected = _perf()
                adapter.execute(conn, query)
                done = _perf()
            return connected - started, done - connected

        return iteration

    with contextlib.ExitStack() as stack:
        for pattern in options.patterns:
            try:
                if pattern == "raw":
                    from warmdb._connect import ConnectPlan

                    plan = ConnectPlan(None, server.kwargs, adapter=adapter)
                    params = adapter.connect_params(plan, options.static_password)
                    cases[pattern] = (
                        every_connect(functools.partial(adapter.connect_raw, params)),
                        None,
                    )
                elif pattern == "aurora-dsql":
                    kwargs, why = aurora_args(variant, server)
                    if kwargs is None:
                        skips.append(Skip(variant.name, pattern, why))
                        continue
                    aurora = importlib.import_module(variant.aurora_module)
                    cases[pattern] = (
                        every_connect(functools.partial(aurora.connect, **kwargs)),
                        None,
                    )
                elif pattern == "connect":
                    connect = functools.partial(variant.front("connect"), **server.kwargs)
                    cases[pattern] = (every_connect(connect), None)
                elif pattern == "warm":
                    keeper = variant.front("warm")(**server.kwargs)
                    stack.callback(keeper.close)
                    started = _perf()
                    with keeper.connection():
                        pass
                    cases[pattern] = (checkout(keeper.connection), _perf() - started)
                elif pattern == "pool":
                    started = _perf()
                    pool = variant.front("pool")(**server.kwargs, **variant.pool_options(1))
                    stack.enter_context(pool)
                    with pool.connection():
                        pass
                    cases[pattern] = (checkout(pool.connection), _perf() - started)
                elif pattern == "sqlalchemy":
                    from warmdb.sqlalchemy import create_engine

                    started = _perf()
                    engine = create_engine(variant.engine_url(), pool_size=1, **server.kwargs)
                    stack.callback(engine.dispose)
                    engine_iteration = _engine_iteration(engine, query)
                    engine_iteration()
                    cases[pattern] = (engine_iteration, _perf() - started)
            except ImportError as exc:
                skips.append(Skip(variant.name, pattern, f"not installed ({exc.name})"))
            except Exception as exc:  # one broken pattern must not end the run
                skips.append(Skip(variant.name, pattern, _reason(exc)))
        yield cases


def _engine_iteration(engine: Any, query: str) -> SyncIteration:
    def iteration() -> tuple[float, float]:
        started = _perf()
        with engine.connect() as conn:
            connected = _perf()
            conn.exec_driver_sql(query).fetchall()
            done = _perf()
        return connected - started, done - connected

    return iteration


# Async patterns --------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _async_cases(
    variant: Variant, server: BenchServer, options: MatrixOptions, skips: list[Skip]
) -> AsyncIterator[dict[str, tuple[AsyncIteration, float | None]]]:
    """Open each async pattern's resources; yield pattern -> (iteration, setup seconds)."""
    adapter = variant.async_adapter()
    query = options.query
    cases: dict[str, tuple[AsyncIteration, float | None]] = {}

    def every_connect(connect: Callable[[], Awaitable[Any]]) -> AsyncIteration:
        async def iteration() -> tuple[float, float]:
            started = _perf()
            conn = await connect()
            connected = _perf()
            try:
                await adapter.execute(conn, query)
                return connected - started, _perf() - connected
            finally:
                await adapter.close(conn)

        return iteration

    def checkout(
        checkout: Callable[[], contextlib.AbstractAsyncContextManager[Any]],
    ) -> AsyncIteration:
        async def iteration() -> tuple[float, float]:
            started = _perf()
            async with checkout() as conn:
                connected = _perf()
                await adapter.execute(conn, query)
                done = _perf()
            return connected - started, done - connected

        return iteration

    async with contextlib.AsyncExitStack() as stack:
        for pattern in options.patterns:
            try:
                if pattern == "raw":
                    from warmdb._connect import ConnectPlan

                    plan = ConnectPlan(None, server.kwargs, adapter=adapter)
                    params = adapter.connect_params(plan, options.static_password)
                    cases[pattern] = (
                        every_connect(functools.partial(adapter.connect_raw, params)),
                        None,
                    )
                elif pattern == "aurora-dsql":
                    kwargs, why = aurora_args(variant, server)
                    if kwargs is None:
                        skips.append(Skip(variant.name, pattern, why))
                        continue
                    aurora = importlib.import_module(variant.aurora_module)
                    cases[pattern] = (
                        every_connect(functools.partial(aurora.connect, **kwargs)),
                        None,
                    )
                elif pattern == "connect":
                    connect = functools.partial(variant.front("connect"), **server.kwargs)
                    cases[pattern] = (every_connect(connect), None)
                elif pattern == "warm":
                    keeper = variant.front("warm")(**server.kwargs)
                    stack.push_async_callback(keeper.close)
                    started = _perf()
                    async with keeper.connection():
                        pass
                    cases[pattern] = (checkout(keeper.connection), _perf() - started)
                elif pattern == "pool":
                    started = _perf()
                    pool = variant.front("pool")(**server.kwargs, **variant.pool_options(1))
                    await stack.enter_async_context(pool)
                    acquire = getattr(pool, "connection", None) or pool.acquire
                    async with acquire():
                        pass
                    cases[pattern] = (checkout(acquire), _perf() - started)
                elif pattern == "sqlalchemy":
                    from warmdb.sqlalchemy import create_async_engine

                    started = _perf()
                    engine = create_async_engine(variant.engine_url(), pool_size=1, **server.kwargs)
                    stack.push_async_callback(engine.dispose)
                    iteration = _async_engine_iteration(engine, query)
                    await iteration()
                    cases[pattern] = (iteration, _perf() - started)
            except ImportError as exc:
                skips.append(Skip(variant.name, pattern, f"not installed ({exc.name})"))
            except Exception as exc:  # one broken pattern must not end the run
                skips.append(Skip(variant.name, pattern, _reason(exc)))
        yield cases


def _async_engine_iteration(engine: Any, query: str) -> AsyncIteration:
    async def iteration() -> tuple[float, float]:
        started = _perf()
        async with engine.connect() as conn:
            connected = _perf()
            (await conn.exec_driver_sql(query)).fetchall()
            done = _perf()
        return connected - started, done - connected

    return iteration


# The loop --------------------------------------------------------------------------------------


def _rounds(patterns: Sequence[str], iterations: int) -> Iterator[list[str]]:
    """Each round's order: every pattern once, rotated by one more place every round."""
    for number in range(iterations):
        shift = number % len(patterns) if patterns else 0
        yield list(patterns[shift:]) + list(patterns[:shift])


@contextlib.contextmanager
def _no_collection() -> Iterator[None]:
    """Collect garbage now, untimed, and not again inside the round.

    As :mod:`timeit` does: otherwise the garbage of one pattern (aurora-dsql's boto3 session
    per connect) is collected during whichever pattern allocates next, and billed to it.
    """
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def run_variant(
    variant: Variant,
    server: BenchServer,
    options: MatrixOptions,
    progress: Progress | None = None,
) -> tuple[list[Cell], list[Skip]]:
    """Run every in-process pattern of *variant*; return its cells and skipped patterns."""
    if variant.is_async:
        return asyncio.run(_run_async(variant, server, options, progress))
    skips: list[Skip] = []
    times: dict[str, list[tuple[float, float]]] = {}
    with _sync_cases(variant, server, options, skips) as cases:
        order = [p for p in options.patterns if p in cases]
        for pattern in order:
            _warm_up(variant, pattern, cases[pattern][0], skips)
        order = [p for p in order if not _skipped(skips, variant, p)]
        for round_order in _rounds(order, options.iterations):
            with _no_collection():
                for pattern in round_order:
                    times.setdefault(pattern, []).append(cases[pattern][0]())
            if progress is not None:
                progress.step(f"{variant.name}: in-process patterns")
        setups = {p: cases[p][1] for p in order}
    return _cells(variant, order, times, setups), skips


async def _run_async(
    variant: Variant, server: BenchServer, options: MatrixOptions, progress: Progress | None
) -> tuple[list[Cell], list[Skip]]:
    skips: list[Skip] = []
    times: dict[str, list[tuple[float, float]]] = {}
    async with _async_cases(variant, server, options, skips) as cases:
        order = [p for p in options.patterns if p in cases]
        for pattern in order:
            try:
                await cases[pattern][0]()
            except Exception as exc:  # skip the pattern, keep the run
                skips.append(Skip(variant.name, pattern, _reason(exc)))
        order = [p for p in order if not _skipped(skips, variant, p)]
        for round_order in _rounds(order, options.iterations):
            with _no_collection():
                for pattern in round_order:
                    times.setdefault(pattern, []).append(await cases[pattern][0]())
            if progress is not None:
                progress.step(f"{variant.name}: in-process patterns")
        setups = {p: cases[p][1] for p in order}
    return _cells(variant, order, times, setups), skips


def _warm_up(variant: Variant, pattern: str, iteration: SyncIteration, skips: list[Skip]) -> None:
    try:
        iteration()
    except Exception as exc:  # skip the pattern, keep the run
        skips.append(Skip(variant.name, pattern, _reason(exc)))


def _skipped(skips: list[Skip], variant: Variant, pattern: str) -> bool:
    return any(s.driver == variant.name and s.pattern == pattern for s in skips)


def _cells(
    variant: Variant,
    order: list[str],
    times: dict[str, list[tuple[float, float]]],
    setups: dict[str, float | None],
) -> list[Cell]:
    cells = []
    for pattern in order:
        samples = times.get(pattern)
        if not samples:
            continue
        connect = [c for c, _ in samples]
        query = [q for _, q in samples]
        cells.append(Cell(variant.name, pattern, cell_stats(connect, query), setups[pattern]))
    return cells
