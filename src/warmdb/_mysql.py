"""What every MySQL driver shares: error numbers and their meaning, the TLS rule for IAM
tokens, and the endpoint's part of the connect arguments.

The adapters of :mod:`warmdb.pymysql`, :mod:`warmdb.mysql_connector` and :mod:`warmdb.aiomysql`
build on these, so a failure means the same whatever the driver (the MySQL counterpart of
:mod:`warmdb._postgres`). Pure code; nothing here imports a driver.

MySQL failures are told apart by their error number (``errno``): the server's (1045, 1040,
1213...) or the client library's (2003, 2006, 2013...). The SQLSTATE that MySQL attaches is
mostly ``HY000`` and not every driver exposes it, so verdicts carry the number only.
"""

from __future__ import annotations

import ssl

from warmdb import retry
from warmdb.drivers import ErrorVerdict
from warmdb.errors import ConfigurationError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from warmdb._connect import ConnectPlan
    from warmdb.endpoint import Endpoint

__all__ = [
    "BROKEN_ERRNOS",
    "CONFLICT_ERRNOS",
    "PYMYSQL_CONNECT_KEYS",
    "base_params",
    "check_tls",
    "classify_mysql",
    "errno_of",
    "tls_mode",
]

#: The connect arguments PyMySQL's ``Connection`` and aiomysql's (its asyncio port) share, that
#: warmdb passes through; each front adds its own (guarded by tests/unit/test_mysql.py). The
#: endpoint's (host, port, user, password, database / db, ssl_ca) are warmdb's.
PYMYSQL_CONNECT_KEYS = frozenset(
    {
        "autocommit",
        "charset",
        "client_flag",
        "connect_timeout",
        "conv",
        "cursorclass",
        "init_command",
        "local_infile",
        "program_name",
        "read_default_file",
        "read_default_group",
        "server_public_key",
        "sql_mode",
        "ssl",
        "unix_socket",
        "use_unicode",
    }
)

ACCESS_DENIED = 1045
TOO_MANY = 1040
CANT_CONNECT = 2003
SERVER_GONE = 2006
LOST_CONNECTION = 2013

#: Error numbers after which the connection cannot be used: 1053 server shutdown, 1927
#: (MariaDB) connection killed, 2006 server has gone away, 2013 lost connection during query,
#: 2014 commands out of sync, 2055 lost connection (mysql-connector's extended 2013), 4031
#: disconnected for inactivity (MySQL 8.0.24+ says so before closing at ``wait_timeout``).
BROKEN_ERRNOS = frozenset({1053, 1927, 2006, 2013, 2014, 2055, 4031})
#: Transaction conflicts worth running the transaction again for: deadlock, lock wait timeout.
CONFLICT_ERRNOS = frozenset({1213, 1205})

# Why trying the connect again may work, by error number. 2003 (can't connect) wraps the
# socket error, which refines it (a timeout is a timeout); 2002 is the same over a socket file.
_REASON_BY_ERRNO = {
    ACCESS_DENIED: retry.AUTH,
    TOO_MANY: retry.TOO_MANY_CONNECTIONS,
    1203: retry.TOO_MANY_CONNECTIONS,  # the user's max_user_connections
    1053: retry.SERVER_STARTING,
    2002: retry.REFUSED,
    CANT_CONNECT: retry.REFUSED,
    SERVER_GONE: retry.RESET,
    LOST_CONNECTION: retry.RESET,
    2055: retry.RESET,
}


def errno_of(exc: BaseException) -> int | None:
    """The MySQL error number of a driver exception, or ``None`` (a bare socket error).

    mysql-connector sets ``exc.errno``; PyMySQL and aiomysql (PyMySQL's exceptions) put it
    first in ``args``. An ``OSError``'s ``errno`` is the operating system's, not MySQL's.
    """
    if isinstance(exc, OSError):
        return None
    number = getattr(exc, "errno", None)
    if isinstance(number, int) and not isinstance(number, bool) and number > 0:
        return number
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], int) and not isinstance(args[0], bool) and args[0] > 0:
        return args[0]
    return None


def classify_mysql(exc: BaseException, *, broken: bool = False) -> ErrorVerdict:
    """The verdict for a MySQL driver's exception.

    :param broken: the adapter's judgement that the connection is unusable after *exc*
        whatever its number (an exception type that only a dead connection raises).
    """
    number = errno_of(exc)
    if number is None:
        # No number: a socket failure the driver let through, or one it wrapped (PyMySQL's
        # 2003 keeps it as ``original_exception``; every driver chains it as the cause).
        inner = getattr(exc, "original_exception", None) or exc.__cause__ or exc
        reason = retry.classify_os_error(inner)
        is_socket = isinstance(exc, OSError) or reason is not None
        return ErrorVerdict(reason=reason, broken=broken or is_socket)
    reason = _REASON_BY_ERRNO.get(number)
    inner = getattr(exc, "original_exception", None) or exc.__cause__
    if isinstance(inner, BaseException):
        # The driver wrapped what failed underneath. A certificate the client rejects is
        # final, whatever number the driver chose (aiomysql: 2003, mysql-connector: 2055).
        if isinstance(inner, ssl.SSLCertVerificationError):
            reason = None
        elif number in (CANT_CONNECT, 2002):
            # "Can't connect": a refused or reset TCP connect and a timeout are worth
            # retrying; an unknown host is not.
            reason = retry.classify_os_error(inner)
        else:
            reason = retry.classify_os_error(inner) or reason
    elif number == CANT_CONNECT and "timed out" in str(exc).lower():
        reason = retry.TIMEOUT
    conflict = str(number) if number in CONFLICT_ERRNOS else None
    return ErrorVerdict(
        errno=number, reason=reason, broken=broken or number in BROKEN_ERRNOS, conflict=conflict
    )


def tls_mode(endpoint: Endpoint) -> str | None:
    """The TLS mode a MySQL connect uses: the endpoint's, or ``verify-ca`` when only a CA
    file was given (the ``mysql`` client's rule: ``--ssl-ca`` alone means ``VERIFY_CA``);
    ``None`` leaves the driver's default (TLS when the server offers it)."""
    if endpoint.sslmode is None and endpoint.sslrootcert is not None:
        return "verify-ca"
    return endpoint.sslmode


def check_tls(plan: ConnectPlan, *, empty_keys: tuple[str, ...] = ()) -> None:
    """Refuse a plan whose driver arguments would send an IAM token without TLS.

    A MySQL IAM login sends the token in clear (``mysql_clear_password``), and PyMySQL and
    aiomysql send it that way even on a plaintext connection: with a token, TLS is required.
    (``ssl_mode='disable'`` with a token is refused by endpoint resolution, as the MySQL
    family's rule.)

    :param empty_keys: the driver's own TLS arguments that mean "no TLS" when given empty
        (PyMySQL's ``ssl={}``).
    :raises ConfigurationError: the driver's TLS is switched off while a token is sent.
    """
    if not plan.uses_token:
        return
    kwargs = plan.driver_kwargs
    off = [k for k in empty_keys if k in kwargs and not kwargs[k]]
    if kwargs.get("ssl_disabled"):
        off.insert(0, "ssl_disabled")
    if off:
        raise ConfigurationError(
            f"{off[0]}={kwargs[off[0]]!r} would send the IAM token in clear text: drop it "
            "(TLS is required with auth='rds')"
        )


def base_params(
    plan: ConnectPlan, password: str | None, *, database_key: str = "database"
) -> dict[str, object]:
    """The endpoint's connect arguments, in the names PyMySQL, aiomysql and mysql-connector
    share (*database_key* is ``db`` for aiomysql), then the caller's driver arguments."""
    endpoint = plan.endpoint
    params: dict[str, object] = {"host": endpoint.host, "port": endpoint.port}
    if endpoint.user is not None:
        params["user"] = endpoint.user
    if password is not None:
        params["password"] = password
    if endpoint.dbname is not None:
        params[database_key] = endpoint.dbname
    params.update(plan.driver_kwargs)
    return params
