"""Retry classification of connect failures and the backoff schedule."""

from __future__ import annotations

import asyncio
import socket

import psycopg
import psycopg2
import pytest

from warmdb import retry
from warmdb.policy import Policy
from warmdb.retry import RetrySchedule, classify


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


def test_full_jitter_exponential_bounds():
    schedule = RetrySchedule(POLICY, started_at=0.0, random_fraction=lambda: 0.999999)
    delays = [schedule.next_delay(retry.RATE_EXCEEDED, now=1.0) for _ in range(6)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0], rel=1e-5)
    assert schedule.retries == 6


def test_full_jitter_can_be_zero():
    schedule = RetrySchedule(POLICY, started_at=0.0, random_fraction=lambda: 0.0)
    assert schedule.next_delay(retry.REFUSED, now=0.0) == 0.0


def test_deadline_caps_the_wait_then_gives_up():
    schedule = RetrySchedule(POLICY, started_at=0.0, random_fraction=lambda: 0.999)
    assert schedule.next_delay(retry.REFUSED, now=9.95) == pytest.approx(0.05)
    assert schedule.next_delay(retry.REFUSED, now=10.0) is None


def test_not_retryable_gives_up_at_once():
    schedule = RetrySchedule(POLICY, started_at=0.0)
    assert schedule.next_delay(None, now=0.0) is None


def test_auth_is_retried_once_at_once_and_only_with_a_fresh_token():
    schedule = RetrySchedule(POLICY, started_at=0.0)
    assert schedule.next_delay(retry.AUTH, now=0.0, fresh_token=False) is None
    assert schedule.next_delay(retry.AUTH, now=0.0, fresh_token=True) == 0.0
    assert schedule.next_delay(retry.AUTH, now=0.0, fresh_token=True) is None


def test_zero_retry_timeout_makes_one_attempt():
    schedule = RetrySchedule(Policy(retry_timeout=0), started_at=5.0)
    assert schedule.next_delay(retry.RATE_EXCEEDED, now=5.0) is None
