"""WARMDB_SIDECAR: every warmdb front reaches the sidecar with one setting."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.drivers import DRIVERS, connect_and_query
from tests.integration.sidecar.conftest import sidecar_for
from warmdb import ConfigurationError


@pytest.fixture
def prepared_free_sidecar(dsql, pgbouncer_binary):
    with sidecar_for(dsql, pgbouncer=pgbouncer_binary) as started:
        yield started


@pytest.mark.parametrize("driver", DRIVERS)
def test_every_driver_reaches_the_sidecar(driver, prepared_free_sidecar, monkeypatch):
    sidecar = prepared_free_sidecar
    monkeypatch.setenv("WARMDB_SIDECAR", str(sidecar.state_path))
    # The endpoint given is ignored: the sidecar holds the real one.
    kwargs = {"host": "abc.dsql.us-east-1.on.aws", "user": "admin"}
    for _ in range(6):  # past psycopg's prepare threshold: prepared statements stay off
        user, _ = connect_and_query(driver, **kwargs)
    assert user == "admin"  # the database user the sidecar logs in as, with its token


def test_engine_and_warm_through_the_sidecar(prepared_free_sidecar, monkeypatch):
    from sqlalchemy import text

    import warmdb.asyncpg
    import warmdb.psycopg
    from warmdb.sqlalchemy import create_engine

    monkeypatch.setenv("WARMDB_SIDECAR", str(prepared_free_sidecar.state_path))
    keeper = warmdb.psycopg.warm(host="abc.dsql.us-east-1.on.aws")
    for _ in range(7):
        with keeper.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    keeper.close()
    engine = create_engine("postgresql+psycopg://admin@abc.dsql.us-east-1.on.aws/postgres")
    for _ in range(7):
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 2")).scalar() == 2
    engine.dispose()

    async def asyncpg_keeper() -> int:
        kept = warmdb.asyncpg.warm(host="abc.dsql.us-east-1.on.aws")
        async with kept.connection() as conn:
            value = await conn.fetchval("SELECT 3")
        await kept.close()
        return value

    assert asyncio.run(asyncpg_keeper()) == 3


def test_a_missing_state_file_is_a_clear_error(monkeypatch, tmp_path):
    import warmdb.psycopg2

    monkeypatch.setenv("WARMDB_SIDECAR", str(tmp_path / "nope.json"))
    with pytest.raises(ConfigurationError, match="WARMDB_SIDECAR"):
        warmdb.psycopg2.connect(host="abc.dsql.us-east-1.on.aws")
