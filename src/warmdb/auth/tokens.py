"""IAM database tokens: what identifies one, how it is signed, and the process-wide cache.

A token is checked only when a connection logs in, so one token can serve every connect made
while it is valid. :class:`TokenCache` reuses a token until a safety margin before it expires
(a quarter of its lifetime, at most two minutes: room for clock skew and slow connects), keyed
by everything that changes it: the kind, host, port, region, user, lifetime and the
credentials themselves. Signing takes tens of microseconds; the cache mostly saves the
credential lookup and keeps the hot path flat.

Token lifetimes come from the server's wall clock (``X-Amz-Date`` + ``X-Amz-Expires``), so the
cache measures ages with the wall clock too; it is injectable for tests.
"""

from __future__ import annotations

import threading
import time

from warmdb.auth.sigv4 import amz_timestamp, presign

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from warmdb.auth.credentials import Credentials

__all__ = [
    "DSQL_SERVICE",
    "MAX_TOKEN_DURATION",
    "RDS_SERVICE",
    "RDS_TOKEN_DURATION",
    "TokenCache",
    "TokenSpec",
    "sign_token",
]

DSQL_SERVICE = "dsql"
RDS_SERVICE = "rds-db"
#: DSQL accepts token lifetimes up to a week.
MAX_TOKEN_DURATION = 604_800
#: RDS IAM tokens always last 15 minutes (botocore hard-codes it).
RDS_TOKEN_DURATION = 900
_MAX_REFRESH_MARGIN = 120.0


class TokenSpec:
    """Everything but the credentials that decides a token's content. Immutable, hashable.

    :ivar kind: ``"dsql"`` or ``"rds"``.
    :ivar host: the host name signed into the token.
    :ivar port: the port (part of RDS tokens only, but kept for every kind).
    :ivar region: the AWS region signed into the token.
    :ivar user: the database user.
    :ivar expires_in: the token lifetime in seconds.
    """

    __slots__ = ("_key", "expires_in", "host", "kind", "port", "region", "user")

    def __init__(
        self, *, kind: str, host: str, port: int, region: str, user: str, expires_in: int
    ) -> None:
        self.kind = kind
        self.host = host
        self.port = port
        self.region = region
        self.user = user
        self.expires_in = expires_in
        self._key = (kind, host, port, region, user, expires_in)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TokenSpec) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        kind, host, port, region, user, expires_in = self._key
        return (
            f"TokenSpec(kind={kind!r}, host={host!r}, port={port}, region={region!r}, "
            f"user={user!r}, expires_in={expires_in})"
        )

    @property
    def action(self) -> str:
        """The IAM action the token grants: ``DbConnectAdmin``, ``DbConnect`` or ``connect``."""
        if self.kind == "rds":
            return "connect"
        return "DbConnectAdmin" if self.user == "admin" else "DbConnect"


def sign_token(spec: TokenSpec, credentials: Credentials, now: float) -> str:
    """Sign a token for *spec* at Unix time *now*: exactly what botocore would return.

    DSQL tokens: service ``dsql``, ``Action=DbConnectAdmin`` for user ``admin`` and
    ``DbConnect`` otherwise, no port. RDS tokens: service ``rds-db``,
    ``Action=connect&DBUser=USER``, ``host:port``, 900 seconds.
    """
    if spec.kind == "rds":
        operation = [("Action", "connect"), ("DBUser", spec.user)]
        service, port = RDS_SERVICE, spec.port
    else:
        operation = [("Action", spec.action)]
        service, port = DSQL_SERVICE, None
    return presign(
        host=spec.host,
        port=port,
        service=service,
        region=spec.region,
        operation=operation,
        access_key=credentials.access_key,
        secret_key=credentials.secret_key,
        session_token=credentials.token,
        expires_in=spec.expires_in,
        timestamp=amz_timestamp(now),
    )


def refresh_margin(expires_in: float) -> float:
    """Seconds before expiry at which a cached token stops being handed out."""
    return min(_MAX_REFRESH_MARGIN, expires_in / 4)


class TokenCache:
    """A thread-safe cache of signed tokens, shared by every connect in the process.

    :param clock: returns the Unix time; :func:`time.time` unless a test freezes it.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[tuple[TokenSpec, Credentials], tuple[float, str]] = {}

    def get(self, spec: TokenSpec, credentials: Credentials) -> str:
        """Return a token for *spec* signed with *credentials*: cached while fresh, else new."""
        now = self.clock()
        key = (spec, credentials)
        with self._lock:
            cached = self._tokens.get(key)
            if cached is not None and cached[0] <= now < self._reuse_until(cached[0], spec):
                return cached[1]
            token = sign_token(spec, credentials, now)
            self._drop_stale(now)
            # X-Amz-Date has whole seconds: the server counts the lifetime from the second
            # the token is dated, up to a second before it was signed.
            self._tokens[key] = (float(int(now)), token)
        return token

    def discard(self, spec: TokenSpec) -> None:
        """Forget the tokens cached for *spec* (after the server refused one)."""
        with self._lock:
            for key in [key for key in self._tokens if key[0] == spec]:
                del self._tokens[key]

    def clear(self) -> None:
        """Forget every cached token (the next connect signs anew)."""
        with self._lock:
            self._tokens.clear()

    def __len__(self) -> int:
        return len(self._tokens)

    @staticmethod
    def _reuse_until(issued_at: float, spec: TokenSpec) -> float:
        return issued_at + spec.expires_in - refresh_margin(spec.expires_in)

    def _drop_stale(self, now: float) -> None:
        # Rotated credentials leave old entries behind; prune them so the cache stays small.
        stale = [k for k, (t, _) in self._tokens.items() if now >= self._reuse_until(t, k[0])]
        for key in stale:
            del self._tokens[key]


#: The cache every connect in the process shares.
TOKEN_CACHE = TokenCache()
