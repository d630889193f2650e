"""The in-process matrix: every pattern of one driver variant, timed iteration by iteration.

All patterns of a variant run interleaved in one loop (one event loop for async variants),
every pattern once per round in a shuffled order, so that drift and caches hit every pattern
alike (:func:`_rounds`); each pattern first runs one iteration that is not counted (imports,
TLS contexts, the first token), and garbage is collected between rounds, not inside them
(:func:`_no_collection`).
An iteration times the connect (for reuse patterns: the checkout) and then the query with
:func:`time.perf_counter`, as the seeds' handler does; closing or giving the connection back
is not timed.

The whole run of a variant is written once, as a generator of I/O steps
(:mod:`warmdb._steps`): a sync variant performs them with blocking calls, an async one awaits
them, so both are timed by the same code. A pattern that cannot run (aurora-dsql not
installed, a driver without a pool) or that fails mid-run becomes a
:class:`~warmdb.bench.results.Skip` with the reason; the others go on.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib
import importlib.util
import time
from dataclasses import dataclass

from warmdb._steps import run, run_async
from warmdb.bench.results import Cell, Skip
from warmdb.bench.stats import cell_stats

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterator, Sequence
    from typing import Any

    from warmdb.bench.progress import Progress
    from warmdb.bench.server import BenchServer
    from warmdb.bench.variants import Variant
    from warmdb.drivers import Adapter

    Step = Callable[[], Any]
    Steps = Generator[Step, Any, Any]
    Timing = tuple[float, float]

__all__ = ["MatrixOptions", "aurora_args", "every_connect", "run_variant"]

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


class _Io:
    """How a variant enters and leaves context managers: ``with`` or ``async with``."""

    def __init__(self, is_async: bool) -> None:
        self.is_async = is_async

    def enter(self, manager: Any) -> Step:
        return manager.__aenter__ if self.is_async else manager.__enter__

    def leave(self, manager: Any, exc: BaseException | None = None) -> Step:
        leave = manager.__aexit__ if self.is_async else manager.__exit__
        if exc is None:
            return functools.partial(leave, None, None, None)
        return functools.partial(leave, type(exc), exc, exc.__traceback__)


@dataclass
class _Case:
    """One pattern, opened: its iteration (a generator of steps) and its setup time."""

    iteration: Callable[[], Steps]
    setup: float | None = None


# Iterations --------------------------------------------------------------------------------


def _close_boxed(adapter: Adapter, box: list[Any]) -> Any:
    return adapter.close(box.pop())  # type: ignore[attr-defined]


def every_connect(connect: Step, adapter: Adapter, query: str) -> Steps:
    """Connect, query, close, as steps (:mod:`warmdb._steps`); returns (connect, query)
    seconds. Also ``warmdb probe``'s whole connect."""
    started = _perf()
    conn = yield connect
    connected = _perf()
    try:
        yield functools.partial(adapter.execute, conn, query)  # type: ignore[attr-defined]
        return connected - started, _perf() - connected
    finally:
        # The step runner keeps the last step until the next one: a step holding the
        # connection would free it, and run the driver's finalizer (mysql-connector's takes
        # a millisecond), inside the next pattern's timing. The box is emptied by the close.
        box = [conn]
        del conn
        yield functools.partial(_close_boxed, adapter, box)


def _checkout(checkout: Callable[[], Any], io: _Io, query_step: Callable[[Any], Steps]) -> Steps:
    """Check out, query, give back; returns (checkout, query) seconds."""
    started = _perf()
    manager = checkout()
    conn = yield io.enter(manager)
    connected = _perf()
    try:
        yield from query_step(conn)
    except BaseException as exc:
        yield io.leave(manager, exc)
        raise
    done = _perf()
    yield io.leave(manager)
    return connected - started, done - connected


def _adapter_query(adapter: Adapter, query: str) -> Callable[[Any], Steps]:
    def steps(conn: Any) -> Steps:
        yield functools.partial(adapter.execute, conn, query)  # type: ignore[attr-defined]

    return steps


def _engine_query(query: str) -> Callable[[Any], Steps]:
    def steps(conn: Any) -> Steps:
        result = yield functools.partial(conn.exec_driver_sql, query)
        result.fetchall()

    return steps


# Opening each pattern ------------------------------------------------------------------------


def _open(
    pattern: str,
    variant: Variant,
    server: BenchServer,
    options: MatrixOptions,
    cleanup: list[Step],
) -> Steps:
    """Open *pattern*'s resources; returns its :class:`_Case`, or a reason it cannot run.

    What undoes an opened resource goes into *cleanup* as soon as it is open, so the caller
    closes it even when a later step fails.
    """
    adapter = variant.adapter()
    io = _Io(variant.is_async)
    query, kwargs = options.query, server.kwargs
    if pattern in ("raw", "aurora-dsql", "connect"):
        if pattern == "raw":
            from warmdb._connect import ConnectPlan

            plan = ConnectPlan(None, kwargs, adapter=adapter)
            params = adapter.connect_params(plan, options.static_password)
            connect = functools.partial(adapter.connect_raw, params)  # type: ignore[attr-defined]
        elif pattern == "aurora-dsql":
            aurora_kwargs, why = aurora_args(variant, server)
            if aurora_kwargs is None:
                return why
            aurora = importlib.import_module(variant.aurora_module)
            connect = functools.partial(aurora.connect, **aurora_kwargs)
        else:
            connect = functools.partial(variant.front("connect"), **kwargs)
        return _Case(lambda: every_connect(connect, adapter, query))
    started = _perf()
    if pattern == "warm":
        keeper = variant.front("warm")(**kwargs)
        cleanup.append(keeper.close)
        checkout, query_step = keeper.connection, _adapter_query(adapter, query)
    elif pattern == "pool":
        pool = variant.front("pool")(**kwargs, **variant.pool_options(1))
        yield io.enter(pool)
        cleanup.append(io.leave(pool))
        checkout = getattr(pool, "connection", None) or pool.acquire
        query_step = _adapter_query(adapter, query)
    elif pattern == "sqlalchemy":
        from warmdb import sqlalchemy

        factory = sqlalchemy.create_async_engine if variant.is_async else sqlalchemy.create_engine
        engine = factory(variant.engine_url(), pool_size=1, **kwargs)
        cleanup.append(engine.dispose)
        checkout, query_step = engine.connect, _engine_query(query)
    else:
        raise ValueError(f"unknown pattern {pattern!r}")
    case = _Case(lambda: _checkout(checkout, io, query_step))
    # The first checkout opens the connection the loop reuses: part of the setup.
    yield from case.iteration()
    case.setup = _perf() - started
    return case


# The loop --------------------------------------------------------------------------------------


def _rounds(patterns: Sequence[str], iterations: int) -> Iterator[list[str]]:
    """Each round's order: every pattern once, shuffled (reproducibly, seeded by the round).

    A fixed rotation would keep neighbours together: ``connect`` would nearly always run
    right after ``aurora-dsql``, whose boto3 work leaves the CPU caches to the next pattern.
    """
    import random

    for number in range(iterations):
        order = list(patterns)
        random.Random(number).shuffle(order)  # noqa: S311 - an order, not a secret
        yield order


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


def _variant_steps(
    variant: Variant,
    server: BenchServer,
    options: MatrixOptions,
    progress: Progress | None,
    skips: list[Skip],
) -> Steps:
    """The whole matrix of *variant*; returns ``{pattern: ([timings], setup)}``."""
    cases: dict[str, _Case] = {}
    times: dict[str, list[Timing]] = {}
    cleanup: list[Step] = []
    try:
        for pattern in options.patterns:
            try:
                opened = yield from _open(pattern, variant, server, options, cleanup)
                if isinstance(opened, str):
                    skips.append(Skip(variant.name, pattern, opened))
                    continue
                cases[pattern] = opened
                yield from opened.iteration()  # warm-up, not counted
            except ImportError as exc:
                skips.append(Skip(variant.name, pattern, f"not installed ({exc.name})"))
            except Exception as exc:  # one broken pattern must not end the run
                cases.pop(pattern, None)
                skips.append(Skip(variant.name, pattern, _reason(exc)))
        order = list(cases)
        for round_order in _rounds(order, options.iterations):
            with _no_collection():
                for pattern in round_order:
                    if pattern not in cases:
                        continue
                    try:
                        timing = yield from cases[pattern].iteration()
                    except Exception as exc:  # the pattern stops; the others go on
                        done = len(times.get(pattern, []))
                        skips.append(Skip(variant.name, pattern, f"at iteration {done + 1}: "
                                          f"{_reason(exc)}"))  # fmt: skip
                        times.pop(pattern, None)
                        cases.pop(pattern)
                        continue
                    times.setdefault(pattern, []).append(timing)
            if progress is not None:
                progress.step(f"{variant.name}: in-process patterns")
    finally:
        for step in reversed(cleanup):
            with contextlib.suppress(Exception):
                yield step
    return {p: (times[p], cases[p].setup) for p in order if p in cases and p in times}


def run_variant(
    variant: Variant,
    server: BenchServer,
    options: MatrixOptions,
    progress: Progress | None = None,
) -> tuple[list[Cell], list[Skip]]:
    """Run every in-process pattern of *variant*; return its cells and skipped patterns."""
    skips: list[Skip] = []
    steps = _variant_steps(variant, server, options, progress, skips)
    if variant.is_async:
        import asyncio

        measured = asyncio.run(run_async(steps))
    else:
        measured = run(steps)
    cells = []
    for pattern, (samples, setup) in measured.items():
        connect = [c for c, _ in samples]
        query = [q for _, q in samples]
        cells.append(Cell(variant.name, pattern, cell_stats(connect, query), setup))
    return cells, skips
