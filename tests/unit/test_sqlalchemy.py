"""Engine and psycopg2 pool arguments, without a server: dialect choice, pool options, and
every bad argument refused with a ConfigurationError that names it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy.pool import AsyncAdaptedQueuePool, NullPool, QueuePool, StaticPool

import warmdb.psycopg2
from warmdb import ConfigurationError, events
from warmdb._connect import ConnectPlan
from warmdb.drivers import SyncAdapter
from warmdb.policy import Policy
from warmdb.pools.queue import watch_pool
from warmdb.sqlalchemy import create_async_engine, create_engine

HOST = "db.example.com"


@pytest.mark.parametrize(
    ("url", "kwargs", "dialect"),
    [
        (HOST, {}, "psycopg"),
        (HOST, {"driver": "psycopg2"}, "psycopg2"),
        (f"postgresql+psycopg2://app@{HOST}/db", {}, "psycopg2"),
        (f"postgresql://app@{HOST}/db", {"driver": "psycopg2"}, "psycopg2"),
        (None, {"host": HOST}, "psycopg"),
    ],
)
def test_sync_dialect_from_url_or_driver(url, kwargs, dialect):
    engine = create_engine(url, **kwargs)
    assert engine.dialect.driver == dialect
    # Connect arguments live in warmdb's plan; SQLAlchemy's URL names only the dialect.
    assert engine.url.host is None


@pytest.mark.parametrize(
    ("url", "driver", "dialect"),
    [
        (HOST, None, "psycopg"),
        (HOST, "asyncpg", "asyncpg"),
        (f"postgresql+asyncpg://app@{HOST}/db", None, "asyncpg"),
        (f"postgresql+psycopg_async://app@{HOST}/db", None, "psycopg"),
    ],
)
def test_async_dialect_from_url_or_driver(url, driver, dialect):
    engine = create_async_engine(url, driver=driver)
    assert engine.sync_engine.dialect.driver == dialect
    assert engine.sync_engine.dialect.is_async


def test_queue_pool_is_lifo_without_recycle_or_pre_ping():
    engine = create_engine(HOST, pool_size=2, max_overflow=3, pool_timeout=1.5)
    pool = engine.pool
    assert isinstance(pool, QueuePool)
    assert pool._pool.use_lifo
    assert (pool.size(), pool._max_overflow, pool._timeout) == (2, 3, 1.5)
    # The policy's jittered lifetime and idle checks run at checkout instead.
    assert pool._recycle == -1
    assert not pool._pre_ping
    assert isinstance(create_async_engine(HOST).sync_engine.pool, AsyncAdaptedQueuePool)


def test_null_pool_on_request():
    assert isinstance(create_engine(HOST, poolclass=NullPool).pool, NullPool)
    assert isinstance(create_async_engine(HOST, poolclass=NullPool).sync_engine.pool, NullPool)


def test_engine_arguments_pass_through():
    engine = create_engine(HOST, echo=True, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    assert engine.echo is True
    assert engine.pool._pre_ping


@pytest.mark.parametrize(
    ("call", "kwargs", "named"),
    [
        (create_engine, {"driver": "mysqldb"}, "driver"),
        (create_engine, {"driver": "asyncpg"}, "create_async_engine"),
        (create_async_engine, {"driver": "psycopg2"}, "create_engine"),
        (create_engine, {"url": f"postgresql+asyncpg://{HOST}"}, "create_async_engine"),
        (create_engine, {"url": f"oracle://{HOST}"}, "url scheme"),
        (create_engine, {"url": f"postgresql+psycopg2://{HOST}", "driver": "psycopg"}, "driver"),
        (create_engine, {"url": 5432}, "url"),
        (create_engine, {"pool_size": -1}, "pool_size"),
        (create_engine, {"pool_size": 2.5}, "pool_size"),
        (create_engine, {"max_overflow": -2}, "max_overflow"),
        (create_engine, {"pool_timeout": 0}, "pool_timeout"),
        (create_engine, {"pool_timeout": True}, "pool_timeout"),
        (create_engine, {"poolclass": NullPool, "pool_size": 3}, "pool_size"),
        (create_engine, {"poolclass": StaticPool, "pool_timeout": 3}, "pool_timeout"),
        (create_engine, {"poolclass": dict}, "poolclass"),
        (create_engine, {"creator": lambda: None}, "creator"),
        (create_async_engine, {"async_creator": lambda: None}, "async_creator"),
        (create_engine, {"policy": "fast"}, "policy"),
        (create_engine, {"host": HOST, "connect_args": {"host": "other"}}, "host"),
        (create_engine, {"sslmode": "prefer", "auth": "dsql", "region": "us-east-1"}, "sslmode"),
        (create_engine, {"not_an_engine_option": 1}, "not_an_engine_option"),
    ],
)
def test_bad_arguments_name_the_parameter(call, kwargs, named):
    kwargs = {"url": HOST, **kwargs}
    with pytest.raises(ConfigurationError, match=named):
        call(kwargs.pop("url"), **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"min_size": -1}, "min_size"),
        ({"min_size": 3, "max_size": 2}, "max_size"),
        ({"max_size": "8"}, "max_size"),
        ({"timeout": -1}, "timeout"),
        ({"policy": 60}, "policy"),
    ],
)
def test_pool_bad_arguments_name_the_parameter(kwargs, named):
    with pytest.raises(ConfigurationError, match=named):
        warmdb.psycopg2.pool(HOST, **kwargs)


def test_pool_is_built_on_queue_pool_and_connects_when_opened():
    pool = warmdb.psycopg2.pool(HOST, min_size=2, max_size=5, timeout=3, open=False)
    queue = pool._pool
    assert isinstance(queue, QueuePool)
    assert (queue.size(), queue._max_overflow, queue._timeout) == (2, 3, 3)
    assert queue._pool.use_lifo
    assert queue.checkedin() == 0
    assert "min_size=2 max_size=5" in repr(pool)


def test_importing_psycopg2_module_does_not_import_sqlalchemy():
    script = "import sys, warmdb.psycopg2; print('sqlalchemy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_pool_without_sqlalchemy_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sqlalchemy.pool", None)
    monkeypatch.setitem(sys.modules, "warmdb.pools.queue", None)
    with pytest.raises(ConfigurationError, match=r"warmdb\[psycopg2,sqlalchemy\]"):
        warmdb.psycopg2.pool(HOST, open=False)


class FakeConnection:
    """A DBAPI connection stand-in whose "socket" is a pipe the test can make readable."""

    def __init__(self) -> None:
        self.read_end, self.write_end = os.pipe()
        self.closed = False
        self.pings = 0

    def fileno(self) -> int:
        return self.read_end

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True
        os.close(self.read_end)
        os.close(self.write_end)


class FakeAdapter(SyncAdapter):
    """The probes watch_pool's checks take from the driver's adapter."""

    name = "fake"
    family = "postgresql"
    driver_keys = frozenset()

    def is_closed(self, conn: FakeConnection) -> bool:
        return conn.closed

    def fileno(self, conn: FakeConnection) -> int:
        return conn.fileno()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def watched():
    """A QueuePool of fake connections under watch_pool, with a fake clock; each connection
    takes half of the lifetime jitter."""
    events.reset_counts()
    policy = Policy(max_lifetime=100.0, lifetime_jitter=0.2, max_idle=50.0, ping_after_idle=10.0)
    plan = ConnectPlan(None, {"host": HOST}, adapter=FakeAdapter(), policy=policy)
    clock = FakeClock()
    failing_pings: list[bool] = []

    def ping(conn: FakeConnection) -> None:
        conn.pings += 1
        if failing_pings:
            raise OSError("gone")

    pool = QueuePool(FakeConnection, pool_size=1, max_overflow=0)
    watch_pool(pool, plan, ping=ping, clock=clock, random_fraction=lambda: 0.5)

    def checkout() -> FakeConnection:
        handle = pool.connect()
        conn = handle.dbapi_connection
        handle.close()
        return conn

    yield checkout, clock, failing_pings
    pool.dispose()
    events.reset_counts()


def recycles() -> dict[str, int]:
    return {k: v for k, v in events.counts().items() if k.startswith("recycles.")}


def test_checkout_check_reuses_and_pings_only_after_idle(watched):
    checkout, clock, _ = watched
    first = checkout()
    clock.now += 9.9
    assert checkout() is first
    assert first.pings == 0
    clock.now += 10.0
    assert checkout() is first
    assert first.pings == 1
    assert recycles() == {}


def test_checkout_check_replaces_after_failed_ping(watched):
    checkout, clock, failing_pings = watched
    first = checkout()
    clock.now += 20.0
    failing_pings.append(True)
    second = checkout()
    assert second is not first
    assert first.closed
    assert recycles() == {"recycles.ping-failed": 1}


def test_checkout_check_replaces_at_the_jittered_lifetime(watched):
    checkout, clock, _ = watched
    first = checkout()
    # 100 s shortened by half of the 20% jitter: 90 s. Keep it from idling out meanwhile.
    for _ in range(9):
        clock.now += 9.99
        assert checkout() is first
    clock.now += 0.2
    assert checkout() is not first
    assert recycles() == {"recycles.lifetime": 1}


def test_checkout_check_replaces_idle_and_readable_without_a_ping(watched):
    checkout, clock, _ = watched
    first = checkout()
    clock.now += 50.0
    second = checkout()
    assert second is not first
    os.write(second.write_end, b"E")  # the server's termination notice
    clock.now += 0.4  # within poll_after_idle of its return: not polled yet
    assert checkout() is second
    clock.now += 0.5
    third = checkout()
    assert third is not second
    assert first.pings == second.pings == 0
    assert recycles() == {"recycles.idle": 1, "recycles.readable": 1}
