"""RDS IAM tokens, and Lambda-sized tokens (temporary credentials) through PgBouncer's auth file."""

from __future__ import annotations

import time

from tests.integration.sidecar.conftest import (
    TOKEN_SCALE,
    client,
    emulator,
    sidecar_for,
    wait_for,
)
from tests.integration.sidecar.test_refresh import reconnect_servers


def test_rds_tokens_are_refreshed(pgbouncer_binary):
    with (
        emulator(engine="rds-postgres", token_time_scale=TOKEN_SCALE) as rds,
        sidecar_for(
            rds, pgbouncer=pgbouncer_binary, auth="rds", user="admin", token_duration=None
        ) as sidecar,
    ):
        assert sidecar.endpoint.sslmode == "require"
        assert sidecar.plan.token_duration == 900
        first = sidecar.state.token_issued_at
        wait_for(lambda: sidecar.refreshes >= 2, timeout=15)
        wait_for(lambda: time.time() > first + 900 / TOKEN_SCALE + 0.1, timeout=10)
        accepted = rds.stats.accepted
        reconnect_servers(sidecar)
        with client(sidecar) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert rds.stats.accepted > accepted
        assert rds.stats.auth_failures == {}


def test_a_token_signed_with_session_credentials_logs_in(pgbouncer_binary):
    with emulator(temporary_credentials=True) as dsql:
        assert dsql.credentials.token
        with sidecar_for(dsql, pgbouncer=pgbouncer_binary, time_scale=1.0) as sidecar:
            token = (sidecar.directory / "auth.txt").read_text().split('"')[3]
            assert "X-Amz-Security-Token" in token
            with client(sidecar) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
            assert dsql.stats.auth_failures == {}
            assert len(token) <= sidecar.caps.password_limit
