"""The limits configuration, DSQL's refusal messages and the connection-rate token bucket."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from warmdb.emulator.limits import REFUSALS, Limits, TokenBucket
from warmdb.emulator.stats import Stats
from warmdb.errors import ConfigurationError


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_defaults_are_dsql_quotas():
    limits = Limits()
    assert limits.connection_rate == 100
    assert limits.connection_burst == 1000
    assert limits.max_connections == 10_000
    assert limits.connection_lifetime == 3600
    assert limits.transaction_age == 300
    assert limits.transaction_rows == 3000
    assert limits.transaction_bytes == 10 * 1024 * 1024
    assert limits.sql_checks is True


def test_postgres_compatible_mode_turns_sql_checks_off():
    assert Limits(sql_checks=False).sql_checks is False


@pytest.mark.parametrize(
    ("reason", "code", "message"),
    [
        ("rate", "53400", "Unable to accept connection, rate exceeded."),
        ("max_connections", "53300", "Unable to accept connection, too many open connections."),
        ("transaction_age", "54000", "transaction age limit of 300s exceeded"),
        ("transaction_rows", "54000", "transaction row limit exceeded"),
        ("transaction_size", "54000", "transaction size limit 10mb exceeded"),
        ("occ", "40001", "OC000 mutation conflicts with another transaction, retry as needed"),
        (
            "occ_schema",
            "40001",
            "OC001 schema has been updated by another transaction, retry as needed",
        ),
        ("auth", "28000", 'IAM authentication failed for user "{user}"'),
    ],
)
def test_refusals_use_dsql_codes_and_messages(reason, code, message):
    refusal = Limits().refusal(reason)
    assert (refusal.code, refusal.message) == (code, message)


def test_refusal_messages_follow_configured_limits():
    limits = Limits(transaction_age=2.5, transaction_bytes=512 * 1024)
    assert limits.refusal("transaction_age").message == "transaction age limit of 2.5s exceeded"
    assert limits.refusal("transaction_size").message == "transaction size limit 0.5mb exceeded"


def test_lifetime_refusal_is_fatal_kind_code():
    assert REFUSALS["lifetime"].code == "57P01"


def test_time_scale_divides_durations():
    limits = Limits(time_scale=60)
    assert limits.scaled(3600) == 60
    assert limits.scaled(300) == 5


def test_token_time_scale_defaults_to_time_scale():
    assert Limits(time_scale=60).token_scale == 60
    assert Limits(time_scale=3600, token_time_scale=1).token_scale == 1
    # The default follows a time scale set later, as Emulator(time_scale=...) does.
    assert dataclasses.replace(Limits(), time_scale=30).token_scale == 30


@pytest.mark.parametrize(
    "field",
    ["connection_rate", "connection_burst", "max_connections", "time_scale", "token_time_scale"],
)
@pytest.mark.parametrize("value", [0, -1])
def test_limits_reject_non_positive(field, value):
    with pytest.raises(ConfigurationError, match=field):
        Limits(**{field: value})


def test_bucket_allows_burst_then_refuses():
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=5, clock=clock)
    assert [bucket.try_acquire() for _ in range(6)] == [True] * 5 + [False]


def test_bucket_refills_at_rate_and_caps_at_burst():
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=5, clock=clock)
    for _ in range(5):
        bucket.try_acquire()
    clock.now += 0.05  # half a token
    assert not bucket.try_acquire()
    clock.now += 0.06
    assert bucket.try_acquire()
    assert not bucket.try_acquire()
    clock.now += 100  # refills to the burst, not beyond
    assert [bucket.try_acquire() for _ in range(6)] == [True] * 5 + [False]


def test_bucket_is_thread_safe():
    clock = FakeClock()
    bucket = TokenBucket(rate=1, burst=1000, clock=clock)
    taken = []

    def worker():
        taken.append(sum(bucket.try_acquire() for _ in range(300)))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(taken) == 1000


def test_stats_counts_open_peak_and_rejections():
    stats = Stats()
    assert stats.try_open(2)
    assert stats.try_open(2)
    assert not stats.try_open(2)
    stats.close()
    stats.reject("auth", "expired")
    stats.reject("rate")
    stats.violation("transaction_rows")
    stats.add("queries", 3)
    snapshot = stats.snapshot()
    assert (snapshot.current, snapshot.peak, snapshot.queries) == (1, 2, 3)
    assert snapshot.rejected == {"auth": 1, "rate": 1}
    assert snapshot.auth_failures == {"expired": 1}
    assert snapshot.as_dict()["limit_violations"] == {"transaction_rows": 1}
