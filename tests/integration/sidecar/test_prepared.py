"""Prepared statements through PgBouncer before 1.21: what the state file's flag protects.

In transaction mode PgBouncer before 1.21 hands each transaction any server connection, so a
statement prepared on one is missing (or already there) on the next. asyncpg needs
``statement_cache_size=0`` and psycopg 3 ``prepare_threshold=None`` (it prepares a query
after five executions by default); psycopg2 never prepares.
"""

from __future__ import annotations

import asyncio

import asyncpg
import psycopg
import pytest

from tests.integration.sidecar.conftest import sidecar_for


@pytest.fixture
def small_pool_sidecar(dsql, pgbouncer_binary):
    # Three server connections for six clients: transactions move between them.
    with sidecar_for(dsql, pgbouncer=pgbouncer_binary, pool_size=3, time_scale=1.0) as started:
        if started.state.prepared_statements:
            pytest.fail("this PgBouncer carries prepared statements; update these tests")
        yield started


def psycopg_errors(sidecar, **options) -> int:
    state = sidecar.state
    connections = [
        psycopg.connect(
            host=state.host,
            port=state.port,
            user=state.user,
            password=state.password(),
            dbname=state.dbname,
            autocommit=True,
            **options,
        )
        for _ in range(6)
    ]
    errors = 0
    try:
        for i in range(20):
            for conn in connections:
                try:
                    conn.execute("SELECT %s::int", (i,)).fetchone()
                except psycopg.Error:
                    errors += 1
    finally:
        for conn in connections:
            conn.close()
    return errors


def test_psycopg_needs_prepare_threshold_none(small_pool_sidecar):
    assert psycopg_errors(small_pool_sidecar) > 0
    assert psycopg_errors(small_pool_sidecar, prepare_threshold=None) == 0


def test_asyncpg_with_statement_cache_size_0(small_pool_sidecar):
    state = small_pool_sidecar.state

    async def run() -> list[int]:
        connections = [
            await asyncpg.connect(
                host=state.host,
                port=state.port,
                user=state.user,
                password=state.password(),
                database=state.dbname,
                statement_cache_size=0,
            )
            for _ in range(6)
        ]
        try:
            return [
                await conn.fetchval("SELECT $1::int", i) for i in range(20) for conn in connections
            ]
        finally:
            for conn in connections:
                await conn.close()

    assert asyncio.run(run()) == [i for i in range(20) for _ in range(6)]
