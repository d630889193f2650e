"""Retry classification of connect failures (PostgreSQL's, through warmdb._postgres, and the
socket layer's) and the immutable Backoff schedule."""

from __future__ import annotations

import asyncio
import socket

import psycopg
import psycopg2
import pytest

from warmdb import retry
from warmdb._postgres import classify_postgres
from warmdb.errors import ConfigurationError
from warmdb.policy import Policy
from warmdb.retry import Backoff


def classify(exc, sqlstate):
    return classify_postgres(exc, sqlstate).reason


@pytest.mark.parametrize(
    ("sqlstate", "reason"),
    [
        ("53400", retry.RATE_EXCEEDED),
        ("53300", retry.TOO_MANY_CONNECTIONS),
        ("57P03", retry.SERVER_STARTING),
        ("28000", retry.AUTH),
        ("28P01", retry.AUTH),
        ("3D000", None),  # unknown database: retrying cannot help
        ("42501", None),
    ],
)
def test_sqlstates(sqlstate, reason):
    assert classify(psycopg.OperationalError("x"), sqlstate) == reason


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        # libpq's texts, as psycopg and psycopg2 report them.
        (
            psycopg.OperationalError(
                'connection failed: connection to server at "127.0.0.1", port 1 failed: '
                "Connection refused\n\tIs the server running on that host?"
            ),
            retry.REFUSED,
        ),
        (psycopg2.OperationalError("could not receive data: Connection reset by peer"), "reset"),
        (
            psycopg2.OperationalError(
                "server closed the connection unexpectedly\n\tThis probably means the server "
                "terminated abnormally"
            ),
            retry.RESET,
        ),
        (psycopg.OperationalError("connection failed: timeout expired"), retry.TIMEOUT),
        (
            psycopg.OperationalError(
                'could not translate host name "db.example" to address: Temporary failure in '
                "name resolution"
            ),
            retry.DNS,
        ),
        (
            psycopg.OperationalError(
                'could not translate host name "nope.invalid" to address: Name or service not known'
            ),
            None,
        ),
        (psycopg.OperationalError("certificate verify failed"), None),
        # asyncpg lets the socket layer's exceptions through.
        (ConnectionRefusedError(111, "Connect call failed"), retry.REFUSED),
        (ConnectionResetError(104, "reset"), retry.RESET),
        (asyncio.TimeoutError(), retry.TIMEOUT),
        (socket.gaierror(socket.EAI_AGAIN, "Temporary failure"), retry.DNS),
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), None),
    ],
)
def test_socket_failures(exc, reason):
    assert classify(exc, None) == reason


def test_eai_again_constant_matches_the_platform():
    assert socket.EAI_AGAIN == retry._EAI_AGAIN


POLICY = Policy(retry_timeout=10.0, backoff_initial=0.1, backoff_max=1.0)


def backoff(policy=POLICY, *, random_fraction=lambda: 0.5, **changes):
    base = Backoff.from_policy(policy)
    return Backoff(
        initial=changes.get("initial", base.initial),
        maximum=changes.get("maximum", base.maximum),
        timeout=changes.get("timeout", base.timeout),
        max_retries=changes.get("max_retries"),
        jitter=changes.get("jitter", 1.0),
        random_fraction=random_fraction,
    )


def delays(schedule, now, count):
    found = []
    for _ in range(count):
        schedule = schedule.increment(now)
        found.append(None if schedule is None else schedule.delay)
        if schedule is None:
            break
    return found


def test_full_jitter_exponential_bounds():
    schedule = backoff(random_fraction=lambda: 0.0).start(0.0)
    assert delays(schedule, 1.0, 6) == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0], rel=1e-5)


def test_full_jitter_can_be_close_to_zero():
    schedule = backoff(random_fraction=lambda: 0.999999).start(0.0)
    assert schedule.increment(0.0).delay == pytest.approx(0.0, abs=1e-6)


def test_partial_jitter_keeps_most_of_the_bound():
    schedule = backoff(jitter=0.25, random_fraction=lambda: 1.0).start(0.0)
    assert schedule.increment(0.0).delay == pytest.approx(0.075)


def test_increment_returns_a_new_object_and_leaves_the_old_one_alone():
    schedule = backoff().start(0.0)
    after = schedule.increment(0.0)
    assert after is not schedule
    assert (schedule.retries, after.retries) == (0, 1)
    with pytest.raises(AttributeError):
        after.delay = 3  # type: ignore[misc]


def test_deadline_caps_the_wait_then_gives_up():
    schedule = backoff(random_fraction=lambda: 0.0).start(0.0)
    assert schedule.increment(9.95).delay == pytest.approx(0.05)
    assert schedule.increment(10.0) is None


def test_retry_count_limit():
    schedule = backoff(max_retries=2, timeout=None).start(0.0)
    assert delays(schedule, 0.0, 3)[-1] is None
    assert len(delays(schedule, 0.0, 3)) == 3


def test_zero_timeout_makes_one_attempt():
    assert backoff(Policy(retry_timeout=0)).start(5.0).increment(5.0) is None


@pytest.mark.parametrize(
    "changes",
    [{"initial": -1}, {"maximum": 0.01}, {"jitter": 1.5}, {"max_retries": -1}, {"timeout": -2}],
)
def test_bad_arguments_are_refused_by_name(changes):
    name = next(iter(changes))
    with pytest.raises(ConfigurationError, match=name if name != "maximum" else "initial"):
        backoff(**changes)
