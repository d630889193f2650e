"""Helpers of the bench and probe integration tests."""

from __future__ import annotations

import pytest

from warmdb.auth.credentials import Credentials


def credentials_environment(monkeypatch: pytest.MonkeyPatch, keys: Credentials) -> None:
    """Put an emulator's key pair in the environment, as Lambda puts the function's."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", keys.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", keys.secret_key)
    if keys.token:
        monkeypatch.setenv("AWS_SESSION_TOKEN", keys.token)
    else:
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
