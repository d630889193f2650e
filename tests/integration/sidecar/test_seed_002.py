"""Seed 002 reproduced: 100 concurrent requests share the sidecar's server connections.

Each request connects, runs ``SELECT now()``, holds the connection, runs ``SELECT now()``
again and disconnects; 1,000 requests, 100 at a time. The seed held 5 seconds on Lambda; the
hold is scaled down to 0.25 s here, which changes the run time, not the concurrency.
Through the sidecar the emulator must see at most 25 server connections at once and no
failure; directly it sees about 100.
"""

from __future__ import annotations

import asyncio
import ssl
import time

import asyncpg

from tests.integration.sidecar.conftest import emulator, sidecar_for
from warmdb.emulator.limits import Limits

REQUESTS = 1000
CONCURRENCY = 100
HOLD = 0.25
# The burst must not run dry on the direct run, which opens one server connection per request.
LIMITS = Limits(connection_rate=1000.0, connection_burst=2000)


async def seed_requests(connect) -> int:
    """Run the seed's requests with *connect*; return the number that failed."""
    failures = 0
    gate = asyncio.Semaphore(CONCURRENCY)

    async def request() -> None:
        nonlocal failures
        async with gate:
            try:
                conn = await connect()
                try:
                    await conn.fetchval("SELECT now()")
                    await asyncio.sleep(HOLD)
                    await conn.fetchval("SELECT now()")
                finally:
                    await conn.close()
            except (OSError, asyncpg.PostgresError, asyncio.TimeoutError):
                failures += 1

    await asyncio.gather(*(request() for _ in range(REQUESTS)))
    return failures


def test_seed_002_through_the_sidecar_and_directly(pgbouncer_binary, record_property):
    with (
        emulator(limits=LIMITS) as dsql,
        sidecar_for(dsql, pgbouncer=pgbouncer_binary, time_scale=1.0) as sidecar,
    ):
        state = sidecar.state
        password = state.password()

        def through_sidecar():
            return asyncpg.connect(
                host=state.host,
                port=state.port,
                user=state.user,
                password=password,
                database=state.dbname,
                # PgBouncer before 1.21 cannot carry named prepared statements in
                # transaction mode; the state file says so.
                statement_cache_size=100 if state.prepared_statements else 0,
                timeout=30,
            )

        started = time.monotonic()
        failed = asyncio.run(seed_requests(through_sidecar))
        sidecar_seconds = time.monotonic() - started
        via_sidecar = dsql.stats
    assert failed == 0
    assert via_sidecar.rejected == {}
    assert via_sidecar.peak <= 25

    with emulator(limits=LIMITS) as dsql:
        context = ssl.create_default_context(cafile=str(dsql.ca_path))

        def direct():
            return asyncpg.connect(
                host="localhost",
                port=dsql.port,
                user="admin",
                password=dsql.token(host="localhost"),
                database="postgres",
                ssl=context,
                timeout=30,
            )

        started = time.monotonic()
        failed_direct = asyncio.run(seed_requests(direct))
        direct_seconds = time.monotonic() - started
        directly = dsql.stats
    assert failed_direct == 0
    assert directly.peak >= 90
    # The figures the docs quote.
    record_property("peak_via_sidecar", via_sidecar.peak)
    record_property("peak_direct", directly.peak)
    print(
        f"\nseed 002: peak server connections {via_sidecar.peak} through the sidecar "
        f"({via_sidecar.accepted} logins, {sidecar_seconds:.1f} s), {directly.peak} directly "
        f"({directly.accepted} logins, {direct_seconds:.1f} s)"
    )
