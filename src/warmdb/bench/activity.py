"""How many connections a real endpoint has open, asked on a connection of its own.

The concurrency mode reports the peak number of *server* connections. The embedded emulators
count them in their statistics; a real endpoint is asked: PostgreSQL in ``pg_stat_activity``,
MySQL in ``information_schema.processlist``, each counting the sessions of the run's user
(and, for PostgreSQL, database) other than the sampler's own. The sampler connects with
warmdb's ``connect()`` for the driver variant under test, straight to the endpoint (through
``--via-sidecar`` too: what PgBouncer opens on the server is what is counted), and a
:class:`~warmdb.bench.server.ConnectionMonitor` calls it every 50 ms during the run.

An endpoint that refuses the sampler (no connection left, no privilege to read the view,
Aurora DSQL without ``pg_stat_activity``) leaves the figure unknown; :class:`SamplerError`
says why in one line.
"""

from __future__ import annotations

import contextlib
import functools

TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Mapping
    from typing import Any

    from warmdb.bench.variants import Variant

__all__ = ["COUNT_SQL", "SAMPLE_INTERVAL", "ActivitySampler", "SamplerError"]

#: Seconds between two samples of a real endpoint: short enough to catch a peak that lasts
#: as long as one request's hold, long enough that sampling is not a load of its own.
SAMPLE_INTERVAL = 0.05

#: Per family, the query that counts the other sessions of the current user.
COUNT_SQL = {
    "postgresql": (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND usename = current_user AND pid <> pg_backend_pid()"
    ),
    "mysql": (
        "SELECT count(*) FROM information_schema.processlist "
        "WHERE user = SUBSTRING_INDEX(CURRENT_USER(), '@', 1) AND id <> CONNECTION_ID()"
    ),
}


class SamplerError(Exception):
    """The sampler could not connect or count; the message is one line saying why."""


class ActivitySampler:
    """A connection of its own to the endpoint of *kwargs*; calling it counts the others.

    It opens with *variant*'s ``connect()`` and counts once, so that a refusal shows before
    the run. An async variant runs on an event loop of the sampler's own, which the monitor's
    thread drives between samples (one caller at a time).

    :raises SamplerError: the connect or the first count failed.
    """

    def __init__(self, variant: Variant, kwargs: Mapping[str, Any]) -> None:
        self._adapter: Any = variant.adapter()  # sync or async: the loop decides
        self._sql = COUNT_SQL[variant.family]
        self._loop: asyncio.AbstractEventLoop | None = None
        if variant.is_async:
            import asyncio

            self._loop = asyncio.new_event_loop()
        self._conn: Any = None
        try:
            connect = functools.partial(variant.front("connect"), **kwargs)
            self._conn = self._call(connect, "cannot connect")
            self()
        except SamplerError:
            self.close()
            raise

    def _call(self, step: Callable[[], Any], what: str) -> Any:
        try:
            result = step()
            return result if self._loop is None else self._loop.run_until_complete(result)
        except Exception as exc:
            lines = str(exc).strip().splitlines()
            why = lines[0] if lines else type(exc).__name__
            raise SamplerError(f"{what}: {why}") from exc

    def __call__(self) -> int:
        """The number of the user's other sessions on the server now."""
        adapter, conn = self._adapter, self._conn
        rows = self._call(functools.partial(adapter.execute, conn, self._sql), "cannot count")
        # End the transaction the driver may have opened: a snapshot would freeze the view.
        self._call(functools.partial(adapter.reset, conn), "cannot count")
        return int(rows[0][0])

    def close(self) -> None:
        """Close the connection and the loop (errors ignored: the run is over)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(SamplerError):
                self._call(functools.partial(self._adapter.close, conn), "close")
        if self._loop is not None:
            self._loop.close()
