"""What a ``warmdb bench`` run measured, as plain immutable records (no I/O).

The runners produce them, :mod:`warmdb.bench.targets` judges them, :mod:`warmdb.bench.report`
renders them and ``--json`` writes :meth:`RunResult.as_dict`.

Pattern names, in the order the table shows them:

- ``raw``: the bare driver with a static password, connect every time (the baseline);
- ``aurora-dsql``: aurora-dsql-python-connector, connect every time (the other baseline);
- ``connect``: warmdb's ``connect()`` every time (token + TCP + TLS + auth, query, close);
- ``warm``: a ``warm()`` keeper across invocations (connect = checkout);
- ``pool``: warmdb's pool for the driver (connect = checkout);
- ``sqlalchemy``: a :mod:`warmdb.sqlalchemy` engine (connect = ``engine.connect()``);
- ``cold``: a fresh process per sample (:class:`ColdCell`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from warmdb.bench.stats import CellStats, Summary

__all__ = [
    "BASELINES",
    "IN_PROCESS",
    "PATTERNS",
    "Cell",
    "ColdCell",
    "ConcurrencyResult",
    "RunResult",
    "Skip",
    "TargetCheck",
]

#: The patterns timed in this process, in table order.
IN_PROCESS = ("raw", "aurora-dsql", "connect", "warm", "pool", "sqlalchemy")
#: Every pattern: those, then cold starts in fresh processes.
PATTERNS = (*IN_PROCESS, "cold")
#: The patterns that are not warmdb.
BASELINES = ("raw", "aurora-dsql")

PATTERN_LABELS = {
    "raw": "raw driver, static password (every connect)",
    "aurora-dsql": "aurora-dsql connector (every connect)",
    "connect": "warmdb connect() (every connect)",
    "warm": "warmdb warm() (reuse across invocations)",
    "pool": "warmdb pool (checkout)",
    "sqlalchemy": "warmdb SQLAlchemy engine (checkout)",
}


@dataclass(frozen=True)
class Cell:
    """One driver and pattern, measured in a loop of iterations in this process.

    :ivar driver: the driver variant (``psycopg2``, ``psycopg-async``...).
    :ivar pattern: one of :data:`PATTERNS` except ``cold``.
    :ivar stats: the connect and query timings.
    :ivar setup: seconds spent before the loop (creating and filling a pool, the keeper's
        first connect), or ``None`` when the pattern has none.
    """

    driver: str
    pattern: str
    stats: CellStats
    setup: float | None = None

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"driver": self.driver, "pattern": self.pattern}
        data.update(self.stats.as_dict())
        if self.setup is not None:
            data["setup_ms"] = round(self.setup * 1000, 3)
        return data


@dataclass(frozen=True)
class ColdCell:
    """Cold starts of one driver and variant, a fresh Python process per sample.

    :ivar driver: the driver variant.
    :ivar variant: ``warmdb``, ``raw`` or ``aurora-dsql``.
    :ivar init: import + module-level setup, what Lambda reports as Init Duration (without
        the interpreter's own start, which is the same for every variant).
    :ivar first: the first connect + query in the handler.
    :ivar process: the whole process, from spawn to exit, as the parent saw it.
    """

    driver: str
    variant: str
    init: Summary
    first: Summary
    process: Summary

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"driver": self.driver, "variant": self.variant}
        data.update((key, getattr(self, name).as_ms()) for key, name in _COLD_SUMMARIES)
        return data


#: ColdCell's summaries: JSON key, attribute.
_COLD_SUMMARIES = (("init", "init"), ("first_connect_query", "first"), ("process", "process"))


class _Plain:
    """A record whose JSON form is its fields, as they are."""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class Skip(_Plain):
    """A cell that was not measured, and why (one line)."""

    driver: str
    pattern: str
    reason: str


@dataclass(frozen=True)
class TargetCheck(_Plain):
    """Whether warmdb met one of its targets in this run.

    :ivar name: what is compared, e.g. ``connect vs raw driver``.
    :ivar driver: the driver variant.
    :ivar value: the measured ratio.
    :ivar limit: the target ratio.
    :ivar met: whether ``value <= limit``.
    :ivar text: the sentence the terminal prints.
    """

    name: str
    driver: str
    value: float
    limit: float
    met: bool
    text: str


@dataclass(frozen=True)
class ConcurrencyResult:
    """Seed 002's workload: requests that connect, query, hold, query and disconnect.

    :ivar driver: the driver variant.
    :ivar via: ``direct`` or ``sidecar``.
    :ivar concurrency: requests in flight at once.
    :ivar requests: requests in all.
    :ivar hold: seconds each request held its connection (after scaling).
    :ivar latency: whole-request latencies of the requests that succeeded.
    :ivar failures: requests that raised, by exception type name.
    :ivar peak_server_connections: the most connections the server had open at once.
    :ivar wall: seconds for the whole run.
    """

    driver: str
    via: str
    concurrency: int
    requests: int
    hold: float
    latency: Summary | None
    failures: dict[str, int]
    peak_server_connections: int | None
    wall: float

    def as_dict(self) -> dict[str, object]:
        return {
            "driver": self.driver,
            "via": self.via,
            "concurrency": self.concurrency,
            "requests": self.requests,
            "hold_s": self.hold,
            "latency": self.latency.as_ms() if self.latency is not None else None,
            "failures": dict(self.failures),
            "failed": sum(self.failures.values()),
            "peak_server_connections": self.peak_server_connections,
            "wall_s": round(self.wall, 3),
        }


@dataclass
class RunResult:
    """Everything one run measured, with what it ran against.

    :ivar environment: versions, machine, endpoint description, iterations, query, and how
        the baselines logged in.
    """

    environment: dict[str, object]
    cells: list[Cell] = field(default_factory=list)
    cold: list[ColdCell] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    targets: list[TargetCheck] = field(default_factory=list)
    concurrency: list[ConcurrencyResult] = field(default_factory=list)

    def cell(self, driver: str, pattern: str) -> Cell | None:
        """The measured cell for *driver* and *pattern*, if any."""
        return next((c for c in self.cells if c.driver == driver and c.pattern == pattern), None)

    def cold_cell(self, driver: str, variant: str) -> ColdCell | None:
        """The cold-start cell for *driver* and *variant*, if any."""
        return next((c for c in self.cold if c.driver == driver and c.variant == variant), None)

    def drivers(self) -> list[str]:
        """The driver variants that have a result, in first-seen order."""
        seen: dict[str, None] = {}
        for group in (self.cells, self.cold, self.skipped, self.concurrency):
            for item in group:
                seen.setdefault(item.driver, None)
        return list(seen)

    def as_dict(self) -> dict[str, object]:
        return {
            "environment": self.environment,
            "cells": [c.as_dict() for c in self.cells],
            "cold": [c.as_dict() for c in self.cold],
            "skipped": [s.as_dict() for s in self.skipped],
            "targets": [t.as_dict() for t in self.targets],
            "concurrency": [c.as_dict() for c in self.concurrency],
        }
