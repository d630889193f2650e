"""How many clients the emulator holds, and what the one too many is told (DSQL's words)."""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from .conftest import emulator

TOO_MANY = "Unable to accept connection, too many open connections."
CLIENTS = 1_000


def test_a_thousand_concurrent_clients_then_dsql_53300():
    with emulator() as dsql, contextlib.ExitStack() as held:
        params = dsql.connection_params(token=False)
        token = dsql.token()

        def open_one(_: int) -> psycopg.Connection:
            conn = psycopg.connect(**params, password=token, autocommit=True)
            conn.execute("select 1")
            return conn

        with ThreadPoolExecutor(max_workers=8) as pool:
            for conn in pool.map(open_one, range(CLIENTS)):
                held.enter_context(conn)
        assert dsql.stats.current == CLIENTS
        with pytest.raises(psycopg.OperationalError) as caught:
            psycopg.connect(**params, password=token)
        assert TOO_MANY in str(caught.value)
        assert "sorry" not in str(caught.value)
        assert dsql.stats.rejected == {"max_connections": 1}


def test_a_full_upstream_answers_with_dsqls_text_not_postgresqls():
    with emulator(upstream_connections=2) as dsql, contextlib.ExitStack() as held:
        # Fill every upstream slot behind the emulator's back.
        direct = dsql.upstream.libpq_params()
        with pytest.raises(psycopg.OperationalError, match="sorry, too many clients"):  # noqa: PT012
            while True:
                held.enter_context(psycopg.connect(**direct))
        with pytest.raises(psycopg.OperationalError) as caught:
            psycopg.connect(**dsql.connection_params())
        assert TOO_MANY in str(caught.value)
        assert "sorry" not in str(caught.value)
        assert dsql.stats.rejected == {"max_connections": 1}
