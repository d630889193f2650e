"""Which connect failures are worth retrying, and how long to wait before the next attempt.

Pure code. The reasons below are what an adapter's :meth:`~warmdb.drivers.Adapter.classify`
puts in an :class:`~warmdb.drivers.ErrorVerdict`; each driver maps its own error codes and
messages to them (:mod:`warmdb._postgres` for the PostgreSQL drivers), and
:func:`classify_os_error` covers the socket errors every driver lets through.
:class:`Backoff` is the one retry schedule, shared by connect retry and OCC retry.

Retried, with backoff, by connects:

========================  ==========================================================
reason                    what happened
========================  ==========================================================
``rate-exceeded``         DSQL's 100 connections/s limit (SQLSTATE 53400)
``too-many-connections``  the server's connection limit (53300, MySQL 1040)
``server-starting``       the server is starting or shutting down (57P03)
``refused``               the TCP connect was refused (MySQL 2003)
``reset``                 the connection was reset or closed during the login
``timeout``               the connect timed out
``dns``                   temporary DNS failure (``EAI_AGAIN``)
========================  ==========================================================

Retried once, at once, with a freshly signed token: ``auth`` (SQLSTATE class 28, MySQL 1045)
when the password was an IAM token; a token the server refuses may have expired while cached.
Anything else (a wrong database name, an unknown host, TLS certificate errors) fails at once.
"""

from __future__ import annotations

from warmdb.policy import random_fraction as _random_fraction

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from warmdb.policy import Policy

__all__ = [
    "AUTH",
    "DNS",
    "RATE_EXCEEDED",
    "REFUSED",
    "RESET",
    "SERVER_STARTING",
    "TIMEOUT",
    "TOO_MANY_CONNECTIONS",
    "Backoff",
    "classify_os_error",
]

RATE_EXCEEDED = "rate-exceeded"
TOO_MANY_CONNECTIONS = "too-many-connections"
SERVER_STARTING = "server-starting"
REFUSED = "refused"
RESET = "reset"
TIMEOUT = "timeout"
DNS = "dns"
AUTH = "auth"

_EAI_AGAIN = -3  # socket.EAI_AGAIN on Linux and macOS; not imported to keep socket out


def classify_os_error(exc: BaseException) -> str | None:
    """The retry reason of a socket-level failure that a driver let through as it is
    (``ConnectionRefusedError``, a timeout, a DNS failure...), or ``None``."""
    if isinstance(exc, ConnectionRefusedError):
        return REFUSED
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return RESET
    if isinstance(exc, TimeoutError):
        return TIMEOUT
    if isinstance(exc, OSError) and type(exc).__name__ == "gaierror":
        return DNS if exc.errno == _EAI_AGAIN else None
    return None


class Backoff:
    """An immutable retry schedule: exponential backoff with jitter, a retry count and a
    total deadline (urllib3's ``Retry`` style). Shared by connect retry and OCC retry.

    ::

        backoff = Backoff(initial=0.05, maximum=2.0, timeout=15.0).start(now)
        ...                                   # an attempt failed at `now`
        backoff = backoff.increment(now)      # a new Backoff, or None: give up
        if backoff is None:
            raise error
        sleep(backoff.delay)

    The wait before retry *n* (1-based) is bounded by ``min(maximum, initial * 2**(n-1))``;
    with ``jitter=1`` (full jitter) it is uniform in [0, bound), with ``jitter=0`` it is the
    bound, in between ``bound * (1 - jitter * r)``. A wait never runs past the deadline.

    :param initial: the first wait's bound, seconds.
    :param maximum: the bound stops doubling here.
    :param timeout: total seconds from :meth:`start` within which retries may start;
        ``None`` for no deadline.
    :param max_retries: retries allowed at most; ``None`` for no count limit.
    :param jitter: the random share of each wait, in [0, 1].
    :param random_fraction: returns a float in [0, 1); :func:`warmdb.policy.random_fraction`.

    :ivar retries: retries granted so far.
    :ivar delay: the wait before the retry just granted (0 before any).
    :ivar deadline: the monotonic time after which no retry starts (infinity without one).
    """

    __slots__ = (
        "deadline",
        "delay",
        "initial",
        "jitter",
        "max_retries",
        "maximum",
        "random_fraction",
        "retries",
        "timeout",
    )

    initial: float
    maximum: float
    timeout: float | None
    max_retries: int | None
    jitter: float
    random_fraction: Callable[[], float]
    retries: int
    delay: float
    deadline: float

    def __init__(
        self,
        *,
        initial: float,
        maximum: float,
        timeout: float | None = None,
        max_retries: int | None = None,
        jitter: float = 1.0,
        random_fraction: Callable[[], float] = _random_fraction,
    ) -> None:
        from warmdb._arguments import check_count, check_seconds
        from warmdb.errors import ConfigurationError

        check_seconds("initial", initial)
        check_seconds("maximum", maximum)
        check_seconds("timeout", timeout, optional=True)
        if max_retries is not None:
            check_count("max_retries", max_retries, minimum=0)
        if maximum < initial:
            raise ConfigurationError(f"maximum ({maximum}) must not be below initial ({initial})")
        if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not 0 <= jitter <= 1:
            raise ConfigurationError(f"jitter must be a fraction in [0, 1], not {jitter!r}")
        self._set(
            initial=float(initial),
            maximum=float(maximum),
            timeout=None if timeout is None else float(timeout),
            max_retries=max_retries,
            jitter=float(jitter),
            random_fraction=random_fraction,
            retries=0,
            delay=0.0,
            deadline=_NO_DEADLINE,
        )

    @classmethod
    def from_policy(cls, policy: Policy) -> Backoff:
        """The connect schedule of a :class:`~warmdb.policy.Policy`: ``backoff_initial``,
        ``backoff_max``, within ``retry_timeout``, full jitter."""
        return cls(
            initial=policy.backoff_initial,
            maximum=policy.backoff_max,
            timeout=policy.retry_timeout,
        )

    def start(self, now: float) -> Backoff:
        """A copy whose deadline runs from *now* (the monotonic time of the first attempt)."""
        deadline = _NO_DEADLINE if self.timeout is None else now + self.timeout
        return self._copy(retries=0, delay=0.0, deadline=deadline)

    def increment(self, now: float) -> Backoff | None:
        """The schedule after one more failure at *now*: a copy with the next :attr:`delay`,
        or ``None`` when the retry count or the deadline is used up."""
        remaining = self.deadline - now
        if remaining <= 0:
            return None
        if self.max_retries is not None and self.retries >= self.max_retries:
            return None
        retries = self.retries + 1
        bound = min(self.maximum, self.initial * 2 ** (retries - 1))
        delay = bound * (1.0 - self.jitter * self.random_fraction())
        return self._copy(retries=retries, delay=min(delay, remaining))

    def _set(self, **values: object) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def _copy(self, **changes: object) -> Backoff:
        clone = object.__new__(Backoff)
        clone._set(**{name: getattr(self, name) for name in self.__slots__})
        clone._set(**changes)
        return clone

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Backoff is immutable: use start() and increment()")

    def __repr__(self) -> str:
        return (
            f"Backoff(initial={self.initial}, maximum={self.maximum}, timeout={self.timeout}, "
            f"max_retries={self.max_retries}, jitter={self.jitter}, retries={self.retries})"
        )


_NO_DEADLINE = float("inf")
