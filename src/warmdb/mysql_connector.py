"""warmdb for mysql-connector-python: ``connect()`` with RDS IAM tokens, returning
mysql-connector's own connection.

::

    import warmdb.mysql_connector as db

    conn = db.connect(host="mydb.abc123.us-east-1.rds.amazonaws.com", user="iam_user")

    keeper = db.warm(host=ENDPOINT, user="iam_user")   # module level: connects lazily
    with keeper.connection() as conn:
        ...

    pool = db.pool(host=ENDPOINT, user="iam_user", max_size=4)   # warmdb's pool, not
    with pool.connection() as conn:                               # mysql-connector's
        ...

With a token, warmdb sets ``auth_plugin="mysql_clear_password"`` (an IAM login sends the token
as the password, which mysql-connector does only with that plugin, and only over TLS) and TLS:
``ssl_mode`` ``require`` (the default with a token) encrypts without checking the
certificate, ``verify-ca`` sets ``ssl_verify_cert``, ``verify-full`` also
``ssl_verify_identity``; ``ssl_ca`` is the CA file (the RDS bundle), or ``"system"`` for the
operating system's store (mysql-connector loads it whatever the CA file).

Every other argument of :func:`mysql.connector.connect` is passed through, except its pooling
and fail-over arguments (warmdb's ``pool()`` pools) and the TLS checks that ``ssl_mode``
replaces (``ssl_verify_cert``, ``ssl_verify_identity``).
"""

from __future__ import annotations

import mysql.connector
from mysql.connector.connection import MySQLConnection

from warmdb._connect import ConnectPlan, open_connection
from warmdb._mysql import base_params, check_tls, classify_mysql, tls_mode
from warmdb.drivers import SyncAdapter
from warmdb.errors import ConfigurationError
from warmdb.pools import pool_class_on_demand, queue_pool
from warmdb.warm import Keeper

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from warmdb.drivers import ErrorVerdict
    from warmdb.pools.queue import ConnectionPool

__all__ = ["ConnectionPool", "MySQLConnectorAdapter", "connect", "pool", "warm"]

#: the authentication plugin that sends the password (the token) as it is
CLEAR_PASSWORD = "mysql_clear_password"  # noqa: S105 (a plugin name)

#: mysql.connector's connection arguments (``constants.DEFAULT_CONFIGURATION``,
#: mysql-connector-python 8.4 to 9.x and 26; guarded by tests/unit/test_mysql_drivers.py)
#: that warmdb passes through. The endpoint's (host, port, user, password, database, ssl_ca)
#: are warmdb's; ``db``/``passwd`` are deprecated spellings of them, ``password1``-``3`` are
#: multi-factor passwords, ``dsn`` is unsupported by mysql-connector itself.
_CONNECT_KEYS = frozenset(
    {
        "allow_local_infile",
        "allow_local_infile_in_path",
        "auth_plugin",
        "autocommit",
        "buffered",
        "charset",
        "client_flags",
        "collation",
        "compress",
        "conn_attrs",
        "connect_timeout",
        "connection_timeout",
        "consume_results",
        "converter_class",
        "converter_str_fallback",
        "dns_srv",
        "force_ipv6",
        "get_warnings",
        "init_command",
        "kerberos_auth_mode",
        "krb_service_principal",
        "oci_config_file",
        "oci_config_profile",
        "openid_token_file",
        "raise_on_warnings",
        "raw",
        "read_timeout",
        "sql_mode",
        "ssl_cert",
        "ssl_cipher",
        "ssl_disabled",
        "ssl_key",
        "time_zone",
        "tls_ciphersuites",
        "tls_versions",
        "unix_socket",
        "use_pure",
        "use_unicode",
        "webauthn_callback",
        "write_timeout",
    }
)


class MySQLConnectorAdapter(SyncAdapter):
    """What warmdb knows about mysql-connector-python (see :mod:`warmdb.drivers`).

    Its connections are the pure-Python :class:`mysql.connector.connection.MySQLConnection`
    (warmdb reads their socket and transaction state).
    """

    name = "mysql_connector"
    family = "mysql"
    driver_keys = _CONNECT_KEYS
    connect_errors = (mysql.connector.Error, OSError)

    def check_plan(self, plan: ConnectPlan) -> None:
        check_tls(plan)
        auth_plugin = plan.driver_kwargs.get("auth_plugin")
        if plan.uses_token and auth_plugin not in (None, CLEAR_PASSWORD):
            raise ConfigurationError(
                f"auth_plugin={auth_plugin!r} cannot send an IAM token: drop it "
                f"(warmdb sets {CLEAR_PASSWORD!r})"
            )

    def connect_params(self, plan: ConnectPlan, password: str | None) -> dict[str, Any]:
        params = base_params(plan, password)
        # warmdb needs the pure-Python connection (its socket and state); the C extension
        # is not built for every platform anyway.
        params.setdefault("use_pure", True)
        timeout = plan.policy.connect_timeout
        if timeout is not None and "connect_timeout" not in params:
            # Whole seconds: mysql-connector checks for an int.
            params.setdefault("connection_timeout", max(1, -int(-timeout // 1)))
        if plan.uses_token:
            params["auth_plugin"] = CLEAR_PASSWORD
        endpoint = plan.endpoint
        mode = tls_mode(endpoint)
        if mode == "disable":
            params["ssl_disabled"] = True
        elif mode in ("require", "verify-ca", "verify-full"):
            params["ssl_disabled"] = False
            params["ssl_verify_cert"] = mode != "require"
            params["ssl_verify_identity"] = mode == "verify-full"
            if endpoint.sslrootcert is not None and endpoint.sslrootcert != "system":
                params["ssl_ca"] = endpoint.sslrootcert
        return params

    def connect_raw(self, params: dict[str, Any]) -> MySQLConnection:
        conn = mysql.connector.connect(**params)
        assert isinstance(conn, MySQLConnection)
        if params.get("ssl_disabled") is False and not conn.is_secure:
            # Asked for TLS without certificate checks, mysql-connector carries on in
            # plaintext when the server offers none (a token never goes that way: the
            # clear-password plugin refuses; a password went hashed). Refuse, as libpq does.
            self.close(conn)
            raise mysql.connector.errors.InterfaceError(
                msg="TLS is required but the server does not offer it", errno=2026
            )
        return conn

    def classify(self, exc: BaseException) -> ErrorVerdict:
        # OperationalError without a server number is the socket's failure.
        broken = isinstance(exc, mysql.connector.OperationalError) and not getattr(
            exc, "sqlstate", None
        )
        return classify_mysql(exc, broken=broken)

    def is_closed(self, conn: MySQLConnection) -> bool:
        # is_connected() pings; the socket object tells without a round trip.
        network = conn._socket
        sock = None if network is None else network.sock
        return sock is None or sock.fileno() == -1

    def fileno(self, conn: MySQLConnection) -> int:
        network = conn._socket
        sock = None if network is None else network.sock
        return -1 if sock is None else int(sock.fileno())

    def in_transaction(self, conn: MySQLConnection) -> bool:
        return bool(conn.in_transaction)

    def ping(self, conn: MySQLConnection) -> None:
        conn.cmd_ping()

    def reset(self, conn: MySQLConnection) -> None:
        # A result left unread makes every next command fail with "Unread result found".
        if conn.unread_result:
            conn.consume_results()
        if conn.in_transaction:
            conn.rollback()

    def close(self, conn: MySQLConnection) -> None:
        try:  # noqa: SIM105
            conn.close()
        except (mysql.connector.Error, OSError):
            pass

    def execute(self, conn: MySQLConnection, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        cursor = conn.cursor()
        try:
            cursor.execute(sql, params)
            return [tuple(row) for row in cursor.fetchall()] if cursor.description else []
        finally:
            cursor.close()

    def begin(self, conn: MySQLConnection) -> None:
        conn.start_transaction()

    def commit(self, conn: MySQLConnection) -> None:
        conn.commit()

    def rollback(self, conn: MySQLConnection) -> None:
        conn.rollback()


def connect(dsn: str | None = None, **kwargs: Any) -> MySQLConnection:
    """Open a mysql-connector connection, signing an RDS IAM token when the endpoint needs one.

    The arguments are those of :func:`warmdb.pymysql.connect` (``policy``,
    ``custom_credentials_provider``, the endpoint's), with any argument of
    :func:`mysql.connector.connect` instead of PyMySQL's.

    :returns: mysql-connector's own (pure-Python) connection object.
    :raises ConfigurationError: bad, unknown or contradictory arguments, or TLS switched off
        while a token is sent.
    :raises CredentialsError: no AWS credentials to sign with, or the password callable failed.
    :raises ConnectError: the connection failed, after the policy's retries
        (:class:`AuthenticationError` for error 1045); the driver's exception is the cause.
    """
    conn: MySQLConnection = open_connection(MySQLConnectorAdapter().plan(dsn, kwargs, reuse=True))
    return conn


def warm(dsn: str | None = None, **kwargs: Any) -> Keeper[MySQLConnection]:
    """Return a :class:`~warmdb.warm.Keeper`: one connection kept across warm starts.

    Nothing connects until the first ``keeper.connection()``; the arguments are those of
    :func:`connect` (see :func:`warmdb.pymysql.warm`).
    """
    return Keeper(MySQLConnectorAdapter().plan(dsn, kwargs))


def pool(dsn: str | None = None, **kwargs: Any) -> ConnectionPool:
    """Return a thread-safe pool of mysql-connector connections; the arguments are those of
    :func:`warmdb.pymysql.pool`."""
    return queue_pool(MySQLConnectorAdapter(), dsn, kwargs)


# ConnectionPool, the class pool() returns, is imported on demand: it needs SQLAlchemy.
__getattr__ = pool_class_on_demand(__name__)
