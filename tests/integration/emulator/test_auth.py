"""Token checks and TLS, end to end: each bad login is refused with DSQL's code and message."""

from __future__ import annotations

import logging
import time

import psycopg
import pytest

from warmdb.auth.credentials import Credentials
from warmdb.auth.tokens import TokenSpec, sign_token

from .conftest import emulator, login, open_socket


def make_token(
    dsql,
    *,
    user="admin",
    action_user=None,
    region=None,
    keys=None,
    at=None,
    host=None,
    expires_in=900,
):
    spec = TokenSpec(
        kind="dsql",
        host=host or dsql.hostname,
        port=dsql.port,
        region=region or dsql.region,
        user=action_user or user,
        expires_in=expires_in,
    )
    return sign_token(spec, keys or dsql.credentials, time.time() if at is None else at)


def tampered(token: str) -> str:
    last = token[-1]
    return token[:-1] + ("0" if last != "0" else "1")


IAM_FAILED = 'IAM authentication failed for user "admin"'


@pytest.mark.parametrize(
    ("name", "make", "reason"),
    [
        ("tampered signature", lambda d: tampered(make_token(d)), "signature"),
        ("expired", lambda d: make_token(d, at=time.time() - 901), "expired"),
        ("wrong action", lambda d: make_token(d, action_user="app"), "action"),
        ("wrong region", lambda d: make_token(d, region="eu-west-1"), "region"),
        (
            "wrong key",
            lambda d: make_token(d, keys=Credentials("AKIAWRONGWRONGWRONG0", "s" * 40)),
            "access_key",
        ),
        (
            "wrong secret",
            lambda d: make_token(d, keys=Credentials(d.credentials.access_key, "s" * 40)),
            "signature",
        ),
        ("foreign host", lambda d: make_token(d, host="abc.dsql.us-east-1.on.aws"), "host"),
        ("lifetime over 7 days", lambda d: make_token(d, expires_in=604_801), "expires_too_long"),
        ("not a token", lambda d: "hunter2", "malformed"),
    ],
)
def test_bad_tokens_are_refused(dsql_emulator, caplog, name, make, reason):
    before = dsql_emulator.stats.auth_failures.get(reason, 0)
    token = make(dsql_emulator)
    with caplog.at_level(logging.INFO, logger="warmdb.emulator"):
        fields = login(dsql_emulator, token)
    assert fields["C"] == "28000"
    assert fields["S"] == "FATAL"
    assert fields["M"] == IAM_FAILED
    assert dsql_emulator.stats.auth_failures[reason] == before + 1
    # The reason is logged; the token never is.
    assert reason in caplog.text
    assert token not in caplog.text
    assert token.rsplit("=", 1)[-1] not in caplog.text


def test_psycopg_sees_iam_failure(dsql_emulator):
    params = dsql_emulator.connection_params()
    params["password"] = tampered(params["password"])
    with pytest.raises(psycopg.OperationalError, match=IAM_FAILED):
        psycopg.connect(**params)


def test_plaintext_startup_is_refused(dsql_emulator):
    before = dsql_emulator.stats.rejected.get("no_tls", 0)
    fields = login(dsql_emulator, make_token(dsql_emulator), tls=False)
    assert fields["C"] == "28000"
    assert "TLS is required" in fields["M"]
    assert dsql_emulator.stats.rejected["no_tls"] == before + 1


def test_psycopg_sslmode_disable_is_refused(dsql_emulator):
    params = dsql_emulator.connection_params()
    params["sslmode"] = "disable"
    with pytest.raises(psycopg.OperationalError, match="TLS is required"):
        psycopg.connect(**params)


def test_gssenc_request_is_declined_then_tls_works(dsql_emulator):
    assert login(dsql_emulator, make_token(dsql_emulator), gssenc_first=True) == {}


def test_libpq_gssencmode_prefer_falls_back(dsql_emulator):
    with psycopg.connect(**dsql_emulator.connection_params(), gssencmode="prefer") as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_token_expiry_follows_time_scale():
    # At time scale 900 a 900-second token lasts one real second.
    with emulator(time_scale=900) as dsql:
        # X-Amz-Date has whole seconds: sign just after one begins, for a full second.
        time.sleep(1.02 - time.time() % 1)
        token = dsql.token()
        assert login(dsql, token) == {}
        time.sleep(1.2)
        fields = login(dsql, token)
        assert fields["C"] == "28000"
        assert dsql.stats.auth_failures == {"expired": 1}


def test_token_time_scale_keeps_tokens_on_real_time():
    # Connections last one real second here; tokens keep their real two-second lifetime.
    with emulator(time_scale=3600, token_time_scale=1) as dsql:
        stale = make_token(dsql, at=time.time() - 3, expires_in=2)
        assert login(dsql, stale)["C"] == "28000"
        assert login(dsql, make_token(dsql, expires_in=2)) == {}
        assert dsql.stats.auth_failures == {"expired": 1}


def test_environment_credentials_can_be_accepted_too():
    mine = Credentials("AKIAMYOWNKEY00000001", "my/own/secret/key/0123456789abcdefghijklm")
    with emulator(accept=[mine]) as dsql:
        assert login(dsql, make_token(dsql, keys=mine)) == {}
        assert login(dsql, make_token(dsql)) == {}


def test_session_token_credentials():
    keys = Credentials("ASIASESSIONKEY000001", "session/secret/key/0123456789abcdefghijk", "IQo=/+")
    with emulator(credentials=keys) as dsql:
        assert login(dsql, dsql.token()) == {}
        other = Credentials(keys.access_key, keys.secret_key, "another")
        assert login(dsql, make_token(dsql, keys=other))["C"] == "28000"


def test_cancel_request_for_unknown_key_is_ignored(dsql_emulator):
    with open_socket(dsql_emulator, tls=False) as sock:
        sock.sendall(bytes.fromhex("0000001004d2162e0000000100000002"))
        assert sock.recv(1) == b""
    assert login(dsql_emulator, make_token(dsql_emulator)) == {}
