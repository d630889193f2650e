"""Optimistic concurrency conflicts (real and simulated) and cancel requests."""

from __future__ import annotations

import asyncio
import threading
import time

import psycopg
import pytest

from warmdb.emulator import protocol

from .conftest import asyncpg_admin, emulator, open_socket, read_until

OC000 = "OC000 mutation conflicts with another transaction, retry as needed"


@pytest.fixture
def accounts(dsql_emulator):
    with psycopg.connect(**dsql_emulator.connection_params(), autocommit=True) as conn:
        conn.execute("create table if not exists accounts (id int primary key, balance int)")
        conn.execute("delete from accounts")
        conn.execute("insert into accounts values (1, 100)")
    return dsql_emulator


def test_real_conflict_between_two_sessions(accounts):
    """A write to a row changed since the transaction's snapshot fails at COMMIT, as on DSQL
    (PostgreSQL would fail the UPDATE itself)."""
    before = accounts.stats.occ_conflicts
    first = psycopg.connect(**accounts.connection_params())
    second = psycopg.connect(**accounts.connection_params())
    try:
        # The second transaction takes its snapshot before the first one commits.
        assert second.execute("select balance from accounts where id = 1").fetchone() == (100,)
        first.execute("update accounts set balance = balance - 10 where id = 1")
        first.commit()
        second.execute("update accounts set balance = balance + 10 where id = 1")
        with pytest.raises(psycopg.errors.SerializationFailure) as info:
            second.commit()
        assert info.value.sqlstate == "40001"
        assert str(info.value) == OC000
        # Retrying, as DSQL asks, succeeds.
        second.execute("update accounts set balance = balance + 10 where id = 1")
        second.commit()
        assert first.execute("select balance from accounts").fetchone() == (100,)
    finally:
        first.close()
        second.close()
    assert accounts.stats.occ_conflicts == before + 1


def test_simulated_conflicts_on_commit():
    with emulator(occ_conflict_rate=1.0) as dsql:
        with psycopg.connect(**dsql.connection_params()) as conn:
            conn.execute("create table t (id int)")
            with pytest.raises(psycopg.errors.SerializationFailure) as info:
                conn.commit()
            assert str(info.value) == OC000
            # The transaction was rolled back: the table does not exist.
            with pytest.raises(psycopg.errors.UndefinedTable):
                conn.execute("select * from t")
            conn.rollback()
            # Autocommit statements have no COMMIT to fail.
            conn.autocommit = True
            assert conn.execute("select 1").fetchone() == (1,)
        assert dsql.stats.occ_conflicts == 1


def test_simulated_conflict_rate_is_a_fraction():
    with emulator(occ_conflict_rate=0.5, seed=3) as dsql:
        failures = 0
        with psycopg.connect(**dsql.connection_params()) as conn:
            for _ in range(40):
                conn.execute("select 1")
                try:
                    conn.commit()
                except psycopg.errors.SerializationFailure:
                    failures += 1
        assert 8 <= failures <= 32
        assert dsql.stats.occ_conflicts == failures


def test_psycopg_cancel_safe(dsql_emulator):
    """libpq's new cancel API: over TLS when the connection uses TLS (libpq 17+)."""
    before = dsql_emulator.stats.cancels
    with (
        psycopg.connect(**dsql_emulator.connection_params(), autocommit=True) as victim,
        psycopg.connect(**dsql_emulator.connection_params(), autocommit=True) as bystander,
    ):
        timer = threading.Timer(0.3, victim.cancel_safe)
        timer.start()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            victim.execute("select pg_sleep(10)")
        assert time.monotonic() - started < 5
        timer.join()
        assert victim.execute("select 1").fetchone() == (1,)
        assert bystander.execute("select 2").fetchone() == (2,)
    assert dsql_emulator.stats.cancels == before + 1


def test_plaintext_cancel_request_uses_the_emulators_backend_key(dsql_emulator):
    """A CancelRequest on a new plaintext connection (libpq's PQcancel) is forwarded with the
    upstream's key. (PQcancel itself blocks holding the GIL in psycopg2 and psycopg's legacy
    cancel(), so this test speaks the protocol itself to keep the emulator in-process.)"""
    before = dsql_emulator.stats.cancels
    with open_socket(dsql_emulator) as sock:
        sock.sendall(protocol.startup_message({"user": "admin", "database": "postgres"}))
        read_until(sock, b"R")
        sock.sendall(protocol.encode(b"p", dsql_emulator.token().encode() + b"\x00"))
        messages = read_until(sock, b"Z")
        (key,) = [m for m in messages if m[:1] == b"K"]
        process_id, secret = protocol.parse_backend_key_data(key)
        sock.sendall(protocol.query_message("select pg_sleep(10)"))
        time.sleep(0.3)
        with open_socket(dsql_emulator, tls=False) as cancel:
            cancel.sendall(protocol.cancel_request(process_id, secret))
            assert cancel.recv(1) == b""
        messages = read_until(sock, b"Z")
        errors = [protocol.error_fields(m) for m in messages if m[:1] == b"E"]
        assert [e["C"] for e in errors] == ["57014"]
    assert dsql_emulator.stats.cancels == before + 1


def test_asyncpg_timeout_cancels(dsql_emulator):

    async def main():
        conn = await asyncpg_admin(dsql_emulator)
        try:
            with pytest.raises(asyncio.TimeoutError):
                await conn.execute("select pg_sleep(10)", timeout=0.3)
            return await conn.fetchval("select 3")
        finally:
            await conn.close()

    before = dsql_emulator.stats.cancels
    assert asyncio.run(main()) == 3
    assert dsql_emulator.stats.cancels == before + 1
