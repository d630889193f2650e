"""Live counters of an emulator run, and immutable snapshots of them.

:class:`Counters` is what every engine counts with; a snapshot dataclass says which counters
an engine reports (:class:`StatsSnapshot` for the PostgreSQL engines, ``MySQLStatsSnapshot``
for MySQL): each field is filled from the counter of the same name.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from typing import Any, Generic, TypeVar

__all__ = ["Counters", "Stats", "StatsSnapshot"]

SnapshotT = TypeVar("SnapshotT")


@dataclasses.dataclass(frozen=True)
class StatsSnapshot:
    """The counters at one moment.

    :ivar accepted: connections that authenticated and reached the upstream server.
    :ivar rejected: refused connections by reason: ``rate``, ``max_connections``, ``no_tls``,
        ``no_sni``, ``auth`` (bad token, or none: the client hung up when asked for it),
        ``protocol`` (malformed or oversized packets, timeouts before login) and
        ``upstream`` (the upstream server refused, e.g. an unknown role).
    :ivar auth_failures: the ``auth`` refusals by token check reason (``expired``,
        ``no_password``...).
    :ivar current: connections open now (from admission to close).
    :ivar peak: the most connections open at once.
    :ivar transactions: transactions that ended (committed or rolled back), implicit ones too.
    :ivar queries: Query and Execute messages received.
    :ivar limit_violations: transactions stopped by a limit, by limit name.
    :ivar occ_conflicts: 40001 OC000 errors sent: real conflicts and injected ones.
    :ivar expired: connections closed at the end of their lifetime.
    :ivar idle_closed: connections closed by the idle client timeout.
    :ivar cancels: cancel requests forwarded upstream.
    """

    accepted: int
    rejected: dict[str, int]
    auth_failures: dict[str, int]
    current: int
    peak: int
    transactions: int
    queries: int
    limit_violations: dict[str, int]
    occ_conflicts: int
    expired: int
    idle_closed: int
    cancels: int

    def as_dict(self) -> dict[str, object]:
        """The snapshot as plain JSON-ready data."""
        return dataclasses.asdict(self)


class Counters(Generic[SnapshotT]):
    """Thread-safe counters, updated by every session of a server.

    Subclasses name their snapshot dataclass in :attr:`snapshot_type`.
    """

    snapshot_type: type[SnapshotT]

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._rejected: Counter[str] = Counter()
        self._auth_failures: Counter[str] = Counter()
        self._violations: Counter[str] = Counter()
        self.current = 0
        self.peak = 0

    def add(self, name: str, amount: int = 1) -> None:
        """Add to one of the plain counters (``accepted``, ``queries``...)."""
        with self._lock:
            self._counts[name] += amount

    def reject(self, reason: str, detail: str | None = None) -> None:
        """Count a refused connection; *detail* is the token check reason for ``auth``."""
        with self._lock:
            self._rejected[reason] += 1
            if detail is not None:
                self._auth_failures[detail] += 1

    def violation(self, limit: str) -> None:
        """Count a transaction stopped by *limit*."""
        with self._lock:
            self._violations[limit] += 1

    def try_open(self, max_connections: int) -> bool:
        """Count a new open connection unless *max_connections* are open already."""
        with self._lock:
            if self.current >= max_connections:
                return False
            self.current += 1
            self.peak = max(self.peak, self.current)
            return True

    def close(self) -> None:
        """Count a connection closed."""
        with self._lock:
            self.current -= 1

    def snapshot(self) -> SnapshotT:
        """Return the counters as they are now."""
        with self._lock:
            values: dict[str, Any] = {
                "rejected": dict(self._rejected),
                "auth_failures": dict(self._auth_failures),
                "limit_violations": dict(self._violations),
                "current": self.current,
                "peak": self.peak,
            }
            fields = dataclasses.fields(self.snapshot_type)  # type: ignore[arg-type]
            return self.snapshot_type(
                **{
                    f.name: values[f.name] if f.name in values else self._counts[f.name]
                    for f in fields
                }
            )


class Stats(Counters[StatsSnapshot]):
    """The PostgreSQL engines' counters."""

    snapshot_type = StatsSnapshot
