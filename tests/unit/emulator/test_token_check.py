"""DSQL token verification, against tokens from warmdb's signer and from botocore."""

from __future__ import annotations

import time

import pytest

from warmdb.auth.credentials import Credentials
from warmdb.auth.sigv4 import amz_timestamp, presign
from warmdb.auth.tokens import TokenSpec, sign_token
from warmdb.emulator.token_check import HostRule, TokenVerifier, resolves_to_loopback

NOW = 1_795_239_650.0
HOST = "local.dsql.us-east-1.on.aws"
KEYS = Credentials("AKIAEMULATORTEST0001", "emulator/secret+key0123456789abcdefghijk")
SESSION = Credentials("ASIAEMULATORTEST0002", "another/secret+key0123456789abcdefghijk", "FwoG=+/z")


def never_loopback(name: str) -> bool:
    return False


def verifier(time_scale: float = 1.0, now: float = NOW, resolver=never_loopback) -> TokenVerifier:
    return TokenVerifier(
        [KEYS, SESSION],
        region="us-east-1",
        hosts=HostRule([HOST], resolver=resolver),
        time_scale=time_scale,
        clock=lambda: now,
    )


def token(
    user: str = "admin",
    *,
    host: str = HOST,
    region: str = "us-east-1",
    keys: Credentials = KEYS,
    expires_in: int = 900,
    at: float = NOW,
) -> str:
    spec = TokenSpec(
        kind="dsql", host=host, port=5432, region=region, user=user, expires_in=expires_in
    )
    return sign_token(spec, keys, at)


def test_valid_admin_and_user_tokens():
    check = verifier().check
    assert check(token("admin"), "admin") is None
    assert check(token("app"), "app") is None


def test_session_token_credentials():
    assert verifier().check(token(keys=SESSION), "admin") is None
    other = Credentials(SESSION.access_key, SESSION.secret_key, "another-session")
    assert verifier().check(token(keys=other), "admin") == "session_token"


def test_botocore_token_is_accepted():
    botocore_session = pytest.importorskip("botocore.session")
    session = botocore_session.Session()
    session.set_credentials(KEYS.access_key, KEYS.secret_key)
    client = session.create_client("dsql", region_name="us-east-1")
    admin = client.generate_db_connect_admin_auth_token(HOST, "us-east-1")
    user = client.generate_db_connect_auth_token(HOST, "us-east-1")
    check = verifier(now=time.time()).check
    assert check(admin, "admin") is None
    assert check(user, "app") is None
    assert check(user, "admin") == "action"


@pytest.mark.parametrize(
    ("make", "user", "reason"),
    [
        (lambda: token("app"), "admin", "action"),
        (lambda: token("admin"), "app", "action"),
        (lambda: token(region="us-west-2"), "admin", "region"),
        (lambda: token(keys=Credentials("AKIAUNKNOWN000000000", "x" * 40)), "admin", "access_key"),
        (lambda: token(keys=Credentials(KEYS.access_key, "wrong" * 8)), "admin", "signature"),
        (lambda: token(at=NOW - 901), "admin", "expired"),
        (lambda: token(at=NOW + 301), "admin", "not_yet_valid"),
        (lambda: token(expires_in=604_801), "admin", "expires_too_long"),
        (lambda: token(host="abc.dsql.us-east-1.on.aws"), "admin", "host"),
        (lambda: "not a token", "admin", "malformed"),
        (lambda: token()[:-1] + ("0" if token()[-1] != "0" else "1"), "admin", "signature"),
        (lambda: token().replace("X-Amz-Expires=900", "X-Amz-Expires=9000"), "admin", "signature"),
        (lambda: token().replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA1"), "admin", "algorithm"),
    ],
)
def test_refused_tokens(make, user, reason):
    assert verifier().check(make(), user) == reason


def test_wrong_service_is_refused():
    stamp = amz_timestamp(NOW)
    rds_like = presign(
        host=HOST,
        port=None,
        service="rds-db",
        region="us-east-1",
        operation=[("Action", "DbConnectAdmin")],
        access_key=KEYS.access_key,
        secret_key=KEYS.secret_key,
        session_token=None,
        expires_in=900,
        timestamp=stamp,
    )
    assert verifier().check(rds_like, "admin") == "service"


def test_time_scale_shortens_token_lifetime():
    # 900 s of DSQL time at scale 60 is 15 real seconds.
    assert verifier(time_scale=60, now=NOW + 14).check(token(), "admin") is None
    assert verifier(time_scale=60, now=NOW + 16).check(token(), "admin") == "expired"


def test_maximum_lifetime_is_accepted():
    assert verifier(now=NOW + 604_000).check(token(expires_in=604_800), "admin") is None


@pytest.mark.parametrize(
    "host", ["localhost", "127.0.0.1", "127.8.9.10", "LOCAL.dsql.us-east-1.on.aws"]
)
def test_accepted_hosts(host):
    assert verifier().check(token(host=host), "admin") is None


def test_names_resolving_to_loopback_are_accepted_and_cached():
    seen = []

    def resolver(name: str) -> bool:
        seen.append(name)
        return name == "my-laptop.test"

    check = verifier(resolver=resolver).check
    assert check(token(host="my-laptop.test"), "admin") is None
    assert check(token(host="my-laptop.test"), "admin") is None
    assert check(token(host="elsewhere.test"), "admin") == "host"
    assert seen == ["my-laptop.test", "elsewhere.test"]


def test_resolves_to_loopback_on_address_literals():
    # Literals: getaddrinfo answers without DNS, so this stays a unit test.
    assert resolves_to_loopback("127.0.0.1")
    assert resolves_to_loopback("::1")
    assert not resolves_to_loopback("192.0.2.1")


def test_reason_never_contains_the_token():
    bad = token(keys=Credentials(KEYS.access_key, "wrong" * 8))
    reason = verifier().check(bad, "admin")
    assert reason is not None
    assert bad.split("X-Amz-Signature=")[1] not in reason


def test_temporary_credentials_token_refused_by_long_term_keys():
    # Signed with the right key pair plus a session token the emulator's keys do not have.
    with_session = Credentials(KEYS.access_key, KEYS.secret_key, "FwoGZXIvYXdzEJr//////////")
    assert verifier().check(token(keys=with_session), "admin") == "session_token"
    # And the other way round: keys with a session token refuse a token signed without it.
    without = Credentials(SESSION.access_key, SESSION.secret_key)
    assert verifier().check(token(keys=without), "admin") == "session_token"


# RDS (rds-db) tokens -----------------------------------------------------------------------

RDS_HOST = "local.rds.us-east-1.amazonaws.com"


def rds_verifier(port: int | None = 5432, now: float = NOW, time_scale: float = 1.0):
    return TokenVerifier(
        [KEYS, SESSION],
        region="us-east-1",
        hosts=HostRule([RDS_HOST], resolver=never_loopback),
        kind="rds",
        port=port,
        time_scale=time_scale,
        clock=lambda: now,
    )


def rds_token(
    user: str = "app",
    *,
    host: str = RDS_HOST,
    port: int = 5432,
    keys: Credentials = KEYS,
    at: float = NOW,
    expires_in: int = 900,
) -> str:
    spec = TokenSpec(
        kind="rds", host=host, port=port, region="us-east-1", user=user, expires_in=expires_in
    )
    return sign_token(spec, keys, at)


def test_rds_tokens_are_accepted():
    check = rds_verifier().check
    assert check(rds_token("app"), "app") is None
    assert check(rds_token("admin", keys=SESSION), "admin") is None
    assert rds_verifier(port=None).check(rds_token(port=3306), "app") is None


def test_botocore_rds_token_is_accepted():
    botocore_session = pytest.importorskip("botocore.session")
    session = botocore_session.Session()
    session.set_credentials(KEYS.access_key, KEYS.secret_key)
    client = session.create_client("rds", region_name="us-east-1")
    rds = client.generate_db_auth_token(RDS_HOST, 3306, "app", "us-east-1")
    check = rds_verifier(port=3306, now=time.time()).check
    assert check(rds, "app") is None
    assert check(rds, "other") == "db_user"


@pytest.mark.parametrize(
    ("make", "user", "reason"),
    [
        (lambda: rds_token("app"), "other", "db_user"),
        (lambda: rds_token(port=5433), "app", "port"),
        (lambda: rds_token(at=NOW - 901), "app", "expired"),
        (lambda: rds_token(expires_in=901), "app", "expires_too_long"),
        (lambda: rds_token(host="elsewhere.example.com"), "app", "host"),
        (lambda: token("app"), "app", "service"),
        (lambda: rds_token().replace("Action=connect", "Action=connecx"), "app", "action"),
        (lambda: rds_token(keys=Credentials(KEYS.access_key, "x" * 40)), "app", "signature"),
    ],
)
def test_refused_rds_tokens(make, user, reason):
    assert rds_verifier().check(make(), user) == reason


def test_dsql_verifier_refuses_rds_tokens():
    assert verifier().check(rds_token("admin"), "admin") == "service"


def test_rds_token_without_port_is_refused():
    stamp = amz_timestamp(NOW)
    no_port = presign(
        host=RDS_HOST,
        port=None,
        service="rds-db",
        region="us-east-1",
        operation=[("Action", "connect"), ("DBUser", "app")],
        access_key=KEYS.access_key,
        secret_key=KEYS.secret_key,
        session_token=None,
        expires_in=900,
        timestamp=stamp,
    )
    assert rds_verifier().check(no_port, "app") == "port"


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="kind"):
        TokenVerifier([KEYS], region="us-east-1", hosts=HostRule([HOST]), kind="mysql")
