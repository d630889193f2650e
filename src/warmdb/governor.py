"""A process-wide connect-rate governor, so one process never bursts past a server's limit.

Off by default. Turn it on once, at import time of your handler::

    import warmdb

    warmdb.limit_connect_rate(20, burst=5)   # at most 5 at once, then 20 connects per second

Every warmdb connect (``connect()``, keepers, pools, engines, retries included) then takes a
token from one bucket before it dials. Aurora DSQL admits 100 new connections per second per
cluster (burst 1,000) across every client: give each process a share.

A policy's ``connect_rate`` adds a bucket per endpoint (:func:`endpoint_governor`): the RDS
presets set 200 per second, RDS IAM authentication's ceiling for new connections.

The bucket hands out reservations: a caller that must wait is told how long and the token is
already its own, so waiters are served in arrival order and never stampede.
"""

from __future__ import annotations

import threading
import time

from warmdb.errors import ConfigurationError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["RateGovernor", "current_governor", "endpoint_governor", "limit_connect_rate"]


class RateGovernor:
    """A token bucket: *burst* tokens, refilled at *rate* per second. Thread-safe.

    :param rate: tokens added per second (> 0).
    :param burst: the bucket's size: how many connects may start at once (>= 1).
    :param clock: monotonic seconds; :func:`time.monotonic` unless a test drives it.
    """

    __slots__ = ("_clock", "_lock", "_tokens", "_updated", "burst", "rate")

    def __init__(
        self, rate: float, *, burst: int = 1, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
            raise ConfigurationError(f"rate must be a positive number per second, not {rate!r}")
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ConfigurationError(f"burst must be an integer >= 1, not {burst!r}")
        self.rate = float(rate)
        self.burst = burst
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._updated = clock()

    def reserve(self) -> float:
        """Take a token; return how many seconds to wait before using it (0 when available)."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            self._tokens -= 1
            # A negative balance is the queue of callers already holding a reservation.
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def __repr__(self) -> str:
        return f"RateGovernor(rate={self.rate}, burst={self.burst})"


_governor: RateGovernor | None = None


def limit_connect_rate(per_second: float | None, *, burst: int = 1) -> None:
    """Limit every warmdb connect in this process to *per_second*, or lift the limit (``None``).

    :param per_second: connects per second, or ``None`` to turn the governor off.
    :param burst: how many connects may start at once before the rate applies.
    :raises ConfigurationError: a rate or burst that is not positive.
    """
    global _governor
    _governor = None if per_second is None else RateGovernor(per_second, burst=burst)


def current_governor() -> RateGovernor | None:
    """The process-wide governor, or ``None`` when connects are not limited."""
    return _governor


_endpoint_governors: dict[tuple[str, int, float], RateGovernor] = {}
_endpoint_lock = threading.Lock()


def endpoint_governor(host: str, port: int, rate: float) -> RateGovernor:
    """The process's bucket for new connections to one endpoint at *rate* per second.

    Its burst is one second's worth, so a process that stays under the rate never waits.
    Every plan, keeper and pool for the same host, port and rate shares it.
    """
    key = (host, port, rate)
    governor = _endpoint_governors.get(key)
    if governor is None:
        with _endpoint_lock:
            governor = _endpoint_governors.get(key)
            if governor is None:
                governor = RateGovernor(rate, burst=max(1, int(rate)))
                _endpoint_governors[key] = governor
    return governor
