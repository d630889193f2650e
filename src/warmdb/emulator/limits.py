"""Aurora DSQL's limits, as configuration and as pure checks with an injectable clock.

:class:`Limits` holds every limit the emulator enforces, with DSQL's values as defaults (see
the quotas table in the design notes); :class:`TokenBucket` is the connection-rate limiter.
:data:`REFUSALS` holds the SQLSTATE and message DSQL sends for each limit, word for word where
DSQL documents them.
"""

from __future__ import annotations

import dataclasses
import threading
import time

from warmdb.errors import ConfigurationError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["REFUSALS", "Limits", "Refusal", "TokenBucket"]


@dataclasses.dataclass(frozen=True)
class Refusal:
    """What the server says when a limit is hit.

    :ivar code: the SQLSTATE.
    :ivar message: the message text.
    """

    code: str
    message: str


#: Keyed by the reason names that also appear in the statistics.
REFUSALS = {
    "rate": Refusal("53400", "Unable to accept connection, rate exceeded."),
    "max_connections": Refusal("53300", "Unable to accept connection, too many open connections."),
    # DSQL documents no code for the 60-minute cut: clients just see the connection end. The
    # emulator says why, with the code PostgreSQL uses when an administrator ends a session,
    # which pools and retry code already treat as "reconnect".
    "lifetime": Refusal("57P01", "terminating connection: connection duration limit exceeded"),
    "transaction_age": Refusal("54000", "transaction age limit of {seconds}s exceeded"),
    "transaction_rows": Refusal("54000", "transaction row limit exceeded"),
    "transaction_size": Refusal("54000", "transaction size limit {mb}mb exceeded"),
    "occ": Refusal("40001", "OC000 mutation conflicts with another transaction, retry as needed"),
    "occ_schema": Refusal(
        "40001", "OC001 schema has been updated by another transaction, retry as needed"
    ),
    "auth": Refusal("28000", 'IAM authentication failed for user "{user}"'),
    # The emulator's own wording: DSQL's plaintext refusal is not documented.
    "no_tls": Refusal("28000", "TLS is required: connect with sslmode=require or stricter"),
}


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigurationError(f"{name}={value!r} must be greater than 0")


@dataclasses.dataclass(frozen=True)
class Limits:
    """The limits the emulator enforces; DSQL's values by default. Immutable.

    Durations are float seconds of DSQL time: the server divides them by ``time_scale``.

    :ivar connection_rate: new connections per second (token bucket refill), default 100.
    :ivar connection_burst: bucket size, default 1,000.
    :ivar max_connections: open connections at once, default 10,000.
    :ivar connection_lifetime: seconds before a connection is closed, default 3,600.
    :ivar transaction_age: seconds a transaction may stay open, default 300.
    :ivar transaction_rows: rows a transaction may modify, default 3,000.
    :ivar transaction_bytes: bytes of statements and data a transaction may send, 10 MiB.
    :ivar time_scale: every duration above, and token lifetimes, are divided by this.
    :ivar token_time_scale: divides token lifetimes instead, when given; ``None`` (the
        default) means ``time_scale``. E.g. ``time_scale=3600, token_time_scale=1``: an
        hour-long connection lifetime lasts one second while tokens expire in real time, as
        a client's token cache expects.
    :ivar sql_checks: refuse the SQL DSQL refuses (unsupported statements, more than one DDL
        or DDL with DML in a transaction), as DSQL does; ``True`` by default. ``False`` is the
        "postgres-compatible" mode: any PostgreSQL statement runs, while tokens, limits and
        conflicts are still DSQL's (see ``docs/emulator-sql.md``).
    """

    connection_rate: float = 100.0
    connection_burst: int = 1_000
    max_connections: int = 10_000
    connection_lifetime: float = 3_600.0
    transaction_age: float = 300.0
    transaction_rows: int = 3_000
    transaction_bytes: int = 10 * 1024 * 1024
    time_scale: float = 1.0
    token_time_scale: float | None = None
    sql_checks: bool = True

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None and not isinstance(value, bool):
                _positive(field.name, value)

    def scaled(self, seconds: float) -> float:
        """Real seconds that stand for *seconds* of DSQL time."""
        return seconds / self.time_scale

    @property
    def token_scale(self) -> float:
        """The divisor of token lifetimes: ``token_time_scale``, else ``time_scale``."""
        return self.time_scale if self.token_time_scale is None else self.token_time_scale

    def refusal(self, reason: str) -> Refusal:
        """The refusal for *reason*, its message filled in with the configured values."""
        refusal = REFUSALS[reason]
        message = refusal.message.format(
            seconds=_number(self.transaction_age),
            mb=_number(self.transaction_bytes / (1024 * 1024)),
            user="{user}",
        )
        return Refusal(refusal.code, message)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


class TokenBucket:
    """A thread-safe token bucket: *burst* tokens, refilled at *rate* per second.

    :param clock: a monotonic clock in seconds; :func:`time.monotonic` by default.
    """

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        _positive("rate", rate)
        _positive("burst", burst)
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        """Take one token if there is one; return whether it was taken."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            return False
