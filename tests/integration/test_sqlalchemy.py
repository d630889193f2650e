"""warmdb.sqlalchemy engines against real servers: long jobs on a fast-forwarded DSQL emulator,
backends killed between checkouts, a server that drops idle connections (seed 004), NullPool,
and the token sent on each connect."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest
import sqlalchemy
from sqlalchemy import JSON, text
from sqlalchemy.pool import NullPool

import warmdb
from tests.integration.lifecycle import (
    SCALED_POLICY,
    TOKEN_SECONDS,
    run_long_job,
    run_long_job_async,
)
from warmdb import events
from warmdb._connect import TOKEN_CACHE
from warmdb.emulator.postgres import EmbeddedPostgres
from warmdb.policy import DEFAULT, RDS_PROXY
from warmdb.sqlalchemy import create_async_engine, create_engine

PID = text("SELECT pg_backend_pid()")
SYNC_DRIVERS = ["psycopg", "psycopg2"]
ASYNC_DRIVERS = ["asyncpg", "psycopg"]

#: The server's idle timeout, standing for RDS Proxy's 30-minute IdleClientTimeout.
IDLE_TIMEOUT = 2.0
IDLE_SCALE = IDLE_TIMEOUT / (30 * 60)


@pytest.fixture(autouse=True)
def fresh_counts():
    events.reset_counts()
    yield
    events.reset_counts()


def recycles() -> dict[str, int]:
    return {k: v for k, v in events.counts().items() if k.startswith("recycles.")}


def terminate_upstream(dsql, pid: int) -> None:
    """Kill the emulator's upstream backend *pid*, as an operator or a fail-over would."""
    with psycopg.connect(**dsql.upstream.libpq_params(), autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
    time.sleep(0.3)  # the emulator passes the termination on to the client's socket


@pytest.mark.parametrize("driver", SYNC_DRIVERS)
def test_long_job_sync_engine(driver, scaled_dsql, scaled_dsql_kwargs):
    engine = create_engine(driver=driver, **scaled_dsql_kwargs)

    def query_once() -> int:
        with engine.connect() as conn:
            return conn.execute(PID).scalar_one()

    try:
        run_long_job(query_once, scaled_dsql)
    finally:
        engine.dispose()
    assert recycles().get("recycles.lifetime", 0) >= 4


@pytest.mark.parametrize("driver", ASYNC_DRIVERS)
def test_long_job_async_engine(driver, scaled_dsql, scaled_dsql_kwargs):
    engine = create_async_engine(driver=driver, **scaled_dsql_kwargs)

    async def query_once() -> int:
        async with engine.connect() as conn:
            return (await conn.execute(PID)).scalar_one()

    async def main() -> None:
        try:
            await run_long_job_async(query_once, scaled_dsql)
        finally:
            await engine.dispose()

    asyncio.run(main())
    assert recycles().get("recycles.lifetime", 0) >= 4


@pytest.mark.parametrize("driver", SYNC_DRIVERS)
def test_backend_killed_between_checkouts_is_replaced(driver, scaled_dsql, scaled_dsql_kwargs):
    engine = create_engine(driver=driver, **scaled_dsql_kwargs)
    try:
        with engine.connect() as conn:
            first = conn.execute(PID).scalar_one()
        terminate_upstream(scaled_dsql, first)
        # Idle past poll_after_idle, after which checkouts poll the socket.
        time.sleep(SCALED_POLICY.poll_after_idle)
        with engine.connect() as conn:
            second = conn.execute(PID).scalar_one()
    finally:
        engine.dispose()
    assert second != first
    # Found at checkout without a round trip: the socket had become readable.
    assert recycles() == {"recycles.readable": 1}


def test_backend_killed_between_checkouts_async(scaled_dsql, scaled_dsql_kwargs):
    engine = create_async_engine(driver="asyncpg", **scaled_dsql_kwargs)

    async def main() -> tuple[int, int]:
        try:
            async with engine.connect() as conn:
                first = (await conn.execute(PID)).scalar_one()
            await asyncio.to_thread(terminate_upstream, scaled_dsql, first)
            async with engine.connect() as conn:
                return first, (await conn.execute(PID)).scalar_one()
        finally:
            await engine.dispose()

    first, second = asyncio.run(main())
    assert second != first
    # asyncpg's reader sees the termination while the loop runs: closed or readable.
    assert sum(recycles().values()) == 1


@pytest.fixture(scope="module")
def idle_server():
    """A plain PostgreSQL that drops sessions idle for IDLE_TIMEOUT, as RDS Proxy does."""
    postgres = EmbeddedPostgres(
        tcp_host="127.0.0.1",
        hba=["local all all trust", "host all all 127.0.0.1/32 trust"],
        settings={"idle_session_timeout": f"{int(IDLE_TIMEOUT * 1000)}ms"},
    )
    with postgres:
        yield postgres


def test_proxy_idle_timeout_fails_naive_engine_not_warmdb(idle_server):
    url = f"postgresql+psycopg2://postgres@127.0.0.1:{idle_server.port}/postgres"
    # Seed 004: SQLAlchemy's defaults (QueuePool, no pre-ping, no recycle).
    naive = sqlalchemy.create_engine(url)
    # RDS Proxy's preset scaled down: replaced after 25 "minutes" idle, the proxy drops at 30.
    proxy_policy = RDS_PROXY.replace(max_idle=RDS_PROXY.max_idle * IDLE_SCALE)
    assert proxy_policy.max_idle < IDLE_TIMEOUT
    by_idle = create_engine(url, policy=proxy_policy)
    # No idle limit at all: the readable socket still gives the server's close away.
    by_socket = create_engine(url, policy=DEFAULT)
    engines = (naive, by_idle, by_socket)
    try:
        for engine in engines:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        time.sleep(IDLE_TIMEOUT + 0.5)
        with pytest.raises(sqlalchemy.exc.OperationalError), naive.connect() as conn:
            conn.execute(text("SELECT 1"))
        for engine in (by_idle, by_socket):
            with engine.connect() as conn:
                assert conn.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        for engine in engines:
            engine.dispose()
    assert recycles() == {"recycles.idle": 1, "recycles.readable": 1}


def test_null_pool_opens_a_connection_per_checkout(scaled_dsql, scaled_dsql_kwargs):
    engine = create_engine(poolclass=NullPool, **scaled_dsql_kwargs)
    assert isinstance(engine.pool, NullPool)
    try:
        pids = set()
        for _ in range(2):
            with engine.connect() as conn:
                pids.add(conn.execute(PID).scalar_one())
                assert conn.execute(text("SELECT current_user")).scalar_one() == "admin"
    finally:
        engine.dispose()
    assert len(pids) == 2
    assert events.counts()["connects"] == 2


def test_each_connect_sends_a_fresh_enough_token(scaled_dsql, scaled_dsql_kwargs, monkeypatch):
    sent: list[str] = []
    sign = TOKEN_CACHE.get

    def spy(spec, credentials):
        token = sign(spec, credentials)
        sent.append(token)
        return token

    monkeypatch.setattr(TOKEN_CACHE, "get", spy)
    refused_before = scaled_dsql.stats.rejected.get("auth", 0)
    engine = create_engine(poolclass=NullPool, **scaled_dsql_kwargs)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        # Tokens are reused for three quarters of their life, counted from the whole second
        # they are dated: after that the next connect must send a new one.
        time.sleep(TOKEN_SECONDS * 0.75 + 0.1)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()
    assert len(sent) == 2
    assert sent[0] != sent[1]
    assert "X-Amz-Signature=" in sent[0]
    assert scaled_dsql.stats.rejected.get("auth", 0) == refused_before


@pytest.mark.parametrize("driver", ["psycopg2", "asyncpg"])
def test_wrong_key_is_an_authentication_error(driver, scaled_dsql, scaled_dsql_kwargs, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-emulator-key")
    if driver == "asyncpg":
        engine = create_async_engine(driver=driver, **scaled_dsql_kwargs)

        async def main() -> None:
            try:
                async with engine.connect():
                    pass
            finally:
                await engine.dispose()

        with pytest.raises(warmdb.AuthenticationError):
            asyncio.run(main())
    else:
        engine = create_engine(driver=driver, **scaled_dsql_kwargs)
        with pytest.raises(warmdb.AuthenticationError), engine.connect():
            pass
        engine.dispose()


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_dialect_driver_arguments_reach_psycopg(is_async, scaled_dsql, scaled_dsql_kwargs):
    # SQLAlchemy's psycopg dialect hands its JSON serializer to the driver in connect's
    # "context" argument: warmdb's connect must pass it on.
    query = text("SELECT CAST(:doc AS jsonb)").bindparams(sqlalchemy.bindparam("doc", type_=JSON))
    options = {"driver": "psycopg", "json_serializer": lambda _: '{"by": "dialect"}'}
    if is_async:
        engine = create_async_engine(**options, **scaled_dsql_kwargs)

        async def main():
            try:
                async with engine.connect() as conn:
                    return (await conn.execute(query, {"doc": {}})).scalar_one()
            finally:
                await engine.dispose()

        doc = asyncio.run(main())
    else:
        engine = create_engine(**options, **scaled_dsql_kwargs)
        try:
            with engine.connect() as conn:
                doc = conn.execute(query, {"doc": {}}).scalar_one()
        finally:
            engine.dispose()
    assert doc == {"by": "dialect"}
