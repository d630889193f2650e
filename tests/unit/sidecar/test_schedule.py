"""The refresh plan per token kind and PgBouncer version, and the restart backoff."""

from __future__ import annotations

import pytest

from warmdb.errors import ConfigurationError
from warmdb.sidecar.pgbouncer import capabilities
from warmdb.sidecar.schedule import plan_refresh, restart_delay

OLD = capabilities((1, 18, 0))  # renews TLS server connections at each RELOAD
NEW = capabilities((1, 24, 0))


def test_dsql_on_a_cheap_reload_uses_fifteen_minute_tokens():
    plan = plan_refresh("dsql", NEW)
    assert plan.token_duration == 900
    assert plan.refresh_interval == 600
    assert plan.note is None


def test_dsql_before_1_24_refreshes_rarely_and_says_why():
    plan = plan_refresh("dsql", OLD)
    assert plan.token_duration == 6 * 3600
    assert plan.refresh_interval == 4 * 3600
    assert "1.18.0" in plan.note
    assert "every 4 hours" in plan.note


def test_rds_tokens_always_last_fifteen_minutes():
    plan = plan_refresh("rds", OLD)
    assert plan.token_duration == 900
    assert plan.refresh_interval == 600
    assert "every 10 minutes" in plan.note
    assert plan_refresh("rds", NEW).note is None
    with pytest.raises(ConfigurationError, match="900"):
        plan_refresh("rds", NEW, token_duration=3600)


def test_the_old_token_keeps_a_third_of_its_life_at_each_refresh():
    for duration in (60, 900, 3600, 604_800):
        plan = plan_refresh("dsql", NEW, token_duration=duration)
        assert plan.token_duration - plan.refresh_interval == pytest.approx(duration / 3)


def test_time_scale_divides_the_interval_only():
    plan = plan_refresh("dsql", NEW, token_duration=900, time_scale=300)
    assert plan.token_duration == 900
    assert plan.refresh_interval == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("kind", "options", "message"),
    [
        ("dsql", {"token_duration": 59}, "between 60"),
        ("dsql", {"token_duration": 604_801}, "between 60"),
        ("dsql", {"time_scale": 0}, "time_scale"),
        ("password", {}, "'dsql' or 'rds'"),
    ],
)
def test_bad_plans(kind, options, message):
    with pytest.raises(ConfigurationError, match=message):
        plan_refresh(kind, NEW, **options)


def test_restart_delay_doubles_up_to_a_cap():
    assert restart_delay(0) == 0
    assert [restart_delay(n) for n in range(1, 5)] == [0.1, 0.2, 0.4, 0.8]
    assert restart_delay(30) == 10.0
