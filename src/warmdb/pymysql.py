"""warmdb for PyMySQL: ``connect()`` with RDS IAM tokens, returning PyMySQL's own connection.

::

    import warmdb.pymysql as db

    conn = db.connect(host="mydb.abc123.us-east-1.rds.amazonaws.com", user="iam_user")

    keeper = db.warm(host=ENDPOINT, user="iam_user")   # module level: connects lazily
    with keeper.connection() as conn:                   # reused across invocations
        ...

    pool = db.pool(host=ENDPOINT, user="iam_user", max_size=4)   # thread-safe
    with pool.connection() as conn:
        ...

With a host ``*.REGION.rds.amazonaws.com`` and no password, each connect signs (or reuses
while fresh) an RDS IAM token (service ``rds-db``, 900 s), sent over TLS: PyMySQL would send
``mysql_clear_password`` on a plaintext connection too, so warmdb requires TLS whenever a token
is sent. ``ssl_mode`` (``REQUIRED``/``require`` by default with a token, ``VERIFY_CA``,
``VERIFY_IDENTITY``/``verify-full``) and ``ssl_ca`` (the RDS CA bundle, or ``"system"`` for
the operating system's store) choose the checks; see :mod:`warmdb._tls`. A ``password`` (a
string or a callable called per connect) means password mode.

Every other argument of :class:`pymysql.connections.Connection` is passed through, except the
TLS ones that ``ssl_mode`` / ``ssl_ca`` replace (``ssl_verify_cert``, ``ssl_verify_identity``,
and ``ssl_cert``/``ssl_key``, which would replace warmdb's TLS context: give a client
certificate in ``ssl={"cert": ..., "key": ...}``). A ``ssl=`` argument (a context or a dict)
is passed through and wins.
"""

from __future__ import annotations

import pymysql
import pymysql.connections
from pymysql.constants import SERVER_STATUS

from warmdb._connect import ConnectPlan, open_connection
from warmdb._mysql import PYMYSQL_CONNECT_KEYS, base_params, check_tls, classify_mysql, tls_mode
from warmdb._tls import ssl_context
from warmdb.drivers import SyncAdapter
from warmdb.pools import pool_class_on_demand, queue_pool
from warmdb.warm import Keeper

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from warmdb.drivers import ErrorVerdict
    from warmdb.policy import Policy
    from warmdb.pools.queue import ConnectionPool

__all__ = ["ConnectionPool", "PyMySQLAdapter", "connect", "pool", "warm"]

#: pymysql.connections.Connection's arguments warmdb passes through (PyMySQL 1.2; guarded by
#: tests/unit/test_mysql.py). ``db`` and ``passwd``, PyMySQL's deprecated spellings of
#: ``database`` and ``password``, are the endpoint's.
_CONNECT_KEYS = PYMYSQL_CONNECT_KEYS | {
    "auth_plugin_map",
    "binary_prefix",
    "bind_address",
    "collation",
    "compress",
    "defer_connect",
    "max_allowed_packet",
    "named_pipe",
    "read_timeout",
    "ssl_disabled",
    "write_timeout",
}


class PyMySQLAdapter(SyncAdapter):
    """What warmdb knows about PyMySQL (see :mod:`warmdb.drivers`)."""

    name = "pymysql"
    family = "mysql"
    driver_keys = _CONNECT_KEYS
    connect_errors = (pymysql.err.MySQLError, OSError)

    def check_plan(self, plan: ConnectPlan) -> None:
        check_tls(plan, empty_keys=("ssl",))

    def connect_params(self, plan: ConnectPlan, password: str | None) -> dict[str, Any]:
        params = base_params(plan, password)
        if plan.policy.connect_timeout is not None:
            params.setdefault("connect_timeout", plan.policy.connect_timeout)
        mode = tls_mode(plan.endpoint)
        if "ssl" in params:
            pass  # the caller's own TLS argument wins
        elif mode == "disable":
            params["ssl_disabled"] = True
        elif mode is not None and mode not in ("allow", "prefer"):
            # An SSLContext makes PyMySQL require TLS: it refuses a server that does not
            # offer it instead of sending the password in clear.
            params["ssl"] = ssl_context(mode, plan.endpoint.sslrootcert)
        return params

    def connect_raw(self, params: dict[str, Any]) -> pymysql.connections.Connection:
        return pymysql.connections.Connection(**params)

    def classify(self, exc: BaseException) -> ErrorVerdict:
        # PyMySQL raises InterfaceError (without a number) only for a closed connection.
        return classify_mysql(exc, broken=isinstance(exc, pymysql.err.InterfaceError))

    def is_closed(self, conn: pymysql.connections.Connection) -> bool:
        return not conn.open

    def fileno(self, conn: pymysql.connections.Connection) -> int:
        # PyMySQL has no public accessor for its socket (guarded by the unit tests).
        sock = conn._sock
        return -1 if sock is None else int(sock.fileno())

    def in_transaction(self, conn: pymysql.connections.Connection) -> bool:
        status = conn.server_status or 0
        return bool(status & SERVER_STATUS.SERVER_STATUS_IN_TRANS)

    def ping(self, conn: pymysql.connections.Connection) -> None:
        # COM_PING: one round trip, no statement, no transaction; never reconnects behind
        # warmdb's back (a reconnect would send the cached password, not a fresh token).
        conn.ping(reconnect=False)

    def close(self, conn: pymysql.connections.Connection) -> None:
        try:
            conn.close()
        except (pymysql.err.Error, OSError):
            # Already closed, or the socket died: close without COM_QUIT.
            conn._force_close()

    def execute(
        self, conn: pymysql.connections.Connection, sql: str, params: Any = None
    ) -> list[tuple[Any, ...]]:
        with conn.cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall()) if cursor.description is not None else []

    def begin(self, conn: pymysql.connections.Connection) -> None:
        conn.begin()

    def commit(self, conn: pymysql.connections.Connection) -> None:
        conn.commit()

    def rollback(self, conn: pymysql.connections.Connection) -> None:
        conn.rollback()


def connect(
    dsn: str | None = None,
    *,
    custom_credentials_provider: object | None = None,
    policy: Policy | None = None,
    **kwargs: object,
) -> pymysql.connections.Connection:
    """Open a PyMySQL connection, signing an RDS IAM token when the endpoint needs one.

    :param dsn: a ``mysql://user@host:port/db?region=...`` URL or a host name. Keyword
        arguments win over its fields.
    :param custom_credentials_provider: a botocore ``CredentialProvider`` tried before
        botocore's chain.
    :param policy: connect timeout and retry budget (:class:`warmdb.policy.Policy`); the
        preset for the endpoint (:data:`~warmdb.policy.RDS` with a token) by default.
    :param kwargs: ``host``, ``port`` (default 3306), ``user`` (required with a token),
        ``database`` or ``dbname``, ``region`` (default: from the host name), ``profile``,
        ``auth`` (``"rds"`` or ``"password"``; guessed from the host), ``password`` (a string
        or a callable, password mode only), ``ssl_mode`` / ``sslmode`` (``require`` by default
        with a token), ``ssl_ca`` / ``sslrootcert`` (a CA file or ``"system"``), and any other
        argument of :class:`pymysql.connections.Connection`.
    :returns: PyMySQL's own connection object.
    :raises ConfigurationError: bad, unknown or contradictory arguments, or TLS switched off
        while a token is sent.
    :raises CredentialsError: no AWS credentials to sign with, or the password callable failed.
    :raises ConnectError: the connection failed, after the policy's retries
        (:class:`AuthenticationError` for error 1045, after one retry with a new token); the
        driver's exception is the cause.
    """
    conn: pymysql.connections.Connection = open_connection(
        PyMySQLAdapter().plan(dsn, kwargs, custom_credentials_provider, policy, reuse=True)
    )
    return conn


def warm(dsn: str | None = None, **kwargs: Any) -> Keeper[pymysql.connections.Connection]:
    """Return a :class:`~warmdb.warm.Keeper`: one connection kept across warm starts.

    Nothing connects until the first ``keeper.connection()``. The arguments are those of
    :func:`connect`; the endpoint is resolved now, so a bad argument fails at import time.
    Behind RDS Proxy pass ``policy=warmdb.policy.RDS_PROXY``.
    """
    return Keeper(PyMySQLAdapter().plan(dsn, kwargs))


def pool(dsn: str | None = None, **kwargs: Any) -> ConnectionPool:
    """Return a thread-safe pool of PyMySQL connections
    (:class:`warmdb.pools.queue.ConnectionPool`, as :func:`warmdb.psycopg2.pool`, whose
    documentation says what the checks at checkout are).

    :param dsn: as for :func:`connect`.
    :param kwargs: the pool's options: ``min_size`` (connections opened when the pool opens
        and kept, default 1), ``max_size`` (open at once, at most, default 10), ``timeout``
        (seconds a checkout waits for a free connection, default 30), ``open`` (open the
        *min_size* connections now, default ``True``), ``retry`` (the OCC retry budget of
        ``pool.run_transaction()``); ``policy`` (lifetime, idle and ping checks, connect
        timeout and retries; the endpoint's preset by default, :data:`~warmdb.policy.RDS_PROXY`
        behind RDS Proxy) and every argument of :func:`connect`.
    :raises ConfigurationError: bad arguments, or SQLAlchemy is not installed.
    """
    return queue_pool(PyMySQLAdapter(), dsn, kwargs)


# ConnectionPool, the class pool() returns, is imported on demand: it needs SQLAlchemy.
__getattr__ = pool_class_on_demand(__name__)
