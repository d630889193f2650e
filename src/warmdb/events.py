"""Events for metrics: connects (with timings), retries (with the reason), recycles (why).

Subclass :class:`Listener`, override what you need, and register it::

    import warmdb.events

    class Metrics(warmdb.events.Listener):
        def on_connect(self, event):
            histogram.observe(event.seconds)

        def on_retry(self, event):
            counter.labels(event.reason).inc()

    warmdb.events.add_listener(Metrics())

Listeners are process-wide and called synchronously, in the thread or task that connects;
keep them quick. A listener that raises is logged and skipped: metrics never break a connect.
:func:`counts` gives the process-wide totals without any listener.

No event carries a password, token or anything a token could be rebuilt from.
"""

from __future__ import annotations

import threading

from warmdb._log import get_logger
from warmdb._record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "ConflictRetryEvent",
    "ConnectEvent",
    "Listener",
    "RecycleEvent",
    "RetryEvent",
    "add_listener",
    "counts",
    "emit_conflict_retry",
    "remove_listener",
    "reset_counts",
]

logger = get_logger("warmdb.events")


class ConnectEvent(Record):
    """A connection was opened.

    :ivar driver: the driver module's name (``"psycopg"``, ``"asyncpg"``...).
    :ivar host: the endpoint's host name.
    :ivar port: the endpoint's port.
    :ivar user: the database user.
    :ivar attempts: connect attempts made, the successful one included.
    :ivar seconds: from the start of the first attempt to the open connection, waits included.
    :ivar connect_seconds: how long the successful attempt took.
    :ivar waited_seconds: time spent waiting: the rate governor and retry backoff.
    """

    _shown = "driver={driver!r}, host={host!r}, attempts={attempts}, seconds={seconds:.6f}"

    driver: str
    host: str
    port: int
    user: str | None
    attempts: int
    seconds: float
    connect_seconds: float
    waited_seconds: float


class RetryEvent(Record):
    """A connect attempt failed and will be retried.

    :ivar driver: the driver module's name.
    :ivar host: the endpoint's host name.
    :ivar port: the endpoint's port.
    :ivar attempt: the number of the attempt that failed (1 for the first).
    :ivar reason: the reason from :func:`warmdb.retry.classify` (``"rate-exceeded"``...).
    :ivar sqlstate: the server's SQLSTATE, when it sent one.
    :ivar delay: seconds to wait before the next attempt.
    """

    _shown = (
        "driver={driver!r}, host={host!r}, attempt={attempt}, reason={reason!r}, delay={delay:.3f}"
    )

    driver: str
    host: str
    port: int
    attempt: int
    reason: str
    sqlstate: str | None
    delay: float


class RecycleEvent(Record):
    """A kept or pooled connection was closed and will be replaced.

    :ivar driver: the driver module's name.
    :ivar host: the endpoint's host name.
    :ivar port: the endpoint's port.
    :ivar reason: ``"lifetime"`` (older than the policy's lifetime), ``"idle"`` (idle longer
        than ``max_idle``), ``"closed"`` (found closed), ``"readable"`` (the server closed it
        or sent a termination notice while idle), ``"ping-failed"``, or ``"broken"`` (the
        caller's work failed with a connection error).
    :ivar age: seconds since the connection was opened.
    :ivar idle: seconds since it was last handed back.
    """

    _shown = "driver={driver!r}, host={host!r}, reason={reason!r}, age={age:.3f}, idle={idle:.3f}"

    driver: str
    host: str
    port: int
    reason: str
    age: float
    idle: float


class ConflictRetryEvent(Record):
    """A transaction lost a concurrency conflict and will run again
    (:func:`warmdb.transactions.run_transaction`, ``write_batches``).

    :ivar attempt: the number of the attempt that lost (1 for the first).
    :ivar delay: seconds to wait before the next attempt.
    :ivar code: the conflict (``"OC000"``, ``"OC001"``, ``"40001"``, ``"40P01"``,
        ``"1213"``, ``"1205"``), or ``"broken"``: the connection was lost before COMMIT
        was sent, and the next attempt runs on a new one.
    """

    _shown = "attempt={attempt}, delay={delay:.4f}, code={code!r}"

    attempt: int
    delay: float
    code: str


class Listener:
    """Receives warmdb's events. Every method is a no-op; override the ones you need."""

    def on_connect(self, event: ConnectEvent) -> None:
        """A connection was opened."""

    def on_retry(self, event: RetryEvent) -> None:
        """A connect attempt failed and will be retried after ``event.delay`` seconds."""

    def on_recycle(self, event: RecycleEvent) -> None:
        """A connection was closed to be replaced."""

    def on_conflict_retry(self, event: ConflictRetryEvent) -> None:
        """A transaction lost a conflict and runs again after ``event.delay`` seconds."""


_lock = threading.Lock()
# Replaced, never mutated, so emitting needs no lock.
_listeners: tuple[Listener, ...] = ()
_counts: dict[str, int] = {}


def add_listener(listener: Listener) -> None:
    """Register *listener* for every event in the process."""
    global _listeners
    with _lock:
        _listeners = (*_listeners, listener)


def remove_listener(listener: Listener) -> None:
    """Unregister *listener* (no error if it was not registered)."""
    global _listeners
    with _lock:
        _listeners = tuple(known for known in _listeners if known is not listener)


def counts() -> dict[str, int]:
    """Process-wide totals: ``connects``, ``retries``, ``retries.REASON``, ``recycles``,
    ``recycles.REASON``, ``conflict_retries`` and ``conflict_retries.CODE``."""
    with _lock:
        return dict(_counts)


def reset_counts() -> None:
    """Set every total back to zero."""
    with _lock:
        _counts.clear()


def _count(*keys: str) -> None:
    with _lock:
        for key in keys:
            _counts[key] = _counts.get(key, 0) + 1


def emit_connect(event: ConnectEvent) -> None:
    """Count and deliver a :class:`ConnectEvent`."""
    _emit(
        event,
        "on_connect",
        ("connects",),
        logger.debug,
        "connected to %s:%s in %.1f ms (%d attempt(s))",
        event.host,
        event.port,
        event.seconds * 1000,
        event.attempts,
    )


def emit_retry(event: RetryEvent) -> None:
    """Count, log and deliver a :class:`RetryEvent`."""
    # INFO, not WARNING: retrying is the expected way through a burst.
    _emit(
        event,
        "on_retry",
        ("retries", f"retries.{event.reason}"),
        logger.info,
        "connect to %s:%s failed (%s%s), attempt %d; retrying in %.3f s",
        event.host,
        event.port,
        event.reason,
        f", SQLSTATE {event.sqlstate}" if event.sqlstate else "",
        event.attempt,
        event.delay,
    )


def emit_recycle(event: RecycleEvent) -> None:
    """Count, log and deliver a :class:`RecycleEvent`."""
    _emit(
        event,
        "on_recycle",
        ("recycles", f"recycles.{event.reason}"),
        logger.debug,
        "replacing a connection to %s:%s (%s, age %.1f s, idle %.1f s)",
        event.host,
        event.port,
        event.reason,
        event.age,
        event.idle,
    )


def emit_conflict_retry(event: ConflictRetryEvent) -> None:
    """Count, log and deliver a :class:`ConflictRetryEvent`."""
    _emit(
        event,
        "on_conflict_retry",
        ("conflict_retries", f"conflict_retries.{event.code}"),
        logger.debug,
        "transaction conflict %s on attempt %d; running it again in %.4f s",
        event.code,
        event.attempt,
        event.delay,
    )


def _emit(
    event: Record,
    method: str,
    keys: tuple[str, ...],
    log: Callable[..., None],
    message: str,
    *args: object,
) -> None:
    """Count *event* under *keys*, log *message* % *args*, deliver it to every listener's
    *method*."""
    _count(*keys)
    log(message, *args)
    for listener in _listeners:
        # getattr: a listener need not define every method (one written before
        # on_conflict_retry existed, or one that is not a Listener subclass).
        deliver = getattr(listener, method, None)
        if deliver is not None:
            _deliver(deliver, event)


def _deliver(method: object, event: object) -> None:
    try:
        method(event)  # type: ignore[operator]
    except Exception as exc:
        logger.warning("warmdb event listener %r failed: %r", method, exc)
