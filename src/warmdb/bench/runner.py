"""One ``warmdb bench`` run: start what is needed, run the parts, collect a RunResult.

:func:`run` takes :class:`RunOptions` (checked by :mod:`warmdb.bench.command`) and does the
I/O: the embedded emulator or a real host, the credentials in the environment, the matrix per
driver variant (:mod:`~warmdb.bench.matrix`), the cold starts (:mod:`~warmdb.bench.cold`) or
the concurrency workload (:mod:`~warmdb.bench.concurrency`), then the targets.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

from warmdb.bench.results import IN_PROCESS, RunResult, Skip
from warmdb.bench.server import environment, open_server
from warmdb.bench.targets import check_targets
from warmdb.bench.variants import by_family

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from warmdb.bench.concurrency import Workload
    from warmdb.bench.progress import Progress
    from warmdb.bench.results import ConcurrencyResult
    from warmdb.bench.server import BenchServer
    from warmdb.bench.variants import Variant

__all__ = ["RunOptions", "run"]

BASELINE_LOGIN_NOTE = (
    "raw driver: static password = one IAM token signed before the run and sent unchanged "
    "on every connect (the endpoint accepts nothing else)"
)


@dataclass(frozen=True)
class RunOptions:
    """What to run.

    :ivar kwargs: warmdb's connect arguments for a real endpoint; ``None``: the emulator.
    :ivar variants: the driver variants.
    :ivar iterations: timed iterations per cell.
    :ivar query: the SQL every iteration runs.
    :ivar patterns: the in-process patterns.
    :ivar cold: whether to run cold starts.
    :ivar cold_samples: fresh processes per cold-start variant.
    :ivar concurrency: run seed 002's workload with this many in flight instead of the matrix.
    :ivar requests: the workload's requests.
    :ivar hold: seconds each request holds its connection (already scaled).
    :ivar via_sidecar: run the workload through ``warmdb sidecar`` too.
    :ivar progress: draw a progress bar when stderr is a terminal.
    """

    kwargs: dict[str, Any] | None
    variants: tuple[Variant, ...]
    iterations: int = 30
    query: str = "SELECT 1"
    patterns: tuple[str, ...] = IN_PROCESS
    cold: bool = True
    cold_samples: int = 3
    concurrency: int | None = None
    requests: int = 0
    hold: float = 0.1
    via_sidecar: bool = False
    progress: bool = True


def run(options: RunOptions) -> RunResult:
    """Run the benchmark *options* describe and return what it measured."""
    if options.concurrency is not None:
        return _run_concurrency(options)
    return _run_matrix(options)


def _environment(options: RunOptions, endpoint: str, notes: list[str]) -> dict[str, object]:
    from warmdb import __version__

    return {
        "warmdb": __version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "endpoint": endpoint,
        "iterations": options.iterations,
        "query": options.query,
        "cold_samples": options.cold_samples if options.cold else 0,
        "drivers": [v.name for v in options.variants],
        "notes": list(notes),
    }


def _progress(options: RunOptions, total: int) -> Progress:
    from warmdb.bench.progress import Progress

    return Progress(total, enabled=None if options.progress else False)


def _run_matrix(options: RunOptions) -> RunResult:
    result = RunResult(environment={})
    steps = options.iterations * len(options.variants) * bool(options.patterns)
    progress = _progress(options, steps + (options.cold_samples if options.cold else 0))
    descriptions: list[str] = []
    notes: list[str] = []
    try:
        for family, variants in by_family(options.variants):
            server = open_server(options.kwargs, family=family)
            try:
                descriptions.append(server.description)
                with environment(server.environment):
                    _run_family(options, variants, server, result, progress)
                notes.extend(n for n in server.notes if n not in notes)
            finally:
                server.close()
    finally:
        progress.close()
    result.environment = _environment(options, "; ".join(descriptions), notes)
    result.targets = check_targets(result)
    return result


def _run_family(
    options: RunOptions,
    variants: tuple[Variant, ...],
    server: BenchServer,
    result: RunResult,
    progress: Progress,
) -> None:
    """The matrix and cold starts of the *variants* of one family against *server*."""
    from warmdb.bench.matrix import MatrixOptions, run_variant

    static = _static_password(variants[0], server)
    server.notes.append(BASELINE_LOGIN_NOTE)
    matrix = MatrixOptions(options.iterations, options.query, options.patterns, static)
    if options.patterns:
        for variant in variants:
            cells, skips = run_variant(variant, server, matrix, progress)
            result.cells.extend(cells)
            result.skipped.extend(skips)
    if options.cold:
        _cold(options, variants, server, static, result, progress)


def _static_password(variant: Variant, server: BenchServer) -> str | None:
    from warmdb._connect import ConnectPlan

    return ConnectPlan(None, server.kwargs, adapter=variant.adapter()).password()


def _cold(
    options: RunOptions,
    variants: tuple[Variant, ...],
    server: BenchServer,
    static: str | None,
    result: RunResult,
    progress: Progress,
) -> None:
    from warmdb.bench.cold import ColdSpec, run_cold
    from warmdb.bench.matrix import aurora_args

    specs = []
    for variant in variants:
        kwargs, query = server.kwargs, options.query
        specs.append(ColdSpec(variant, "raw", kwargs=kwargs, query=query, password=static))
        specs.append(ColdSpec(variant, "warmdb", kwargs=kwargs, query=query))
        aurora, why = aurora_args(variant, server)
        if aurora is not None:
            spec = ColdSpec(variant, "aurora-dsql", kwargs=kwargs, query=query, aurora=aurora)
            specs.append(spec)
        elif not _skipped(result, variant):
            result.skipped.append(Skip(variant.name, "cold (aurora-dsql)", why))
    cells, skips = run_cold(specs, options.cold_samples, dict(os.environ), progress=progress)
    result.cold.extend(cells)
    result.skipped.extend(skips)


def _skipped(result: RunResult, variant: Variant) -> bool:
    """Whether the report already says why aurora-dsql was not run for *variant*."""
    return any(s.driver == variant.name and s.pattern == "aurora-dsql" for s in result.skipped)


def _run_concurrency(options: RunOptions) -> RunResult:
    from warmdb.bench.concurrency import Workload

    assert options.concurrency is not None
    (family, variants), *others = by_family(options.variants)
    notes: list[str] = [
        f"concurrency: one family per run; not run: {v.name}" for _, group in others for v in group
    ]
    sidecar_ok, sidecar_why = _sidecar_usable() if options.via_sidecar else (False, "")
    if options.via_sidecar and family != "postgresql":
        sidecar_ok, sidecar_why = False, "the sidecar (PgBouncer) serves PostgreSQL drivers only"
    emulator_options: dict[str, Any] = {}
    if family == "postgresql":
        emulator_options["temporary_credentials"] = True
    if sidecar_ok:
        # The sidecar's PgBouncer verifies the endpoint's name (it sends SNI only then): an
        # emulator named localhost, whose certificate covers that name, is one it can reach.
        emulator_options["hostname"] = "localhost"
    # In process: the workload counts connections from the emulator's live statistics.
    server = open_server(options.kwargs, family=family, in_process=True, **emulator_options)
    server.notes.extend(notes)
    workload = Workload(
        concurrency=options.concurrency,
        requests=options.requests,
        hold=options.hold,
        query=options.query,
    )
    try:
        with environment(server.environment):
            result = RunResult(environment=_environment(options, server.description, []))
            result.environment["hold_s"] = options.hold
            if options.via_sidecar and not sidecar_ok:
                server.notes.append(f"--via-sidecar: {sidecar_why}")
            runs = len(variants) * (2 if sidecar_ok else 1)
            progress = _progress(options, options.requests * runs)
            try:
                for variant in variants:
                    routes: list[tuple[str, dict[str, Any]]] = [("direct", server.kwargs)]
                    sidecar = _start_sidecar(server) if sidecar_ok else None
                    if sidecar is not None:
                        routes.append(("sidecar", _sidecar_kwargs(sidecar)))
                    try:
                        for via, kwargs in routes:
                            outcome = _measure(variant, workload, kwargs, via, server, progress)
                            result.concurrency.append(outcome)
                    finally:
                        if sidecar is not None:
                            sidecar.stop()
            finally:
                progress.close()
            result.environment["notes"] = list(server.notes)
    finally:
        server.close()
    return result


def _measure(
    variant: Variant,
    workload: Workload,
    kwargs: dict[str, Any],
    via: str,
    server: BenchServer,
    progress: Progress,
) -> ConcurrencyResult:
    """Run the workload once, sampling the server's open connections when it can."""
    from warmdb.bench.concurrency import run_workload

    with server.connection_monitor(variant) as monitor:
        peak = (lambda: None) if monitor is None else (lambda: monitor.peak)
        return run_workload(variant, workload, kwargs, via=via, peak=peak, progress=progress)


def _sidecar_usable() -> tuple[bool, str]:
    """Whether ``warmdb sidecar`` can run here, and if not, one line saying why."""
    try:
        from warmdb.sidecar.process import find_pgbouncer
        from warmdb.sidecar.supervisor import Sidecar  # noqa: F401 - present or not
    except ImportError as exc:
        return False, f"warmdb sidecar is not usable yet ({exc.name} is missing); skipped"
    from warmdb.errors import ConfigurationError

    try:
        find_pgbouncer()
    except ConfigurationError as exc:
        return False, f"warmdb sidecar needs PgBouncer: {exc}; skipped"
    return True, ""


def _start_sidecar(server: BenchServer) -> Any:
    from warmdb.emulator.postgres import free_port
    from warmdb.sidecar.supervisor import Sidecar

    emulator = server.emulator
    if emulator is None:
        keys = ("port", "region", "user", "dbname", "auth", "profile", "sslmode", "sslrootcert")
        endpoint = {k: v for k, v in server.kwargs.items() if k in keys}
        return Sidecar(host=str(server.kwargs["host"]), listen_port=free_port(), **endpoint).start()
    return Sidecar(
        host=emulator.hostname,
        port=emulator.port,
        auth="dsql",
        region=emulator.region,
        sslrootcert=str(emulator.ca_path),
        listen_port=free_port(),
    ).start()


def _sidecar_kwargs(sidecar: Any) -> dict[str, Any]:
    """warmdb's connect arguments for a client of *sidecar* (plain password, loopback)."""
    state = sidecar.state
    return {
        "host": state.host,
        "port": state.port,
        "user": state.user,
        "dbname": state.dbname,
        "password": state.password(),
        "auth": "password",
    }
