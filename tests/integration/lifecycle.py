"""A DSQL emulator on fast-forward, and the long-job check every keeper, pool and engine passes.

With ``time_scale=LIFETIME_SCALE`` the emulator closes connections after 2 s instead of
60 minutes, while tokens keep real time (``token_time_scale=1``) and are signed for 2 s. A job
that queries for :data:`LONG_JOB_SECONDS` therefore crosses five connection lifetimes and
five token lifetimes. (Tokens are dated in whole seconds, so a token signed late in a second
has up to a second less to live: 2 s keeps every token usable for at least a second.)

The fixtures are registered for every integration test by ``tests/integration/conftest.py``.
"""

from __future__ import annotations

import time

import pytest

from warmdb.emulator.service import Emulator
from warmdb.emulator.stats import StatsSnapshot
from warmdb.policy import DSQL

#: DSQL's 60-minute connection limit becomes 2 s.
LIFETIME_SCALE = 1800
SERVER_LIFETIME = 3600 / LIFETIME_SCALE
#: DSQL's preset, on the same fast-forward: connections renewed after 55 "minutes" - jitter.
SCALED_POLICY = DSQL.replace(max_lifetime=DSQL.max_lifetime / LIFETIME_SCALE, retry_timeout=10.0)
TOKEN_SECONDS = 2
#: Five server lifetimes and a bit.
LONG_JOB_SECONDS = 5 * SERVER_LIFETIME + 0.5


@pytest.fixture(scope="module")
def scaled_dsql():
    """An emulator whose connection limit is 2 s; tokens expire in real time."""
    with Emulator(time_scale=LIFETIME_SCALE, token_time_scale=1) as dsql:
        yield dsql


def warmdb_kwargs(dsql: Emulator, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """warmdb connect arguments for *dsql* (verified TLS), with its credentials in the env.

    The host is a name, not an address: TLS sends the server name (SNI) only for a name, and
    DSQL, like the emulator, refuses a connection without it.
    """
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", dsql.credentials.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", dsql.credentials.secret_key)
    return {
        "host": "localhost",
        "port": dsql.port,
        "auth": "dsql",
        "region": dsql.region,
        "user": "admin",
        "dbname": "postgres",
        "sslmode": "verify-full",
        "sslrootcert": str(dsql.ca_path),
    }


@pytest.fixture
def scaled_dsql_kwargs(scaled_dsql, monkeypatch) -> dict[str, object]:
    """warmdb connect arguments for :func:`scaled_dsql`: short tokens, the scaled policy."""
    return {
        **warmdb_kwargs(scaled_dsql, monkeypatch),
        "token_duration_secs": TOKEN_SECONDS,
        "policy": SCALED_POLICY,
    }


class JobReport:
    """What a long job saw: queries run, distinct server backends used, seconds spent."""

    def __init__(self) -> None:
        self.queries = 0
        self.backends: set[int] = set()
        self.seconds = 0.0


def check_long_job(dsql: Emulator, before: StatsSnapshot, report: JobReport) -> None:
    """The long-job guarantees: it ran long enough, renewed connections, the server closed
    none of them (each was replaced before its lifetime ran out), and no expired token was
    ever sent (each reconnect after a token's lifetime signed a new one)."""
    assert report.seconds >= LONG_JOB_SECONDS
    assert report.queries > 50
    # One connection per lifetime at least, for five lifetimes.
    assert len(report.backends) >= 5
    after = dsql.stats
    assert after.expired == before.expired, "the server closed a connection at end of life"
    auth_refusals = after.rejected.get("auth", 0) - before.rejected.get("auth", 0)
    assert auth_refusals == 0, after.auth_failures


def run_long_job(query_once, dsql: Emulator) -> JobReport:
    """Call ``query_once() -> backend pid`` continuously for :data:`LONG_JOB_SECONDS`."""
    report = JobReport()
    before = dsql.stats
    started = time.monotonic()
    while time.monotonic() - started < LONG_JOB_SECONDS:
        report.backends.add(query_once())
        report.queries += 1
        time.sleep(0.01)
    report.seconds = time.monotonic() - started
    check_long_job(dsql, before, report)
    return report


async def run_long_job_async(query_once, dsql: Emulator) -> JobReport:
    """:func:`run_long_job` for ``async query_once() -> backend pid``."""
    import asyncio

    report = JobReport()
    before = dsql.stats
    started = time.monotonic()
    while time.monotonic() - started < LONG_JOB_SECONDS:
        report.backends.add(await query_once())
        report.queries += 1
        await asyncio.sleep(0.01)
    report.seconds = time.monotonic() - started
    check_long_job(dsql, before, report)
    return report
