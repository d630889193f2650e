"""SQLAlchemy engines whose connections are opened by warmdb and checked at every checkout.

::

    from sqlalchemy import text
    from warmdb.sqlalchemy import create_async_engine, create_engine

    engine = create_engine("postgresql+psycopg://admin@abc123.dsql.us-east-1.on.aws/postgres")
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))

    aengine = create_async_engine("abc123.dsql.us-east-1.on.aws", driver="asyncpg")

Supported: ``postgresql+psycopg``, ``postgresql+psycopg2`` (sync) and ``postgresql+asyncpg``,
``postgresql+psycopg`` (async).

How SQLAlchemy is hooked, with its documented events only:

- ``do_connect`` (dialect event): warmdb opens every connection itself, through the driver
  module's ``connect_plan``: a token signed (or reused while fresh) per connect, TLS as
  resolved, the policy's connect timeout, the rate governor, retries with backoff and
  :mod:`warmdb.events`. Sync dialects get the driver's connection back from the event; the
  async dialects get warmdb's connect as the coroutine factory their adapter awaits (the
  ``async_creator_fn`` that :func:`sqlalchemy.ext.asyncio.create_async_engine`'s own
  ``async_creator`` uses), so they wrap it as usual.
- ``connect`` / ``checkout`` / ``checkin`` / ``invalidate`` (pool events): at each checkout,
  :func:`warmdb.warm.checkout_verdict` decides, as for ``warm()`` keepers: reuse; ping first
  (only after ``ping_after_idle``); or replace without a round trip (older than the jittered
  lifetime, idle longer than ``max_idle``, closed, or, once idle ``poll_after_idle``, its
  socket readable: the server closed it or sent a termination notice). Replacing raises
  :class:`sqlalchemy.exc.DisconnectionError`, SQLAlchemy's pessimistic-disconnect recipe: the
  pool discards the connection and hands out a new one. This replaces ``pool_pre_ping``,
  which costs a round trip at every checkout.
- The lifetime is enforced by that check, with the policy's jitter, so ``pool_recycle`` stays
  off (SQLAlchemy's recycle has no jitter and would replace connections without a
  :class:`~warmdb.events.RecycleEvent`). Pools reuse the most recent connection first
  (``pool_use_lifo=True``), so idle connections beyond the load age out instead of being
  kept warm by round-robin.

The same checks guard :func:`warmdb.psycopg2.pool`, built on SQLAlchemy's ``QueuePool``; it
registers the connect and invalidate events and runs the checkout checks itself
(:meth:`PoolCheck.checked_out`), sparing the checkout and checkin event dispatch.
"""

from __future__ import annotations

import importlib
import time

import sqlalchemy
import sqlalchemy.exc
from sqlalchemy import event
from sqlalchemy.engine import URL
from sqlalchemy.pool import Pool, QueuePool

from warmdb._arguments import check_count, check_seconds
from warmdb._connect import ConnectPlan
from warmdb.endpoint import ENDPOINT_KEYS
from warmdb.errors import ConfigurationError
from warmdb.policy import random_fraction as policy_random_fraction
from warmdb.warm import (
    KeptConnection,
    judge,
    report_recycle,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from types import ModuleType
    from typing import Any

    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine
    from sqlalchemy.pool import ConnectionPoolEntry

    from warmdb.policy import Policy

__all__ = ["create_async_engine", "create_engine"]

#: SQLAlchemy 2.1's driver for ``postgresql://``, and the one that is both sync and async.
DEFAULT_DRIVER = "psycopg"
_SYNC_DRIVERS = ("psycopg", "psycopg2")
_ASYNC_DRIVERS = ("psycopg", "asyncpg")
# SQLAlchemy's name for the async variant of psycopg's dialect.
_DRIVER_ALIASES = {"psycopg_async": "psycopg"}
# connect_args that SQLAlchemy's asyncpg adapter consumes itself; asyncpg.connect never sees them.
_ADAPTER_ARGS = {
    "asyncpg": frozenset({"prepared_statement_cache_size", "prepared_statement_name_func"})
}
# connect_args that warmdb.psycopg2.connect_plan takes as its own keyword arguments.
_OPEN_ARGS = {"psycopg2": frozenset({"connection_factory", "cursor_factory"})}
# Where kept-connection state lives in a pool entry's info dict (cleared by SQLAlchemy
# whenever the entry gets a new connection).
_INFO_KEY = "warmdb.kept"


def create_engine(
    url: str | URL | None = None,
    *,
    driver: str | None = None,
    policy: Policy | None = None,
    custom_credentials_provider: object | None = None,
    poolclass: type[Pool] | None = None,
    pool_size: int | None = None,
    max_overflow: int | None = None,
    pool_timeout: float | None = None,
    connect_args: Mapping[str, Any] | None = None,
    echo: bool | str = False,
    **kwargs: Any,
) -> Engine:
    """Return a SQLAlchemy :class:`~sqlalchemy.engine.Engine` whose connections warmdb opens.

    :param url: ``postgresql+psycopg://user@host:port/dbname?region=...``,
        ``postgresql+psycopg2://...``, a :class:`sqlalchemy.engine.URL`, a libpq
        ``key=value`` string, a host name or a DSQL cluster id. The query string takes
        warmdb's DSN fields (``region``, ``profile``, ``auth``, ``sslmode``...).
    :param driver: ``"psycopg"`` (the default, as in SQLAlchemy 2.1) or ``"psycopg2"``, when
        the URL does not name one.
    :param policy: lifetime, idle and ping checks at checkout, connect timeout and retries
        (:class:`warmdb.policy.Policy`); the preset for the endpoint by default.
    :param custom_credentials_provider: a botocore ``CredentialProvider`` tried first.
    :param poolclass: a SQLAlchemy pool class; the dialect's ``QueuePool`` by default.
        ``sqlalchemy.pool.NullPool`` opens a connection per checkout and keeps none.
    :param pool_size: connections kept open by the ``QueuePool`` (SQLAlchemy's default 5;
        0 for no limit).
    :param max_overflow: connections opened beyond ``pool_size`` under load, closed when
        returned (SQLAlchemy's default 10; -1 for no limit).
    :param pool_timeout: seconds a checkout waits for a free connection before SQLAlchemy
        raises :class:`sqlalchemy.exc.TimeoutError` (SQLAlchemy's default 30).
    :param connect_args: the driver's own connect arguments (``application_name``,
        ``options``, psycopg2's ``connection_factory``...), as with SQLAlchemy.
    :param echo: log every statement (SQLAlchemy's ``echo``).
    :param kwargs: warmdb's endpoint arguments (``host``, ``port``, ``user``, ``dbname`` /
        ``database``, ``password``, ``region``, ``profile``, ``token_duration_secs``, ``auth``,
        ``sslmode``, ``sslrootcert``; see :func:`warmdb.psycopg2.connect`), and any other
        :func:`sqlalchemy.create_engine` argument (``isolation_level``, ``pool_pre_ping``...).
    :raises ConfigurationError: bad or contradictory arguments (also those SQLAlchemy refuses).
    """
    setup = _EngineSetup(
        url,
        driver,
        is_async=False,
        policy=policy,
        custom_credentials_provider=custom_credentials_provider,
        poolclass=poolclass,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        connect_args=connect_args,
        echo=echo,
        kwargs=kwargs,
    )
    engine = setup.build(sqlalchemy.create_engine)
    setup.install(engine)
    return engine


def create_async_engine(
    url: str | URL | None = None,
    *,
    driver: str | None = None,
    policy: Policy | None = None,
    custom_credentials_provider: object | None = None,
    poolclass: type[Pool] | None = None,
    pool_size: int | None = None,
    max_overflow: int | None = None,
    pool_timeout: float | None = None,
    connect_args: Mapping[str, Any] | None = None,
    echo: bool | str = False,
    **kwargs: Any,
) -> AsyncEngine:
    """Return a SQLAlchemy :class:`~sqlalchemy.ext.asyncio.AsyncEngine` opened by warmdb.

    The arguments are those of :func:`create_engine`; *driver* is ``"psycopg"`` (the
    default) or ``"asyncpg"`` (``postgresql+asyncpg://...``). A ``password`` callable may
    return an awaitable. For asyncpg, ``connect_args`` may also hold SQLAlchemy's
    ``prepared_statement_cache_size`` and ``prepared_statement_name_func``.

    asyncpg connections belong to the event loop that opened them: share an engine only
    within one loop (``poolclass=NullPool`` for ``asyncio.run()`` per invocation).
    """
    from sqlalchemy.ext.asyncio import create_async_engine as sa_create_async_engine

    setup = _EngineSetup(
        url,
        driver,
        is_async=True,
        policy=policy,
        custom_credentials_provider=custom_credentials_provider,
        poolclass=poolclass,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        connect_args=connect_args,
        echo=echo,
        kwargs=kwargs,
    )
    engine = setup.build(sa_create_async_engine)
    setup.install(engine.sync_engine)
    return engine


class _EngineSetup:
    """One engine call's arguments, sorted into warmdb's plan and SQLAlchemy's engine."""

    def __init__(
        self,
        url: str | URL | None,
        driver: str | None,
        *,
        is_async: bool,
        policy: Policy | None,
        custom_credentials_provider: object | None,
        poolclass: type[Pool] | None,
        pool_size: int | None,
        max_overflow: int | None,
        pool_timeout: float | None,
        connect_args: Mapping[str, Any] | None,
        echo: bool | str,
        kwargs: Mapping[str, Any],
    ) -> None:
        self.is_async = is_async
        self.driver, dsn = _split_url(url, driver, is_async=is_async)
        self.module = _driver_module(self.driver)
        for name in ("creator", "async_creator", "pool"):
            if name in kwargs:
                raise ConfigurationError(
                    f"{name}= cannot be combined with warmdb: warmdb opens the connections "
                    "(pass the endpoint arguments instead)"
                )

        driver_args = dict(connect_args or {})
        adapter_args = {
            k: driver_args.pop(k) for k in _ADAPTER_ARGS.get(self.driver, ()) if k in driver_args
        }
        self.open_args = {
            k: driver_args.pop(k) for k in _OPEN_ARGS.get(self.driver, ()) if k in driver_args
        }
        endpoint_args = {k: v for k, v in kwargs.items() if k in ENDPOINT_KEYS}
        clash = sorted(set(endpoint_args) & set(driver_args))
        if clash:
            raise ConfigurationError(f"{clash[0]} is given both as an argument and in connect_args")
        self.plan = ConnectPlan(
            dsn,
            {**driver_args, **endpoint_args},
            custom_credentials_provider=custom_credentials_provider,
            policy=policy,
        )

        engine_kwargs = {k: v for k, v in kwargs.items() if k not in ENDPOINT_KEYS}
        engine_kwargs["echo"] = echo
        # The URL names only the dialect: every connect argument is in the plan.
        engine_kwargs["connect_args"] = adapter_args
        pool_args = {
            "pool_size": _optional_count("pool_size", pool_size, minimum=0),
            "max_overflow": _optional_count("max_overflow", max_overflow, minimum=-1),
            "pool_timeout": check_seconds(
                "pool_timeout", pool_timeout, optional=True, positive=True
            ),
        }
        pool_args = {k: v for k, v in pool_args.items() if v is not None}
        if poolclass is not None:
            if not (isinstance(poolclass, type) and issubclass(poolclass, Pool)):
                raise ConfigurationError(
                    f"poolclass must be a sqlalchemy.pool.Pool subclass, not {poolclass!r}"
                )
            engine_kwargs["poolclass"] = poolclass
        if poolclass is None or issubclass(poolclass, QueuePool):
            engine_kwargs.setdefault("pool_use_lifo", True)
            engine_kwargs.update(pool_args)
        elif pool_args:
            name = next(iter(pool_args))
            raise ConfigurationError(
                f"{name} applies to QueuePool only, not to poolclass={poolclass.__name__}"
            )
        self.engine_kwargs = engine_kwargs
        self.url = URL.create(f"postgresql+{self.driver}")
        if is_async:
            self._connect_async = (
                self.module.connect_plan
                if self.driver == "asyncpg"
                else self.module.connect_plan_async
            )

    def build(self, factory: Callable[..., Any]) -> Any:
        """Call SQLAlchemy's engine *factory* with the sorted arguments."""
        try:
            return factory(self.url, **self.engine_kwargs)
        except (sqlalchemy.exc.ArgumentError, TypeError) as exc:
            # SQLAlchemy's refusal of an option (TypeError: "Invalid argument(s) 'x' sent to
            # create_engine()") names it; keep one exception tree.
            raise ConfigurationError(str(exc)) from exc

    def install(self, engine: Engine) -> None:
        """Register the connect and checkout hooks on a new (sync) engine."""
        dialect = engine.dialect
        # The dialect's own driver arguments must reach the driver as they would without
        # warmdb: psycopg's adapters map ("context") carries SQLAlchemy's type adaptations
        # (hstore, JSON serializers). They are fixed once the engine exists.
        _, dialect_params = dialect.create_connect_args(engine.url)
        for name, value in dialect_params.items():
            self.plan.driver_kwargs.setdefault(name, value)
        event.listen(
            engine, "do_connect", self._do_connect_async if self.is_async else self._do_connect
        )
        is_closed, fileno = _probes(self.driver, is_async=self.is_async)
        watch_pool(
            engine.pool,
            self.plan,
            driver=self.driver,
            is_closed=is_closed,
            fileno=fileno,
            ping=dialect.do_ping,
        )

    # cparams, in both hooks, hold the dialect's arguments, already in the plan (install), and
    # the asyncpg adapter's own; the URL that SQLAlchemy parsed names only the dialect.

    def _do_connect(
        self,
        dialect: object,
        connection_record: ConnectionPoolEntry,
        cargs: list[Any],
        cparams: dict[str, Any],
    ) -> object:
        return self.module.connect_plan(self.plan, **self.open_args)

    def _do_connect_async(
        self,
        dialect: Any,
        connection_record: ConnectionPoolEntry,
        cargs: list[Any],
        cparams: dict[str, Any],
    ) -> object:
        adapter_params = {
            k: v for k, v in cparams.items() if k in _ADAPTER_ARGS.get(self.driver, ())
        }
        # The adapter awaits what async_creator_fn returns and wraps the driver's connection.
        return dialect.loaded_dbapi.connect(
            async_creator_fn=lambda: self._connect_async(self.plan), **adapter_params
        )


def _split_url(
    url: str | URL | None, driver: str | None, *, is_async: bool
) -> tuple[str, str | None]:
    """Return ``(driver, dsn for warmdb)`` from a SQLAlchemy URL, DSN or host, and *driver*."""
    if driver is not None:
        driver = _check_driver("driver", driver, is_async=is_async)
    if isinstance(url, URL):
        url = url.render_as_string(hide_password=False)
    if url is None:
        return driver or DEFAULT_DRIVER, None
    if not isinstance(url, str):
        raise ConfigurationError(
            f"url must be a string or a sqlalchemy URL, not {type(url).__name__}"
        )
    scheme, sep, rest = url.strip().partition("://")
    if not sep:
        return driver or DEFAULT_DRIVER, url
    dialect, plus, url_driver = scheme.partition("+")
    if dialect.lower() not in ("postgresql", "postgres"):
        raise ConfigurationError(
            f"url scheme {scheme!r} is not supported: use postgresql+psycopg://, "
            "postgresql+psycopg2:// or postgresql+asyncpg://"
        )
    if plus:
        named = _check_driver("url driver", url_driver, is_async=is_async)
        if driver is not None and driver != named:
            raise ConfigurationError(f"driver={driver!r} contradicts the url's +{url_driver}")
        driver = named
    return driver or DEFAULT_DRIVER, f"postgresql://{rest}"


def _check_driver(what: str, name: str, *, is_async: bool) -> str:
    driver = _DRIVER_ALIASES.get(name.lower(), name.lower())
    supported = _ASYNC_DRIVERS if is_async else _SYNC_DRIVERS
    if driver in supported:
        return driver
    if driver in _ASYNC_DRIVERS + _SYNC_DRIVERS:
        other = "create_engine" if is_async else "create_async_engine"
        kind = "sync" if is_async else "async"
        raise ConfigurationError(f"{what} {name!r} is {kind}: use warmdb.sqlalchemy.{other}")
    raise ConfigurationError(f"{what} {name!r} is not one of {', '.join(supported)}")


def _driver_module(driver: str) -> ModuleType:
    try:
        return importlib.import_module(f"warmdb.{driver}")
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            f"driver {driver!r} is not installed ({exc.name} is missing): "
            f"pip install 'warmdb[{driver},sqlalchemy]', or pass another driver="
        ) from exc


def _probes(driver: str, *, is_async: bool) -> tuple[Callable[[Any], bool], Callable[[Any], int]]:
    """``(is_closed, fileno)`` for the pool's (DBAPI) connection, as the checkout check needs.

    The async dialects' DBAPI connection is SQLAlchemy's adapter around the driver's.
    """
    if driver == "psycopg2":
        from warmdb.psycopg2 import _Ops

        return _Ops.is_closed, _Ops.fileno
    if driver == "asyncpg":
        from warmdb.asyncpg import socket_of

        return (
            lambda conn: conn.driver_connection.is_closed(),
            lambda conn: socket_of(conn.driver_connection).fileno(),
        )
    if is_async:
        return (
            lambda conn: conn.driver_connection.closed,
            lambda conn: conn.driver_connection.fileno(),
        )
    return (lambda conn: conn.closed), (lambda conn: conn.fileno())


def _optional_count(name: str, value: object, *, minimum: int) -> int | None:
    return None if value is None else check_count(name, value, minimum=minimum)


def watch_pool(
    pool: Pool,
    plan: ConnectPlan,
    *,
    driver: str,
    is_closed: Callable[[Any], bool],
    fileno: Callable[[Any], int],
    ping: Callable[[Any], object],
    checkout_events: bool = True,
    clock: Callable[[], float] = time.monotonic,
    random_fraction: Callable[[], float] = policy_random_fraction,
) -> PoolCheck:
    """Apply warmdb's checkout checks to a SQLAlchemy *pool*, through its events.

    :param pool: the pool (an engine's ``engine.pool``, or a standalone one).
    :param plan: gives the policy and the endpoint reported in events.
    :param driver: the driver name reported in events.
    :param is_closed: whether a pool (DBAPI) connection is known to be closed.
    :param fileno: a pool connection's socket descriptor, for the readability check.
    :param ping: one round trip on a pool connection; raises when the connection is dead.
    :param checkout_events: run the checks from the pool's checkout and checkin events (the
        engines). ``False`` when the caller runs :meth:`PoolCheck.checked_out` after
        ``pool.connect()`` and sets the record's ``last_used`` when it gives the connection
        back, which spares SQLAlchemy's event dispatch, about 0.5 µs per checkout and return
        (:func:`warmdb.psycopg2.pool`).
    :param clock: monotonic time, for ages.
    :param random_fraction: chooses each connection's share of the lifetime jitter.
    :returns: the checks, registered.
    """
    check = PoolCheck(plan, driver, is_closed, fileno, ping, clock, random_fraction)
    event.listen(pool, "connect", check.on_connect)
    event.listen(pool, "invalidate", check.on_invalidate)
    if checkout_events:
        event.listen(pool, "checkout", check.on_checkout)
        event.listen(pool, "checkin", check.on_checkin)
    return check


class PoolCheck:
    """warmdb's checks for the connections of a SQLAlchemy pool (see :func:`watch_pool`).

    Each pool entry's ``info`` holds its :class:`~warmdb.warm.KeptConnection` record.
    """

    __slots__ = (
        "_clock",
        "_driver",
        "_fileno",
        "_is_closed",
        "_ping",
        "_plan",
        "_policy",
        "_random",
    )

    def __init__(
        self,
        plan: ConnectPlan,
        driver: str,
        is_closed: Callable[[Any], bool],
        fileno: Callable[[Any], int],
        ping: Callable[[Any], object],
        clock: Callable[[], float],
        random_fraction: Callable[[], float],
    ) -> None:
        self._plan = plan
        self._policy = plan.policy
        self._driver = driver
        self._is_closed = is_closed
        self._fileno = fileno
        self._ping = ping
        self._clock = clock
        self._random = random_fraction

    def checked_out(self, info: dict[Any, Any], dbapi_connection: object) -> KeptConnection | None:
        """Judge a connection at checkout by its entry's *info*.

        :returns: its record when it may be handed out (the caller sets ``last_used`` when it
            comes back); ``None`` when it must be replaced (reported here, and not again when
            the pool invalidates it).
        """
        kept: KeptConnection = info[_INFO_KEY]
        reason = judge(
            kept,
            self._clock(),
            self._policy,
            dbapi_connection,
            is_closed=self._is_closed,
            fileno=self._fileno,
            ping=self._ping,
        )
        if reason is None:
            return kept
        del info[_INFO_KEY]
        self._report(kept, reason)
        return None

    def on_connect(self, dbapi_connection: object, record: ConnectionPoolEntry) -> None:
        record.info[_INFO_KEY] = KeptConnection(self._clock(), self._policy, self._random())

    def on_checkout(
        self, dbapi_connection: object, record: ConnectionPoolEntry, proxy: object
    ) -> None:
        if self.checked_out(record.info, dbapi_connection) is None:
            # SQLAlchemy's pessimistic-disconnect recipe: the pool invalidates (closes) this
            # connection, opens a new one and checks it again.
            raise sqlalchemy.exc.DisconnectionError("warmdb: replacing the connection")

    def on_checkin(self, dbapi_connection: object, record: ConnectionPoolEntry) -> None:
        kept: KeptConnection | None = record.info.get(_INFO_KEY)
        if kept is not None:  # None once invalidated
            kept.last_used = self._clock()

    def on_invalidate(
        self, dbapi_connection: object, record: ConnectionPoolEntry, exception: BaseException | None
    ) -> None:
        # SQLAlchemy found the connection broken while in use (or the caller invalidated it).
        kept: KeptConnection | None = record.info.pop(_INFO_KEY, None)
        if kept is not None:
            self._report(kept, "broken")

    def _report(self, kept: KeptConnection, reason: str) -> None:
        report_recycle(self._plan, self._driver, kept, reason, self._clock())
