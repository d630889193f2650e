"""warmdb's pools without a server: argument checks, the mapping from the policy to the pool's
settings, and guards on the few private parts of psycopg_pool, asyncpg and SQLAlchemy's pool
they rely on.

A guard failing means psycopg_pool or asyncpg changed underneath warmdb: read the note next
to the failing assertion before touching anything else.
"""

from __future__ import annotations

import asyncio
import inspect
import math

import asyncpg.pool
import pytest
from psycopg_pool import AsyncConnectionPool, ConnectionPool
from sqlalchemy.pool import QueuePool

import warmdb.asyncpg
import warmdb.pools.psycopg
import warmdb.psycopg
from warmdb import ConfigurationError
from warmdb.policy import DSQL, RDS_PROXY, Policy

ENDPOINT = {"host": "127.0.0.1", "port": 5432, "user": "app", "password": "secret"}


def make_psycopg(**kwargs):
    return warmdb.psycopg.pool(open=False, **ENDPOINT, **kwargs)


def make_psycopg_async(**kwargs):
    # psycopg_pool's async pool wants a running loop even when it is not opened.
    async def build():
        return warmdb.psycopg.pool_async(open=False, **ENDPOINT, **kwargs)

    return asyncio.run(build())


def make_asyncpg(**kwargs):
    async def build():
        return warmdb.asyncpg.create_pool(**ENDPOINT, **kwargs)

    return asyncio.run(build())


MAKERS = {"psycopg": make_psycopg, "psycopg-async": make_psycopg_async, "asyncpg": make_asyncpg}

COMMON_MISTAKES = [
    ({"min_size": -1}, "min_size"),
    ({"min_size": 2.5}, "min_size"),
    ({"min_size": 4, "max_size": 2}, "max_size"),
    ({"min_size": 0, "max_size": 0}, "max_size"),
    ({"policy": "DSQL"}, "policy"),
    ({"max_lifetime": 60.0}, "max_lifetime"),
    ({"max_idle": 60.0}, "max_idle"),
]
PSYCOPG_MISTAKES = [
    ({"timeout": 0}, "timeout"),
    ({"timeout": -1}, "timeout"),
    ({"timeout": "30"}, "timeout"),
    ({"num_workers": 0}, "num_workers"),
    ({"max_waiting": -1}, "max_waiting"),
    ({"reconnect_timeout": float("nan")}, "reconnect_timeout"),
    ({"check": ConnectionPool.check_connection}, "check"),
    ({"kwargs": {"autocommit": True}}, "kwargs"),
    ({"min_size": 0}, "max_size"),
]
ASYNCPG_MISTAKES = [
    ({"max_queries": 0}, "max_queries"),
    ({"max_inactive_connection_lifetime": -1}, "max_inactive_connection_lifetime"),
    ({"connect": asyncpg.connect}, "connect"),
]


@pytest.mark.parametrize(
    ("kind", "kwargs", "parameter"),
    [(kind, kwargs, name) for kind in MAKERS for kwargs, name in COMMON_MISTAKES]
    + [
        (kind, kwargs, name)
        for kind in ("psycopg", "psycopg-async")
        for kwargs, name in PSYCOPG_MISTAKES
    ]
    + [("asyncpg", kwargs, name) for kwargs, name in ASYNCPG_MISTAKES],
)
def test_bad_argument_is_a_configuration_error_naming_it(kind, kwargs, parameter):
    with pytest.raises(ConfigurationError, match=parameter):
        MAKERS[kind](**kwargs)


def test_psycopg_pool_settings_from_the_policy():
    pool = make_psycopg(policy=RDS_PROXY, min_size=1, max_size=3, timeout=5)
    assert isinstance(pool, ConnectionPool)
    assert (pool.min_size, pool.max_size, pool.timeout) == (1, 3, 5.0)
    assert pool.max_lifetime == RDS_PROXY.max_lifetime
    assert pool.max_idle == RDS_PROXY.max_idle
    assert pool.closed  # open=False: nothing started, nothing connected

    default_idle = make_psycopg(policy=DSQL)
    assert default_idle.max_idle == 600.0  # psycopg_pool's own default: DSQL has no max_idle

    forever = make_psycopg(policy=DSQL.replace(max_lifetime=None))
    assert forever.max_lifetime == math.inf


def test_psycopg_async_pool_is_psycopg_pools():
    pool = make_psycopg_async(policy=DSQL)
    assert isinstance(pool, AsyncConnectionPool)
    assert pool.max_lifetime == DSQL.max_lifetime


def test_asyncpg_pool_settings_from_the_policy():
    pool = make_asyncpg(policy=RDS_PROXY, min_size=1, max_size=3)
    assert isinstance(pool, asyncpg.pool.Pool)
    assert (pool.get_min_size(), pool.get_max_size()) == (1, 3)
    assert pool._max_inactive_connection_lifetime == RDS_PROXY.max_idle
    assert make_asyncpg(policy=DSQL)._max_inactive_connection_lifetime == 300.0  # asyncpg's


class FakeConnection:
    """Stands for a psycopg connection where psycopg_pool only sets attributes on it."""


@pytest.mark.parametrize("kind", ["psycopg", "psycopg-async"])
def test_expiry_uses_the_policy_jitter(kind, monkeypatch):
    policy = Policy(max_lifetime=100.0, lifetime_jitter=0.4)
    pool = MAKERS[kind](policy=policy)
    monkeypatch.setattr(warmdb.pools.psycopg, "random_fraction", lambda: 0.5)
    conn = FakeConnection()
    pool._set_connection_expiry_date(conn)
    # psycopg_pool's own draw would be at most 5% off; the policy's is 0.4 * 0.5 = 20% off.
    assert conn._expire_at - conn._created_at == pytest.approx(80.0)
    assert conn._warmdb_kept.expires_at == conn._expire_at


@pytest.mark.parametrize("cls", [ConnectionPool, AsyncConnectionPool])
def test_guard_psycopg_pool_private_expiry_hook(cls):
    """warmdb overrides BasePool._set_connection_expiry_date (private) to draw one expiry with
    the policy's jitter, which psycopg_pool then checks on return and in check(). If these
    fail, psycopg_pool renamed the hook or stopped reading _expire_at: warmdb's connections
    would silently get psycopg_pool's 5% jitter and two disagreeing expiries."""
    assert "self._set_connection_expiry_date(conn)" in inspect.getsource(cls._connect)
    assert "conn._expire_at" in inspect.getsource(cls._return_connection)
    assert "conn._expire_at" in inspect.getsource(cls.check)
    assert "conn._created_at" in inspect.getsource(cls._set_connection_expiry_date)


@pytest.mark.parametrize("cls", [ConnectionPool, AsyncConnectionPool])
def test_guard_psycopg_pool_closes_through_close_connection(cls):
    """warmdb reports every connection psycopg_pool discards (expired on return or in
    check(), shrunk for being idle, failed reset) by overriding _close_connection (private).
    If this fails, psycopg_pool closes connections some other way: those recycles would go
    unreported."""
    assert "self._close_connection(conn)" in inspect.getsource(cls._return_connection)
    assert "self._close_connection(conn)" in inspect.getsource(cls.check)
    assert "self._close_connection(to_close)" in inspect.getsource(cls._shrink_pool)
    assert "self._close_connection(conn)" in inspect.getsource(cls._reset_connection)


@pytest.mark.parametrize("cls", [ConnectionPool, AsyncConnectionPool])
def test_guard_psycopg_pool_check_uses_check_connection(cls):
    """warmdb's pools sweep the idle connections through check(), which must judge each one
    with the (overridden) check_connection method."""
    assert "self.check_connection(conn)" in inspect.getsource(cls.check)


def test_guard_asyncpg_private_attributes():
    """asyncpg offers no public way to reach the connection behind a pool proxy or its socket;
    warmdb reads PoolConnectionProxy._con and Connection._transport."""
    assert "_con" in asyncpg.pool.PoolConnectionProxy.__slots__
    assert "_transport" in asyncpg.Connection.__slots__
    assert "connect" in inspect.signature(asyncpg.pool.Pool).parameters


class _Unconnected:
    def close(self) -> None:
        pass


def test_guard_sqlalchemy_handle_keeps_its_entry():
    """warmdb.psycopg2's pool reads a checked-out handle's entry through the private
    _connection_record, because handle.info (the same dict) costs 300 ns per checkout. If this
    fails, read handle.info instead."""
    pool = QueuePool(_Unconnected, pool_size=1, max_overflow=0)
    handle = pool.connect()
    try:
        assert handle._connection_record.info is handle.info
    finally:
        handle.close()
        pool.dispose()
