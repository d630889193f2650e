"""Policy: presets, validation naming the field, immutability, replace()."""

from __future__ import annotations

import math

import pytest

from warmdb import ConfigurationError
from warmdb.policy import DEFAULT, DSQL, RDS, RDS_PROXY, Policy, policy_for, random_fraction


def test_dsql_preset_renews_well_inside_the_60_minute_limit():
    assert DSQL.max_lifetime == 55 * 60
    assert DSQL.lifetime_jitter == 0.05
    assert DSQL.max_lifetime * (1 - 0) < 3600


def test_rds_proxy_preset_recycles_before_the_proxy_idle_timeout():
    assert RDS_PROXY.max_idle is not None
    assert RDS_PROXY.max_idle < 30 * 60


def test_rds_presets_pace_new_connections_at_the_rds_iam_ceiling():
    # RDS IAM authentication admits about 200 new connections per second.
    assert RDS.connect_rate == RDS_PROXY.connect_rate == 200.0
    assert DSQL.connect_rate is None
    assert DEFAULT.connect_rate is None


@pytest.mark.parametrize(("auth", "preset"), [("dsql", DSQL), ("rds", RDS), ("password", DEFAULT)])
def test_policy_for_auth_mode(auth, preset):
    assert policy_for(auth) is preset


def test_replace_changes_one_field_and_keeps_the_rest():
    changed = DSQL.replace(ping_after_idle=5.0)
    assert changed.ping_after_idle == 5.0
    assert changed.max_lifetime == DSQL.max_lifetime
    assert DSQL.ping_after_idle != 5.0  # the preset is untouched
    assert changed != DSQL
    assert changed == DSQL.replace(ping_after_idle=5)
    assert hash(changed) == hash(DSQL.replace(ping_after_idle=5))


def test_immutable():
    with pytest.raises(AttributeError, match="immutable"):
        DSQL.max_lifetime = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_lifetime", -1, "max_lifetime must be a finite number"),
        ("max_lifetime", 0, "max_lifetime must be positive or None"),
        ("max_lifetime", "60", "max_lifetime must be a number of seconds or None"),
        ("max_lifetime", math.nan, "max_lifetime must be a finite"),
        ("max_lifetime", math.inf, "max_lifetime must be a finite"),
        ("lifetime_jitter", 0.5, "lifetime_jitter must be a fraction"),
        ("lifetime_jitter", None, "lifetime_jitter must be a number of seconds"),
        ("ping_after_idle", True, "ping_after_idle must be a number"),
        ("poll_after_idle", -1, "poll_after_idle must be a finite"),
        ("connect_timeout", 0, "connect_timeout must be positive or None"),
        ("retry_timeout", -0.1, "retry_timeout must be a finite"),
        ("backoff_max", 0.01, r"backoff_max \(0.01\) must not be below backoff_initial"),
        ("connect_rate", 0, "connect_rate must be a positive number of connects per second"),
        ("connect_rate", -5, "connect_rate must be a positive number"),
        ("connect_rate", math.nan, "connect_rate must be a positive number"),
        ("connect_rate", True, "connect_rate must be a positive number"),
    ],
)
def test_bad_values_name_the_field(field, value, message):
    with pytest.raises(ConfigurationError, match=message):
        DEFAULT.replace(**{field: value})


def test_unknown_field_is_refused_with_the_known_ones():
    with pytest.raises(ConfigurationError, match=r"unknown policy field.*max_lifetim\b"):
        DEFAULT.replace(max_lifetim=1.0)
    with pytest.raises(TypeError):
        Policy(max_lifetim=1.0)  # type: ignore[call-arg]


def test_none_turns_checks_off():
    policy = Policy(max_lifetime=None, ping_after_idle=None, max_idle=None, connect_timeout=None)
    assert policy.max_lifetime is None
    assert "max_lifetime=None" in repr(policy)


def test_first_idle_check_is_the_earliest_idle_check():
    assert DEFAULT.first_idle_check == DEFAULT.poll_after_idle == 0.5
    assert DEFAULT.replace(max_idle=0.2).first_idle_check == 0.2
    assert DEFAULT.replace(poll_after_idle=None).first_idle_check == DEFAULT.ping_after_idle
    none = DEFAULT.replace(ping_after_idle=None, poll_after_idle=None)
    assert none.first_idle_check == math.inf
    # Derived, not a field: not in repr, equality or replace().
    assert "first_idle_check" not in repr(DEFAULT)
    with pytest.raises(ConfigurationError, match="unknown policy field"):
        DEFAULT.replace(first_idle_check=1.0)


def test_random_fraction_is_uniform_in_the_unit_interval():
    samples = [random_fraction() for _ in range(20_000)]
    assert all(0 <= sample < 1 for sample in samples)
    # Each tenth of the interval gets its share (expected 2,000; 5 sigma is about 210).
    for tenth in range(10):
        share = sum(tenth / 10 <= sample < (tenth + 1) / 10 for sample in samples)
        assert 1790 < share < 2210
