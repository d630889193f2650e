"""The checkout decision (pure but for a socket poll) and the no-round-trip liveness check."""

from __future__ import annotations

import asyncio
import math
import socket

import pytest

from warmdb.policy import Policy
from warmdb.warm import (
    PING,
    REUSE,
    KeptConnection,
    decide,
    has_pending_input,
    judge,
    judge_async,
)

POLICY = Policy(max_lifetime=100.0, lifetime_jitter=0.1, max_idle=50.0, ping_after_idle=10.0)


def kept(opened_at: float = 0.0, last_used: float = 0.0, fraction: float = 0.0) -> KeptConnection:
    record = KeptConnection(opened_at, POLICY, fraction)
    record.last_used = last_used
    return record


class Sockets:
    """A healthy idle socket and one the server sent a termination notice on."""

    def __init__(self) -> None:
        self.pairs = [socket.socketpair(), socket.socketpair()]
        self.pairs[1][1].sendall(b"E")
        self.quiet = self.pairs[0][0].fileno()
        self.readable = self.pairs[1][0].fileno()

    def close(self) -> None:
        for pair in self.pairs:
            for sock in pair:
                sock.close()


@pytest.fixture(scope="module")
def sockets():
    found = Sockets()
    yield found
    found.close()


class FakeAdapter:
    """The two probes decide() takes from an adapter."""

    def __init__(self, *, closed: bool = False, fd: int | None = None) -> None:
        self.closed = closed
        self.fd = fd

    def is_closed(self, conn: object) -> bool:
        return self.closed

    def fileno(self, conn: object) -> int:
        if self.fd is None:
            raise AssertionError("the socket was polled although a cheaper check decided")
        return self.fd


NOT_POLLED = FakeAdapter()


def test_jitter_shortens_the_lifetime_by_up_to_the_fraction():
    assert kept(fraction=0.0).expires_at == 100.0
    assert kept(fraction=0.5).expires_at == pytest.approx(95.0)
    assert kept(fraction=0.999).expires_at == pytest.approx(90.01)
    assert KeptConnection(0.0, Policy(max_lifetime=None), 0.5).expires_at == math.inf


def test_hot_path_reuses_without_a_poll_or_ping():
    assert decide(kept(last_used=5.0), 5.2, POLICY, NOT_POLLED, "conn") == REUSE


def test_ping_only_after_idle(sockets):
    record = kept(last_used=5.0)
    adapter = FakeAdapter(fd=sockets.quiet)
    assert decide(record, 14.9, POLICY, adapter, "conn") == REUSE
    assert decide(record, 15.0, POLICY, adapter, "conn") == PING


def test_ping_every_time_or_never(sockets):
    record = kept(last_used=5.0)
    adapter = FakeAdapter(fd=sockets.quiet)
    always = POLICY.replace(ping_after_idle=0)
    never = POLICY.replace(ping_after_idle=None)
    assert decide(record, 5.0, always, adapter, "conn") == PING
    assert decide(record, 45.0, never, adapter, "conn") == REUSE


@pytest.mark.parametrize(
    ("now", "closed", "readable", "expected"),
    [
        (6.0, True, None, "closed"),
        (100.0, False, None, "lifetime"),
        (60.0, False, None, "idle"),
        (6.0, False, True, "readable"),
        (20.0, False, True, "readable"),  # readable beats a ping
    ],
)
def test_replace_reasons(sockets, now, closed, readable, expected):
    fd = None if readable is None else sockets.readable
    assert decide(kept(last_used=5.0), now, POLICY, FakeAdapter(closed=closed, fd=fd), "c") == (
        expected
    )


def test_socket_polled_only_after_poll_after_idle(sockets):
    record = kept(last_used=5.0)
    # Given back 0.4 s ago: inside the default 0.5 s window, the socket is not polled.
    assert decide(record, 5.4, POLICY, NOT_POLLED, "conn") == REUSE
    assert decide(record, 5.5, POLICY, FakeAdapter(fd=sockets.readable), "conn") == "readable"


def test_socket_polled_at_every_checkout_or_never(sockets):
    record = kept(last_used=5.0)
    always = POLICY.replace(poll_after_idle=0)
    never = POLICY.replace(poll_after_idle=None)
    assert decide(record, 5.0, always, FakeAdapter(fd=sockets.readable), "c") == "readable"
    assert decide(record, 9.0, never, NOT_POLLED, "c") == REUSE


def test_given_back_records_the_return_or_says_why_to_discard():
    record = kept(last_used=5.0)
    assert record.given_back(7.0, closed=False) is None
    assert record.last_used == 7.0
    assert record.given_back(8.0, closed=True) == "broken"
    assert record.given_back(100.0, closed=False) == "lifetime"
    assert record.last_used == 7.0  # a discarded connection is not "used" again


def test_lifetime_counts_from_the_open_not_the_last_use():
    assert decide(kept(opened_at=0.0, last_used=99.0), 100.0, POLICY, NOT_POLLED, "c") == (
        "lifetime"
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


def never_called(conn) -> None:
    raise AssertionError("not due")


def test_judge_reuses_without_pinging(sockets):
    adapter = FakeAdapter(fd=sockets.quiet)
    assert judge(kept(last_used=5.0), 6.0, POLICY, adapter, "conn", never_called) is None


def test_judge_pings_when_due_and_counts_idle_from_then(sockets):
    record = kept(last_used=5.0)
    pinged: list[str] = []
    assert judge(record, 20.0, POLICY, FakeAdapter(fd=sockets.quiet), "conn", pinged.append) is None
    assert (pinged, record.last_used) == (["conn"], 20.0)


def test_judge_reports_a_failed_ping_and_replace_reasons(sockets):
    def dead(conn) -> None:
        raise OSError("gone")

    record = kept(last_used=5.0)
    adapter = FakeAdapter(fd=sockets.quiet)
    assert judge(record, 20.0, POLICY, adapter, "c", dead) == "ping-failed"
    assert judge(record, 100.0, POLICY, adapter, "c", never_called) == "lifetime"
    assert record.last_used == 5.0


def test_judge_async_awaits_the_ping(sockets):
    record = kept(last_used=5.0)
    pinged: list[str] = []

    async def ping(conn) -> None:
        pinged.append(conn)

    judged = judge_async(record, 20.0, POLICY, FakeAdapter(fd=sockets.quiet), "conn", ping)
    assert asyncio.run(judged) is None
    assert pinged == ["conn"]
