"""The serverless keeper: one connection per process, kept across warm starts.

Create the keeper at module level (nothing connects yet) and check the connection out in the
handler::

    import warmdb.psycopg2 as db

    keeper = db.warm(host=ENDPOINT)

    def handler(event, context):
        with keeper.connection() as conn:
            ...

At every checkout the keeper decides (:func:`checkout_verdict`, pure code shared by the sync
and async fronts) whether to hand the connection out as it is, ping it first, or replace it:

- replaced without a round trip when it is closed, older than the policy's lifetime (with
  jitter), idle longer than ``max_idle``, or when its socket has become readable while idle,
  which means the server closed it or sent a termination notice (a Lambda environment frozen
  past DSQL's 60-minute limit wakes up to exactly that). Keepers poll the socket at every
  checkout; pools and engines only once a connection has been idle ``poll_after_idle``;
- pinged first only when it has been idle longer than ``ping_after_idle``, so back-to-back
  invocations pay nothing; a failed ping replaces it;
- otherwise handed out as it is.

Replacing is transparent. Work that fails inside the ``with`` block is never retried behind
the caller's back: the exception propagates, and a connection it broke is replaced at the next
checkout. On the way back, a transaction left open is rolled back, as pools do.

No timer and no background thread: a frozen Lambda environment runs neither, so everything is
decided at checkout.
"""

from __future__ import annotations

import select
import threading
import time
import types

from warmdb import events
from warmdb.errors import WarmdbError
from warmdb.policy import random_fraction as _random_fraction

TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
    from collections.abc import Awaitable, Callable
    from contextlib import AbstractAsyncContextManager, AbstractContextManager
    from typing import Generic, Protocol, TypeVar

    from warmdb._connect import ConnectPlan
    from warmdb.policy import Policy

    C = TypeVar("C")

    class SyncOps(Protocol[C]):
        """What a keeper needs from a sync driver."""

        def open(self) -> C: ...
        def is_closed(self, conn: C) -> bool: ...
        def fileno(self, conn: C) -> int: ...
        def ping(self, conn: C) -> None: ...
        def reset(self, conn: C) -> None: ...
        def is_broken_by(self, conn: C, exc: BaseException) -> bool: ...
        def close(self, conn: C) -> None: ...

    class AsyncOps(Protocol[C]):
        """What a keeper needs from an async driver."""

        def open(self) -> Awaitable[C]: ...
        def is_closed(self, conn: C) -> bool: ...
        def fileno(self, conn: C) -> int: ...
        def ping(self, conn: C) -> Awaitable[None]: ...
        def reset(self, conn: C) -> Awaitable[None]: ...
        def is_broken_by(self, conn: C, exc: BaseException) -> bool: ...
        def close(self, conn: C) -> Awaitable[None]: ...

    _Base = Generic[C]
else:

    class _Base:
        # Keeper[psycopg.Connection] works in annotations without importing typing at run time.
        __class_getitem__ = classmethod(types.GenericAlias)


__all__ = [
    "PING",
    "REPLACE",
    "REUSE",
    "AsyncKeeper",
    "Keeper",
    "KeptConnection",
    "checkout_verdict",
    "has_pending_input",
    "judge",
    "judge_async",
    "report_recycle",
]

REUSE = "reuse"
PING = "ping"
REPLACE = "replace"
_NEVER = float("inf")


class KeptConnection:
    """The keeper's record of its connection: when it was opened, expires and was last used.

    :param opened_at: monotonic time of the connect.
    :param policy: gives the lifetime and its jitter.
    :param random_fraction: a float in [0, 1) choosing this connection's share of the jitter.

    :ivar expires_at: monotonic time the lifetime ends; infinity when it has no limit.
    :ivar last_used: monotonic time it was opened, last given back or last answered a ping.
    """

    __slots__ = ("expires_at", "last_used", "opened_at")

    def __init__(self, opened_at: float, policy: Policy, random_fraction: float) -> None:
        self.opened_at = opened_at
        self.last_used = opened_at
        lifetime = policy.max_lifetime
        self.expires_at = (
            _NEVER
            if lifetime is None
            else opened_at + lifetime * (1.0 - policy.lifetime_jitter * random_fraction)
        )

    def given_back(self, now: float, *, closed: bool) -> str | None:
        """Record that a pool got the connection back at *now*.

        :returns: ``None``, or why the pool must discard it instead of keeping it:
            ``"broken"`` (closed while checked out) or ``"lifetime"`` (expired meanwhile).
        """
        if closed:
            return "broken"
        if now >= self.expires_at:
            return "lifetime"
        self.last_used = now
        return None


def checkout_verdict(
    kept: KeptConnection,
    now: float,
    policy: Policy,
    *,
    is_closed: bool,
    has_input: Callable[[], bool],
) -> tuple[str, str | None]:
    """Decide what to do with a kept connection at checkout.

    :param kept: the connection's record.
    :param now: the monotonic time.
    :param policy: lifetime, idle and ping settings.
    :param is_closed: whether the driver already knows the connection is closed.
    :param has_input: tells whether the idle connection's socket is readable; called only
        when the connection has been idle ``policy.poll_after_idle`` and the cheaper checks
        have not decided.
    :returns: ``(REUSE, None)``, ``(PING, None)`` or ``(REPLACE, reason)`` with a
        :class:`~warmdb.events.RecycleEvent` reason.
    """
    if is_closed:
        return REPLACE, "closed"
    if now >= kept.expires_at:
        return REPLACE, "lifetime"
    idle = now - kept.last_used
    if idle < policy.first_idle_check:
        return REUSE, None  # the hot path: no idle check is due yet
    if policy.max_idle is not None and idle >= policy.max_idle:
        return REPLACE, "idle"
    poll_after = policy.poll_after_idle
    if poll_after is not None and idle >= poll_after and has_input():
        return REPLACE, "readable"
    if policy.ping_after_idle is not None and idle >= policy.ping_after_idle:
        return PING, None
    return REUSE, None


def has_pending_input(fileno: int) -> bool:
    """Whether an idle connection's socket is readable (EOF or unread bytes), without waiting.

    Between queries a healthy server sends nothing, so readable means the server closed the
    connection or sent a termination notice.
    """
    poller = select.poll()
    poller.register(fileno, select.POLLIN)
    return bool(poller.poll(0))


def judge(
    kept: KeptConnection,
    now: float,
    policy: Policy,
    conn: C,
    *,
    is_closed: Callable[[C], bool],
    fileno: Callable[[C], int],
    ping: Callable[[C], object],
) -> str | None:
    """Apply :func:`checkout_verdict` to *conn*, pinging it when due.

    :returns: ``None`` when the connection may be handed out, else why it must be replaced
        (``"ping-failed"`` when the ping raised).
    """
    if now < kept.expires_at and now - kept.last_used < policy.first_idle_check:
        # checkout_verdict's answer while nothing is due, without its call and closure: the
        # hot path of every pool checkout.
        return "closed" if is_closed(conn) else None
    verdict, reason = checkout_verdict(
        kept,
        now,
        policy,
        is_closed=is_closed(conn),
        has_input=lambda: has_pending_input(fileno(conn)),
    )
    if verdict == REUSE:
        return None
    if verdict == PING:
        try:
            ping(conn)
        except Exception:
            return "ping-failed"
        kept.last_used = now  # it answered: idle from now
        return None
    return reason


async def judge_async(
    kept: KeptConnection,
    now: float,
    policy: Policy,
    conn: C,
    *,
    is_closed: Callable[[C], bool],
    fileno: Callable[[C], int],
    ping: Callable[[C], Awaitable[object]],
) -> str | None:
    """:func:`judge` with an async *ping*."""
    if now < kept.expires_at and now - kept.last_used < policy.first_idle_check:
        return "closed" if is_closed(conn) else None
    verdict, reason = checkout_verdict(
        kept,
        now,
        policy,
        is_closed=is_closed(conn),
        has_input=lambda: has_pending_input(fileno(conn)),
    )
    if verdict == REUSE:
        return None
    if verdict == PING:
        try:
            await ping(conn)
        except Exception:
            return "ping-failed"
        kept.last_used = now
        return None
    return reason


def report_recycle(
    plan: ConnectPlan, driver: str, kept: KeptConnection, reason: str, now: float
) -> None:
    """Report that a kept or pooled connection is being replaced (see :mod:`warmdb.events`)."""
    endpoint = plan.endpoint
    events.emit_recycle(
        events.RecycleEvent(
            driver=driver,
            host=endpoint.host,
            port=endpoint.port,
            reason=reason,
            age=now - kept.opened_at,
            idle=now - kept.last_used,
        )
    )


class _KeeperBase(_Base):
    """State and reporting shared by :class:`Keeper` and :class:`AsyncKeeper`."""

    def __init__(
        self,
        plan: ConnectPlan,
        *,
        driver: str,
        clock: Callable[[], float],
        random_fraction: Callable[[], float],
    ) -> None:
        self.plan = plan
        # A keeper is checked out once per invocation, next to milliseconds of fixed cost: it
        # polls the socket at every checkout, whatever poll_after_idle (a window that spares
        # pools' hot checkouts), so a backend ended between two invocations, however close,
        # is never handed out.
        self._checkout_policy = plan.policy.replace(poll_after_idle=0)
        self.driver = driver
        self._clock = clock
        self._random = random_fraction
        self._conn: C | None = None
        self._kept: KeptConnection | None = None

    @property
    def policy(self) -> Policy:
        """The :class:`~warmdb.policy.Policy` the keeper applies (its plan's), except that it
        polls the socket at every checkout whatever ``poll_after_idle``."""
        return self.plan.policy

    @property
    def is_connected(self) -> bool:
        """Whether a connection is kept (it is checked only at the next checkout)."""
        return self._conn is not None

    def _forget(self, reason: str) -> C | None:
        """Drop the kept connection from the record, report why; return it for closing."""
        conn, kept = self._conn, self._kept
        self._conn = self._kept = None
        if kept is not None:
            report_recycle(self.plan, self.driver, kept, reason, self._clock())
        return conn

    def _keep(self, conn: C) -> None:
        self._conn = conn
        self._kept = KeptConnection(self._clock(), self.policy, self._random())

    def _checked_in(self) -> None:
        if self._kept is not None:
            self._kept.last_used = self._clock()

    def __repr__(self) -> str:
        state = "connected" if self._conn is not None else "not connected"
        return f"<{type(self).__name__} {self.driver} {self.plan.endpoint!r} {state}>"


class Keeper(_KeeperBase):
    """One connection kept across invocations, for a sync driver. Made by ``warm()``.

    One checkout at a time: a second thread waits for the first to hand the connection back;
    a nested checkout in the same thread is an error. Use a pool for concurrent work.

    :param plan: the resolved endpoint, credentials and :class:`~warmdb.policy.Policy`.
    :param ops: the driver's open / check / ping / reset / close operations.
    :param driver: the driver's name, for events.
    :param clock: monotonic seconds (injectable for tests).
    :param random_fraction: source of the lifetime jitter (injectable for tests).
    """

    def __init__(
        self,
        plan: ConnectPlan,
        ops: SyncOps[C],
        *,
        driver: str,
        clock: Callable[[], float] = time.monotonic,
        random_fraction: Callable[[], float] = _random_fraction,
    ) -> None:
        super().__init__(plan, driver=driver, clock=clock, random_fraction=random_fraction)
        self._ops = ops
        self._lock = threading.Lock()
        self._owner: int | None = None

    def connection(self) -> AbstractContextManager[C]:
        """Check the connection out: ``with keeper.connection() as conn: ...``.

        :raises ConnectError: no connection could be opened within the policy's retries.
        :raises WarmdbError: a nested checkout from the thread that holds the connection.
        """
        return _Checkout(self)

    def _acquire(self) -> C:
        me = threading.get_ident()
        if self._owner == me:
            raise WarmdbError("nested checkout: this thread already holds the kept connection")
        self._lock.acquire()
        self._owner = me
        try:
            return self._checkout()
        except BaseException:
            self._owner = None
            self._lock.release()
            raise

    def _checkout(self) -> C:
        ops = self._ops
        conn = self._conn
        if conn is not None:
            assert self._kept is not None
            reason = judge(
                self._kept,
                self._clock(),
                self._checkout_policy,
                conn,
                is_closed=ops.is_closed,
                fileno=ops.fileno,
                ping=ops.ping,
            )
            if reason is None:
                return conn
            ops.close(self._forget(reason))  # type: ignore[arg-type]
        conn = ops.open()
        self._keep(conn)
        return conn

    def _release(self, exc: BaseException | None) -> None:
        try:
            conn = self._conn
            if conn is None:
                return
            ops = self._ops
            if exc is not None and (ops.is_closed(conn) or ops.is_broken_by(conn, exc)):
                ops.close(self._forget("broken"))  # type: ignore[arg-type]
                return
            try:
                ops.reset(conn)
            except Exception:
                ops.close(self._forget("broken"))  # type: ignore[arg-type]
                return
            self._checked_in()
        finally:
            self._owner = None
            self._lock.release()

    def close(self) -> None:
        """Close the kept connection, if any; the next checkout opens a new one."""
        with self._lock:
            conn, self._conn, self._kept = self._conn, None, None
            if conn is not None:
                self._ops.close(conn)


class _Checkout:
    """The context manager :meth:`Keeper.connection` returns (lighter than a generator)."""

    __slots__ = ("_keeper",)

    def __init__(self, keeper: Keeper) -> None:
        self._keeper = keeper

    def __enter__(self) -> object:
        return self._keeper._acquire()

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self._keeper._release(exc)


class AsyncKeeper(_KeeperBase):
    """One connection kept across invocations, for an async driver. Made by ``warm()``.

    Checkouts in one event loop wait for each other.

    The parameters are those of :class:`Keeper`, with async *ops*, plus:

    :param abandon: for drivers whose connections belong to the event loop that opened them
        (asyncpg): drops such a connection without touching its loop. When the running loop
        is not the one the connection was opened in (``asyncio.run()`` per invocation), the
        connection is abandoned and replaced, reason ``"loop-changed"``. ``None`` for drivers
        whose connections work in any loop.
    """

    def __init__(
        self,
        plan: ConnectPlan,
        ops: AsyncOps[C],
        *,
        driver: str,
        clock: Callable[[], float] = time.monotonic,
        random_fraction: Callable[[], float] = _random_fraction,
        abandon: Callable[[C], None] | None = None,
    ) -> None:
        super().__init__(plan, driver=driver, clock=clock, random_fraction=random_fraction)
        self._ops = ops
        self._abandon = abandon
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._owner: asyncio.Task[object] | None = None

    def connection(self) -> AbstractAsyncContextManager[C]:
        """Check the connection out: ``async with keeper.connection() as conn: ...``.

        :raises ConnectError: no connection could be opened within the policy's retries.
        :raises WarmdbError: a nested checkout from the task that holds the connection.
        """
        return _AsyncCheckout(self)

    def _loop_lock(self) -> asyncio.Lock:
        import asyncio

        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # A new loop: the old lock is unusable, and so is a connection bound to the old loop.
            if self._conn is not None and self._abandon is not None:
                self._abandon(self._forget("loop-changed"))  # type: ignore[arg-type]
            self._loop = loop
            self._lock = asyncio.Lock()
            self._owner = None
        assert self._lock is not None
        return self._lock

    async def _acquire(self) -> C:
        import asyncio

        lock = self._loop_lock()
        task = asyncio.current_task()
        if task is not None and self._owner is task:
            raise WarmdbError("nested checkout: this task already holds the kept connection")
        await lock.acquire()
        self._owner = task
        try:
            return await self._checkout()
        except BaseException:
            self._owner = None
            lock.release()
            raise

    async def _checkout(self) -> C:
        ops = self._ops
        conn = self._conn
        if conn is not None:
            assert self._kept is not None
            reason = await judge_async(
                self._kept,
                self._clock(),
                self._checkout_policy,
                conn,
                is_closed=ops.is_closed,
                fileno=ops.fileno,
                ping=ops.ping,
            )
            if reason is None:
                return conn
            await ops.close(self._forget(reason))  # type: ignore[arg-type]
        conn = await ops.open()
        self._keep(conn)
        return conn

    async def _release(self, exc: BaseException | None) -> None:
        lock = self._lock
        try:
            conn = self._conn
            if conn is None:
                return
            ops = self._ops
            if exc is not None and (ops.is_closed(conn) or ops.is_broken_by(conn, exc)):
                await ops.close(self._forget("broken"))  # type: ignore[arg-type]
                return
            try:
                await ops.reset(conn)
            except Exception:
                await ops.close(self._forget("broken"))  # type: ignore[arg-type]
                return
            self._checked_in()
        finally:
            self._owner = None
            if lock is not None and lock.locked():
                lock.release()

    async def close(self) -> None:
        """Close the kept connection, if any; the next checkout opens a new one."""
        lock = self._loop_lock()
        async with lock:
            conn, self._conn, self._kept = self._conn, None, None
            if conn is not None:
                await self._ops.close(conn)


class _AsyncCheckout:
    """The async context manager :meth:`AsyncKeeper.connection` returns."""

    __slots__ = ("_keeper",)

    def __init__(self, keeper: AsyncKeeper) -> None:
        self._keeper = keeper

    async def __aenter__(self) -> object:
        return await self._keeper._acquire()

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        await self._keeper._release(exc)
