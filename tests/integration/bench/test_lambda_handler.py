"""examples/lambda-bench/src/handler.py, run as Lambda would, against the DSQL emulator.

The handler module is imported fresh (its module-level keeper is the cold start), then
invoked twice: the first invocation is cold (its first checkout connects), the second warm
(it reuses the connection). Lambda's runtime is the test double here; the database is real.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.integration.bench.conftest import credentials_environment
from warmdb.emulator.service import Emulator

HANDLER = Path(__file__).resolve().parents[3] / "examples" / "lambda-bench" / "src" / "handler.py"


@pytest.fixture
def handler(monkeypatch):
    with Emulator(temporary_credentials=True) as dsql:
        credentials_environment(monkeypatch, dsql.credentials)
        monkeypatch.setenv("DSQL_ENDPOINT", "localhost")
        monkeypatch.setenv("DSQL_REGION", dsql.region)
        monkeypatch.setenv("BENCH_CONNECT_ARGS", json.dumps({"port": dsql.port, "auth": "dsql"}))
        spec = importlib.util.spec_from_file_location("lambda_bench_handler", HANDLER)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        try:
            yield module
        finally:
            module.KEEPER.close()


def test_handler_cold_then_warm(handler, capsys):
    event = {"iterations": 3, "drivers": ["psycopg2"], "patterns": ["raw", "connect", "warm"]}
    cold = handler.lambda_handler(event, None)
    kept = handler.KEEPER._conn
    warm = handler.lambda_handler(event, None)
    assert cold["lambda"]["cold"] is True
    assert warm["lambda"]["cold"] is False
    assert cold["lambda"]["init_ms"] > 0
    assert warm["lambda"]["first_connect_ms"] > 0
    # The cold invocation's first checkout connects; the warm one reuses that connection
    # (checked by identity: its timing is only reported, a loaded machine can invert it).
    assert kept is not None
    assert handler.KEEPER._conn is kept
    assert not kept.closed
    patterns = {c["pattern"] for c in warm["cells"]}
    assert patterns == {"raw", "connect", "warm"}
    for cell in warm["cells"]:
        assert cell["connect"]["n"] == 3
        assert cell["connect"]["min_ms"] > 0
    assert "| psycopg2: pattern" in capsys.readouterr().out
