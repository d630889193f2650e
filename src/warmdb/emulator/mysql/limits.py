"""What the MySQL emulator enforces, its statistics, and what it says when it refuses.

:class:`MySQLLimits` holds the options with RDS's values as defaults; :class:`MySQLStats`
counts what happened. The refusals use MySQL's own error numbers and texts, word for word
(``include/mysqld_ername.h``), so drivers classify them as they would RDS's.
"""

from __future__ import annotations

import dataclasses

from warmdb.auth.tokens import RDS_TOKEN_DURATION
from warmdb.emulator.stats import Counters
from warmdb.errors import ConfigurationError

__all__ = [
    "ACCESS_DENIED",
    "BAD_HANDSHAKE",
    "MySQLLimits",
    "MySQLStats",
    "MySQLStatsSnapshot",
    "access_denied",
]

_MARIADB_MIN_CONNECTIONS = 10
#: ER_ACCESS_DENIED_ERROR: every refused login (bad token, no TLS, throttled), as RDS does.
ACCESS_DENIED = 1045
#: ER_HANDSHAKE_ERROR: a malformed login packet.
BAD_HANDSHAKE = (1043, "08S01", "Bad handshake")


def access_denied(user: str, host: str, *, has_password: bool = True) -> tuple[int, str, str]:
    """MySQL's 1045 for *user* connecting from *host*: code, SQLSTATE and message."""
    using = "YES" if has_password else "NO"
    return (
        ACCESS_DENIED,
        "28000",
        f"Access denied for user '{user}'@'{host}' (using password: {using})",
    )


@dataclasses.dataclass(frozen=True)
class MySQLLimits:
    """The MySQL emulator's options; RDS for MySQL's values by default. Immutable.

    :ivar idle_client_timeout: seconds a client may sit idle (its turn to send) before the
        emulator closes its connection, as RDS Proxy's ``IdleClientTimeout`` does (1,800 s
        behind a proxy); ``None`` (the default) for a direct RDS endpoint, which has none.
    :ivar wait_timeout: MariaDB's own ``wait_timeout`` in seconds (28,800 by default, as
        MySQL and RDS): the server closes connections idle that long.
    :ivar iam_connect_rate: new IAM logins per second (burst the same), 200 by default.
        A login with a token already accepted in the last 15 minutes is not counted: RDS
        throttles token verification, not reuse.
    :ivar max_connections: MariaDB's ``max_connections``, 151 by default (MySQL's default;
        RDS derives it from the instance's memory); more logins get 1040. At least 10,
        MariaDB's minimum.
    :ivar login_timeout: seconds a client has from connecting to finishing login, 10.
    """

    idle_client_timeout: float | None = None
    wait_timeout: float = 28_800.0
    iam_connect_rate: float = 200.0
    max_connections: int = 151
    login_timeout: float = 10.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None and not value > 0:
                raise ConfigurationError(f"{field.name}={value!r} must be greater than 0")
        if self.max_connections < _MARIADB_MIN_CONNECTIONS:
            # MariaDB would silently raise it to its minimum.
            raise ConfigurationError(
                f"max_connections={self.max_connections!r} must be at least "
                f"{_MARIADB_MIN_CONNECTIONS} (MariaDB's minimum)"
            )
        if not float(self.wait_timeout).is_integer():
            raise ConfigurationError(
                f"wait_timeout={self.wait_timeout!r} must be whole seconds (MariaDB's unit)"
            )

    @property
    def reuse_window(self) -> float:
        """How long an accepted token may be reused without counting against the rate."""
        return float(RDS_TOKEN_DURATION)


@dataclasses.dataclass(frozen=True)
class MySQLStatsSnapshot:
    """The MySQL emulator's counters at one moment.

    :ivar accepted: logins that passed the token check and reached MariaDB.
    :ivar rejected: refused logins by reason: ``no_tls``, ``auth`` (the token check),
        ``rate`` (the IAM connect ceiling), ``protocol`` (malformed packets, login timeouts)
        and ``upstream`` (MariaDB refused: unknown user, too many connections).
    :ivar auth_failures: the ``auth`` refusals by token check reason (``expired``...).
    :ivar reused_tokens: logins with a token already accepted, not counted by the ceiling.
    :ivar current: connections open now (from login to close).
    :ivar peak: the most connections open at once.
    :ivar idle_closed: connections closed by ``idle_client_timeout``.
    :ivar upstream_closed: connections MariaDB closed (``wait_timeout``, ``KILL``).
    """

    accepted: int
    rejected: dict[str, int]
    auth_failures: dict[str, int]
    reused_tokens: int
    current: int
    peak: int
    idle_closed: int
    upstream_closed: int

    def as_dict(self) -> dict[str, object]:
        """The snapshot as plain JSON-ready data."""
        return dataclasses.asdict(self)


class MySQLStats(Counters[MySQLStatsSnapshot]):
    """The MySQL engine's counters."""

    snapshot_type = MySQLStatsSnapshot
