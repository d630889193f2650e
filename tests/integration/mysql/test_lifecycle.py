"""The PostgreSQL side's lifecycle tests for the MySQL drivers: a killed backend, a connect
spike past the server's connection limit, a long job across many lifetimes, and work that
fails inside a checkout."""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import ExitStack

import pytest

import warmdb
from tests.integration.emulator.mysql.conftest import emulator
from tests.integration.mysql.conftest import (
    DRIVERS,
    FRONTS,
    MODULES,
    QUERY_ERRORS,
    front,
    iam_kwargs,
    kill,
)
from warmdb import events
from warmdb.policy import RDS


@pytest.fixture(autouse=True)
def fresh_counts():
    events.reset_counts()
    yield
    events.reset_counts()


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


@pytest.mark.parametrize("name", FRONTS)
def test_backend_killed_between_checkouts_is_replaced(name, rds, rds_kwargs):
    """KILL from MariaDB's side (an operator, a fail-over): the emulator closes the client's
    connection, and the next checkout replaces it without an error and without a round trip."""
    policy = RDS.replace(poll_after_idle=0.0)
    with front(name, {**rds_kwargs, "policy": policy}) as face:
        first = face.connection_id()
        closed = rds.stats.upstream_closed
        kill(rds, first)
        wait_for(lambda: rds.stats.upstream_closed > closed)
        time.sleep(0.05)  # the emulator's close reaches the client's socket
        second = face.connection_id()
        assert second != first
        assert face.connection_id() == second


@pytest.mark.parametrize("name", FRONTS)
def test_a_sql_error_keeps_the_connection_a_broken_one_is_replaced(name, rds, rds_kwargs):
    """Work that fails is never retried behind the caller's back; a server error leaves the
    connection in use, a connection killed under a query is replaced at the next checkout."""
    with front(name, {**rds_kwargs, "policy": RDS.replace(poll_after_idle=None)}) as face:
        first = face.connection_id()
        with pytest.raises(QUERY_ERRORS) as caught:
            face.query("SELECT * FROM no_such_table")
        assert "1046" in str(caught.value) or "1146" in str(caught.value)
        assert face.connection_id() == first
        # Killed while it sleeps in a query: the query fails, the next checkout reconnects.
        killer = threading.Timer(0.3, kill, (rds, first))
        killer.start()
        with pytest.raises(QUERY_ERRORS) as caught:
            face.query("SELECT SLEEP(5)")
        killer.join()
        assert face.connection_id() != first


# Spike: more connects at once than MariaDB's max_connections -----------------------------

MAX_CONNECTIONS = 10
WORKERS = 24
CONNECTS_PER_WORKER = 3


def spike_sync(driver: str, kwargs: dict[str, object]) -> list[BaseException]:
    module = MODULES[driver]
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(WORKERS)

    def worker() -> None:
        start.wait()
        for _ in range(CONNECTS_PER_WORKER):
            try:
                conn = module.connect(**kwargs)
                time.sleep(0.05)  # hold it, so the connections overlap
                conn.close()
            except BaseException as exc:  # collected: the test reports every failure
                with lock:
                    errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


async def spike_async(kwargs: dict[str, object]) -> list[BaseException]:
    async def worker() -> None:
        for _ in range(CONNECTS_PER_WORKER):
            conn = await warmdb.aiomysql.connect(**kwargs)
            await asyncio.sleep(0.05)
            conn.close()

    results = await asyncio.gather(*(worker() for _ in range(WORKERS)), return_exceptions=True)
    return [r for r in results if isinstance(r, BaseException)]


@pytest.fixture(scope="module")
def small_rds():
    with emulator(max_connections=MAX_CONNECTIONS) as started:
        yield started


@pytest.mark.parametrize("driver", DRIVERS)
def test_spike_past_max_connections_is_retried(driver, small_rds, monkeypatch):
    """24 clients at once against 10 connections: the excess get 1040 "Too many connections",
    which warmdb retries with backoff until every connect succeeds. Tokens are reused, so
    RDS's IAM connect ceiling counts one token verification, not 72."""
    kwargs = {**iam_kwargs(small_rds, monkeypatch), "policy": RDS.replace(retry_timeout=30.0)}
    before = small_rds.stats
    if driver == "aiomysql":
        errors = asyncio.run(spike_async(kwargs))
    else:
        errors = spike_sync(driver, kwargs)
    assert errors == []
    after = small_rds.stats
    total = WORKERS * CONNECTS_PER_WORKER
    assert after.accepted - before.accepted >= total
    retried = events.counts().get("retries.too-many-connections", 0)
    assert retried > 0, "the spike never hit max_connections: test too small"
    assert after.rejected.get("upstream", 0) - before.rejected.get("upstream", 0) == retried
    assert after.reused_tokens - before.reused_tokens >= total - 1
    assert events.counts()["connects"] == total


def test_aiomysql_keeper_reconnects_when_the_event_loop_changes(rds_kwargs):
    """aiomysql connections belong to their loop: ``asyncio.run()`` per invocation makes the
    keeper drop the old one (without a round trip) and connect again, without an error."""
    keeper = warmdb.aiomysql.warm(**rds_kwargs)

    async def invocation() -> int:
        async with keeper.connection() as conn:
            rows = await keeper.plan.adapter.execute(conn, "SELECT CONNECTION_ID()")
            return int(rows[0][0])

    first = asyncio.run(invocation())
    second = asyncio.run(invocation())
    assert second != first
    asyncio.run(keeper.close())


LIFETIME = 0.5
LONG_JOB_SECONDS = 8 * LIFETIME


def test_long_job_renews_connections_without_an_error(rds, rds_kwargs):
    """Every front queries without pause for eight lifetimes: each renews its connection at
    least five times, none is cut by the server, and no login is refused."""
    policy = RDS.replace(max_lifetime=LIFETIME, lifetime_jitter=0.1)
    before = rds.stats
    with ExitStack() as stack:
        faces = [stack.enter_context(front(n, {**rds_kwargs, "policy": policy})) for n in FRONTS]
        seen: list[set[int]] = [set() for _ in faces]
        rounds = 0
        started = time.monotonic()
        while time.monotonic() - started < LONG_JOB_SECONDS:
            for face, ids in zip(faces, seen, strict=True):
                ids.add(face.connection_id())
            rounds += 1
    # On a loaded machine a round of every front may outlast a lifetime: then each round
    # meets a new connection.
    assert rounds >= 3
    for face, ids in zip(faces, seen, strict=True):
        assert len(ids) >= min(5, rounds), face.name
    after = rds.stats
    assert after.upstream_closed == before.upstream_closed
    assert after.rejected == before.rejected


def test_rds_preset_paces_new_connections_per_endpoint(rds, rds_kwargs):
    """The RDS presets' ``connect_rate`` (200/s, RDS IAM's ceiling; 1/s here) makes a burst
    of connects to one endpoint wait their turn, with a burst of one second's worth."""

    class Waits(events.Listener):
        def __init__(self) -> None:
            self.waited: list[float] = []

        def on_connect(self, event: events.ConnectEvent) -> None:
            self.waited.append(event.waited_seconds)

    listener = Waits()
    events.add_listener(listener)
    policy = RDS.replace(connect_rate=1.0)
    try:
        started = time.monotonic()
        for _ in range(3):
            warmdb.pymysql.connect(**rds_kwargs, policy=policy).close()
        elapsed = time.monotonic() - started
    finally:
        events.remove_listener(listener)
    # The first goes at once; each next one waits for the bucket (a connect takes far less
    # than the second it has to wait for).
    assert listener.waited[0] == 0.0
    assert all(wait > 0 for wait in listener.waited[1:])
    assert elapsed >= 1.95
