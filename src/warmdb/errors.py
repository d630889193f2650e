"""The exceptions warmdb raises.

Every exception warmdb raises derives from :class:`WarmdbError`::

    WarmdbError
     ├── ConfigurationError      (also ValueError)  bad or contradictory arguments
     ├── CredentialsError                           no AWS credentials, or they could not be loaded
     ├── ConnectError                               the driver failed to connect
     │    └── AuthenticationError                   the server refused the password or token
     └── PoolTimeout             (also TimeoutError) no pooled connection came free in time

:class:`ConnectError` is raised ``from`` the driver's own exception, which stays reachable as
``__cause__``; its SQLSTATE (when the server sent one) is :attr:`ConnectError.sqlstate`.

No message built here ever contains a token, a secret key, a session token or a signature:
driver messages are scrubbed of the secret that was sent before they are wrapped.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "ConfigurationError",
    "ConnectError",
    "CredentialsError",
    "PoolTimeout",
    "WarmdbError",
]


class WarmdbError(Exception):
    """Base class of every exception raised by warmdb."""

    __module__ = "warmdb"


class ConfigurationError(WarmdbError, ValueError):
    """An argument, DSN field or environment variable is missing, malformed or contradictory.

    The message names the parameter and says how to fix it.
    """

    __module__ = "warmdb"


class CredentialsError(WarmdbError):
    """AWS credentials could not be found or loaded, so no token can be signed."""

    __module__ = "warmdb"


class ConnectError(WarmdbError):
    """The driver could not open a connection.

    :ivar sqlstate: the five-character SQLSTATE the server sent, or ``None`` when the failure
        happened before the server answered (refused, timed out, TLS failure...).
    :ivar driver: the name of the driver module that failed (``"psycopg2"``, ...).
    :ivar reason: why trying again might work (``"rate-exceeded"``, ``"refused"``, ``"auth"``...;
        see :mod:`warmdb.retry`), or ``None`` when it cannot.
    """

    __module__ = "warmdb"

    def __init__(
        self,
        message: str,
        *,
        sqlstate: str | None = None,
        driver: str = "",
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.driver = driver
        self.reason = reason


class AuthenticationError(ConnectError):
    """The server refused the credentials (SQLSTATE class 28): wrong, expired or unsigned token."""

    __module__ = "warmdb"


class PoolTimeout(WarmdbError, TimeoutError):
    """A pool had no connection free within its timeout (all are checked out)."""

    __module__ = "warmdb"
