"""The keeper's checkout decision (pure) and the no-round-trip liveness check."""

from __future__ import annotations

import asyncio
import socket

import pytest

from warmdb.policy import Policy
from warmdb.warm import (
    PING,
    REPLACE,
    REUSE,
    KeptConnection,
    checkout_verdict,
    has_pending_input,
    judge,
    judge_async,
)

POLICY = Policy(max_lifetime=100.0, lifetime_jitter=0.1, max_idle=50.0, ping_after_idle=10.0)


def kept(opened_at: float = 0.0, last_used: float = 0.0, fraction: float = 0.0) -> KeptConnection:
    record = KeptConnection(opened_at, POLICY, fraction)
    record.last_used = last_used
    return record


def quiet() -> bool:
    return False


def must_not_be_called() -> bool:
    raise AssertionError("the socket was checked although a cheaper check decided")


def test_jitter_shortens_the_lifetime_by_up_to_the_fraction():
    assert kept(fraction=0.0).expires_at == 100.0
    assert kept(fraction=0.5).expires_at == pytest.approx(95.0)
    assert kept(fraction=0.999).expires_at == pytest.approx(90.01)
    assert KeptConnection(0.0, Policy(max_lifetime=None), 0.5).expires_at is None


def test_hot_path_reuses_without_a_ping():
    assert checkout_verdict(kept(last_used=5.0), 6.0, POLICY, is_closed=False, has_input=quiet) == (
        REUSE,
        None,
    )


def test_ping_only_after_idle():
    record = kept(last_used=5.0)
    assert checkout_verdict(record, 14.9, POLICY, is_closed=False, has_input=quiet)[0] == REUSE
    assert checkout_verdict(record, 15.0, POLICY, is_closed=False, has_input=quiet)[0] == PING


def test_ping_every_time_or_never():
    record = kept(last_used=5.0)
    always = POLICY.replace(ping_after_idle=0)
    never = POLICY.replace(ping_after_idle=None)
    assert checkout_verdict(record, 5.0, always, is_closed=False, has_input=quiet)[0] == PING
    assert checkout_verdict(record, 45.0, never, is_closed=False, has_input=quiet)[0] == REUSE


@pytest.mark.parametrize(
    ("now", "is_closed", "has_input", "expected"),
    [
        (6.0, True, must_not_be_called, (REPLACE, "closed")),
        (100.0, False, must_not_be_called, (REPLACE, "lifetime")),
        (60.0, False, must_not_be_called, (REPLACE, "idle")),
        (6.0, False, lambda: True, (REPLACE, "readable")),
        (20.0, False, lambda: True, (REPLACE, "readable")),  # readable beats a ping
    ],
)
def test_replace_reasons(now, is_closed, has_input, expected):
    record = kept(last_used=5.0)
    assert checkout_verdict(record, now, POLICY, is_closed=is_closed, has_input=has_input) == (
        expected
    )


def test_lifetime_counts_from_the_open_not_the_last_use():
    record = kept(opened_at=0.0, last_used=99.0)
    assert checkout_verdict(record, 100.0, POLICY, is_closed=False, has_input=quiet) == (
        REPLACE,
        "lifetime",
    )


def test_pending_input_on_real_sockets():
    ours, theirs = socket.socketpair()
    try:
        assert not has_pending_input(ours.fileno())
        theirs.sendall(b"E")  # a termination notice
        assert has_pending_input(ours.fileno())
        ours.recv(1)
        assert not has_pending_input(ours.fileno())
        theirs.close()  # EOF: the server went away
        assert has_pending_input(ours.fileno())
    finally:
        ours.close()


def never_called(conn) -> int:
    raise AssertionError("not due")


@pytest.fixture
def quiet_fd():
    """The descriptor of a healthy idle connection: a socket with nothing to read."""
    ours, theirs = socket.socketpair()
    yield ours.fileno()
    ours.close()
    theirs.close()


def checks(fd: int) -> dict[str, object]:
    return {"is_closed": lambda conn: False, "fileno": lambda conn: fd}


def test_judge_reuses_without_pinging(quiet_fd):
    record = kept(last_used=5.0)
    assert judge(record, 6.0, POLICY, "conn", **checks(quiet_fd), ping=never_called) is None


def test_judge_pings_when_due_and_counts_idle_from_then(quiet_fd):
    record = kept(last_used=5.0)
    pinged: list[str] = []
    assert judge(record, 20.0, POLICY, "conn", **checks(quiet_fd), ping=pinged.append) is None
    assert (pinged, record.last_used) == (["conn"], 20.0)


def test_judge_reports_a_failed_ping_and_replace_reasons(quiet_fd):
    def dead(conn) -> None:
        raise OSError("gone")

    record = kept(last_used=5.0)
    assert judge(record, 20.0, POLICY, "c", **checks(quiet_fd), ping=dead) == "ping-failed"
    assert judge(record, 100.0, POLICY, "c", **checks(quiet_fd), ping=never_called) == "lifetime"
    assert record.last_used == 5.0


def test_judge_async_awaits_the_ping(quiet_fd):
    record = kept(last_used=5.0)
    pinged: list[str] = []

    async def ping(conn) -> None:
        pinged.append(conn)

    judged = judge_async(record, 20.0, POLICY, "conn", **checks(quiet_fd), ping=ping)
    assert asyncio.run(judged) is None
    assert pinged == ["conn"]
