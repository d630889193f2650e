"""Where AWS credentials come from.

Two paths, chosen per connect by :func:`credentials_source`:

* the environment fast path: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
  ``AWS_SESSION_TOKEN``, which is what Lambda provides. Nothing is imported; the variables are
  read on every call, so rotated values are picked up.
* botocore's credential chain, for everything else: a named profile, SSO, web identity,
  container and instance credentials, or a ``custom_credentials_provider``. botocore is
  imported on first use only, one session is built per (profile, provider) and kept for the
  life of the process, and refreshable credentials are frozen per call so botocore refreshes
  them when they near expiry.

The environment path is taken only when no profile and no custom provider were asked for, and
it matches the first link of botocore's own chain, so both paths find the same credentials.
"""

from __future__ import annotations

import os
import threading

from warmdb.errors import CredentialsError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    T = TypeVar("T")

__all__ = ["Credentials", "credentials_source"]


class Credentials:
    """An immutable set of AWS credentials. Its repr shows only a masked access key id.

    :ivar access_key: the access key id (``AKIA...`` or ``ASIA...``).
    :ivar secret_key: the secret access key.
    :ivar token: the session token of temporary credentials, or ``None``.
    """

    __slots__ = ("access_key", "secret_key", "token")

    access_key: str
    secret_key: str
    token: str | None

    def __init__(self, access_key: str, secret_key: str, token: str | None = None) -> None:
        if not access_key or not secret_key:
            raise CredentialsError("AWS credentials need both an access key id and a secret key")
        object.__setattr__(self, "access_key", access_key)
        object.__setattr__(self, "secret_key", secret_key)
        object.__setattr__(self, "token", token or None)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Credentials are immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Credentials):
            return NotImplemented
        return (self.access_key, self.secret_key, self.token) == (
            other.access_key,
            other.secret_key,
            other.token,
        )

    def __hash__(self) -> int:
        return hash((self.access_key, self.secret_key, self.token))

    def __repr__(self) -> str:
        return f"Credentials(access_key={mask_access_key(self.access_key)!r}, secret_key=***)"


def mask_access_key(access_key: str) -> str:
    """Return an access key id safe to log: its 4-character prefix and last 4 characters."""
    if len(access_key) <= 8:
        return "****"
    return f"{access_key[:4]}****{access_key[-4:]}"


def from_environment() -> Credentials | None:
    """Return the credentials in ``AWS_ACCESS_KEY_ID`` etc., or ``None`` when they are not set."""
    access_key = os.environ.get("AWS_ACCESS_KEY_ID")
    secret_key = os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not access_key or not secret_key:
        return None
    return Credentials(access_key, secret_key, os.environ.get("AWS_SESSION_TOKEN"))


class BotocoreCredentials:
    """Credentials resolved by botocore's chain, for one profile and optional custom provider.

    Built once per process (see :func:`credentials_source`); calling it returns the current,
    frozen credentials, refreshing them through botocore when they near expiry.
    """

    def __init__(self, profile: str | None, custom_provider: object | None) -> None:
        self._profile = profile
        self._custom_provider = custom_provider
        self._lock = threading.Lock()
        # botocore's Credentials (refreshable or not), loaded on the first call
        self._resolved: Any = None

    def _load(self) -> object:
        try:
            import botocore.session
        except ImportError:
            raise CredentialsError(
                "no AWS credentials in the environment (AWS_ACCESS_KEY_ID, "
                "AWS_SECRET_ACCESS_KEY) and botocore is not installed to find others: set them, "
                "or install warmdb[aws] for profiles, SSO, container and instance credentials"
            ) from None

        def resolve() -> object:
            session = botocore.session.Session(profile=self._profile)
            if self._custom_provider is not None:
                resolver = session.get_component("credential_provider")
                resolver.insert_before("env", self._custom_provider)
            return session.get_credentials()

        credentials = _translated(resolve, "load")
        if credentials is None:
            where = f"profile {self._profile!r}" if self._profile else "botocore's default chain"
            raise CredentialsError(
                f"no AWS credentials found in {where}: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, configure a profile, or pass custom_credentials_provider"
            )
        return credentials

    def __call__(self) -> Credentials:
        with self._lock:
            if self._resolved is None:
                self._resolved = self._load()
            resolved = self._resolved
        frozen = _translated(resolved.get_frozen_credentials, "refresh")
        if not isinstance(frozen.access_key, str) or not isinstance(frozen.secret_key, str):
            raise CredentialsError("the credentials provider returned no access key or secret")
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token)


def _translated(call: Callable[[], T], verb: str) -> T:
    """``call()``, its failures raised as :class:`CredentialsError` (``from`` the original).

    :param verb: what *call* does to the credentials, for the message (``"load"``).
    """
    from botocore.exceptions import BotoCoreError

    try:
        return call()
    except BotoCoreError as exc:
        # botocore's messages name profiles and files, never secret values.
        raise CredentialsError(f"could not {verb} AWS credentials: {exc}") from exc
    except Exception as exc:
        # A custom provider's own failure: its text may hold anything, so only its type is
        # named; the exception itself stays reachable as the cause.
        raise CredentialsError(
            f"the credentials provider raised {type(exc).__name__} while {verb}ing"
        ) from exc


_botocore_sources: dict[tuple[str | None, int], BotocoreCredentials] = {}
_botocore_sources_lock = threading.Lock()


def credentials_source(
    *, profile: str | None = None, custom_provider: object | None = None
) -> Callable[[], Credentials]:
    """Return a callable that yields the credentials to sign with.

    :param profile: a named profile from the AWS config files; forces botocore's chain.
    :param custom_provider: a ``botocore.credentials.CredentialProvider``, tried before
        every provider of botocore's chain (as aurora-dsql-python-connector does).
    """
    if profile is None and custom_provider is None:
        return _environment_then_botocore
    return _botocore_source(profile, custom_provider)


def _botocore_source(profile: str | None, custom_provider: object | None) -> BotocoreCredentials:
    # Keyed by the provider's identity: providers need not be hashable, and the same object
    # passed on every connect must reuse one botocore session. The entry holds a reference to
    # the provider, so its id cannot be reused by another object while the entry exists.
    key = (profile, id(custom_provider))
    with _botocore_sources_lock:
        source = _botocore_sources.get(key)
        if source is None:
            source = _botocore_sources[key] = BotocoreCredentials(profile, custom_provider)
    return source


def _environment_then_botocore() -> Credentials:
    credentials = from_environment()
    if credentials is not None:
        return credentials
    return _botocore_source(None, None)()
