"""The exceptions warmdb raises.

Every exception warmdb raises derives from :class:`WarmdbError`::

    WarmdbError
     ├── ConfigurationError      (also ValueError)   bad or contradictory arguments
     ├── CredentialsError                            no AWS credentials, or a password source failed
     ├── ConnectError                                the driver failed to connect
     │    └── AuthenticationError                    the server refused the password or token
     ├── PoolError                                   a pool could not hand out a connection
     │    ├── PoolTimeout        (also TimeoutError) no pooled connection came free in time
     │    └── PoolClosed                             the pool is closed
     ├── UsageError              (also RuntimeError) an API used in a way it does not allow
     └── TransactionError                            a transaction could not be completed
          ├── ConflictError                          OCC conflicts outlasted the retry budget
          └── BatchWriteError                        write_batches stopped part-way

:class:`ConnectError` is raised ``from`` the driver's own exception, which stays reachable as
``__cause__``; its SQLSTATE (when the server sent one) is :attr:`ConnectError.sqlstate`, and
a MySQL server's error number is :attr:`ConnectError.errno`. The same failure raises the same
class with the same code whatever the driver (each driver's adapter classifies its exceptions,
see :mod:`warmdb.drivers`).

No message built here ever contains a token, a secret key, a session token or a signature:
driver messages are scrubbed of the secret that was sent before they are wrapped.
"""

from __future__ import annotations

# The public list is warmdb's own __all__: every exception is re-exported there.


class WarmdbError(Exception):
    """Base class of every exception raised by warmdb."""

    __module__ = "warmdb"


class ConfigurationError(WarmdbError, ValueError):
    """An argument, DSN field or environment variable is missing, malformed or contradictory.

    The message names the parameter and says how to fix it.
    """

    __module__ = "warmdb"


class CredentialsError(WarmdbError):
    """No password could be had: AWS credentials could not be found or loaded (so no token
    can be signed), or the caller's password callable or credentials provider raised or
    returned nothing usable. The failure is the ``__cause__``; the message holds no secret."""

    __module__ = "warmdb"


class ConnectError(WarmdbError):
    """The driver could not open a connection.

    :ivar sqlstate: the five-character SQLSTATE the server sent, or ``None`` when the failure
        happened before the server answered (refused, timed out, TLS failure...).
    :ivar errno: the server's or client library's error number (MySQL: 1045, 2003...), or
        ``None``.
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
        errno: int | None = None,
    ) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.errno = errno
        self.driver = driver
        self.reason = reason


class AuthenticationError(ConnectError):
    """The server refused the credentials (SQLSTATE class 28): wrong, expired or unsigned token."""

    __module__ = "warmdb"


class PoolError(WarmdbError):
    """A pool could not hand out a connection."""

    __module__ = "warmdb"


class PoolTimeout(PoolError, TimeoutError):
    """A pool had no connection free within its timeout (all are checked out).

    Every warmdb pool raises it; where the pool is built on a library with a timeout class
    of its own (psycopg_pool), the exception is of both classes.
    """

    __module__ = "warmdb"


class PoolClosed(PoolError):
    """The pool is closed: it hands out no connection."""

    __module__ = "warmdb"


class UsageError(WarmdbError, RuntimeError):
    """An API was used in a way it does not allow, such as a nested checkout of a keeper
    from the thread or task that already holds its connection."""

    __module__ = "warmdb"


class TransactionError(WarmdbError):
    """A transaction run by warmdb could not be completed."""

    __module__ = "warmdb"


class ConflictError(TransactionError):
    """Optimistic-concurrency conflicts went on past the retry budget.

    The last conflict (the driver's exception) is the ``__cause__``.

    :ivar attempts: how many times the transaction ran.
    :ivar code: the last conflict's code (``"OC000"``, ``"OC001"``, ``"40001"``...).
    """

    __module__ = "warmdb"

    def __init__(self, message: str, *, attempts: int, code: str | None) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.code = code


class BatchWriteError(TransactionError):
    """:func:`~warmdb.transactions.write_batches` stopped after committing part of the rows.

    The failure is the ``__cause__``.

    :ivar committed: rows committed before the failure; every one of them exactly once.
    :ivar resume_from: pass it as ``resume_from=`` to continue with the first row not
        committed.
    """

    __module__ = "warmdb"

    def __init__(self, message: str, *, committed: int, resume_from: int) -> None:
        super().__init__(message)
        self.committed = committed
        self.resume_from = resume_from
