"""Connect retry, the rate governor and events against real servers: a refused port, an
expired cached token, and a 500-connection spike against DSQL's rate limit."""

from __future__ import annotations

import statistics
import threading
import time

import pytest

import warmdb
import warmdb.psycopg
from tests.integration.lifecycle import warmdb_kwargs
from warmdb import events
from warmdb.emulator.limits import Limits
from warmdb.emulator.postgres import free_port
from warmdb.emulator.service import Emulator
from warmdb.policy import DSQL


@pytest.fixture(autouse=True)
def fresh_counts():
    events.reset_counts()
    yield
    events.reset_counts()
    warmdb.limit_connect_rate(None)


def test_refused_connects_are_retried_until_the_deadline(aws_credentials):
    policy = DSQL.replace(retry_timeout=0.6, backoff_initial=0.05, backoff_max=0.2)
    started = time.monotonic()
    with pytest.raises(warmdb.ConnectError) as caught:
        warmdb.psycopg.connect(
            host="127.0.0.1", port=free_port(), auth="dsql", region="us-east-1", policy=policy
        )
    elapsed = time.monotonic() - started
    assert caught.value.reason == "refused"
    assert 0.6 <= elapsed < 3
    counts = events.counts()
    assert counts["retries.refused"] >= 2
    assert "connects" not in counts


def test_a_refused_token_is_retried_once_with_a_fresh_one(monkeypatch):
    # Tokens last 4 s for warmdb's cache (reused for 3 s) but 2 s for the server, so the
    # cache hands out a token the server calls expired: the retry must sign a new one.
    with Emulator(token_time_scale=2) as dsql:
        kwargs = {**warmdb_kwargs(dsql, monkeypatch), "token_duration_secs": 4}
        # Sign early in a second (tokens are dated in whole seconds), so that 2.2 s later the
        # server's 2 s have passed and the cache's 3 s have not.
        time.sleep(1.05 - time.time() % 1)
        with warmdb.psycopg.connect(**kwargs):
            pass
        time.sleep(2.2)
        with warmdb.psycopg.connect(**kwargs) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert dsql.stats.auth_failures == {"expired": 1}
    assert events.counts()["retries.auth"] == 1
    assert events.counts()["connects"] == 2


def test_an_auth_failure_that_persists_is_raised_after_one_retry(monkeypatch):
    with Emulator() as dsql:
        kwargs = warmdb_kwargs(dsql, monkeypatch)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-emulators-secret-key-at-all")
        with pytest.raises(warmdb.AuthenticationError) as caught:
            warmdb.psycopg.connect(**kwargs)
        assert caught.value.sqlstate == "28000"
        assert dsql.stats.rejected["auth"] == 2
    assert events.counts()["retries.auth"] == 1


RATE = 100
BURST = 10
WORKERS = 50
CONNECTS_PER_WORKER = 10


def spike(kwargs: dict[str, object]) -> tuple[list[float], list[float], list[BaseException]]:
    """WORKERS threads open CONNECTS_PER_WORKER connections each, as fast as they can."""
    waits: list[float] = []
    admitted: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(WORKERS)
    policy = DSQL.replace(retry_timeout=60.0)

    def worker() -> None:
        start.wait()
        for _ in range(CONNECTS_PER_WORKER):
            began = time.monotonic()
            try:
                conn = warmdb.psycopg.connect(**kwargs, policy=policy)
            except BaseException as exc:  # collected: the test reports every failure
                with lock:
                    errors.append(exc)
                continue
            done = time.monotonic()
            conn.close()
            with lock:
                waits.append(done - began)
                admitted.append(done)

    threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return waits, admitted, errors


def wait_until_closed(dsql: Emulator) -> None:
    """The server counts a connection a moment after the client has it: let it catch up."""
    deadline = time.monotonic() + 5
    while dsql.stats.current and time.monotonic() < deadline:
        time.sleep(0.01)


def busiest_second(times: list[float]) -> int:
    times = sorted(times)
    return max(sum(1 for t in times[i:] if t < first + 1.0) for i, first in enumerate(times))


def test_spike_of_500_connects_against_the_rate_limit(monkeypatch, capsys):
    limits = Limits(connection_rate=RATE, connection_burst=BURST)
    with Emulator(limits=limits) as dsql:
        kwargs = warmdb_kwargs(dsql, monkeypatch)
        waits, admitted, errors = spike(kwargs)
        wait_until_closed(dsql)
        stats = dsql.stats
    total = WORKERS * CONNECTS_PER_WORKER
    assert errors == []
    assert len(waits) == total
    assert stats.accepted == total
    assert stats.rejected.get("rate", 0) > 0, "the spike never hit the limit: test too small"
    assert events.counts()["retries.rate-exceeded"] == stats.rejected["rate"]
    # Admission is the server's; completions trail it by a handshake, hence the 10 % slack.
    assert busiest_second(admitted) <= (RATE + BURST) * 1.1
    quantiles = statistics.quantiles(waits, n=100)
    with capsys.disabled():
        print(
            f"\nspike: {total} connects by {WORKERS} workers at {RATE}/s (burst {BURST}): "
            f"wait p50 {quantiles[49] * 1000:.0f} ms, p99 {quantiles[98] * 1000:.0f} ms, "
            f"{stats.rejected['rate']} rate rejections retried, busiest second "
            f"{busiest_second(admitted)} connects"
        )


def test_the_governor_keeps_a_burst_under_the_servers_limit(monkeypatch):
    limits = Limits(connection_rate=RATE, connection_burst=BURST)
    warmdb.limit_connect_rate(RATE * 0.8, burst=BURST // 2)
    with Emulator(limits=limits) as dsql:
        kwargs = warmdb_kwargs(dsql, monkeypatch)
        barrier = threading.Barrier(20)
        failures: list[BaseException] = []

        def worker() -> None:
            barrier.wait()
            for _ in range(5):
                try:
                    warmdb.psycopg.connect(**kwargs, policy=DSQL.replace(retry_timeout=0)).close()
                except BaseException as exc:
                    failures.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        wait_until_closed(dsql)
        assert dsql.stats.accepted == 100
        assert dsql.stats.rejected.get("rate", 0) == 0
