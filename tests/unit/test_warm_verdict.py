"""The keeper's checkout decision (pure) and the no-round-trip liveness check."""

from __future__ import annotations

import asyncio
import itertools
import math
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
    assert KeptConnection(0.0, Policy(max_lifetime=None), 0.5).expires_at == math.inf


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


def test_socket_polled_only_after_poll_after_idle():
    record = kept(last_used=5.0)
    # Given back 0.4 s ago: inside the default 0.5 s window, the socket is not polled.
    assert checkout_verdict(record, 5.4, POLICY, is_closed=False, has_input=must_not_be_called) == (
        REUSE,
        None,
    )
    assert checkout_verdict(record, 5.5, POLICY, is_closed=False, has_input=lambda: True) == (
        REPLACE,
        "readable",
    )


def test_socket_polled_at_every_checkout_or_never():
    record = kept(last_used=5.0)
    always = POLICY.replace(poll_after_idle=0)
    never = POLICY.replace(poll_after_idle=None)
    assert checkout_verdict(record, 5.0, always, is_closed=False, has_input=lambda: True) == (
        REPLACE,
        "readable",
    )
    assert checkout_verdict(record, 9.0, never, is_closed=False, has_input=must_not_be_called) == (
        REUSE,
        None,
    )


def test_given_back_records_the_return_or_says_why_to_discard():
    record = kept(last_used=5.0)
    assert record.given_back(7.0, closed=False) is None
    assert record.last_used == 7.0
    assert record.given_back(8.0, closed=True) == "broken"
    assert record.given_back(100.0, closed=False) == "lifetime"
    assert record.last_used == 7.0  # a discarded connection is not "used" again


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


@pytest.fixture
def readable_fd():
    """The descriptor of a connection the server sent a termination notice on."""
    ours, theirs = socket.socketpair()
    theirs.sendall(b"E")
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


@pytest.mark.parametrize(
    "policy",
    [
        POLICY,
        POLICY.replace(poll_after_idle=0),
        POLICY.replace(ping_after_idle=None, poll_after_idle=None),
    ],
)
def test_judge_decides_as_checkout_verdict(policy, quiet_fd, readable_fd):
    """judge()'s inline fast path gives checkout_verdict's answer, state by state."""
    for now, closed, readable in itertools.product(
        [5.0, 5.3, 5.6, 14.0, 15.0, 54.0, 55.0, 99.0, 100.0], [False, True], [False, True]
    ):
        record = kept(last_used=5.0)
        verdict, reason = checkout_verdict(
            record, now, policy, is_closed=closed, has_input=lambda readable=readable: readable
        )
        expected = {REUSE: None, PING: None, REPLACE: reason}[verdict]
        pings: list[object] = []
        judged = judge(
            kept(last_used=5.0),
            now,
            policy,
            "conn",
            is_closed=lambda conn, closed=closed: closed,
            fileno=lambda conn, readable=readable: readable_fd if readable else quiet_fd,
            ping=pings.append,
        )
        assert judged == expected, (now, closed, readable)
        assert bool(pings) == (verdict == PING)
