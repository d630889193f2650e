"""Credential sources: environment fast path, botocore chain, custom provider, errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ACCESS_KEY, SECRET_KEY, SESSION_TOKEN
from warmdb.auth.credentials import Credentials, credentials_source, from_environment
from warmdb.errors import CredentialsError


def test_environment_fast_path(aws_credentials):
    assert credentials_source()() == Credentials(ACCESS_KEY, SECRET_KEY, SESSION_TOKEN)


def test_environment_is_read_on_every_call(aws_credentials, monkeypatch):
    source = credentials_source()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAROTATEDROTATED12")
    assert source().access_key == "AKIAROTATEDROTATED12"


def test_no_environment_credentials():
    assert from_environment() is None


def test_profile_goes_through_botocore(tmp_path, monkeypatch, aws_credentials):
    shared = tmp_path / "credentials"
    shared.write_text("[dev]\naws_access_key_id=AKIAPROFILEPROFILE12\naws_secret_access_key=p\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(shared))
    creds = credentials_source(profile="dev")()
    assert (creds.access_key, creds.secret_key, creds.token) == ("AKIAPROFILEPROFILE12", "p", None)


def test_default_chain_falls_back_to_botocore(tmp_path, monkeypatch):
    shared = tmp_path / "credentials"
    shared.write_text("[default]\naws_access_key_id=AKIADEFAULTDEFAULT1\naws_secret_access_key=d\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(shared))
    assert credentials_source()().access_key == "AKIADEFAULTDEFAULT1"


def test_custom_provider_is_tried_first(aws_credentials):
    from botocore.credentials import CredentialProvider
    from botocore.credentials import Credentials as BotoCredentials

    class Provider(CredentialProvider):
        METHOD = "custom-test"
        CANONICAL_NAME = "custom-test"
        calls = 0

        def load(self):
            Provider.calls += 1
            return BotoCredentials("AKIACUSTOMCUSTOM1234", "c", "t", method=self.METHOD)

    provider = Provider()
    source = credentials_source(custom_provider=provider)
    assert source().access_key == "AKIACUSTOMCUSTOM1234"
    assert credentials_source(custom_provider=provider) is source  # one session per provider
    source()
    assert Provider.calls == 1


def test_a_failing_provider_is_named_by_type_only_on_load_and_refresh(aws_credentials):
    from botocore.credentials import CredentialProvider

    secret = "secret-in-the-message"

    class Failing(CredentialProvider):
        METHOD = CANONICAL_NAME = "failing-test"

        def load(self):
            raise RuntimeError(secret)

    with pytest.raises(CredentialsError) as loading:
        credentials_source(custom_provider=Failing())()
    assert str(loading.value) == "the credentials provider raised RuntimeError while loading"
    assert secret in str(loading.value.__cause__)

    class Refreshed:
        def get_frozen_credentials(self):
            raise KeyError(secret)

    class Expiring(CredentialProvider):
        METHOD = CANONICAL_NAME = "expiring-test"

        def load(self):
            return Refreshed()

    with pytest.raises(CredentialsError) as refreshing:
        credentials_source(custom_provider=Expiring())()
    assert str(refreshing.value) == "the credentials provider raised KeyError while refreshing"
    assert isinstance(refreshing.value.__cause__, KeyError)


def test_missing_credentials_is_a_clear_error():
    with pytest.raises(CredentialsError, match="no AWS credentials found"):
        credentials_source()()


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(CredentialsError, match="could not load AWS credentials"):
        credentials_source(profile="nope")()


def test_without_botocore_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "botocore.session", None)
    with pytest.raises(CredentialsError, match=r"warmdb\[aws\]"):
        credentials_source()()


def test_credentials_are_immutable_and_validated():
    creds = Credentials("AKIAIOSFODNN7EXAMPLE", "s")
    with pytest.raises(AttributeError):
        creds.secret_key = "x"
    with pytest.raises(CredentialsError):
        Credentials("", "s")
    assert Credentials("a" * 20, "s", "") == Credentials("a" * 20, "s", None)


def test_signing_with_environment_credentials_imports_no_botocore(aws_credentials):
    script = textwrap.dedent(
        """
        import sys
        import warmdb
        token = warmdb.generate_token(host="abcdefghijklmnopqrstuvwxyz", region="us-east-1")
        assert token.startswith("abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws/?Action=")
        print(sorted(m for m in ("boto3", "botocore", "logging") if m in sys.modules))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
