"""Events: listeners, process-wide counts, and a failing listener never breaks a connect."""

from __future__ import annotations

import logging

import pytest

from warmdb import events


@pytest.fixture(autouse=True)
def clean_events():
    events.reset_counts()
    yield
    events.reset_counts()


def retry_event(reason: str = "rate-exceeded") -> events.RetryEvent:
    return events.RetryEvent(
        driver="psycopg",
        host="h",
        port=5432,
        attempt=1,
        reason=reason,
        sqlstate="53400",
        delay=0.05,
    )


class Recorder(events.Listener):
    def __init__(self) -> None:
        self.seen: list[object] = []

    def on_retry(self, event: events.RetryEvent) -> None:
        self.seen.append(event)

    def on_recycle(self, event: events.RecycleEvent) -> None:
        self.seen.append(event)


def test_listener_receives_events_until_removed():
    recorder = Recorder()
    events.add_listener(recorder)
    try:
        event = retry_event()
        events.emit_retry(event)
        assert recorder.seen == [event]
        # A method the listener does not override is the base class's no-op.
        events.emit_connect(
            events.ConnectEvent(
                driver="psycopg",
                host="h",
                port=5432,
                user="u",
                attempts=1,
                seconds=0.01,
                connect_seconds=0.01,
                waited_seconds=0.0,
            )
        )
    finally:
        events.remove_listener(recorder)
    events.emit_retry(retry_event())
    assert len(recorder.seen) == 1


def test_counts_by_reason():
    events.emit_retry(retry_event("rate-exceeded"))
    events.emit_retry(retry_event("rate-exceeded"))
    events.emit_retry(retry_event("refused"))
    events.emit_recycle(
        events.RecycleEvent(driver="asyncpg", host="h", port=1, reason="lifetime", age=1, idle=0)
    )
    assert events.counts() == {
        "retries": 3,
        "retries.rate-exceeded": 2,
        "retries.refused": 1,
        "recycles": 1,
        "recycles.lifetime": 1,
    }


def test_a_failing_listener_is_logged_and_skipped(caplog):
    class Broken(events.Listener):
        def on_retry(self, event: events.RetryEvent) -> None:
            raise RuntimeError("metrics backend down")

    recorder = Recorder()
    broken = Broken()
    events.add_listener(broken)
    events.add_listener(recorder)
    caplog.set_level(logging.WARNING, logger="warmdb.events")
    try:
        events.emit_retry(retry_event())
    finally:
        events.remove_listener(broken)
        events.remove_listener(recorder)
    assert len(recorder.seen) == 1  # the next listener still ran
    assert "metrics backend down" in caplog.text


def test_retries_are_logged_with_reason_and_sqlstate(caplog):
    caplog.set_level(logging.INFO, logger="warmdb.events")
    events.emit_retry(retry_event())
    assert "rate-exceeded, SQLSTATE 53400" in caplog.text
    assert "retrying in 0.050 s" in caplog.text


def test_submodules_are_attributes_imported_on_first_use():
    """Regression: ``import warmdb; warmdb.events.counts()`` raised AttributeError."""
    import subprocess
    import sys

    script = (
        "import sys, warmdb\n"
        "before = sorted(m for m in ('warmdb.events', 'warmdb.emulator') if m in sys.modules)\n"
        "warmdb.events.counts()\n"
        "assert warmdb.emulator.serve\n"
        "print(before)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
