"""Which connect failures are worth retrying, and how long to wait before the next attempt.

Pure code: :func:`classify` names the reason a failed connect may succeed if tried again,
and :class:`RetrySchedule` turns a :class:`~warmdb.policy.Policy` into waits (exponential
backoff with full jitter, inside the policy's ``retry_timeout``). The loops that sleep live
in :mod:`warmdb._connect`, once for threads and once for asyncio.

Retried, with backoff:

========================  ==========================================================
reason                    what happened
========================  ==========================================================
``rate-exceeded``         SQLSTATE 53400: DSQL's 100 connections/s limit
``too-many-connections``  SQLSTATE 53300: the server's connection limit
``server-starting``       SQLSTATE 57P03: the server is starting or shutting down
``refused``               the TCP connect was refused
``reset``                 the connection was reset or closed during the login
``timeout``               the connect timed out
``dns``                   temporary DNS failure (``EAI_AGAIN``)
========================  ==========================================================

Retried once, at once, with a freshly signed token: ``auth`` (SQLSTATE class 28) when the
password was an IAM token; a token the server refuses may have expired while cached.
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
    "RetrySchedule",
    "classify",
]

RATE_EXCEEDED = "rate-exceeded"
TOO_MANY_CONNECTIONS = "too-many-connections"
SERVER_STARTING = "server-starting"
REFUSED = "refused"
RESET = "reset"
TIMEOUT = "timeout"
DNS = "dns"
AUTH = "auth"

_BY_SQLSTATE = {"53400": RATE_EXCEEDED, "53300": TOO_MANY_CONNECTIONS, "57P03": SERVER_STARTING}

# libpq reports socket failures as text only; these fragments are its messages (and the
# operating system's strerror texts it embeds), checked in order.
_BY_MESSAGE = (
    ("connection refused", REFUSED),
    ("connection reset", RESET),
    ("server closed the connection unexpectedly", RESET),
    ("ssl syscall error: eof detected", RESET),
    ("timeout expired", TIMEOUT),
    ("timed out", TIMEOUT),
    ("temporary failure in name resolution", DNS),
)

_EAI_AGAIN = -3  # socket.EAI_AGAIN on Linux and macOS; not imported to keep socket out


def classify(exc: BaseException, sqlstate: str | None) -> str | None:
    """Return the retry reason for a failed connect, or ``None`` when retrying cannot help.

    :param exc: the driver's exception (or an :class:`OSError` from the socket layer).
    :param sqlstate: the SQLSTATE the server sent, when known.
    """
    if sqlstate is not None:
        if sqlstate.startswith("28"):
            return AUTH
        if sqlstate in _BY_SQLSTATE:
            return _BY_SQLSTATE[sqlstate]
        return None
    # asyncpg lets socket errors through as they are; they are checked by type first.
    if isinstance(exc, ConnectionRefusedError):
        return REFUSED
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return RESET
    if isinstance(exc, TimeoutError):
        return TIMEOUT
    if isinstance(exc, OSError) and type(exc).__name__ == "gaierror":
        return DNS if exc.errno == _EAI_AGAIN else None
    text = str(exc).lower()
    return next((reason for fragment, reason in _BY_MESSAGE if fragment in text), None)


class RetrySchedule:
    """The waits between the attempts of one connect.

    :param policy: gives ``retry_timeout``, ``backoff_initial`` and ``backoff_max``.
    :param started_at: the monotonic time of the first attempt.
    :param random_fraction: returns a float in [0, 1);
        :func:`warmdb.policy.random_fraction` by default.
    """

    __slots__ = ("_auth_retried", "_deadline", "_policy", "_random", "retries")

    def __init__(
        self,
        policy: Policy,
        started_at: float,
        random_fraction: Callable[[], float] = _random_fraction,
    ) -> None:
        self._policy = policy
        self._deadline = started_at + policy.retry_timeout
        self._random = random_fraction
        self._auth_retried = False
        #: retries granted so far
        self.retries = 0

    def next_delay(
        self, reason: str | None, now: float, *, fresh_token: bool = False
    ) -> float | None:
        """Return the seconds to wait before the next attempt, or ``None`` to give up.

        :param reason: what :func:`classify` said of the failure.
        :param now: the monotonic time of the failure.
        :param fresh_token: whether a new token can be signed (the auth retry needs one).
        """
        if reason is None:
            return None
        if reason == AUTH:
            if self._auth_retried or not fresh_token:
                return None
            self._auth_retried = True
            self.retries += 1
            return 0.0
        remaining = self._deadline - now
        if remaining <= 0:
            return None
        self.retries += 1
        bound = min(
            self._policy.backoff_max, self._policy.backoff_initial * 2 ** (self.retries - 1)
        )
        return min(bound * self._random(), remaining)
