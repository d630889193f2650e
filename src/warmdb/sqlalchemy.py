"""SQLAlchemy engines whose connections are opened by warmdb and checked at every checkout.

::

    from sqlalchemy import text
    from warmdb.sqlalchemy import create_async_engine, create_engine

    engine = create_engine("postgresql+psycopg://admin@abc123.dsql.us-east-1.on.aws/postgres")
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))

    aengine = create_async_engine("abc123.dsql.us-east-1.on.aws", driver="asyncpg")

Supported: every dialect of a registered driver (:mod:`warmdb.drivers`):
``postgresql+psycopg``, ``postgresql+psycopg2`` (sync), ``postgresql+asyncpg``,
``postgresql+psycopg`` (async), and the MySQL drivers' dialects as they are registered.

How SQLAlchemy is hooked, with its documented events only:

- ``do_connect`` (dialect event): warmdb opens every connection itself, through the driver's
  adapter: a token signed (or reused while fresh) per connect, TLS as
  resolved, the policy's connect timeout, the rate governor, retries with backoff and
  :mod:`warmdb.events`. Sync dialects get the driver's connection back from the event; the
  async dialects get warmdb's connect as the coroutine factory their adapter awaits (the
  ``async_creator_fn`` that :func:`sqlalchemy.ext.asyncio.create_async_engine`'s own
  ``async_creator`` uses), so they wrap it as usual.
- ``connect`` / ``checkout`` / ``checkin`` / ``invalidate`` (pool events, through
  :func:`warmdb.pools.queue.watch_pool`): at each checkout, :func:`warmdb.warm.decide`
  decides, as for ``warm()`` keepers: reuse; ping first
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

The same checks guard the sync drivers' pools (:mod:`warmdb.pools.queue`), which run them
without the checkout and checkin event dispatch.

SQLAlchemy's one undocumented detail used here is the async adapters' ``async_creator_fn``
connect argument (what :func:`sqlalchemy.ext.asyncio.create_async_engine`'s own
``async_creator`` passes); tests/unit/test_sqlalchemy.py guards it.
"""

from __future__ import annotations

import sqlalchemy
import sqlalchemy.exc
from sqlalchemy import event
from sqlalchemy.engine import URL
from sqlalchemy.pool import Pool, QueuePool

from warmdb import drivers
from warmdb._arguments import check_count, check_seconds, keyword_arguments_of
from warmdb._connect import open_connection, open_connection_async
from warmdb.endpoint import FAMILIES
from warmdb.errors import ConfigurationError
from warmdb.pools.queue import watch_pool

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine
    from sqlalchemy.pool import ConnectionPoolEntry

    from warmdb.drivers import Adapter
    from warmdb.policy import Policy

__all__ = ["create_async_engine", "create_engine"]


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
    # The parameters, by name, as _EngineSetup takes them (create_async_engine shares it).
    setup = _EngineSetup(is_async=False, **locals())
    engine = setup.build(sqlalchemy.create_engine)
    setup.install(engine)
    return engine


def create_async_engine(url: str | URL | None = None, **kwargs: Any) -> AsyncEngine:
    """Return a SQLAlchemy :class:`~sqlalchemy.ext.asyncio.AsyncEngine` opened by warmdb.

    The arguments are those of :func:`create_engine`; *driver* is ``"psycopg"`` (the
    default) or ``"asyncpg"`` (``postgresql+asyncpg://...``). A ``password`` callable may
    return an awaitable. For asyncpg, ``connect_args`` may also hold SQLAlchemy's
    ``prepared_statement_cache_size`` and ``prepared_statement_name_func``.

    asyncpg connections belong to the event loop that opened them: share an engine only
    within one loop (``poolclass=NullPool`` for ``asyncio.run()`` per invocation).
    """
    setup = _EngineSetup(is_async=True, url=url, **keyword_arguments_of(create_engine, kwargs))
    from sqlalchemy.ext.asyncio import create_async_engine as sa_create_async_engine

    engine = setup.build(sa_create_async_engine)
    setup.install(engine.sync_engine)
    return engine


class _EngineSetup:
    """One engine call's arguments, sorted into warmdb's plan and SQLAlchemy's engine."""

    def __init__(
        self,
        *,
        url: str | URL | None,
        driver: str | None,
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
        entry, family, dsn = _split_url(url, driver, is_async=is_async)
        for name in ("creator", "async_creator", "pool"):
            if name in kwargs:
                raise ConfigurationError(
                    f"{name}= cannot be combined with warmdb: warmdb opens the connections "
                    "(pass the endpoint arguments instead)"
                )
        adapter_class = drivers.adapter_class(entry.name, is_async=is_async)
        driver_args = dict(connect_args or {})
        # Arguments SQLAlchemy's own adapter consumes (asyncpg's prepared statement cache),
        # those of warmdb's adapter (psycopg2's cursor_factory...), then the driver's.
        self.dialect_args = {
            k: driver_args.pop(k) for k in adapter_class.dialect_keys if k in driver_args
        }
        adapter = adapter_class(
            **{k: driver_args.pop(k) for k in adapter_class.open_keys if k in driver_args}
        )
        endpoint_keys = FAMILIES[family].endpoint_keys
        endpoint_args = {k: v for k, v in kwargs.items() if k in endpoint_keys}
        clash = sorted(set(endpoint_args) & set(driver_args))
        if clash:
            raise ConfigurationError(f"{clash[0]} is given both as an argument and in connect_args")
        self.plan = adapter.plan(
            dsn, {**driver_args, **endpoint_args}, custom_credentials_provider, policy
        )
        self.adapter: Adapter = adapter

        engine_kwargs = adapter.engine_defaults(self.plan)
        engine_kwargs.update((k, v) for k, v in kwargs.items() if k not in endpoint_keys)
        engine_kwargs["echo"] = echo
        # The URL names only the dialect: every connect argument is in the plan.
        engine_kwargs["connect_args"] = self.dialect_args
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
        self.url = URL.create(entry.dialects[0])

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
        # The async dialects' pool (DBAPI) connection is SQLAlchemy's adapter around the
        # driver's, which the adapter's checks take.
        watch_pool(
            engine.pool,
            self.plan,
            ping=dialect.do_ping,
            unwrap=_driver_connection if self.is_async else None,
        )

    # cparams, in both hooks, hold the dialect's arguments, already in the plan (install), and
    # the SQLAlchemy adapter's own; the URL that SQLAlchemy parsed names only the dialect.

    def _do_connect(
        self,
        dialect: object,
        connection_record: ConnectionPoolEntry,
        cargs: list[Any],
        cparams: dict[str, Any],
    ) -> object:
        return open_connection(self.plan)

    def _do_connect_async(
        self,
        dialect: Any,
        connection_record: ConnectionPoolEntry,
        cargs: list[Any],
        cparams: dict[str, Any],
    ) -> object:
        dialect_params = {k: v for k, v in cparams.items() if k in self.dialect_args}
        # The SQLAlchemy adapter awaits what async_creator_fn returns and wraps the driver's
        # connection (the one undocumented detail, guarded by tests/unit/test_sqlalchemy.py).
        return dialect.loaded_dbapi.connect(
            async_creator_fn=lambda: open_connection_async(self.plan), **dialect_params
        )


def _driver_connection(dbapi_connection: Any) -> Any:
    return dbapi_connection.driver_connection


def _split_url(
    url: str | URL | None, driver: str | None, *, is_async: bool
) -> tuple[drivers.DriverEntry, str, str | None]:
    """Return ``(driver entry, family, dsn for warmdb)`` from a SQLAlchemy URL, DSN or host,
    and *driver*."""
    if isinstance(url, URL):
        url = url.render_as_string(hide_password=False)
    if url is not None and not isinstance(url, str):
        raise ConfigurationError(
            f"url must be a string or a sqlalchemy URL, not {type(url).__name__}"
        )
    scheme, sep, rest = (url or "").strip().partition("://")
    family_name, plus, url_driver = scheme.partition("+") if sep else ("postgresql", "", "")
    family = next((f for f in FAMILIES.values() if family_name.lower() in f.schemes), None)
    if family is None:
        raise ConfigurationError(
            f"url scheme {scheme!r} is not supported: use postgresql+DRIVER:// or mysql+DRIVER://"
        )
    named = url_driver if plus else None
    if driver is not None and named is not None and driver.lower() != named.lower():
        raise ConfigurationError(f"driver={driver!r} contradicts the url's +{url_driver}")
    chosen = named or driver
    if chosen is None:
        entry = _default_entry(family.name, is_async=is_async)
    else:
        try:
            entry = drivers.entry_for_dialect(f"{family.name}+{chosen}")
        except ConfigurationError as exc:
            raise ConfigurationError(f"driver {chosen!r}: {exc}") from None
    if (entry.async_ if is_async else entry.sync) is None:
        other = "create_engine" if is_async else "create_async_engine"
        kind = "sync" if is_async else "async"
        raise ConfigurationError(f"driver {entry.name!r} is {kind}: use warmdb.sqlalchemy.{other}")
    dsn = None if url is None else (f"{family.schemes[0]}://{rest}" if sep else url)
    return entry, family.name, dsn


def _default_entry(family: str, *, is_async: bool) -> drivers.DriverEntry:
    """The first registered driver of *family* with that kind of adapter, installed first."""
    candidates = [
        entry
        for entry in drivers.REGISTRY.values()
        if entry.family == family and (entry.async_ if is_async else entry.sync) is not None
    ]
    for entry in candidates:
        if entry.is_installed():
            return entry
    if not candidates:
        raise ConfigurationError(f"no {'async' if is_async else 'sync'} {family} driver")
    return candidates[0]  # adapter_class() says how to install it


def _optional_count(name: str, value: object, *, minimum: int) -> int | None:
    return None if value is None else check_count(name, value, minimum=minimum)
