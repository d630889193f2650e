"""Real clients through the emulator: psycopg, psycopg2, asyncpg and psql, with tokens from
warmdb's signer and from botocore."""

from __future__ import annotations

import asyncio
import importlib
import os
import shutil
import subprocess
import sys

import psycopg
import psycopg2
import pytest

from warmdb.emulator.service import Emulator

from .conftest import asyncpg_admin

TOKEN_SOURCES = ("warmdb", "botocore")


def botocore_token(dsql: Emulator, host: str | None = None) -> str:
    import botocore.session

    session = botocore.session.Session()
    session.set_credentials(dsql.credentials.access_key, dsql.credentials.secret_key)
    client = session.create_client("dsql", region_name=dsql.region)
    return client.generate_db_connect_admin_auth_token(host or dsql.hostname, dsql.region)


def admin_token(dsql: Emulator, source: str, host: str | None = None) -> str:
    """A fresh admin token from warmdb's signer or from botocore's."""
    return botocore_token(dsql, host) if source == "botocore" else dsql.token(host=host)


@pytest.mark.parametrize("source", TOKEN_SOURCES)
def test_psycopg(dsql_emulator, source):
    params = dsql_emulator.connection_params(token=False)
    with psycopg.connect(**params, password=admin_token(dsql_emulator, source)) as conn:
        row = conn.execute(
            "select current_user, current_setting('transaction_isolation')"
        ).fetchone()
        assert row == ("admin", "repeatable read")
        assert conn.info.parameter_status("server_version")


@pytest.mark.parametrize("source", TOKEN_SOURCES)
def test_psycopg2(dsql_emulator, source):
    params = dsql_emulator.connection_params(token=False)
    conn = psycopg2.connect(**params, password=admin_token(dsql_emulator, source))
    try:
        with conn.cursor() as cur:
            cur.execute("select %s::int + 1", (41,))
            assert cur.fetchone() == (42,)
    finally:
        conn.close()


@pytest.mark.parametrize("source", TOKEN_SOURCES)
def test_asyncpg(dsql_emulator, source):
    """asyncpg connects to localhost and signs for it; TLS is verified against the CA."""

    async def main() -> object:
        conn = await asyncpg_admin(dsql_emulator, admin_token(dsql_emulator, source, "localhost"))
        try:
            return await conn.fetchval("select current_user")
        finally:
            await conn.close()

    assert asyncio.run(main()) == "admin"


@pytest.mark.skipif(shutil.which("psql") is None, reason="psql not installed")
@pytest.mark.parametrize("source", TOKEN_SOURCES)
def test_psql(dsql_emulator, source):
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": dsql_emulator.credentials.access_key,
        "AWS_SECRET_ACCESS_KEY": dsql_emulator.credentials.secret_key,
    }
    if source == "warmdb":
        # As a user would: `warmdb token` in the shell.
        token = subprocess.run(
            [sys.executable, "-m", "warmdb", "token", "--host", dsql_emulator.hostname],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
    else:
        token = botocore_token(dsql_emulator)
    params = dsql_emulator.connection_params(token=False)
    conninfo = " ".join(f"{k}={v}" for k, v in params.items())
    result = subprocess.run(
        ["psql", conninfo, "-At", "-c", "select 'ok from ' || current_user"],
        env={**env, "PGPASSWORD": token},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok from admin"


@pytest.fixture
def signing_environment(dsql_emulator, monkeypatch):
    """The emulator's key pair in the environment, where warmdb's driver modules look."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", dsql_emulator.credentials.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", dsql_emulator.credentials.secret_key)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return dsql_emulator


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_warmdb_libpq_driver_modules(signing_environment, driver):
    """warmdb's own connect() signs the token, as it would for a real DSQL endpoint."""
    dsql = signing_environment
    module = importlib.import_module(f"warmdb.{driver}")
    conn = module.connect(
        host=dsql.hostname,
        hostaddr=dsql.host,
        port=dsql.port,
        auth="dsql",
        region=dsql.region,
        sslmode="verify-full",
        sslrootcert=str(dsql.ca_path),
    )
    try:
        cur = conn.cursor()
        cur.execute("select current_user")
        assert cur.fetchone() == ("admin",)
    finally:
        conn.close()


def test_warmdb_asyncpg_driver_module(signing_environment):
    import warmdb.asyncpg

    dsql = signing_environment

    async def main() -> object:
        conn = await warmdb.asyncpg.connect(
            host="localhost",
            port=dsql.port,
            auth="dsql",
            region=dsql.region,
            sslmode="verify-full",
            sslrootcert=str(dsql.ca_path),
        )
        try:
            return await conn.fetchval("select current_user")
        finally:
            await conn.close()

    assert asyncio.run(main()) == "admin"


def test_non_admin_user_needs_a_role_as_in_dsql(dsql_emulator):
    with psycopg.connect(**dsql_emulator.connection_params(), autocommit=True) as admin:
        admin.execute("drop role if exists app_reader")
        before = dsql_emulator.stats.rejected.get("upstream", 0)
        with pytest.raises(psycopg.OperationalError, match='role "app_reader" does not exist'):
            psycopg.connect(**dsql_emulator.connection_params("app_reader"))
        assert dsql_emulator.stats.rejected["upstream"] == before + 1
        admin.execute("create role app_reader login")
    with psycopg.connect(**dsql_emulator.connection_params("app_reader")) as conn:
        assert conn.execute("select current_user").fetchone() == ("app_reader",)


def test_asyncpg_prepared_statements_and_copy(dsql_emulator):
    """The extended protocol: named prepared statements, executemany, COPY."""

    async def main():
        conn = await asyncpg_admin(dsql_emulator)
        try:
            await conn.execute(
                "create table if not exists asyncpg_items (id int primary key, name text)"
            )
            await conn.execute("delete from asyncpg_items")
            statement = await conn.prepare("insert into asyncpg_items values ($1, $2)")
            for i in range(5):
                await statement.fetch(i, f"item {i}")
            async with conn.transaction():
                await conn.executemany(
                    "insert into asyncpg_items values ($1, $2)", [(i, "many") for i in range(5, 50)]
                )
            select = await conn.prepare("select count(*) from asyncpg_items where id < $1")
            counts = [await select.fetchval(n) for n in (10, 50)]
            copied = await conn.copy_records_to_table(
                "asyncpg_items", records=[(100 + i, "copied") for i in range(20)]
            )
            total = await conn.fetchval("select count(*) from asyncpg_items")
            return counts, copied, total
        finally:
            await conn.close()

    counts, copied, total = asyncio.run(main())
    assert counts == [10, 50]
    assert copied == "COPY 20"
    assert total == 70


def test_psycopg_copy_in_and_out(dsql_emulator):
    with psycopg.connect(**dsql_emulator.connection_params()) as conn:
        # One DDL alone in its transaction, as DSQL wants.
        conn.execute("create table if not exists copy_items (id int primary key, name text)")
        conn.commit()
        conn.execute("delete from copy_items")
        with conn.cursor().copy("copy copy_items from stdin (format text)") as copy:
            for i in range(100):
                copy.write_row((i, f"name {i}"))
        conn.commit()
        out = bytearray()
        with conn.cursor().copy("copy copy_items to stdout") as copy:
            for chunk in copy:
                out += chunk
        assert out.count(b"\n") == 100


def test_stats_count_connections_and_queries(dsql_emulator):
    before = dsql_emulator.stats
    with psycopg.connect(**dsql_emulator.connection_params(), autocommit=True) as conn:
        for _ in range(3):
            conn.execute("select 1")
        assert dsql_emulator.stats.current >= 1
    after = dsql_emulator.stats
    assert after.accepted == before.accepted + 1
    assert after.queries >= before.queries + 3
    assert after.transactions >= before.transactions + 3
    assert after.peak >= 1
