"""``warmdb sidecar status``: PgBouncer's admin console, read and summarised.

The console is PgBouncer's virtual ``pgbouncer`` database; the sidecar's client user is its
``admin_users`` and ``stats_users``, so the state file and password file are all it takes.
``SHOW POOLS`` gives clients, server connections and waits per pool; ``SHOW STATS`` the
totals; the state file the token's age.
"""

from __future__ import annotations

import time

from warmdb.sidecar.pgbouncer import PgBouncerError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from warmdb.sidecar.state import SidecarState

__all__ = ["admin_query", "collect", "format_status"]

_SERVER_STATES = ("sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login")


def admin_query(state: SidecarState, sql: str, *, timeout: float = 5.0) -> list[dict[str, object]]:
    """Run *sql* (a ``SHOW`` command) on the sidecar's admin console; rows as dicts.

    Uses psycopg, else psycopg2 (the console speaks the simple query protocol only, which
    both use for a query without parameters).

    :raises PgBouncerError: no driver, or the console could not be reached.
    """
    params = {
        "host": state.host,
        "port": state.port,
        "user": state.user,
        "password": state.password(),
        "dbname": "pgbouncer",
        "connect_timeout": max(1, int(timeout)),
    }
    try:
        import psycopg
    except ImportError:
        psycopg = None  # type: ignore[assignment]
    try:
        if psycopg is not None:
            with psycopg.connect(**params, autocommit=True) as conn:  # type: ignore[arg-type]
                cursor = conn.execute(sql.encode())
                names = [d.name for d in cursor.description or ()]
                return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        import psycopg2
    except ImportError:
        raise PgBouncerError("`warmdb sidecar status` needs psycopg or psycopg2") from None
    except psycopg.Error as exc:
        raise PgBouncerError(f"the sidecar's admin console: {_first_line(exc)}") from exc
    try:
        conn2 = psycopg2.connect(**params)
        try:
            conn2.autocommit = True
            with conn2.cursor() as cursor2:
                cursor2.execute(sql)
                names = [d[0] for d in cursor2.description or ()]
                return [dict(zip(names, row, strict=True)) for row in cursor2.fetchall()]
        finally:
            conn2.close()
    except psycopg2.Error as exc:
        raise PgBouncerError(f"the sidecar's admin console: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _number(value: object) -> int:
    # The console sends numbers as text; drivers make them int or Decimal.
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return 0


def collect(
    state: SidecarState,
    *,
    query: Callable[[SidecarState, str], list[dict[str, object]]] = admin_query,
    clock: Callable[[], float] = time.time,
) -> dict[str, object]:
    """The sidecar's health as JSON-ready data: one entry per pool, totals, token age.

    :param query: runs a console command (a test may pass rows of its own).
    """
    pools = []
    for row in query(state, "SHOW POOLS"):
        if row.get("database") == "pgbouncer":
            continue
        pools.append(
            {
                "database": row.get("database"),
                "user": row.get("user"),
                "clients_active": _number(row.get("cl_active")),
                "clients_waiting": _number(row.get("cl_waiting")),
                "servers": sum(_number(row.get(name)) for name in _SERVER_STATES),
                "servers_active": _number(row.get("sv_active")),
                "servers_idle": _number(row.get("sv_idle")),
                "max_wait": _number(row.get("maxwait")) + _number(row.get("maxwait_us")) / 1e6,
            }
        )
    stats = {}
    for row in query(state, "SHOW STATS"):
        if row.get("database") == "pgbouncer":
            continue
        stats[str(row.get("database"))] = {
            "transactions": _number(row.get("total_xact_count")),
            "queries": _number(row.get("total_query_count")),
            "wait_time": _number(row.get("total_wait_time")) / 1e6,
        }
    now = clock()
    issued, expires = state.token_issued_at, state.token_expires_at
    return {
        "listen": f"{state.host}:{state.port}",
        "pid": state.pid,
        "pgbouncer_version": state.pgbouncer_version,
        "prepared_statements": state.prepared_statements,
        "token_age": None if issued is None else round(now - issued, 1),
        "token_expires_in": None if expires is None else round(expires - now, 1),
        "pools": pools,
        "stats": stats,
    }


def format_status(status: dict[str, object]) -> str:
    """*status* (from :func:`collect`) as a short text table."""

    def seconds(value: object) -> str:
        return "-" if value is None else f"{value} s"

    lines = [
        f"warmdb sidecar on {status['listen']} (pid {status['pid']}, PgBouncer "
        f"{status['pgbouncer_version']}, prepared statements "
        f"{'yes' if status['prepared_statements'] else 'no'})",
        f"token: age {seconds(status['token_age'])}, "
        f"expires in {seconds(status['token_expires_in'])}",
        "",
        f"{'pool':<24} {'clients':>8} {'waiting':>8} {'servers':>8} {'active':>7} "
        f"{'idle':>6} {'max wait':>9}",
    ]
    pools = status["pools"]
    assert isinstance(pools, list)
    for pool in pools:
        name = f"{pool['database']}/{pool['user']}"
        lines.append(
            f"{name:<24} {pool['clients_active']:>8} {pool['clients_waiting']:>8} "
            f"{pool['servers']:>8} {pool['servers_active']:>7} {pool['servers_idle']:>6} "
            f"{pool['max_wait']:>8.2f}s"
        )
    stats = status["stats"]
    assert isinstance(stats, dict)
    for database, totals in stats.items():
        lines.append(
            f"{database}: {totals['transactions']} transactions, {totals['queries']} queries, "
            f"{totals['wait_time']:.3f} s waited in total"
        )
    return "\n".join(lines)
