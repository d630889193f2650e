"""The OCC retry budget: :class:`OCCRetryConfig`, warmdb's default, and one run's attempts.

Pure code: :class:`Attempts` decides, after a failed attempt, whether to run the transaction
again and after how long; the sync and async fronts (:mod:`warmdb.transactions._run`) only
sleep and call. Waits come from :class:`warmdb.retry.Backoff`, the schedule connect retry
uses too.
"""

from __future__ import annotations

import time

from warmdb import events
from warmdb._log import get_logger
from warmdb.errors import ConfigurationError, ConflictError
from warmdb.retry import Backoff
from warmdb.transactions._conflict import conflict_code

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeAlias

    from warmdb.drivers import Adapter

    Retry: TypeAlias = "OCCRetryConfig | Backoff | bool | None"

__all__ = [
    "BROKEN",
    "DEFAULT_RETRY",
    "Attempts",
    "OCCRetryConfig",
    "merge_retry",
    "retry_schedule",
]

logger = get_logger("warmdb.transactions")


class OCCRetryConfig:
    """An OCC retry budget, field for field the one of aurora-dsql-python-connector 0.2.7
    (``dsql_core.occ_retry.OCCRetryConfig``), with the same defaults and the same checks, so
    code written for it runs unchanged. Immutable.

    The wait before retry *n* is ``min(base_delay_ms * 2**(n-1), max_delay_ms)`` plus up to
    ``jitter_factor`` of it at random, as in the connector. warmdb's own default
    (:data:`DEFAULT_RETRY`) uses full jitter instead, which spreads contending clients
    further apart (see ``docs/transactions.md`` for the measured difference).

    :param max_retries: attempts after the first, 0 to 100; default 3.
    :param base_delay_ms: the first wait, milliseconds, above 0; default 1.
    :param max_delay_ms: the longest wait, milliseconds, at least *base_delay_ms*; default 100.
    :param jitter_factor: the random share added to each wait, 0 to 1; default 0.25.
    :param timeout: warmdb's addition: seconds from the first attempt after which no retry
        starts; ``None`` (the default) for none, as in the connector.
    :raises ValueError: a field is out of range (a :class:`~warmdb.ConfigurationError`, which
        is also a ``ValueError``, as the connector raises).
    """

    __slots__ = ("base_delay_ms", "jitter_factor", "max_delay_ms", "max_retries", "timeout")

    max_retries: int
    base_delay_ms: int
    max_delay_ms: int
    jitter_factor: float
    timeout: float | None

    def __init__(
        self,
        max_retries: int = 3,
        base_delay_ms: int = 1,
        max_delay_ms: int = 100,
        jitter_factor: float = 0.25,
        timeout: float | None = None,
    ) -> None:
        # The connector's checks, in its order and with its words.
        if not isinstance(max_retries, int):
            raise ConfigurationError("max_retries must be an integer")
        if max_retries < 0:
            raise ConfigurationError("max_retries must be >= 0")
        if max_retries > 100:
            raise ConfigurationError("max_retries must not exceed 100")
        if base_delay_ms <= 0:
            raise ConfigurationError("base_delay_ms must be greater than 0")
        if max_delay_ms < base_delay_ms:
            raise ConfigurationError("max_delay_ms must be >= base_delay_ms")
        if jitter_factor < 0.0 or jitter_factor > 1.0:
            raise ConfigurationError("jitter_factor must be between 0.0 and 1.0")
        if timeout is not None and not timeout > 0:
            raise ConfigurationError(f"timeout must be None or seconds > 0, not {timeout!r}")
        for name, value in (
            ("max_retries", max_retries),
            ("base_delay_ms", base_delay_ms),
            ("max_delay_ms", max_delay_ms),
            ("jitter_factor", jitter_factor),
            ("timeout", timeout),
        ):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("OCCRetryConfig is immutable: use replace()")

    def replace(self, **changes: object) -> OCCRetryConfig:
        """A copy with *changes* applied (and checked)."""
        values: dict[str, object] = {name: getattr(self, name) for name in self.__slots__}
        values.update(changes)
        return OCCRetryConfig(**values)  # type: ignore[arg-type]

    def backoff(self) -> Backoff:
        """The same schedule as a :class:`~warmdb.retry.Backoff`.

        The connector waits ``d * (1 + jitter_factor * r)``; a Backoff waits
        ``bound * (1 - jitter * r)``. With ``bound = d * (1 + j)`` and ``jitter = j / (1 + j)``
        both are uniform in ``[d, d * (1 + j)]``.
        """
        stretch = 1.0 + self.jitter_factor
        return Backoff(
            initial=self.base_delay_ms * stretch / 1000.0,
            maximum=self.max_delay_ms * stretch / 1000.0,
            timeout=self.timeout,
            max_retries=self.max_retries,
            jitter=self.jitter_factor / stretch,
        )

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OCCRetryConfig) and self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return (
            f"OCCRetryConfig(max_retries={self.max_retries}, base_delay_ms={self.base_delay_ms}, "
            f"max_delay_ms={self.max_delay_ms}, jitter_factor={self.jitter_factor}, "
            f"timeout={self.timeout})"
        )


#: warmdb's OCC retry budget: full jitter from 5 ms, waits up to 1 s, at most 30 retries
#: within 30 s. Chosen for contention: 8 clients on one hot row lose no work with it, where
#: the connector's 3 retries lose some (``benchmarks/transactions.py``; figures in
#: ``docs/transactions.md``).
DEFAULT_RETRY = Backoff(initial=0.005, maximum=1.0, timeout=30.0, max_retries=30, jitter=1.0)


def retry_schedule(retry: Retry) -> Backoff | None:
    """The :class:`~warmdb.retry.Backoff` a ``retry=`` argument stands for.

    ``None`` and ``True``: :data:`DEFAULT_RETRY`; ``False``: no retry (a conflict
    propagates as the driver raised it); an :class:`OCCRetryConfig` or a ``Backoff``: that
    schedule.

    :raises ConfigurationError: anything else.
    """
    if retry is None or retry is True:
        return DEFAULT_RETRY
    if retry is False:
        return None
    if isinstance(retry, Backoff):
        return retry
    if isinstance(retry, OCCRetryConfig):
        return retry.backoff()
    raise ConfigurationError(
        f"retry must be an OCCRetryConfig, a warmdb.retry.Backoff, True, False or None, "
        f"not {retry!r}"
    )


def merge_retry(pool_retry: Retry, retry: Retry) -> Retry:
    """A pool's ``retry=`` and a call's ``retry=`` together, as the connector resolves them:
    the call's wins unless it is ``None``; ``True`` on the call takes the pool's budget when
    it has one. (Where neither sets one, warmdb retries with :data:`DEFAULT_RETRY`; the
    connector would not retry.)"""
    if retry is None:
        return pool_retry
    if retry is True and isinstance(pool_retry, (OCCRetryConfig, Backoff)):
        return pool_retry
    return retry


#: The retry code of an attempt whose connection broke before COMMIT was sent.
BROKEN = "broken"


class Attempts:
    """The attempts of one transaction: which one this is and whether a failure is retried.

    :param schedule: the retry budget; ``None`` for no retry.
    :param on_conflict: called with each :class:`~warmdb.events.ConflictRetryEvent`, after
        the listeners.
    :param clock: monotonic seconds.

    :ivar attempt: the number of the attempt running (1 for the first).
    :ivar retries: attempts run again so far.
    :ivar broken_before_commit: set by the front when the running attempt lost its
        connection before COMMIT was sent: nothing was committed, so on a connection that
        can be replaced the attempt runs again (code :data:`BROKEN`).
    """

    __slots__ = (
        "_backoff",
        "_clock",
        "_on_conflict",
        "_schedule",
        "_started",
        "attempt",
        "broken_before_commit",
    )

    def __init__(
        self,
        schedule: Backoff | None,
        on_conflict: Callable[[events.ConflictRetryEvent], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._schedule = schedule
        self._on_conflict = on_conflict
        self._clock = clock
        # The Backoff is started only at the first conflict: the path without one pays
        # for a clock reading and nothing else.
        self._started = clock()
        self._backoff: Backoff | None = None
        self.attempt = 1
        self.broken_before_commit = False

    @property
    def retries(self) -> int:
        return self.attempt - 1

    def after_failure(
        self, exc: BaseException, adapter: Adapter | None, *, replaceable: bool = True
    ) -> float | None:
        """What to do after attempt :attr:`attempt` raised *exc*.

        :param adapter: the driver's adapter, for :func:`conflict_code`.
        :param replaceable: whether the next attempt can have a working connection; a
            plain connection that the failure closed cannot be replaced.
        :returns: seconds to wait before the next attempt, or ``None``: *exc* is not a
            conflict (nor a connection lost before COMMIT) and must propagate untouched.
        :raises ConflictError: a conflict, but the budget is spent (raised ``from`` *exc*).
        """
        broken, self.broken_before_commit = self.broken_before_commit, False
        if self._schedule is None or not isinstance(exc, Exception) or not replaceable:
            return None
        code = conflict_code(exc, adapter)
        if code is None and broken:
            code = BROKEN
        if code is None:
            return None
        backoff = self._backoff
        if backoff is None:
            backoff = self._schedule.start(self._started)
        following = backoff.increment(self._clock())
        if following is None:
            raise ConflictError(
                f"the transaction lost {self.attempt} concurrency conflict(s) in a row "
                f"(last: {code}); the retry budget is spent "
                f"(max_retries={self._schedule.max_retries}, timeout={self._schedule.timeout})",
                attempts=self.attempt,
                code=code,
            ) from exc
        self._backoff = following
        event = events.ConflictRetryEvent(attempt=self.attempt, delay=following.delay, code=code)
        self.attempt += 1
        events.emit_conflict_retry(event)
        if self._on_conflict is not None:
            self._on_conflict(event)
        return following.delay
