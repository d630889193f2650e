"""connect() fronts resolve an endpoint once per distinct call, not once per call."""

from __future__ import annotations

import pytest

from warmdb import ConfigurationError
from warmdb.policy import DEFAULT
from warmdb.psycopg2 import Psycopg2Adapter

HOST = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws"


@pytest.fixture(autouse=True)
def credentials(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")


def test_the_same_call_reuses_its_plan():
    first = Psycopg2Adapter().plan(None, {"host": HOST}, reuse=True)
    assert Psycopg2Adapter().plan(None, {"host": HOST}, reuse=True) is first
    # Keepers, pools and engines get a plan of their own.
    assert Psycopg2Adapter().plan(None, {"host": HOST}) is not first


def test_a_different_call_option_or_environment_gets_its_own_plan(monkeypatch):
    first = Psycopg2Adapter().plan(None, {"host": HOST}, reuse=True)
    assert Psycopg2Adapter().plan(None, {"host": HOST, "user": "app"}, reuse=True) is not first
    assert Psycopg2Adapter().plan(None, {"host": HOST}, None, DEFAULT, reuse=True) is not first
    options = {"cursor_factory": object}
    assert Psycopg2Adapter(**options).plan(None, {"host": HOST}, reuse=True) is not first
    # What resolution reads from the environment is part of what a plan is made of.
    monkeypatch.setenv("PGDATABASE", "other")
    changed = Psycopg2Adapter().plan(None, {"host": HOST}, reuse=True)
    assert changed is not first
    # Resolved anew, so a sidecar set since then is seen (here: its state file is missing).
    monkeypatch.setenv("WARMDB_SIDECAR", "/nonexistent/sidecar.json")
    with pytest.raises(ConfigurationError, match="sidecar state file"):
        Psycopg2Adapter().plan(None, {"host": HOST}, reuse=True)


def test_unhashable_arguments_are_resolved_each_time():
    # A list cannot be part of a key: such a call is resolved each time, and still works.
    kwargs = {"host": HOST, "options": ["-c", "x=1"]}
    assert Psycopg2Adapter().plan(None, kwargs, reuse=True) is not (
        Psycopg2Adapter().plan(None, kwargs, reuse=True)
    )
