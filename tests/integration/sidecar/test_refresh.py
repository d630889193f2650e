"""Tokens kept fresh: clients keep working across refreshes; new server logins use new tokens."""

from __future__ import annotations

import threading
import time

import psycopg

from tests.integration.sidecar.conftest import (
    TOKEN_SCALE,
    client,
    emulator,
    sidecar_for,
    wait_for,
)


def reconnect_servers(sidecar) -> None:
    """Close every server connection once released: the next query logs in anew."""
    state = sidecar.state
    with psycopg.connect(
        host=state.host,
        port=state.port,
        user=state.user,
        password=state.password(),
        dbname="pgbouncer",
        autocommit=True,
    ) as console:
        console.execute(b"RECONNECT")


def test_five_refreshes_without_a_failed_login(pgbouncer_binary):
    with (
        emulator(token_time_scale=TOKEN_SCALE) as dsql,
        sidecar_for(dsql, pgbouncer=pgbouncer_binary) as sidecar,
    ):
        errors: list[BaseException] = []
        done = threading.Event()
        requests = [0]

        def load() -> None:
            # A client connecting and querying all along, as a function would.
            while not done.is_set():
                try:
                    with client(sidecar) as conn:
                        conn.execute("SELECT now()").fetchone()
                    requests[0] += 1
                except psycopg.Error as exc:
                    errors.append(exc)
                time.sleep(0.02)

        worker = threading.Thread(target=load)
        worker.start()
        try:
            issued = [sidecar.state.token_issued_at]
            for refresh in range(1, 6):
                wait_for(lambda n=refresh: sidecar.refreshes >= n, timeout=10)
                state = sidecar.state
                assert state.token_issued_at > issued[-1]
                issued.append(state.token_issued_at)
                # Past the previous token's expiry, a new server login can only use the new
                # token (and the emulator refuses an expired one).
                previous_expiry = issued[-2] + 900 / TOKEN_SCALE
                wait_for(lambda t=previous_expiry: time.time() > t + 0.1, timeout=10)
                accepted = dsql.stats.accepted
                reconnect_servers(sidecar)
                with client(sidecar) as conn:
                    assert conn.execute("SELECT 1").fetchone() == (1,)
                assert dsql.stats.accepted > accepted
        finally:
            done.set()
            worker.join()
        stats = dsql.stats
        assert errors == []
        assert requests[0] > 20
        assert stats.auth_failures == {}
        assert stats.rejected == {}
        assert sidecar.refreshes >= 5


def test_without_refresh_a_new_server_login_fails(pgbouncer_binary):
    """The control: the same check fails when the sidecar does not refresh."""
    with (
        emulator(token_time_scale=TOKEN_SCALE) as dsql,
        sidecar_for(
            dsql, pgbouncer=pgbouncer_binary, time_scale=1.0, settings={"query_wait_timeout": 2}
        ) as sidecar,
    ):
        with client(sidecar) as conn:
            conn.execute("SELECT 1")
        expiry = sidecar.state.token_issued_at + 900 / TOKEN_SCALE
        wait_for(lambda: time.time() > expiry + 0.1, timeout=10)
        reconnect_servers(sidecar)
        failed = False
        try:
            with client(sidecar) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            failed = True
        assert failed
        assert dsql.stats.auth_failures.get("expired", 0) >= 1
        assert sidecar.refreshes == 0


def test_state_file_follows_each_refresh(sidecar):
    from warmdb.sidecar.state import read_state

    first = read_state(sidecar.state_path)
    wait_for(lambda: sidecar.refreshes >= 1, timeout=10)
    second = read_state(sidecar.state_path)
    assert second.token_issued_at > first.token_issued_at
    assert second.token_expires_at == second.token_issued_at + 900 / TOKEN_SCALE


def test_a_failed_refresh_is_retried_before_the_token_expires(pgbouncer_binary):
    with emulator(token_time_scale=TOKEN_SCALE) as dsql:
        calls = [0]

        def flaky_credentials():
            calls[0] += 1
            if calls[0] == 2:  # the first refresh
                from warmdb.errors import CredentialsError

                raise CredentialsError("the credential endpoint timed out")
            return dsql.credentials

        with sidecar_for(
            dsql, pgbouncer=pgbouncer_binary, credentials=flaky_credentials
        ) as sidecar:
            issued = sidecar.state.token_issued_at
            wait_for(lambda: sidecar.refreshes >= 1, timeout=10)
            assert calls[0] >= 3
            # The retry came well before the first token expired.
            assert sidecar.state.token_issued_at < issued + 900 / TOKEN_SCALE
            wait_for(lambda: time.time() > issued + 900 / TOKEN_SCALE + 0.1, timeout=10)
            reconnect_servers(sidecar)
            with client(sidecar) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
            assert dsql.stats.auth_failures == {}


def test_no_secret_in_the_log_or_the_state(sidecar):
    wait_for(lambda: sidecar.refreshes >= 1, timeout=10)
    with client(sidecar) as conn:
        conn.execute("SELECT 1")
    token = (sidecar.directory / "auth.txt").read_text().split('"')[3]
    password = sidecar.state.password()
    for name in ("pgbouncer.log", "state.json", "pgbouncer.ini"):
        text = (sidecar.directory / name).read_text()
        assert token not in text, name
        assert "X-Amz-Signature" not in text, name
        assert password not in text, name
    assert token not in repr(sidecar.describe())
