"""Tokens, secret keys, session tokens and signatures never reach logs, reprs or error texts."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import traceback
from urllib.parse import quote

import pytest

import warmdb
from tests.conftest import SECRET_KEY, SESSION_TOKEN
from tests.integration.drivers import DRIVERS, connect_and_query
from tests.integration.test_connect import REGION, token_for
from warmdb._connect import ConnectPlan
from warmdb.auth.credentials import Credentials, from_environment
from warmdb.policy import DSQL
from warmdb.psycopg2 import Psycopg2Adapter

NO_RETRY = DSQL.replace(retry_timeout=0)


def forbidden_strings(token: str) -> list[str]:
    signature = token.rsplit("X-Amz-Signature=", 1)[1]
    return [token, signature, SECRET_KEY, SESSION_TOKEN, quote(SESSION_TOKEN, safe="")]


def all_text_of(error: BaseException) -> str:
    return "".join(traceback.format_exception(error)) + repr(error) + str(error)


@pytest.mark.parametrize("driver", DRIVERS)
def test_no_secret_in_logs_reprs_or_errors(
    driver, tls_server, make_role, aws_credentials, frozen_clock, caplog
):
    caplog.set_level(logging.DEBUG)  # every logger, every level, drivers' included
    good = token_for(tls_server, "leak", aws_credentials)
    make_role(good, "leak")
    texts: list[str] = []
    common = {"host": "127.0.0.1", "port": tls_server.port, "auth": "dsql", "region": REGION}

    # A succeeding connect.
    assert connect_and_query(driver, user="leak", **common)[0] == "leak"
    # A connect the server refuses: the token sent is not the role's password.
    wrong = make_role("not-the-token")
    with pytest.raises(warmdb.AuthenticationError) as refused:
        connect_and_query(driver, user=wrong, **common)
    texts.append(all_text_of(refused.value))
    # A connect that fails before the server answers (not retried: nothing listens there).
    with pytest.raises(warmdb.ConnectError) as unreachable:
        connect_and_query(driver, user="leak", **{**common, "port": 1}, policy=NO_RETRY)
    texts.append(all_text_of(unreachable.value))

    plan = ConnectPlan(None, {"user": "leak", **common}, adapter=Psycopg2Adapter())
    texts += [repr(plan), repr(plan.endpoint), repr(from_environment()), caplog.text]
    assert any("IAM token (DbConnect)" in record.getMessage() for record in caplog.records)
    for text in texts:
        for secret in forbidden_strings(good):
            assert secret not in text


def test_driver_text_with_the_token_is_redacted(aws_credentials, frozen_clock):
    """Should a driver ever echo the password, warmdb's error hides it and drops the cause."""
    from warmdb._connect import connect_error

    plan = ConnectPlan(
        None, {"host": "127.0.0.1", "auth": "dsql", "region": REGION}, adapter=Psycopg2Adapter()
    )
    token = plan.password()
    leaky = RuntimeError(f"bad password {token} for user admin")

    def fail_like_a_leaky_driver():
        try:
            raise leaky
        except RuntimeError as exc:
            error = connect_error(exc, plan, token)
        raise error

    with pytest.raises(warmdb.ConnectError) as caught:
        fail_like_a_leaky_driver()
    text = "".join(traceback.format_exception(caught.value))
    assert "<redacted>" in text
    for secret in forbidden_strings(token):
        assert secret not in text
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None


def test_credentials_repr_masks_everything():
    creds = Credentials("AKIAIOSFODNN7EXAMPLE", SECRET_KEY, SESSION_TOKEN)
    assert repr(creds) == "Credentials(access_key='AKIA****MPLE', secret_key=***)"


def test_cold_connect_imports_nothing_heavy(tls_server, make_role, aws_credentials):
    """A Lambda-style process (environment credentials) connects without boto3 or botocore."""
    name = make_role(None, "trusted_cold", trusted=True)
    script = textwrap.dedent(
        f"""
        import sys
        import warmdb.psycopg2 as db
        conn = db.connect(host="127.0.0.1", port={tls_server.port}, user="{name}",
                          auth="dsql", region="{REGION}", dbname="postgres")
        cur = conn.cursor()
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
        heavy = ("boto3", "botocore", "logging", "dataclasses", "typing", "random",
                 "asyncio", "contextlib", "sqlalchemy")
        loaded = sorted(m for m in heavy if m in sys.modules)
        print(",".join(loaded))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = result.stdout.strip().split(",")
    assert "boto3" not in loaded
    assert "botocore" not in loaded
    # The cheap path also avoids these (about 20 ms of imports together, see _log.py,
    # policy.random_fraction and the async connect's sleep).
    assert loaded == [""]
