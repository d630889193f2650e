"""warmdb._record: fields written once, as annotations; and the records built on it."""

from __future__ import annotations

import pickle

import pytest

from warmdb import events
from warmdb._record import Record
from warmdb.sidecar.schedule import RefreshPlan


class Point(Record):
    _shown = "x={x}, label={label!r}"

    x: float
    label: str | None


class Tagged(Point):
    tag: str


def test_fields_are_keyword_only_required_and_known():
    point = Point(x=1.5, label=None)
    assert (point.x, point.label) == (1.5, None)
    with pytest.raises(TypeError, match="missing keyword argument 'label'"):
        Point(x=1.5)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        Point(x=1.5, label="a", y=2)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Point(1.5, "a")  # type: ignore[misc]


def test_fields_are_slots():
    point = Point(x=1.0, label="a")
    assert not hasattr(point, "__dict__")
    with pytest.raises(AttributeError):
        point.y = 2  # type: ignore[attr-defined]
    point.x = 2.0  # fields stay assignable, as plain attributes
    assert point.x == 2.0


def test_a_subclass_adds_fields():
    tagged = Tagged(x=1.0, label="a", tag="t")
    assert Tagged._fields == ("x", "label", "tag")
    assert repr(tagged) == "Tagged(x=1.0, label='a')"


def test_repr_and_pickle():
    point = Point(x=0.25, label="a")
    assert repr(point) == "Point(x=0.25, label='a')"
    assert repr(pickle.loads(pickle.dumps(point))) == repr(point)


def test_event_and_plan_reprs_are_unchanged():
    connect = events.ConnectEvent(
        driver="psycopg",
        host="h",
        port=5432,
        user=None,
        attempts=2,
        seconds=0.0123456789,
        connect_seconds=0.01,
        waited_seconds=0.0,
    )
    assert repr(connect) == "ConnectEvent(driver='psycopg', host='h', attempts=2, seconds=0.012346)"
    retry = events.RetryEvent(
        driver="asyncpg",
        host="h",
        port=1,
        attempt=3,
        reason="rate-exceeded",
        sqlstate=None,
        delay=0.12345,
    )
    assert repr(retry) == (
        "RetryEvent(driver='asyncpg', host='h', attempt=3, reason='rate-exceeded', delay=0.123)"
    )
    recycle = events.RecycleEvent(driver="d", host="h", port=1, reason="idle", age=12.3456, idle=1)
    assert repr(recycle) == (
        "RecycleEvent(driver='d', host='h', reason='idle', age=12.346, idle=1.000)"
    )
    conflict = events.ConflictRetryEvent(attempt=1, delay=0.0123456, code="OC000")
    assert repr(conflict) == "ConflictRetryEvent(attempt=1, delay=0.0123, code='OC000')"
    plan = RefreshPlan(token_duration=900, refresh_interval=600.0, note=None)
    assert repr(plan) == "RefreshPlan(token_duration=900, refresh_interval=600.0)"
