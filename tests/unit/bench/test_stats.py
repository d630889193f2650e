"""The bench's statistics on known data: the seeds' percentile rule, summaries, cells."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warmdb.bench.stats import cell_stats, ratio, seed_percentile, summarize

THIRTY = [float(i) for i in range(1, 31)]  # 1..30


def test_seed_p95_of_thirty_is_the_29th_smallest():
    # The seeds' handler: sorted(times)[int(30 * 0.95)] == sorted(times)[28].
    assert seed_percentile(THIRTY, 0.95) == 29.0
    assert seed_percentile(list(reversed(THIRTY)), 0.95) == 29.0


def test_seed_p99_of_thirty_is_the_largest():
    assert seed_percentile(THIRTY, 0.99) == 30.0


def test_seed_rule_clamps_to_the_largest_sample():
    assert seed_percentile([1.0, 2.0, 3.0], 1.0) == 3.0
    # 20 samples: int(20 * 0.95) == 19, the largest.
    assert seed_percentile([float(i) for i in range(20)], 0.95) == 19.0


def test_seed_rule_on_one_sample():
    assert seed_percentile([0.5], 0.95) == 0.5


@pytest.mark.parametrize("q", [-0.1, 1.1])
def test_seed_rule_refuses_a_quantile_outside_0_1(q):
    with pytest.raises(ValueError, match="between 0 and 1"):
        seed_percentile([1.0], q)


def test_seed_rule_refuses_no_samples():
    with pytest.raises(ValueError, match="at least one"):
        seed_percentile([], 0.5)


def test_summary_of_known_data():
    s = summarize([0.004, 0.001, 0.003, 0.002])
    assert s.n == 4
    assert s.avg == pytest.approx(0.0025)
    assert s.p50 == pytest.approx(0.0025)  # the median, interpolated between 2 and 3
    assert s.p95 == 0.004
    assert s.min == 0.001
    assert s.max == 0.004
    assert s.as_ms() == {
        "n": 4,
        "avg_ms": 2.5,
        "p50_ms": 2.5,
        "p95_ms": 4.0,
        "p99_ms": 4.0,
        "min_ms": 1.0,
        "max_ms": 4.0,
    }


@pytest.mark.parametrize("bad", [-0.001, math.nan, math.inf])
def test_summary_refuses_impossible_timings(bad):
    with pytest.raises(ValueError, match="finite number of seconds"):
        summarize([0.001, bad])


def test_cell_follows_the_seeds_calc_stats():
    # The seeds' table: connect and query per iteration, total = sum of both, qps = n / total.
    connect = [0.8, 0.9, 1.0, 0.7]
    query = [0.01, 0.02, 0.03, 0.04]
    cell = cell_stats(connect, query)
    assert cell.total == pytest.approx(3.5)
    assert cell.qps == pytest.approx(4 / 3.5)
    data = cell.as_dict()
    assert data["connect_avg_ms"] == 850.0
    assert data["connect_p50_ms"] == 850.0
    assert data["connect_p95_ms"] == 1000.0
    assert data["query_avg_ms"] == 25.0
    assert data["query_p50_ms"] == 25.0
    assert data["total_ms"] == 3500.0
    assert data["qps"] == 1.1


def test_cell_refuses_unpaired_timings():
    with pytest.raises(ValueError, match="3 connect times but 2 query times"):
        cell_stats([1.0, 2.0, 3.0], [1.0, 2.0])


def test_ratio():
    assert ratio(2.0, 4.0) == 0.5
    assert ratio(1.0, 0.0) is None
    assert ratio(1.0, math.inf) is None


@given(st.lists(st.floats(min_value=0, max_value=10, allow_nan=False), min_size=1, max_size=60))
def test_summary_orders_and_bounds(samples):
    s = summarize(samples)
    assert s.min <= s.p50 <= s.p95 <= s.p99 <= s.max
    assert s.min <= s.avg * (1 + 1e-9) + 1e-12
    assert s.avg <= s.max * (1 + 1e-9) + 1e-12
    assert s.p95 in samples
    assert s.p99 in samples
    assert s.p50 == statistics.median(samples)
