"""``warmdb sidecar status``: console rows summarised, as a table and as JSON data."""

from __future__ import annotations

from decimal import Decimal

from warmdb.sidecar.admin import collect, format_status
from warmdb.sidecar.state import SidecarState

STATE = SidecarState(
    host="127.0.0.1",
    port=6432,
    dbname="postgres",
    user="warmdb",
    password_file="/nonexistent",
    pgbouncer_version="1.18.0",
    prepared_statements=False,
    pid=7,
    token_issued_at=1000.0,
    token_expires_at=1900.0,
)

ROWS = {
    "SHOW POOLS": [
        {"database": "pgbouncer", "user": "pgbouncer", "cl_active": 1, "sv_active": 0},
        {
            "database": "postgres",
            "user": "admin",
            "cl_active": 12,
            "cl_waiting": 3,
            "sv_active": 4,
            "sv_idle": 2,
            "sv_used": 1,
            "sv_tested": 0,
            "sv_login": 1,
            "maxwait": 1,
            "maxwait_us": 500_000,
        },
    ],
    "SHOW STATS": [
        {"database": "pgbouncer", "total_xact_count": Decimal(9)},
        {
            "database": "postgres",
            "total_xact_count": Decimal(40),
            "total_query_count": Decimal(80),
            "total_wait_time": Decimal(2_500_000),
        },
    ],
}


def fake_query(state, sql):
    assert state is STATE
    return ROWS[sql]


def test_collect_sums_servers_and_ages_the_token():
    status = collect(STATE, query=fake_query, clock=lambda: 1300.0)
    (pool,) = status["pools"]
    assert pool == {
        "database": "postgres",
        "user": "admin",
        "clients_active": 12,
        "clients_waiting": 3,
        "servers": 8,
        "servers_active": 4,
        "servers_idle": 2,
        "max_wait": 1.5,
    }
    assert status["stats"] == {"postgres": {"transactions": 40, "queries": 80, "wait_time": 2.5}}
    assert status["token_age"] == 300.0
    assert status["token_expires_in"] == 600.0


def test_table():
    text = format_status(collect(STATE, query=fake_query, clock=lambda: 1300.0))
    assert "PgBouncer 1.18.0" in text
    assert "token: age 300.0 s, expires in 600.0 s" in text
    row = next(line for line in text.splitlines() if line.startswith("postgres/admin"))
    assert row.split() == ["postgres/admin", "12", "3", "8", "4", "2", "1.50s"]
    assert "40 transactions, 80 queries" in text


def test_unknown_token_age():
    state = STATE.replace(token_issued_at=None, token_expires_at=None)
    status = collect(state, query=lambda s, q: [], clock=lambda: 0.0)
    assert status["token_age"] is None
    assert "age -" in format_status(status)
