"""The two MySQL seeds, reproduced on fast-forward, and what warmdb does instead.

Seed 004: Lambda + SQLAlchemy + RDS Proxy. The proxy drops a pooled client connection idle
past its idle client timeout (30 minutes); SQLAlchemy's pool hands the dead connection out and
the query fails with 2013 "Lost connection to MySQL server during query". Here the timeout is
2 s.

Seed 003: warm-start reuse with ``pool_recycle=60`` below ``wait_timeout``: the same
``CONNECTION_ID()`` across invocations, a new one after the recycle period. Here the recycle
period is 2 s and ``wait_timeout`` 4 s.

Each test starts its fronts together and sleeps once for all of them.
"""

from __future__ import annotations

import time
from contextlib import ExitStack

import pytest
import sqlalchemy.exc
from sqlalchemy import text

from tests.integration.emulator.mysql.conftest import emulator
from tests.integration.mysql.conftest import FRONTS, front, iam_kwargs, plain_engine
from warmdb import events
from warmdb.policy import RDS, RDS_PROXY

IDLE_CLIENT_TIMEOUT = 2.0
#: RDS Proxy's 30 minutes become 2 s: the preset's 25-minute max_idle becomes 1.67 s.
PROXY_SCALE = 1800 / IDLE_CLIENT_TIMEOUT
SCALED_PROXY = RDS_PROXY.replace(max_idle=RDS_PROXY.max_idle / PROXY_SCALE)

# Long enough for eighteen fronts' first connects and three rounds of queries to finish
# inside one lifetime on a loaded two-core machine.
WAIT_TIMEOUT = 8
RECYCLE = 4.0


class Recorder(events.Listener):
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def on_recycle(self, event: events.RecycleEvent) -> None:
        self.reasons.append(event.reason)


@pytest.fixture
def recorder():
    recorder = Recorder()
    events.add_listener(recorder)
    yield recorder
    events.remove_listener(recorder)


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_seed_004_proxy_idle_timeout(monkeypatch, recorder):
    with emulator(idle_client_timeout=IDLE_CLIENT_TIMEOUT) as proxy, ExitStack() as stack:
        kwargs = iam_kwargs(proxy, monkeypatch)
        naive = plain_engine(proxy, pool_size=1, max_overflow=0)
        stack.callback(naive.dispose)
        scaled = {
            n: stack.enter_context(front(n, {**kwargs, "policy": SCALED_PROXY})) for n in FRONTS
        }
        # The preset as it ships (25 minutes): the closed socket is what gives it away here.
        shipped = {
            n: stack.enter_context(front(n, {**kwargs, "policy": RDS_PROXY})) for n in FRONTS
        }
        with naive.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
        faces = [*scaled.values(), *shipped.values()]
        for face in faces:
            first = face.connection_id()
            assert face.connection_id() == first  # reused while busy
        wait_for(lambda: proxy.stats.idle_closed >= 1 + len(faces))
        time.sleep(0.1)  # the proxy's close reaches the clients' sockets

        # SQLAlchemy alone hands out the dead pooled connection: seed 004's error.
        with pytest.raises(sqlalchemy.exc.OperationalError) as caught, naive.connect() as conn:
            conn.execute(text("SELECT 1"))
        assert caught.value.orig.args[0] == 2013
        assert "Lost connection to MySQL server during query" in str(caught.value)

        # warmdb's fronts replace it at checkout, without an error.
        for face in faces:
            assert face.query("SELECT 1") == [(1,)], face.name
    # The scaled preset replaced its connections for their idle time, before the proxy could;
    # the shipped one found the proxy's close on the socket.
    assert recorder.reasons.count("idle") == len(scaled)
    assert recorder.reasons.count("readable") == len(shipped)


def test_seed_003_reuse_then_recycle_never_after_wait_timeout(monkeypatch, recorder):
    with emulator(wait_timeout=WAIT_TIMEOUT) as rds, ExitStack() as stack:
        kwargs = iam_kwargs(rds, monkeypatch)
        recycling = RDS.replace(max_lifetime=RECYCLE, lifetime_jitter=0.0)
        # No lifetime of our own: only MariaDB's wait_timeout ends the connection.
        forever = RDS.replace(max_lifetime=None, ping_after_idle=None)
        recycled = [stack.enter_context(front(n, {**kwargs, "policy": recycling})) for n in FRONTS]
        waited = [stack.enter_context(front(n, {**kwargs, "policy": forever})) for n in FRONTS]
        faces = [*recycled, *waited]
        first = [face.connection_id() for face in faces]
        opened = time.monotonic()  # every face's connection is open by now
        # Four warm invocations: one connection, as in the seed's log.
        for _ in range(3):
            assert [face.connection_id() for face in faces] == first
        closed_before = rds.stats.upstream_closed
        time.sleep(max(0.0, opened + RECYCLE + 0.1 - time.monotonic()))
        # After the recycle period a new connection, opened before MariaDB ended the old one.
        for face, old in zip(recycled, first, strict=False):
            assert face.connection_id() != old, face.name
        assert rds.stats.upstream_closed == closed_before
        assert recorder.reasons.count("lifetime") == len(recycled)

        # The others idle past wait_timeout: MariaDB ends them, warmdb sees the closed socket
        # at checkout and connects again, without an error.
        wait_for(lambda: rds.stats.upstream_closed >= closed_before + len(waited))
        time.sleep(0.1)
        for face, old in zip(waited, first[len(recycled) :], strict=True):
            assert face.connection_id() != old, face.name
        assert recorder.reasons.count("readable") == len(waited)
