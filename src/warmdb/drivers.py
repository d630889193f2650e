"""Driver adapters: everything warmdb needs to know about one database driver, and the registry.

Generic code (keepers, pools, engines, connect retry, transactions, bench and probe) talks to
drivers only through an adapter. An adapter lives in its driver's own module
(:mod:`warmdb.psycopg2` holds ``Psycopg2Adapter``...) and answers, for that driver:

- how to connect: :meth:`Adapter.connect_params` (the driver's connect arguments for a
  resolved :class:`~warmdb._connect.ConnectPlan` and one password) and ``connect_raw`` (one
  call of the driver's own connect function, its exceptions as they come);
- what its exceptions mean: :meth:`Adapter.classify` returns one :class:`ErrorVerdict`
  (SQLSTATE or server error number, the retry reason, whether the connection is broken,
  whether it is a transaction conflict worth retrying);
- how to look after a connection: ``is_closed``, ``fileno``, ``ping``, ``reset``, ``close``;
- how to run a statement and end a transaction: ``execute``, ``begin``, ``commit``,
  ``rollback`` (for transactions, bench and probe).

:class:`SyncAdapter` and :class:`AsyncAdapter` differ only in which of these are coroutines.

The registry maps a driver name (``"psycopg2"``) and a SQLAlchemy dialect
(``"postgresql+psycopg2"``) to its adapter class, importing the driver module only when asked.
Adding a driver is one module with an adapter plus one line in :data:`REGISTRY`
(``docs/drivers.md`` walks through it).
"""

from __future__ import annotations

import importlib
import os

from warmdb._arguments import did_you_mean
from warmdb._record import Record
from warmdb.endpoint import FAMILIES
from warmdb.errors import ConfigurationError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, ClassVar

    from warmdb._connect import ConnectPlan
    from warmdb.policy import Policy

__all__ = [
    "REGISTRY",
    "Adapter",
    "AsyncAdapter",
    "DriverEntry",
    "ErrorVerdict",
    "NoDriver",
    "SyncAdapter",
    "adapter_class",
    "entry_for_dialect",
    "installed_drivers",
]


class ErrorVerdict:
    """What a driver exception means to warmdb. Immutable.

    :ivar sqlstate: the SQLSTATE the server sent, or derived from its message; ``None``
        when the failure happened before the server answered.
    :ivar errno: the server or client error number (MySQL: 1045, 2013...); ``None`` for
        drivers that have none.
    :ivar reason: why trying the connect again may work (a :mod:`warmdb.retry` reason:
        ``"auth"``, ``"rate-exceeded"``, ``"refused"``...), or ``None``.
    :ivar broken: the connection cannot be used after this error.
    :ivar conflict: the transaction lost a concurrency conflict and running it again may
        succeed: ``"OC000"`` / ``"OC001"`` (Aurora DSQL), ``"40001"`` (serialization
        failure), ``"40P01"`` (deadlock), ``"1213"`` / ``"1205"`` (MySQL deadlock, lock wait
        timeout); ``None`` otherwise.
    """

    __slots__ = ("broken", "conflict", "errno", "reason", "sqlstate")

    sqlstate: str | None
    errno: int | None
    reason: str | None
    broken: bool
    conflict: str | None

    def __init__(
        self,
        *,
        sqlstate: str | None = None,
        errno: int | None = None,
        reason: str | None = None,
        broken: bool = False,
        conflict: str | None = None,
    ) -> None:
        object.__setattr__(self, "sqlstate", sqlstate)
        object.__setattr__(self, "errno", errno)
        object.__setattr__(self, "reason", reason)
        object.__setattr__(self, "broken", broken)
        object.__setattr__(self, "conflict", conflict)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("ErrorVerdict is immutable")

    def _values(self) -> tuple[object, ...]:
        return (self.sqlstate, self.errno, self.reason, self.broken, self.conflict)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ErrorVerdict) and self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ("sqlstate", "errno", "reason", "broken", "conflict")
        pairs = zip(fields, self._values(), strict=True)
        shown = ", ".join(f"{name}={value!r}" for name, value in pairs)
        return f"ErrorVerdict({shown})"


class Adapter:
    """What every adapter answers, sync or async. Subclass :class:`SyncAdapter` or
    :class:`AsyncAdapter`, never this class.

    An adapter instance carries the driver-specific options that shape its connections
    (psycopg's ``connection_class``, psycopg2's ``cursor_factory``...), named in
    :attr:`open_keys`; it holds no connection and no secret, so keepers, pools and engines
    share one.
    """

    #: the driver's name in warmdb (the module ``warmdb.<name>``)
    name: ClassVar[str]
    #: the database family: ``"postgresql"`` or ``"mysql"`` (see :mod:`warmdb.endpoint`)
    family: ClassVar[str]
    #: whether the connect and the connection's I/O methods are coroutines
    is_async: ClassVar[bool]
    #: the driver's own connect arguments warmdb passes through (beyond the endpoint's);
    #: any other keyword is refused with the closest valid name
    driver_keys: ClassVar[frozenset[str]]
    #: options of the adapter's constructor, taken from the caller's keyword arguments
    open_keys: ClassVar[frozenset[str]] = frozenset()
    #: connect arguments that SQLAlchemy's adapter for this driver consumes itself (its
    #: dialect's ``connect_args`` that never reach the driver)
    dialect_keys: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, **options: Any) -> None:
        unknown = sorted(set(options) - self.open_keys)
        if unknown:
            raise ConfigurationError(f"{self.name} takes no option {unknown[0]!r}")
        self.options: Mapping[str, Any] = options

    def plan(
        self,
        dsn: str | None,
        kwargs: Mapping[str, object],
        custom_credentials_provider: object | None = None,
        policy: Policy | None = None,
        *,
        reuse: bool = False,
    ) -> ConnectPlan:
        """Resolve a front's call (``connect``, ``warm``, ``pool``...) for this driver.

        ``policy`` and ``custom_credentials_provider`` may also come in *kwargs*, as fronts
        that take their arguments as ``**kwargs`` pass them.

        :param reuse: return the plan made before for the same arguments and environment, if
            any (the ``connect()`` fronts: a connect per Lambda invocation resolves its
            endpoint once, not per call). Keepers, pools and engines resolve once anyway and
            get a plan of their own.
        :raises ConfigurationError: a bad, unknown or contradictory argument, or a plan this
            driver refuses (:meth:`check_plan`).
        """
        key = self._plan_key(dsn, kwargs, custom_credentials_provider, policy) if reuse else None
        plan = _PLANS.get(key) if key is not None else None
        if plan is not None:
            return plan
        from warmdb._connect import ConnectPlan

        rest = dict(kwargs)
        provider = rest.pop("custom_credentials_provider", custom_credentials_provider)
        # ConnectPlan checks the type.
        chosen: Any = rest.pop("policy", policy)
        plan = ConnectPlan(
            dsn, rest, adapter=self, custom_credentials_provider=provider, policy=chosen
        )
        if key is not None:
            if len(_PLANS) >= _PLANS_KEPT:
                del _PLANS[next(iter(_PLANS))]  # the oldest: dicts keep insertion order
            _PLANS[key] = plan
        return plan

    def _plan_key(
        self,
        dsn: str | None,
        kwargs: Mapping[str, object],
        custom_credentials_provider: object | None,
        policy: Policy | None,
    ) -> tuple[object, ...] | None:
        """What a plan is made of: the adapter's class and options, the call's arguments and
        the environment variables resolution reads; ``None`` when an argument is unhashable
        (that call is resolved afresh)."""
        environ = os.environ
        key = (
            type(self),
            tuple(sorted(self.options.items())),
            dsn,
            tuple(sorted(kwargs.items())),
            custom_credentials_provider,
            policy,
            tuple(environ.get(name) for name in _RESOLUTION_ENVIRONMENT[self.family]),
        )
        try:
            hash(key)
        except TypeError:
            return None
        return key

    def connect_params(self, plan: ConnectPlan, password: str | None) -> dict[str, Any]:
        """The keyword arguments of one driver connect call for *plan* and *password*."""
        raise NotImplementedError

    #: the exception types a failed driver connect raises (classified, then wrapped)
    connect_errors: ClassVar[tuple[type[BaseException], ...]] = (OSError,)

    def classify(self, exc: BaseException) -> ErrorVerdict:
        """What *exc*, raised by this driver (or the socket under it), means."""
        raise NotImplementedError

    def is_closed(self, conn: Any) -> bool:
        """Whether the driver already knows *conn* is closed or broken (no I/O)."""
        raise NotImplementedError

    def fileno(self, conn: Any) -> int:
        """The socket descriptor of *conn*, for the readable-while-idle check."""
        raise NotImplementedError

    def in_transaction(self, conn: Any) -> bool:
        """Whether *conn* has a transaction open (or failed) that a reset must roll back."""
        raise NotImplementedError

    def is_broken_by(self, conn: Any, exc: BaseException) -> bool:
        """Whether *exc*, raised while *conn* was in use, left it unusable."""
        return self.is_closed(conn) or self.classify(exc).broken

    def transaction_pooling_defaults(self) -> dict[str, Any]:
        """Driver arguments for a connection through a transaction-mode pooler (PgBouncer)
        that cannot keep protocol-level prepared statements: server-side prepared statements
        off. The caller's own arguments win."""
        return {}

    def check_plan(self, plan: ConnectPlan) -> None:
        """Refuse a plan this driver cannot connect safely with (called once, when the plan is
        made, before any connect): e.g. a MySQL driver's own TLS switch turned off while an
        IAM token would be sent.

        :raises ConfigurationError: what is wrong, naming the argument.
        """

    def engine_defaults(self, plan: ConnectPlan) -> dict[str, Any]:
        """SQLAlchemy engine options this driver's dialect needs for *plan*'s endpoint (the
        caller's own options win)."""
        return {}

    def __repr__(self) -> str:
        options = "".join(f" {k}={v!r}" for k, v in sorted(self.options.items()))
        return f"<{type(self).__name__}{options}>"


# The connect() fronts' plans, by what they are made of (Adapter._plan_key): a connect()
# per Lambda invocation resolves its endpoint once, not per call. Nothing changes such a plan
# after it is made, and it holds no connection: sharing it is sharing a value.
_PLANS: dict[tuple[object, ...], ConnectPlan] = {}
_PLANS_KEPT = 64
# The environment variables endpoint resolution and ConnectPlan read, by family.
_RESOLUTION_ENVIRONMENT = {
    family.name: (
        *family.environment.values(),
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_PROFILE",
        "AWS_CONFIG_FILE",
        "WARMDB_SIDECAR",
    )
    for family in FAMILIES.values()
}


class SyncAdapter(Adapter):
    """An adapter whose connect and connection methods block."""

    is_async = False

    def connect_raw(self, params: dict[str, Any]) -> Any:
        """One call of the driver's connect with *params*; its exceptions propagate."""
        raise NotImplementedError

    def ping(self, conn: Any) -> None:
        """One round trip that opens no transaction; raises when the connection is dead."""
        raise NotImplementedError

    def reset(self, conn: Any) -> None:
        """Make *conn* ready for its next user: roll back an open transaction."""
        if self.in_transaction(conn):
            self.rollback(conn)

    def close(self, conn: Any) -> None:
        """Close *conn*, ignoring the driver's errors (it may be dead already)."""
        raise NotImplementedError

    def execute(self, conn: Any, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Run *sql* (with the driver's *params*) and return its rows ([] for none)."""
        raise NotImplementedError

    def begin(self, conn: Any) -> None:
        """Start a transaction that the next statements run in."""
        raise NotImplementedError

    def commit(self, conn: Any) -> None:
        """Commit the transaction :meth:`begin` started."""
        raise NotImplementedError

    def rollback(self, conn: Any) -> None:
        """Roll back the open transaction, if any."""
        raise NotImplementedError


class AsyncAdapter(Adapter):
    """An adapter whose connect and connection I/O are coroutines.

    :attr:`loop_bound` says whether a connection belongs to the event loop that opened it
    (asyncpg): a keeper then abandons it, with :meth:`abandon`, when the loop changes.
    """

    is_async = True
    loop_bound: ClassVar[bool] = False

    async def connect_raw(self, params: dict[str, Any]) -> Any:
        """One call of the driver's connect with *params*; its exceptions propagate."""
        raise NotImplementedError

    async def ping(self, conn: Any) -> None:
        """One round trip that opens no transaction; raises when the connection is dead."""
        raise NotImplementedError

    async def reset(self, conn: Any) -> None:
        """Make *conn* ready for its next user: roll back an open transaction."""
        if self.in_transaction(conn):
            await self.rollback(conn)

    async def close(self, conn: Any) -> None:
        """Close *conn*, ignoring the driver's errors (it may be dead already)."""
        raise NotImplementedError

    def abandon(self, conn: Any) -> None:
        """Drop *conn* without a round trip, from outside its event loop."""
        raise NotImplementedError

    async def execute(self, conn: Any, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Run *sql* (with the driver's *params*) and return its rows ([] for none)."""
        raise NotImplementedError

    async def begin(self, conn: Any) -> None:
        """Start a transaction that the next statements run in."""
        raise NotImplementedError

    async def commit(self, conn: Any) -> None:
        """Commit the transaction :meth:`begin` started."""
        raise NotImplementedError

    async def rollback(self, conn: Any) -> None:
        """Roll back the open transaction, if any."""
        raise NotImplementedError


class NoDriver(Adapter):
    """The adapter of plans that only sign tokens and connect nothing
    (:func:`warmdb.generate_token`, ``warmdb token``, the sidecar): no driver argument is
    accepted.

    :param family: the database family whose defaults (port...) apply.
    """

    name = "generate_token"
    driver_keys = frozenset()

    def __init__(self, family: str = "postgresql") -> None:
        super().__init__()
        self.family = family  # type: ignore[misc]


class DriverEntry(Record):
    """One line of the registry: where a driver's adapters live and what names it answers to.

    :ivar name: warmdb's name for the driver, also its module ``warmdb.<name>``.
    :ivar family: ``"postgresql"`` or ``"mysql"``.
    :ivar library: the driver's own top-level package, to tell whether it is installed.
    :ivar extra: the pip extra that installs it (``pip install 'warmdb[<extra>]'``).
    :ivar sync: the name of the module's sync adapter class, or ``None``.
    :ivar async_: the name of the module's async adapter class, or ``None``.
    :ivar dialects: SQLAlchemy dialect names (``family+driver``) served by this driver.
    """

    _shown = "{name!r}, family={family!r}"

    name: str
    family: str
    library: str
    extra: str
    sync: str | None
    async_: str | None
    dialects: tuple[str, ...]

    @property
    def module(self) -> str:
        return f"warmdb.{self.name}"

    def is_installed(self) -> bool:
        """Whether the driver's own package can be imported (nothing is imported)."""
        import importlib.util  # imports contextlib: kept off the connect path's cold start

        return importlib.util.find_spec(self.library) is not None


#: Every driver warmdb supports, one line each: name (also the module ``warmdb.<name>``),
#: family, the driver's own package, the pip extra, the sync and async adapter classes of the
#: module, and the SQLAlchemy dialects it serves.
# fmt: off
REGISTRY: dict[str, DriverEntry] = {entry.name: entry for entry in (
    DriverEntry(name="psycopg", family="postgresql", library="psycopg", extra="psycopg", sync="PsycopgAdapter", async_="AsyncPsycopgAdapter", dialects=("postgresql+psycopg", "postgresql+psycopg_async")),  # noqa: E501
    DriverEntry(name="psycopg2", family="postgresql", library="psycopg2", extra="psycopg2", sync="Psycopg2Adapter", async_=None, dialects=("postgresql+psycopg2",)),  # noqa: E501
    DriverEntry(name="asyncpg", family="postgresql", library="asyncpg", extra="asyncpg", sync=None, async_="AsyncpgAdapter", dialects=("postgresql+asyncpg",)),  # noqa: E501
    DriverEntry(name="pymysql", family="mysql", library="pymysql", extra="pymysql", sync="PyMySQLAdapter", async_=None, dialects=("mysql+pymysql", "mariadb+pymysql")),  # noqa: E501
    DriverEntry(name="mysql_connector", family="mysql", library="mysql.connector", extra="mysql-connector", sync="MySQLConnectorAdapter", async_=None, dialects=("mysql+mysqlconnector", "mariadb+mysqlconnector")),  # noqa: E501
    DriverEntry(name="aiomysql", family="mysql", library="aiomysql", extra="aiomysql", sync=None, async_="AiomysqlAdapter", dialects=("mysql+aiomysql", "mariadb+aiomysql")),  # noqa: E501
)}
# fmt: on


def _entry(name: str) -> DriverEntry:
    entry = REGISTRY.get(name)
    if entry is None:
        raise ConfigurationError(
            f"driver {name!r} is not one of {', '.join(sorted(REGISTRY))}"
            + did_you_mean(name, REGISTRY)
        )
    return entry


def adapter_class(name: str, *, is_async: bool) -> type[Adapter]:
    """The adapter class of driver *name*, sync or async, importing its module.

    :raises ConfigurationError: an unknown driver, one without that kind of adapter, or one
        whose package is not installed (the message says which extra installs it).
    """
    entry = _entry(name)
    attribute = entry.async_ if is_async else entry.sync
    if attribute is None:
        kind, other = ("async", "sync") if is_async else ("sync", "async")
        raise ConfigurationError(f"driver {name!r} is {other}-only: it has no {kind} adapter")
    try:
        module = importlib.import_module(entry.module)
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            f"driver {name!r} is not installed ({exc.name} is missing): "
            f"pip install 'warmdb[{entry.extra}]'"
        ) from exc
    cls: type[Adapter] = getattr(module, attribute)
    return cls


def entry_for_dialect(dialect: str) -> DriverEntry:
    """The registry entry serving a SQLAlchemy dialect name such as ``postgresql+psycopg2``.

    :raises ConfigurationError: no driver serves it; the message lists those that do.
    """
    wanted = dialect.lower()
    for entry in REGISTRY.values():
        if wanted in entry.dialects:
            return entry
    known = sorted(d for entry in REGISTRY.values() for d in entry.dialects)
    raise ConfigurationError(
        f"SQLAlchemy dialect {dialect!r} is not supported: use one of {', '.join(known)}"
    )


def installed_drivers(*, family: str | None = None) -> list[DriverEntry]:
    """The registered drivers whose package is installed, in registry order."""
    return [
        entry
        for entry in REGISTRY.values()
        if (family is None or entry.family == family) and entry.is_installed()
    ]
