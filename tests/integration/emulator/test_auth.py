"""Token checks and TLS, end to end: each bad login is refused with DSQL's code and message."""

from __future__ import annotations

import logging
import time

import psycopg
import pytest

from warmdb.auth.credentials import Credentials
from warmdb.auth.tokens import TokenSpec, sign_token

from .conftest import emulator, login, open_socket, wait_for


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


# SNI ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sni_dsql():
    """DSQL's SNI rule, whatever the session emulator's default."""
    with emulator(require_sni=True) as dsql:
        yield dsql


@pytest.mark.parametrize(
    "without_sni",
    [
        {"host": "127.0.0.1", "hostaddr": "127.0.0.1"},  # libpq sends no SNI for an address
        {"sslsni": "0"},
    ],
)
def test_client_without_sni_is_refused_as_dsql_does(sni_dsql, without_sni):
    params = {**sni_dsql.connection_params(user="admin"), **without_sni}
    before = sni_dsql.stats.rejected.get("no_sni", 0)
    with pytest.raises(psycopg.OperationalError, match="sni was not received"):
        psycopg.connect(**params)
    assert sni_dsql.stats.rejected["no_sni"] == before + 1


def test_client_with_sni_is_accepted(sni_dsql):
    with psycopg.connect(**sni_dsql.connection_params(user="admin")) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_asyncpg_by_address_sends_no_sni_and_is_refused(sni_dsql):
    import asyncio

    import asyncpg

    from .conftest import tls_context

    async def main() -> None:
        context = tls_context(sni_dsql)
        context.check_hostname = False
        await asyncpg.connect(
            host="127.0.0.1",
            port=sni_dsql.port,
            user="admin",
            password=sni_dsql.token(host="127.0.0.1"),
            ssl=context,
        )

    with pytest.raises(asyncpg.PostgresError, match="sni was not received") as caught:
        asyncio.run(main())
    assert caught.value.sqlstate == "08004"


def test_sni_check_can_be_turned_off():
    with emulator(require_sni=False) as dsql:
        params = {**dsql.connection_params(user="admin"), "sslsni": "0"}
        with psycopg.connect(**params) as conn:
            assert conn.execute("select 1").fetchone() == (1,)


# Temporary credentials ---------------------------------------------------------------------


def test_token_with_session_token_refused_by_long_term_keys(dsql_emulator):
    keys = dsql_emulator.credentials
    assert keys.token is None
    borrowed = Credentials(keys.access_key, keys.secret_key, "FwoGZXIvYXdzEJr//////////wEaDA==")
    token = make_token(dsql_emulator, keys=borrowed)
    params = dsql_emulator.connection_params(user="admin", token=False)
    with pytest.raises(psycopg.OperationalError, match="IAM authentication failed"):
        psycopg.connect(**params, password=token)


def test_temporary_credentials_like_lambdas():
    with emulator(temporary_credentials=True) as dsql:
        keys = dsql.credentials
        assert keys.access_key.startswith("ASIA")
        assert keys.token is not None
        assert len(keys.token) > 500
        params = dsql.connection_params(user="admin", token=False)
        with psycopg.connect(**params, password=dsql.token()) as conn:
            assert conn.execute("select current_user").fetchone() == ("admin",)
        # The same key pair without the session token is not enough.
        bare = Credentials(keys.access_key, keys.secret_key)
        with pytest.raises(psycopg.OperationalError, match="IAM authentication failed"):
            psycopg.connect(**params, password=make_token(dsql, keys=bare))
        assert dsql.stats.auth_failures["session_token"] == 1


# A login without a password ----------------------------------------------------------------


def test_login_without_password_is_an_auth_failure(dsql_emulator):
    before = dsql_emulator.stats
    params = dsql_emulator.connection_params(user="admin", token=False)
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        psycopg.connect(**params)
    wait_for(
        lambda: (
            dsql_emulator.stats.auth_failures.get("no_password", 0)
            == 1 + before.auth_failures.get("no_password", 0)
        )
    )
    after = dsql_emulator.stats
    assert after.rejected.get("auth", 0) == before.rejected.get("auth", 0) + 1
    assert after.rejected.get("protocol", 0) == before.rejected.get("protocol", 0)
