"""What every PostgreSQL driver shares: libpq's connect keywords, SQLSTATEs read from server
messages, and the classification of connect and query failures.

The adapters of :mod:`warmdb.psycopg`, :mod:`warmdb.psycopg2` and :mod:`warmdb.asyncpg` build
on these, so a failure means the same whatever the driver. Pure code; nothing here imports a
driver.
"""

from __future__ import annotations

from warmdb.drivers import ErrorVerdict
from warmdb.retry import (
    AUTH,
    DNS,
    RATE_EXCEEDED,
    REFUSED,
    RESET,
    SERVER_STARTING,
    TIMEOUT,
    TOO_MANY_CONNECTIONS,
    classify_os_error,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from warmdb._connect import ConnectPlan

__all__ = [
    "LIBPQ_KEYS",
    "classify_postgres",
    "dsql_engine_defaults",
    "libpq_params",
    "sqlstate_from_message",
]

#: libpq's connection keywords (PostgreSQL 16), which psycopg and psycopg2 pass through.
#: tests/unit/test_drivers.py checks them against the installed libpq's own list.
LIBPQ_KEYS = frozenset(
    {
        "host",
        "hostaddr",
        "port",
        "dbname",
        "user",
        "password",
        "passfile",
        "require_auth",
        "channel_binding",
        "connect_timeout",
        "client_encoding",
        "options",
        "application_name",
        "fallback_application_name",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "tcp_user_timeout",
        "replication",
        "gssencmode",
        "sslmode",
        "sslnegotiation",
        "requiressl",
        "sslcompression",
        "sslcert",
        "sslkey",
        "sslcertmode",
        "sslpassword",
        "sslrootcert",
        "sslcrl",
        "sslcrldir",
        "sslsni",
        "requirepeer",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "krbsrvname",
        "gsslib",
        "gssdelegation",
        "service",
        "target_session_attrs",
        "load_balance_hosts",
        "scram_client_key",
        "scram_server_key",
        "oauth_issuer",
        "oauth_client_id",
        "oauth_client_secret",
        "oauth_scope",
        "max_protocol_version",
        "min_protocol_version",
    }
)

# libpq-based drivers report a failed login with the server's message but no SQLSTATE. These
# are the messages of the servers warmdb targets (PostgreSQL, Aurora DSQL, warmdb's emulator),
# each a tuple of fragments that must all appear, mapped to the code the server sent.
_SQLSTATE_BY_MESSAGE: tuple[tuple[tuple[str, ...], str], ...] = (
    (("IAM authentication failed",), "28000"),
    (("password authentication failed",), "28P01"),
    (("no pg_hba.conf entry",), "28000"),
    (("pg_hba.conf rejects connection",), "28000"),
    (("TLS is required",), "28000"),
    (('role "', "does not exist"), "28000"),
    (('database "', "does not exist"), "3D000"),
    (("rate exceeded",), "53400"),
    (("too many open connections",), "53300"),
    (("too many clients already",), "53300"),
    (("remaining connection slots are reserved",), "53300"),
    (("the database system is starting up",), "57P03"),
    (("the database system is shutting down",), "57P03"),
)

# libpq reports socket failures as text only: its messages, and the operating system's
# strerror texts it embeds, checked in order (lower case).
_REASON_BY_MESSAGE = (
    ("connection refused", REFUSED),
    ("connection reset", RESET),
    ("server closed the connection unexpectedly", RESET),
    ("ssl syscall error: eof detected", RESET),
    ("timeout expired", TIMEOUT),
    ("timed out", TIMEOUT),
    ("temporary failure in name resolution", DNS),
)
_REASON_BY_SQLSTATE = {
    "53400": RATE_EXCEEDED,
    "53300": TOO_MANY_CONNECTIONS,
    "57P03": SERVER_STARTING,
}
# Conflicts worth running the transaction again for. DSQL sends 40001 with OC000 (data) or
# OC001 (schema) at the start of the message.
_CONFLICT_SQLSTATES = frozenset({"40001", "40P01"})
_DSQL_CONFLICT_CODES = ("OC000", "OC001")


def sqlstate_from_message(text: str) -> str | None:
    """The SQLSTATE that a server message of one of warmdb's targets carries, or ``None``."""
    for fragments, code in _SQLSTATE_BY_MESSAGE:
        if all(fragment in text for fragment in fragments):
            return code
    return None


def classify_postgres(
    exc: BaseException, sqlstate: str | None, *, broken: bool = False
) -> ErrorVerdict:
    """The verdict for a PostgreSQL driver's exception whose SQLSTATE the driver gave
    (``None`` when it gave none: it is then read from the message).

    :param broken: the adapter's judgement that the connection is unusable after *exc*.
    """
    text = str(exc)
    if sqlstate is None:
        sqlstate = sqlstate_from_message(text)
    reason: str | None
    if sqlstate is not None:
        reason = AUTH if sqlstate.startswith("28") else _REASON_BY_SQLSTATE.get(sqlstate)
    else:
        lower = text.lower()
        reason = classify_os_error(exc) or next(
            (reason for fragment, reason in _REASON_BY_MESSAGE if fragment in lower), None
        )
    conflict = None
    if sqlstate in _CONFLICT_SQLSTATES:
        conflict = next((code for code in _DSQL_CONFLICT_CODES if code in text), sqlstate)
    return ErrorVerdict(sqlstate=sqlstate, reason=reason, broken=broken, conflict=conflict)


def libpq_params(plan: ConnectPlan, password: str | None, libpq_version: int) -> dict[str, object]:
    """The keyword arguments for a libpq-based driver's connect (psycopg, psycopg2).

    The policy's ``connect_timeout`` applies unless the caller gave libpq's own.

    libpq understands ``sslrootcert=system`` from version 16; for older libraries it is
    replaced by the path of OpenSSL's default CA bundle, which is what "system" means.
    """
    endpoint = plan.endpoint
    params: dict[str, object] = {"host": endpoint.host, "port": endpoint.port}
    if endpoint.user is not None:
        params["user"] = endpoint.user
    if endpoint.dbname is not None:
        params["dbname"] = endpoint.dbname
    if password is not None:
        params["password"] = password
    if endpoint.sslmode is not None:
        params["sslmode"] = endpoint.sslmode
    rootcert = endpoint.sslrootcert
    if rootcert == "system" and libpq_version < 160000:
        import ssl

        paths = ssl.get_default_verify_paths()
        rootcert = paths.cafile or paths.openssl_cafile
    if rootcert is not None:
        params["sslrootcert"] = rootcert
    timeout = plan.policy.connect_timeout
    if timeout is not None:
        # libpq takes whole seconds and treats anything below 2 as 2.
        params["connect_timeout"] = max(2, -int(-timeout // 1))
    params.update(plan.driver_kwargs)
    return params


def dsql_engine_defaults(plan: ConnectPlan) -> dict[str, object]:
    """SQLAlchemy options the psycopg dialects need against Aurora DSQL.

    At its first connect the dialect looks up the hstore extension's type inside a
    transaction, which psycopg does under a SAVEPOINT; DSQL has neither extensions nor
    savepoints (as aurora-dsql-sqlalchemy, it is switched off). Through a sidecar the server
    behind it may be DSQL, so it is switched off there too.
    """
    if plan.endpoint.auth == "dsql" or plan.via_sidecar:
        return {"use_native_hstore": False}
    return {}
