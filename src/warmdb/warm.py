"""The serverless keeper: one connection per process, kept across warm starts.

Create the keeper at module level (nothing connects yet) and check the connection out in the
handler::

    import warmdb.psycopg2 as db

    keeper = db.warm(host=ENDPOINT)

    def handler(event, context):
        with keeper.connection() as conn:
            ...

At every checkout :func:`decide` (shared by keepers, pools and engines, sync and async)
says whether to hand the connection out as it is, ping it first, or replace it; the caller
performs the action (:func:`judge` / :func:`judge_async` do it for a driver adapter):

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
from functools import partial

from warmdb import events
from warmdb._connect import open_connection, open_connection_async
from warmdb._steps import run, run_async
from warmdb.errors import UsageError
from warmdb.policy import random_fraction as _random_fraction

TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
    from collections.abc import Awaitable, Callable, Generator
    from contextlib import AbstractAsyncContextManager, AbstractContextManager
    from typing import Any, Generic, TypeVar

    from warmdb._connect import ConnectPlan
    from warmdb.drivers import Adapter, AsyncAdapter
    from warmdb.policy import Policy

    C = TypeVar("C")

    class _Base(Generic[C]):
        pass

else:

    class _Base:
        # Keeper[psycopg.Connection] works without importing typing at run time (its import
        # costs a cold start milliseconds); subclasses name the parameter as a string.
        __class_getitem__ = classmethod(types.GenericAlias)


__all__ = [
    "PING",
    "REUSE",
    "AsyncKeeper",
    "Keeper",
    "KeptConnection",
    "decide",
    "has_pending_input",
    "judge",
    "judge_async",
    "report_recycle",
]

#: :func:`decide`'s answers besides a replace reason.
REUSE = "reuse"
PING = "ping"
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


def decide(kept: KeptConnection, now: float, policy: Policy, adapter: Adapter, conn: Any) -> str:
    """What to do with a kept connection at checkout; the caller performs it.

    :param kept: the connection's record.
    :param now: the monotonic time.
    :param policy: lifetime, idle, poll and ping settings.
    :param adapter: the driver's adapter, for ``is_closed`` and ``fileno``.
    :param conn: the driver's connection.
    :returns: :data:`REUSE`; :data:`PING` (ping it, then hand it out; replace it if the ping
        fails); or why to replace it without a round trip, a
        :class:`~warmdb.events.RecycleEvent` reason: ``"closed"``, ``"lifetime"``, ``"idle"``
        (longer than ``max_idle``), ``"readable"`` (its socket became readable while idle,
        polled once it has been idle ``poll_after_idle``: the server closed it or sent a
        termination notice).
    """
    if adapter.is_closed(conn):
        return "closed"
    if now >= kept.expires_at:
        return "lifetime"
    idle = now - kept.last_used
    if idle < policy.first_idle_check:
        return REUSE  # the hot path of every pool checkout: no idle check is due yet
    if policy.max_idle is not None and idle >= policy.max_idle:
        return "idle"
    poll_after = policy.poll_after_idle
    if poll_after is not None and idle >= poll_after and has_pending_input(adapter.fileno(conn)):
        return "readable"
    if policy.ping_after_idle is not None and idle >= policy.ping_after_idle:
        return PING
    return REUSE


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
    adapter: Adapter,
    conn: Any,
    ping: Callable[[Any], object],
) -> str | None:
    """Perform :func:`decide`'s answer with *ping* (a sync round trip).

    :returns: ``None`` when the connection may be handed out, else why it must be replaced
        (``"ping-failed"`` when the ping raised).
    """
    action = decide(kept, now, policy, adapter, conn)
    if action != PING:
        return None if action == REUSE else action
    return run(_ping_steps(kept, now, partial(ping, conn)))


async def judge_async(
    kept: KeptConnection,
    now: float,
    policy: Policy,
    adapter: Adapter,
    conn: Any,
    ping: Callable[[Any], Awaitable[object]],
) -> str | None:
    """:func:`judge` with an async *ping*."""
    action = decide(kept, now, policy, adapter, conn)
    if action != PING:
        return None if action == REUSE else action
    return await run_async(_ping_steps(kept, now, partial(ping, conn)))


def _ping_steps(
    kept: KeptConnection, now: float, ping: Callable[[], Any]
) -> Generator[Callable[[], Any], Any, str | None]:
    """Ping a connection due for it: ``None`` if it answered (idle from *now* on), else
    ``"ping-failed"``."""
    try:
        yield ping
    except Exception:
        return "ping-failed"
    kept.last_used = now
    return None


def report_recycle(plan: ConnectPlan, kept: KeptConnection, reason: str, now: float) -> None:
    """Report that a kept or pooled connection is being replaced (see :mod:`warmdb.events`)."""
    events.emit_recycle(
        events.RecycleEvent(
            **plan.event_origin,
            reason=reason,
            age=now - kept.opened_at,
            idle=now - kept.last_used,
        )
    )


class _KeeperBase(_Base["C"]):
    """What :class:`Keeper` and :class:`AsyncKeeper` share: the record, reporting, and the
    checkout, release and close procedures as steps (:mod:`warmdb._steps`) that each front
    performs its way.

    :param plan: the driver's adapter, the resolved endpoint, credentials and
        :class:`~warmdb.policy.Policy`.
    :param clock: monotonic seconds (injectable for tests).
    :param random_fraction: source of the lifetime jitter (injectable for tests).
    """

    #: opens a connection for the plan: warmdb._connect's sync or async function
    _open: Callable[[ConnectPlan], Any]

    def __init__(
        self,
        plan: ConnectPlan,
        *,
        clock: Callable[[], float] = time.monotonic,
        random_fraction: Callable[[], float] = _random_fraction,
    ) -> None:
        self.plan = plan
        # A keeper is checked out once per invocation, next to milliseconds of fixed cost: it
        # polls the socket at every checkout, whatever poll_after_idle (a window that spares
        # pools' hot checkouts), so a backend ended between two invocations, however close,
        # is never handed out.
        self._checkout_policy = plan.policy.replace(poll_after_idle=0)
        self._clock = clock
        self._random = random_fraction
        self._conn: C | None = None
        self._kept: KeptConnection | None = None
        # close() called by the holder of the connection, inside its checkout: done when the
        # checkout ends, since closing under the holder would pull the connection from it.
        self._close_at_release = False

    @property
    def driver(self) -> str:
        """The driver's name."""
        return str(self.plan.adapter.name)

    @property
    def policy(self) -> Policy:
        """The :class:`~warmdb.policy.Policy` the keeper applies (its plan's), except that it
        polls the socket at every checkout whatever ``poll_after_idle``."""
        return self.plan.policy

    @property
    def is_connected(self) -> bool:
        """Whether a connection is kept (it is checked only at the next checkout)."""
        return self._conn is not None

    def _forget(self, reason: str | None) -> Any:
        """Drop the kept connection from the record, report why (``None``: a close asked
        for, not a recycle); return it for closing."""
        conn, kept = self._conn, self._kept
        self._conn = self._kept = None
        if kept is not None and reason is not None:
            report_recycle(self.plan, kept, reason, self._clock())
        return conn

    def _decide(self) -> tuple[str, float]:
        """:func:`decide` for the kept connection (``"open"`` when there is none), and when.

        Both fronts hand the connection out at once on :data:`REUSE`, the hot path, and
        perform :meth:`_checkout_steps` otherwise.
        """
        now = self._clock()
        conn, kept = self._conn, self._kept
        if conn is None or kept is None:
            return "open", now
        return decide(kept, now, self._checkout_policy, self.plan.adapter, conn), now

    def _checkout_steps(self, action: str, now: float) -> Generator[Callable[[], Any], Any, C]:
        adapter = self.plan.adapter
        if action == PING:
            kept = self._kept
            assert kept is not None
            reason = yield from _ping_steps(kept, now, partial(adapter.ping, self._conn))
            if reason is None:
                return self._conn  # type: ignore[return-value]
            action = reason
        if action != "open":
            yield partial(adapter.close, self._forget(action))
        conn = yield partial(self._open, self.plan)
        self._conn = conn
        self._kept = KeptConnection(self._clock(), self.policy, self._random())
        return conn

    def _released_as_is(self, exc: BaseException | None) -> bool:
        """Whether the connection went back without I/O (the hot path): nothing failed, no
        transaction is open, no close was asked for; else the front performs
        :meth:`_release_steps`."""
        conn, kept = self._conn, self._kept
        if conn is None or kept is None:
            return True
        if exc is not None or self._close_at_release or self.plan.adapter.in_transaction(conn):
            return False
        kept.last_used = self._clock()
        return True

    def _release_steps(self, exc: BaseException | None) -> Generator[Callable[[], Any], Any, None]:
        adapter = self.plan.adapter
        conn = self._conn
        if conn is None:
            return
        if self._close_at_release:
            self._close_at_release = False
            yield partial(adapter.close, self._forget(None))
            return
        if exc is not None and adapter.is_broken_by(conn, exc):
            yield partial(adapter.close, self._forget("broken"))
            return
        try:
            yield partial(adapter.reset, conn)
        except Exception:
            yield partial(adapter.close, self._forget("broken"))
            return
        if self._kept is not None:
            self._kept.last_used = self._clock()

    def _close_steps(self) -> Generator[Callable[[], Any], Any, None]:
        if self._conn is not None:
            yield partial(self.plan.adapter.close, self._forget(None))

    def __repr__(self) -> str:
        state = "connected" if self._conn is not None else "not connected"
        return f"<{type(self).__name__} {self.driver} {self.plan.endpoint!r} {state}>"


class Keeper(_KeeperBase["C"]):
    """One connection kept across invocations, for a sync driver. Made by ``warm()``.

    One checkout at a time: a second thread waits for the first to hand the connection back;
    a nested checkout in the same thread is a :class:`~warmdb.UsageError`. Use a pool for
    concurrent work. The parameters are those of the shared base (``plan``, ``clock``,
    ``random_fraction``).
    """

    _open = staticmethod(open_connection)

    def __init__(self, plan: ConnectPlan, **options: Any) -> None:
        super().__init__(plan, **options)
        self._lock = threading.Lock()
        self._owner: int | None = None

    def connection(self) -> AbstractContextManager[C]:
        """Check the connection out: ``with keeper.connection() as conn: ...``.

        :raises ConnectError: no connection could be opened within the policy's retries.
        :raises UsageError: a nested checkout from the thread that holds the connection.
        """
        return _Checkout(self)

    def _acquire(self) -> C:
        me = threading.get_ident()
        if self._owner == me:
            raise UsageError("nested checkout: this thread already holds the kept connection")
        self._lock.acquire()
        self._owner = me
        try:
            action, now = self._decide()
            if action == REUSE:
                return self._conn  # type: ignore[return-value]
            return run(self._checkout_steps(action, now))
        except BaseException:
            self._owner = None
            self._lock.release()
            raise

    def _release(self, exc: BaseException | None) -> None:
        try:
            if not self._released_as_is(exc):
                run(self._release_steps(exc))
        finally:
            self._owner = None
            self._lock.release()

    def close(self) -> None:
        """Close the kept connection, if any; the next checkout opens a new one.

        Called inside a checkout by the thread that holds the connection, it takes effect
        when the checkout ends.
        """
        if self._owner == threading.get_ident():
            self._close_at_release = True
            return
        with self._lock:
            run(self._close_steps())


class _Checkout:
    """The context manager :meth:`Keeper.connection` returns (lighter than a generator)."""

    __slots__ = ("_keeper",)

    def __init__(self, keeper: Keeper[Any]) -> None:
        self._keeper = keeper

    def __enter__(self) -> Any:
        return self._keeper._acquire()

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self._keeper._release(exc)


class AsyncKeeper(_KeeperBase["C"]):
    """One connection kept across invocations, for an async driver. Made by ``warm()``.

    Checkouts in one event loop wait for each other. For drivers whose connections belong
    to the event loop that opened them (asyncpg: ``adapter.loop_bound``), a connection is
    abandoned and replaced, reason ``"loop-changed"``, when the running loop is not the one
    it was opened in (``asyncio.run()`` per invocation). The parameters are those of
    :class:`Keeper`.
    """

    _open = staticmethod(open_connection_async)

    def __init__(self, plan: ConnectPlan, **options: Any) -> None:
        super().__init__(plan, **options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._owner: asyncio.Task[Any] | None = None

    def connection(self) -> AbstractAsyncContextManager[C]:
        """Check the connection out: ``async with keeper.connection() as conn: ...``.

        :raises ConnectError: no connection could be opened within the policy's retries.
        :raises UsageError: a nested checkout from the task that holds the connection.
        """
        return _AsyncCheckout(self)

    def _loop_lock(self) -> asyncio.Lock:
        import asyncio

        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # A new loop: the old lock is unusable, and so is a connection bound to the old loop.
            adapter: AsyncAdapter = self.plan.adapter
            if self._conn is not None and adapter.loop_bound:
                adapter.abandon(self._forget("loop-changed"))
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
            raise UsageError("nested checkout: this task already holds the kept connection")
        await lock.acquire()
        self._owner = task
        try:
            action, now = self._decide()
            if action == REUSE:
                return self._conn  # type: ignore[return-value]
            return await run_async(self._checkout_steps(action, now))
        except BaseException:
            self._owner = None
            lock.release()
            raise

    async def _release(self, exc: BaseException | None) -> None:
        lock = self._lock
        try:
            if not self._released_as_is(exc):
                await run_async(self._release_steps(exc))
        finally:
            self._owner = None
            if lock is not None and lock.locked():
                lock.release()

    async def close(self) -> None:
        """Close the kept connection, if any; the next checkout opens a new one.

        Called inside a checkout by the task that holds the connection, it takes effect when
        the checkout ends.
        """
        import asyncio

        lock = self._loop_lock()
        if self._owner is not None and self._owner is asyncio.current_task():
            self._close_at_release = True
            return
        async with lock:
            await run_async(self._close_steps())


class _AsyncCheckout:
    """The async context manager :meth:`AsyncKeeper.connection` returns."""

    __slots__ = ("_keeper",)

    def __init__(self, keeper: AsyncKeeper[Any]) -> None:
        self._keeper = keeper

    async def __aenter__(self) -> Any:
        return await self._keeper._acquire()

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        await self._keeper._release(exc)
