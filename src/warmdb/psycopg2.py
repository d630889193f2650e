"""warmdb for psycopg2: ``connect()`` with IAM tokens, returning psycopg2's own connection.

::

    import warmdb.psycopg2 as db

    conn = db.connect(host="abc123.dsql.us-east-1.on.aws", user="admin")

    keeper = db.warm(host="abc123.dsql.us-east-1.on.aws")   # module level: connects lazily
    with keeper.connection() as conn:                        # reused across invocations
        ...

    pool = db.pool(host="abc123.dsql.us-east-1.on.aws", max_size=4)   # thread-safe
    with pool.connection() as conn:                          # psycopg2's own connection
        ...

The arguments are those of aurora-dsql-python-connector's ``aurora_dsql_psycopg2.connect``
(``dsn``, ``host``, ``user``, ``dbname``/``database``, ``port``, ``region``, ``profile``,
``token_duration_secs``, ``custom_credentials_provider``) plus ``auth``, ``policy`` and every
argument of
:func:`psycopg2.connect`, passed through unchanged.
"""

from __future__ import annotations

import threading
import time

import psycopg2
import psycopg2.extensions

from warmdb._arguments import check_count, check_seconds
from warmdb._connect import ConnectPlan, libpq_params, open_with_retry, raise_connect_error
from warmdb.errors import ConfigurationError, PoolTimeout, WarmdbError
from warmdb.warm import Keeper

TYPE_CHECKING = False
if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from sqlalchemy.pool import PoolProxiedConnection, QueuePool

    from warmdb.policy import Policy
    from warmdb.sqlalchemy import PoolCheck
    from warmdb.warm import KeptConnection

__all__ = ["ConnectionPool", "connect", "pool", "warm"]

DRIVER = "psycopg2"


def connect(
    dsn: str | None = None,
    *,
    connection_factory: object | None = None,
    cursor_factory: object | None = None,
    custom_credentials_provider: object | None = None,
    policy: Policy | None = None,
    **kwargs: object,
) -> psycopg2.extensions.connection:
    """Open a psycopg2 connection, signing an IAM token when the endpoint needs one.

    :param dsn: a ``postgresql://`` URL, a libpq ``key=value`` string, a host name or a DSQL
        cluster id. Keyword arguments win over DSN fields.
    :param connection_factory: passed to :func:`psycopg2.connect`.
    :param cursor_factory: passed to :func:`psycopg2.connect`.
    :param custom_credentials_provider: a botocore ``CredentialProvider`` tried before
        botocore's chain.
    :param policy: connect timeout and retry budget (:class:`warmdb.policy.Policy`); the
        preset for the endpoint (:data:`~warmdb.policy.DSQL`, :data:`~warmdb.policy.RDS`...)
        by default.
    :param kwargs: ``host``, ``port`` (default 5432), ``user`` (``admin`` for DSQL),
        ``dbname`` or ``database`` (``postgres`` for DSQL), ``region``, ``profile``,
        ``token_duration_secs`` (default 900), ``auth`` (``"dsql"``, ``"rds"`` or
        ``"password"``; guessed from the host), ``password`` (a string or a callable, password
        mode only), ``sslmode`` (``require`` by default with a token), ``sslrootcert``, and any
        other :func:`psycopg2.connect` argument.
    :returns: psycopg2's own connection object.
    :raises ConfigurationError: bad or contradictory arguments.
    :raises CredentialsError: no AWS credentials to sign with.
    :raises ConnectError: the connection failed, after the policy's retries
        (:class:`AuthenticationError` for SQLSTATE class 28); the driver's exception is the
        cause.
    """
    plan = ConnectPlan(
        dsn, kwargs, custom_credentials_provider=custom_credentials_provider, policy=policy
    )
    return connect_plan(plan, connection_factory=connection_factory, cursor_factory=cursor_factory)


def connect_plan(
    plan: ConnectPlan,
    *,
    connection_factory: object | None = None,
    cursor_factory: object | None = None,
) -> psycopg2.extensions.connection:
    """Open one connection for an already resolved *plan*, retrying as its policy says.

    Used by :func:`connect`, keepers and pools.
    """

    def attempt() -> psycopg2.extensions.connection:
        password = plan.password()
        params = libpq_params(plan, password, psycopg2.extensions.libpq_version())
        try:
            return psycopg2.connect(
                connection_factory=connection_factory, cursor_factory=cursor_factory, **params
            )
        except psycopg2.Error as exc:
            raise_connect_error(
                exc, driver=DRIVER, endpoint=plan.endpoint, secrets=plan.secrets_of(password)
            )

    return open_with_retry(plan, attempt, driver=DRIVER)


def warm(
    dsn: str | None = None,
    *,
    connection_factory: object | None = None,
    cursor_factory: object | None = None,
    custom_credentials_provider: object | None = None,
    policy: Policy | None = None,
    **kwargs: object,
) -> Keeper[psycopg2.extensions.connection]:
    """Return a :class:`~warmdb.warm.Keeper`: one connection kept across warm starts.

    Nothing connects until the first ``keeper.connection()``. The arguments are those of
    :func:`connect`; the endpoint is resolved now, so a bad argument fails at import time.
    """
    plan = ConnectPlan(
        dsn, kwargs, custom_credentials_provider=custom_credentials_provider, policy=policy
    )
    ops = _Ops(plan, connection_factory, cursor_factory)
    return Keeper(plan, ops, driver=DRIVER)


def pool(
    dsn: str | None = None,
    *,
    min_size: int = 1,
    max_size: int = 10,
    timeout: float = 30.0,
    connection_factory: object | None = None,
    cursor_factory: object | None = None,
    custom_credentials_provider: object | None = None,
    policy: Policy | None = None,
    **kwargs: object,
) -> ConnectionPool:
    """Return a thread-safe :class:`ConnectionPool` of psycopg2 connections.

    Built on SQLAlchemy's ``QueuePool`` (``pip install 'warmdb[sqlalchemy]'``), with the
    checks of ``warm()`` at every checkout: connections older than the policy's lifetime
    (with jitter) or idle longer than ``max_idle`` are replaced, a connection whose socket
    became readable while idle (closed by the server) is replaced without a round trip, one
    idle longer than ``ping_after_idle`` is pinged first. Replacement is transparent; a
    transaction left open is rolled back when the connection comes back. Nothing connects
    until the first checkout, and connections are reused most-recent first.

    :param dsn: as for :func:`connect`.
    :param min_size: connections kept open for reuse when returned (at least 1).
    :param max_size: connections open at once, at most; those beyond *min_size* are closed
        when returned.
    :param timeout: seconds a checkout waits for a free connection when *max_size* are in
        use, 30 by default.
    :param connection_factory: as for :func:`connect`.
    :param cursor_factory: as for :func:`connect`.
    :param custom_credentials_provider: as for :func:`connect`.
    :param policy: lifetime, idle and ping checks, connect timeout and retries; the preset for
        the endpoint by default.
    :param kwargs: the other arguments of :func:`connect`.
    :returns: the pool; nothing is connected yet.
    :raises ConfigurationError: bad arguments, or SQLAlchemy is not installed.
    """
    try:
        from sqlalchemy.exc import TimeoutError as PoolTimeoutError
        from sqlalchemy.pool import QueuePool

        from warmdb.sqlalchemy import watch_pool
    except ModuleNotFoundError as exc:
        # Imported here, not at the top: warmdb.psycopg2 alone must not pay for SQLAlchemy.
        raise ConfigurationError(
            "warmdb.psycopg2.pool() is built on SQLAlchemy's pool: "
            "pip install 'warmdb[psycopg2,sqlalchemy]'"
        ) from exc
    check_count("min_size", min_size, minimum=1)
    check_count("max_size", max_size, minimum=min_size)
    check_seconds("timeout", timeout, positive=True)
    plan = ConnectPlan(
        dsn, kwargs, custom_credentials_provider=custom_credentials_provider, policy=policy
    )
    ops = _Ops(plan, connection_factory, cursor_factory)
    queue_pool = QueuePool(
        ops.open,
        pool_size=min_size,
        max_overflow=max_size - min_size,
        timeout=timeout,
        use_lifo=True,
        reset_on_return="rollback",
    )
    check = watch_pool(
        queue_pool,
        plan,
        driver=DRIVER,
        is_closed=ops.is_closed,
        fileno=ops.fileno,
        ping=ops.ping,
        checkout_events=False,  # ConnectionPool runs the checks itself
    )
    return ConnectionPool(
        queue_pool,
        check,
        plan,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        timeout_error=PoolTimeoutError,
    )


class ConnectionPool:
    """A thread-safe pool of psycopg2 connections, made by :func:`pool`.

    ::

        with pool.connection() as conn:        # psycopg2's own connection object
            with conn.cursor() as cur:
                cur.execute("SELECT 1")

        conn = pool.getconn()                  # or by hand, as with psycopg2.pool
        try:
            ...
        finally:
            pool.putconn(conn)

    A connection that comes back with a transaction open is rolled back; one broken by the
    caller's work (closed, or an ``OperationalError`` that did not come from the server) is
    discarded and replaced at a later checkout. Work that fails is never retried.

    :ivar min_size: connections kept open for reuse.
    :ivar max_size: connections open at once, at most.
    :ivar timeout: seconds a checkout waits for a free connection.
    """

    def __init__(
        self,
        queue_pool: QueuePool,
        check: PoolCheck,
        plan: ConnectPlan,
        *,
        min_size: int,
        max_size: int,
        timeout: float,
        timeout_error: type[Exception],
    ) -> None:
        self.min_size = min_size
        self.max_size = max_size
        self.timeout = timeout
        self._pool = queue_pool
        self._check = check
        self._plan = plan
        self._timeout_error = timeout_error
        self._lock = threading.Lock()
        # getconn() hands out the bare connection; putconn() needs SQLAlchemy's handle back.
        self._handed_out: dict[int, _PoolCheckout] = {}
        self._closed = False

    @property
    def policy(self) -> Policy:
        """The :class:`~warmdb.policy.Policy` the checkout checks apply."""
        return self._plan.policy

    @property
    def checked_out(self) -> int:
        """Connections currently handed out."""
        return self._pool.checkedout()

    def connection(self) -> AbstractContextManager[psycopg2.extensions.connection]:
        """Check a connection out for the ``with`` block: ``with pool.connection() as conn:``.

        :raises ConnectError: no connection could be opened within the policy's retries.
        :raises PoolTimeout: no connection was free within *timeout*.
        :raises WarmdbError: the pool is closed.
        """
        return _PoolCheckout(self)

    def getconn(self) -> psycopg2.extensions.connection:
        """Check a connection out; give it back with :meth:`putconn`.

        :raises ConnectError: no connection could be opened within the policy's retries.
        :raises PoolTimeout: no connection was free within *timeout*.
        :raises WarmdbError: the pool is closed.
        """
        checkout = _PoolCheckout(self)
        conn = checkout.__enter__()
        with self._lock:
            self._handed_out[id(conn)] = checkout
        return conn

    def putconn(self, conn: psycopg2.extensions.connection, *, close: bool = False) -> None:
        """Give back a connection from :meth:`getconn`; ``close=True`` discards it.

        :raises WarmdbError: *conn* is not checked out from this pool.
        """
        with self._lock:
            checkout = self._handed_out.pop(id(conn), None)
        if checkout is None:
            raise WarmdbError("putconn: this connection is not checked out from this pool")
        if close:
            checkout.discard()
        else:
            checkout.__exit__(None, None, None)

    def close(self) -> None:
        """Close the idle connections; those checked out are closed when they come back."""
        self._closed = True
        self._pool.dispose()

    def __enter__(self) -> ConnectionPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.checked_out} checked out"
        return (
            f"<ConnectionPool {DRIVER} {self._plan.endpoint!r} "
            f"min_size={self.min_size} max_size={self.max_size} {state}>"
        )


class _PoolCheckout:
    """One checkout of a :class:`ConnectionPool`: the context manager that
    :meth:`~ConnectionPool.connection` returns (lighter than a generator), also behind
    :meth:`~ConnectionPool.getconn` and :meth:`~ConnectionPool.putconn`."""

    __slots__ = ("_handle", "_kept", "_pool")

    _handle: PoolProxiedConnection  # SQLAlchemy's, once entered
    _kept: KeptConnection

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def __enter__(self) -> psycopg2.extensions.connection:
        pool = self._pool
        if pool._closed:
            raise WarmdbError("the pool is closed")
        check = pool._check
        while True:
            try:
                handle = pool._pool.connect()
            except pool._timeout_error as exc:
                raise PoolTimeout(
                    f"no connection free within timeout={pool.timeout} s: "
                    f"all max_size={pool.max_size} are checked out"
                ) from exc
            conn = handle.dbapi_connection
            # The entry's info dict: handle.info is the same dict, but its memoizing property
            # costs 300 ns on each new handle, a third of warmdb's overhead per checkout
            # (guarded by tests/unit/test_pools.py).
            kept = check.checked_out(handle._connection_record.info, conn)  # type: ignore[attr-defined]
            if kept is not None:
                self._handle = handle
                self._kept = kept
                return conn  # type: ignore[return-value]
            # Closes it and gives its slot back; the next connect() opens a new connection in
            # it (LIFO: the same slot) or hands out the next idle one, checked in turn.
            handle.invalidate()

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        # Back to the pool, or discarded when closed or broken by the caller's exception.
        handle = self._handle
        conn = handle.dbapi_connection
        if conn.closed or (exc is not None and _Ops.is_broken_by(conn, exc)):
            self.discard()
        elif self._pool._closed:
            handle.detach()
            _Ops.close(conn)
        else:
            self._kept.last_used = time.monotonic()
            handle.close()  # back to the pool: rolled back if a transaction is open

    def discard(self) -> None:
        """Close the connection instead of returning it (reported as a "broken" recycle)."""
        self._handle.invalidate()  # SQLAlchemy closes it and frees its slot


class _Ops:
    """How keepers and pools open, check and reset psycopg2 connections."""

    __slots__ = ("_connection_factory", "_cursor_factory", "_plan")

    def __init__(
        self, plan: ConnectPlan, connection_factory: object | None, cursor_factory: object | None
    ) -> None:
        self._plan = plan
        self._connection_factory = connection_factory
        self._cursor_factory = cursor_factory

    def open(self) -> psycopg2.extensions.connection:
        return connect_plan(
            self._plan,
            connection_factory=self._connection_factory,
            cursor_factory=self._cursor_factory,
        )

    @staticmethod
    def is_closed(conn: psycopg2.extensions.connection) -> bool:
        return conn.closed != 0

    @staticmethod
    def fileno(conn: psycopg2.extensions.connection) -> int:
        return conn.fileno()

    @staticmethod
    def ping(conn: psycopg2.extensions.connection) -> None:
        # In autocommit mode the ping is one round trip and opens no transaction.
        autocommit = conn.autocommit
        conn.autocommit = True
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1")
        finally:
            if not conn.closed:
                conn.autocommit = autocommit

    @staticmethod
    def reset(conn: psycopg2.extensions.connection) -> None:
        if conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            conn.rollback()

    @staticmethod
    def is_broken_by(conn: psycopg2.extensions.connection, exc: BaseException) -> bool:
        # An OperationalError without a SQLSTATE did not come from the server: the socket
        # failed. (Server errors such as serialization failures carry one and leave the
        # connection usable.)
        return isinstance(exc, psycopg2.OperationalError) and exc.pgcode is None

    @staticmethod
    def close(conn: psycopg2.extensions.connection) -> None:
        # try/except rather than contextlib.suppress: contextlib is not imported otherwise,
        # and its import costs a cold start about 0.6 ms.
        try:  # noqa: SIM105
            conn.close()
        except psycopg2.Error:
            pass
