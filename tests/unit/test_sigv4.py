"""The in-house presigner produces exactly botocore's tokens."""

from __future__ import annotations

import datetime
import functools
from unittest import mock
from urllib.parse import quote

import botocore.session
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import ACCESS_KEY, FROZEN_TIME, SECRET_KEY, SESSION_TOKEN
from warmdb.auth import sigv4
from warmdb.auth.credentials import Credentials
from warmdb.auth.tokens import TokenSpec, sign_token

FROZEN_DATETIME = datetime.datetime.fromtimestamp(FROZEN_TIME, datetime.timezone.utc).replace(
    tzinfo=None
)


@functools.cache
def botocore_client(service: str, region: str, session_token: str | None):
    session = botocore.session.Session()
    session.set_credentials(ACCESS_KEY, SECRET_KEY, session_token)
    return session.create_client(service, region_name=region)


def botocore_token(kind: str, host: str, port: int, user: str, region: str, expires: int, tok):
    with mock.patch("botocore.auth.get_current_datetime", return_value=FROZEN_DATETIME):
        if kind == "rds":
            return botocore_client("rds", region, tok).generate_db_auth_token(
                host, port, user, region
            )
        client = botocore_client("dsql", region, tok)
        if user == "admin":
            return client.generate_db_connect_admin_auth_token(host, region, expires)
        return client.generate_db_connect_auth_token(host, region, expires)


def warmdb_token(kind: str, host: str, port: int, user: str, region: str, expires: int, tok):
    spec = TokenSpec(kind=kind, host=host, port=port, region=region, user=user, expires_in=expires)
    return sign_token(spec, Credentials(ACCESS_KEY, SECRET_KEY, tok), FROZEN_TIME)


CASES = [
    ("dsql", "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws", 5432, "admin", "us-east-1", 900),
    ("dsql", "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws", 5432, "app", "us-east-1", 3600),
    ("dsql", "cluster.dsql-gamma.eu-west-2.on.aws", 5432, "admin", "eu-west-2", 604_800),
    ("dsql", "Mixed.Case.DSQL.us-east-2.on.aws", 5432, "reader", "us-east-2", 1),
    ("rds", "db.cluster-abc.us-east-1.rds.amazonaws.com", 5432, "iam_user", "us-east-1", 900),
    ("rds", "db.abc.ap-south-1.rds.amazonaws.com", 3306, "iam user+tag@x/y", "ap-south-1", 900),
    ("rds", "127.0.0.1", 443, "jane", "us-west-2", 900),
]


@pytest.mark.parametrize("session_token", [None, SESSION_TOKEN], ids=["long-term", "session"])
@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[3]}-{c[5]}" for c in CASES])
def test_tokens_equal_botocore_byte_for_byte(case, session_token):
    assert warmdb_token(*case, session_token) == botocore_token(*case, session_token)


@settings(max_examples=60, deadline=None)
@given(
    user=st.text(min_size=1, max_size=40).filter(lambda u: "\0" not in u),
    session_token=st.sampled_from([None, SESSION_TOKEN, "sp ace/plus+eq=uni\u00e9"]),
    expires=st.integers(min_value=1, max_value=604_800),
)
def test_tokens_equal_botocore_for_any_user_and_session_token(user, session_token, expires):
    for kind in ("dsql", "rds"):
        case = (kind, "db.example.us-east-1.on.aws", 5432, user, "us-east-1", expires)
        if kind == "rds":
            case = (kind, "db.x.us-east-1.rds.amazonaws.com", 5432, user, "us-east-1", 900)
        assert warmdb_token(*case, session_token) == botocore_token(*case, session_token)


@given(st.text())
def test_encoding_equals_urllib_quote(text):
    assert sigv4._encode(text) == quote(text.encode("utf-8"), safe="-_.~")


def test_known_vector():
    # Computed once with botocore 1.43 (generate_db_connect_admin_auth_token) at FROZEN_TIME;
    # pins the output even where botocore is not installed.
    token = warmdb_token(*CASES[0], None)
    assert token == (
        "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws/?Action=DbConnectAdmin"
        "&X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20261121%2Fus-east-1%2Fdsql%2Faws4_request"
        "&X-Amz-Date=20261121T054050Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=" + token.rsplit("=", 1)[1]
    )
    assert token == botocore_token(*CASES[0], None)


def test_parse_token_round_trip_and_signature_check():
    token = warmdb_token(*CASES[1], SESSION_TOKEN)
    parsed = sigv4.parse_token(token)
    assert parsed.netloc == CASES[1][1]
    assert parsed.param("X-Amz-Security-Token") == SESSION_TOKEN
    assert parsed.param("Action") == "DbConnect"
    recomputed = sigv4.signature(
        host_header=parsed.netloc.lower(),
        query=parsed.query,
        secret_key=SECRET_KEY,
        region="us-east-1",
        service="dsql",
        timestamp=parsed.param("X-Amz-Date"),
    )
    assert recomputed == parsed.signature
    assert SESSION_TOKEN not in repr(parsed)
    assert parsed.signature not in repr(parsed)


@pytest.mark.parametrize(
    "text",
    ["", "host-only", "host/?", "/?Action=x", "h/?Action", "h/?Action=x", "h/?a=1&X-Amz-Signature"],
)
def test_parse_token_rejects_malformed_text_without_echoing_it(text):
    with pytest.raises(ValueError, match="not a presigned token") as caught:
        sigv4.parse_token(text)
    assert text not in str(caught.value) or not text


def test_amz_timestamp():
    assert sigv4.amz_timestamp(FROZEN_TIME) == "20261121T054050Z"
    assert sigv4.amz_timestamp(0) == "19700101T000000Z"
