"""The token-bucket governor, on a driven clock."""

from __future__ import annotations

import threading

import pytest

import warmdb
import warmdb.psycopg2
from warmdb import ConfigurationError
from warmdb.governor import RateGovernor, current_governor, endpoint_governor, limit_connect_rate


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_rate():
    clock = Clock()
    governor = RateGovernor(10, burst=3, clock=clock)
    assert [governor.reserve() for _ in range(3)] == [0, 0, 0]
    # The bucket is empty: reservations queue up a tenth of a second apart.
    assert [governor.reserve() for _ in range(3)] == pytest.approx([0.1, 0.2, 0.3])


def test_refill_is_capped_at_burst():
    clock = Clock()
    governor = RateGovernor(10, burst=2, clock=clock)
    governor.reserve()
    governor.reserve()
    clock.now += 60  # a long idle period refills only up to the burst
    assert [governor.reserve() for _ in range(3)] == pytest.approx([0, 0, 0.1])


def test_waiters_are_served_in_order_and_never_exceed_the_rate():
    clock = Clock()
    governor = RateGovernor(100, burst=1, clock=clock)
    due = []
    for _ in range(500):
        due.append(clock.now + governor.reserve())
        clock.now += 0.001  # callers arrive ten times faster than the rate
    assert due == sorted(due)
    # In any one-second window at most rate + burst connects start.
    for start in due:
        assert sum(start <= t < start + 1 for t in due) <= 101


def test_thread_safe_reservations():
    governor = RateGovernor(1000, burst=1000, clock=Clock())  # no refill during the test
    waits: list[float] = []

    def take() -> None:
        for _ in range(100):
            waits.append(governor.reserve())

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # 800 reservations against 1000 tokens: none had to wait, none was lost.
    assert len(waits) == 800
    assert governor._tokens == 200


@pytest.mark.parametrize(
    ("rate", "burst", "message"),
    [(0, 1, "rate must be a positive"), (-1, 1, "rate"), ("5", 1, "rate"), (5, 0, "burst")],
)
def test_bad_arguments(rate, burst, message):
    with pytest.raises(ConfigurationError, match=message):
        RateGovernor(rate, burst=burst)


def test_process_wide_switch():
    assert current_governor() is None
    warmdb.limit_connect_rate(20, burst=5)
    try:
        governor = current_governor()
        assert governor is not None
        assert (governor.rate, governor.burst) == (20, 5)
    finally:
        limit_connect_rate(None)
    assert current_governor() is None


def test_endpoint_governors_are_shared_per_endpoint_and_rate():
    first = endpoint_governor("db.example", 3306, 200.0)
    assert endpoint_governor("db.example", 3306, 200.0) is first
    assert endpoint_governor("db.example", 3307, 200.0) is not first
    assert endpoint_governor("other.example", 3306, 200.0) is not first
    assert endpoint_governor("db.example", 3306, 50.0) is not first
    # A second's worth of burst: a process under the rate never waits.
    assert first.rate == 200.0
    assert first.burst == 200
    assert endpoint_governor("db.example", 3306, 0.5).burst == 1


def test_a_plan_takes_its_endpoint_governor_from_the_policy():
    from warmdb.policy import DEFAULT, RDS

    keeper = warmdb.psycopg2.warm(host="db.abc.us-east-1.rds.amazonaws.com", user="iam")
    assert keeper.plan.policy is RDS
    assert keeper.plan.governor is endpoint_governor(
        "db.abc.us-east-1.rds.amazonaws.com", 5432, 200.0
    )
    assert warmdb.psycopg2.warm(host="db.internal", password="pw").plan.governor is None
    paced = warmdb.psycopg2.warm(
        host="db.internal", password="pw", policy=DEFAULT.replace(connect_rate=5)
    )
    assert paced.plan.governor is endpoint_governor("db.internal", 5432, 5.0)
