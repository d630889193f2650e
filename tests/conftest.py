"""Fixtures shared by unit and integration tests: isolated AWS environment, frozen token clock."""

from __future__ import annotations

import os

import pytest

from warmdb.auth import credentials as credentials_module
from warmdb.auth.credentials import Credentials
from warmdb.auth.tokens import TOKEN_CACHE

#: A fixed instant: 2026-11-21 05:40:50 UTC.
FROZEN_TIME = 1_795_239_650.0

ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQ+Example/Session=="


@pytest.fixture(autouse=True)
def isolated_aws_environment(monkeypatch, tmp_path):
    """No test sees the developer's AWS settings, and botocore never calls a metadata service."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "PG", "WARMDB_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config-absent"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials-absent"))
    # Instance metadata (IMDS) and container credentials are network endpoints that do not
    # exist here; botocore must not try them.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    credentials_module._botocore_sources.clear()
    TOKEN_CACHE.clear()
    yield
    credentials_module._botocore_sources.clear()
    TOKEN_CACHE.clear()


@pytest.fixture
def aws_credentials(monkeypatch) -> Credentials:
    """Temporary credentials in the environment, as Lambda provides them."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    return Credentials(ACCESS_KEY, SECRET_KEY, SESSION_TOKEN)


@pytest.fixture
def frozen_clock(monkeypatch):
    """Freeze the token clock at :data:`FROZEN_TIME`; returns a setter to move it."""
    now = [FROZEN_TIME]
    monkeypatch.setattr(TOKEN_CACHE, "clock", lambda: now[0])

    def set_time(value: float) -> None:
        now[0] = value

    return set_time
