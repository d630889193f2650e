"""How connections live: lifetime, idle checks, connect timeouts and the retry budget.

A :class:`Policy` is an immutable record shared by every keeper, pool and engine::

    from warmdb.policy import DSQL

    policy = DSQL.replace(ping_after_idle=10.0)

Presets:

- :data:`DSQL`: connections live 55 minutes minus up to 5% jitter, well inside DSQL's
  60-minute limit, so the server never closes one under a query.
- :data:`RDS`: RDS and Aurora PostgreSQL / MySQL: connections are not time-limited by the
  server; they are renewed hourly so rotated credentials and DNS changes (fail-over) are
  picked up. New connections to one endpoint are paced at 200 per second, RDS IAM
  authentication's ceiling.
- :data:`RDS_PROXY`: behind RDS Proxy, which drops client connections idle for 30 minutes
  (its default ``IdleClientTimeout``): an idle connection is replaced after 25 minutes
  instead of being found dead by the next query; paced like :data:`RDS`.
- :data:`DEFAULT`: plain password servers: hourly renewal, no idle limit.

Every duration is float seconds. Validation happens in the constructor and in
:meth:`Policy.replace`, with a :class:`~warmdb.ConfigurationError` naming the field.
"""

from __future__ import annotations

import os

from warmdb._arguments import check_seconds
from warmdb.errors import ConfigurationError

__all__ = ["DEFAULT", "DSQL", "RDS", "RDS_PROXY", "Policy", "policy_for", "random_fraction"]

_FIELDS = (
    "max_lifetime",
    "lifetime_jitter",
    "max_idle",
    "ping_after_idle",
    "poll_after_idle",
    "connect_timeout",
    "retry_timeout",
    "backoff_initial",
    "backoff_max",
    "connect_rate",
)


class Policy:
    """How long connections live and how connects are retried. Immutable.

    :param max_lifetime: replace a connection this many seconds after it was opened, minus
        the jitter; ``None`` for no limit. Checked at checkout, never by a timer.
    :param lifetime_jitter: a fraction in [0, 0.5): each connection's lifetime is shortened by
        a random part of up to this fraction, so connections opened together do not all expire
        together.
    :param max_idle: replace (without a round trip) a connection idle longer than this;
        ``None`` for no limit. Set it below a proxy's or server's idle timeout.
    :param ping_after_idle: run a ping before handing out a connection idle longer than this;
        ``0`` pings at every checkout, ``None`` never. Connections used more recently are
        handed out without a round trip.
    :param poll_after_idle: before handing out a connection idle at least this long, poll its
        socket (no round trip, about 0.5 µs): readable means the server closed it or sent a
        termination notice, and it is replaced. ``0`` polls at every checkout, ``None`` never.
        The default 0.5 s skips the poll for a connection given back moments ago, as
        HikariCP's ``aliveBypassWindowMs`` does: a server-side close is caught in proportion
        to the idle time it can happen in, and a connection busy all but a few milliseconds
        is far likelier to lose its backend in the middle of a query than between two.
        Pools and engines apply it; ``warm()`` keepers, checked out once per invocation,
        poll at every checkout.
    :param connect_timeout: seconds one connect attempt may take (the driver's connect
        timeout); ``None`` leaves the driver's default.
    :param retry_timeout: total seconds a connect may spend retrying transient failures
        (rate limits, refused or reset connects, temporary DNS failures); ``0`` makes one
        attempt (plus the single retry with a fresh token after an authentication failure).
    :param backoff_initial: the first retry waits up to this many seconds; the bound doubles
        with each retry (full jitter: the wait is uniform between 0 and the bound).
    :param backoff_max: the bound stops doubling here.
    :param connect_rate: new connections per second this process opens to one endpoint (host
        and port), with a burst of one second's worth; ``None`` for no per-endpoint ceiling.
        Connects beyond it wait their turn (:mod:`warmdb.governor`) instead of being refused
        by the server. The RDS presets set 200, RDS IAM authentication's ceiling for new
        connections. The process-wide :func:`warmdb.limit_connect_rate` applies on top.
    """

    __slots__ = (*_FIELDS, "first_idle_check")

    max_lifetime: float | None
    lifetime_jitter: float
    max_idle: float | None
    ping_after_idle: float | None
    poll_after_idle: float | None
    connect_timeout: float | None
    retry_timeout: float
    backoff_initial: float
    backoff_max: float
    connect_rate: float | None
    #: The least idle time at which a checkout has something to check (a poll, a ping or
    #: ``max_idle``); infinity when none applies. Derived, not a field.
    first_idle_check: float

    def __init__(
        self,
        *,
        max_lifetime: float | None = 3600.0,
        lifetime_jitter: float = 0.05,
        max_idle: float | None = None,
        ping_after_idle: float | None = 60.0,
        poll_after_idle: float | None = 0.5,
        connect_timeout: float | None = 10.0,
        retry_timeout: float = 15.0,
        backoff_initial: float = 0.05,
        backoff_max: float = 2.0,
        connect_rate: float | None = None,
    ) -> None:
        values = {
            "max_lifetime": check_seconds("max_lifetime", max_lifetime, optional=True),
            "lifetime_jitter": _fraction("lifetime_jitter", lifetime_jitter),
            "max_idle": check_seconds("max_idle", max_idle, optional=True),
            "ping_after_idle": check_seconds("ping_after_idle", ping_after_idle, optional=True),
            "poll_after_idle": check_seconds("poll_after_idle", poll_after_idle, optional=True),
            "connect_timeout": check_seconds("connect_timeout", connect_timeout, optional=True),
            "retry_timeout": check_seconds("retry_timeout", retry_timeout),
            "backoff_initial": check_seconds("backoff_initial", backoff_initial),
            "backoff_max": check_seconds("backoff_max", backoff_max),
            "connect_rate": _rate("connect_rate", connect_rate),
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)
        idle_checks = [
            seconds
            for seconds in (self.max_idle, self.ping_after_idle, self.poll_after_idle)
            if seconds is not None
        ]
        object.__setattr__(self, "first_idle_check", min(idle_checks, default=float("inf")))
        if self.max_lifetime == 0:
            raise ConfigurationError("max_lifetime must be positive or None, not 0")
        if self.connect_timeout == 0:
            raise ConfigurationError("connect_timeout must be positive or None, not 0")
        if self.backoff_max < self.backoff_initial:
            raise ConfigurationError(
                f"backoff_max ({self.backoff_max}) must not be below "
                f"backoff_initial ({self.backoff_initial})"
            )

    def replace(self, **changes: float | None) -> Policy:
        """Return a copy with the given fields changed (validated like the constructor).

        :raises ConfigurationError: an unknown field or a bad value.
        """
        unknown = sorted(set(changes) - set(_FIELDS))
        if unknown:
            raise ConfigurationError(
                f"unknown policy field(s) {', '.join(unknown)}; known: {', '.join(_FIELDS)}"
            )
        values = {name: getattr(self, name) for name in _FIELDS}
        values.update(changes)
        return Policy(**values)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Policy is immutable: use policy.replace({name}=...)")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Policy) and self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in _FIELDS)
        return f"Policy({fields})"

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in _FIELDS)


def _rate(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e9:
        raise ConfigurationError(
            f"{name} must be a positive number of connects per second or None, not {value!r}"
        )
    return float(value)


def _fraction(name: str, value: object) -> float:
    seconds = check_seconds(name, value)
    assert seconds is not None
    if seconds >= 0.5:
        raise ConfigurationError(f"{name} must be a fraction in [0, 0.5), not {value}")
    return seconds


#: Aurora DSQL: renewed well before the 60-minute connection limit.
DSQL = Policy(max_lifetime=55 * 60.0, lifetime_jitter=0.05)
# RDS IAM authentication admits about 200 new connections per second; a reused (cached)
# token is not counted, so only a burst of new connects from one process can reach it.
_RDS_IAM_CONNECT_RATE = 200.0
#: RDS / Aurora with IAM tokens: hourly renewal, at most 200 new connections per second.
RDS = Policy(max_lifetime=60 * 60.0, connect_rate=_RDS_IAM_CONNECT_RATE)
#: Behind RDS Proxy: idle connections replaced before the proxy's 30-minute idle timeout.
RDS_PROXY = Policy(max_lifetime=60 * 60.0, max_idle=25 * 60.0, connect_rate=_RDS_IAM_CONNECT_RATE)
#: Password servers.
DEFAULT = Policy()


def policy_for(auth: str) -> Policy:
    """The preset matching an endpoint's auth mode (``"dsql"``, ``"rds"`` or ``"password"``)."""
    if auth == "dsql":
        return DSQL
    if auth == "rds":
        return RDS
    return DEFAULT


def random_fraction() -> float:
    """A uniform float in [0, 1) for jitter.

    From :func:`os.urandom` rather than :mod:`random`, whose import costs a cold start about
    1.5 ms; jitter needs no reproducible sequence.
    """
    return int.from_bytes(os.urandom(7), "big") / (1 << 56)
