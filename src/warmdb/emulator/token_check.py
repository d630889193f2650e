"""Checking an IAM token as Aurora DSQL or RDS does: a pure function of token, user and clock.

One verifier serves both kinds of endpoint; build it once per endpoint and call
:meth:`TokenVerifier.check` with the password and the login user::

    verifier = TokenVerifier([credentials], region="us-east-1", hosts=HostRule(["db.local"]),
                             kind="rds", port=3306)
    reason = verifier.check(password, user)   # None: let the user in

A token passes when it is a SigV4 presigned ``GET`` that:

* for ``kind="dsql"``: is for service ``dsql`` and asks for ``Action=DbConnectAdmin`` when the
  user is ``admin``, ``DbConnect`` otherwise; lifetime at most 604,800 s;
* for ``kind="rds"`` (RDS PostgreSQL and MySQL): is for service ``rds-db``, asks for
  ``Action=connect&DBUser=<the login user>``, names the endpoint's port in ``host:port`` and
  lasts at most 900 s (what every AWS SDK signs);
* is scoped to the configured region and signed by one of the accepted access keys, with
  exactly their session token: a token signed with temporary credentials is refused by keys
  that have none, and the other way round;
* has not expired: ``X-Amz-Date + X-Amz-Expires / time_scale`` is still ahead, and the date is
  not more than five minutes in the future (SigV4's skew);
* carries the signature recomputed with the secret key;
* names an accepted host (see :class:`HostRule`).

:meth:`TokenVerifier.check` returns ``None`` or a short reason code for logs and statistics;
no reason, log line or exception ever holds the token or a part of it.
"""

from __future__ import annotations

import calendar
import hmac
import ipaddress
import socket
import threading
import time

from warmdb.auth.sigv4 import ALGORITHM, parse_token, signature
from warmdb.auth.tokens import DSQL_SERVICE, MAX_TOKEN_DURATION, RDS_SERVICE, RDS_TOKEN_DURATION
from warmdb.errors import ConfigurationError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from warmdb.auth.credentials import Credentials

__all__ = ["KINDS", "HostRule", "TokenVerifier", "resolves_to_loopback"]

#: SigV4 accepts a request dated up to five minutes in the future (clock skew).
MAX_CLOCK_SKEW = 300.0
#: The token kinds, as :class:`warmdb.auth.tokens.TokenSpec` names them: service, longest life.
KINDS = {"dsql": (DSQL_SERVICE, MAX_TOKEN_DURATION), "rds": (RDS_SERVICE, RDS_TOKEN_DURATION)}


def resolves_to_loopback(name: str) -> bool:
    """Whether every address *name* resolves to is a loopback address (and there is one)."""
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


class HostRule:
    """Which host names a token may be signed for.

    Accepted: the configured names, ``localhost``, any loopback IP address, and any other
    name that resolves only to loopback addresses (looked up once, then cached).

    :param names: the endpoint's own host names, e.g. ``local.dsql.us-east-1.on.aws``.
    :param resolver: decides the "resolves to loopback" case; :func:`resolves_to_loopback`.
    """

    def __init__(
        self, names: Iterable[str], resolver: Callable[[str], bool] = resolves_to_loopback
    ) -> None:
        self.names = frozenset(n.lower().rstrip(".") for n in [*names, "localhost"])
        self._resolver = resolver
        self._cache: dict[str, bool] = {}
        self._lock = threading.Lock()

    def accepts(self, host: str) -> bool:
        """Whether a token signed for *host* (no port) is accepted here."""
        host = host.lower().rstrip(".")
        if host in self.names:
            return True
        try:
            return ipaddress.ip_address(host.strip("[]")).is_loopback
        except ValueError:
            pass
        with self._lock:
            known = self._cache.get(host)
        if known is None:
            known = self._resolver(host)
            with self._lock:
                self._cache[host] = known
        return known


def _split_netloc(netloc: str) -> tuple[str, str | None]:
    """A token's ``host[:port]`` as host and port text; IPv6 literals keep their brackets."""
    if netloc.startswith("["):
        host, _, rest = netloc.partition("]")
        return host + "]", rest[1:] if rest.startswith(":") else None
    if netloc.count(":") == 1:
        host, _, port = netloc.partition(":")
        return host, port
    return netloc, None


class TokenVerifier:
    """Checks the IAM tokens of one endpoint.

    :param credentials: the accepted credentials (access key, secret key, session token).
    :param region: the endpoint's region.
    :param hosts: the host rule.
    :param kind: ``"dsql"`` (default) or ``"rds"`` (RDS PostgreSQL and MySQL: ``rds-db``).
    :param port: the endpoint's port, which ``rds`` tokens must name; ``None`` accepts any.
    :param time_scale: token lifetimes are divided by this (``--token-time-scale``, which
        defaults to ``--time-scale``).
    :param clock: the Unix time; :func:`time.time` unless a test freezes it.
    """

    def __init__(
        self,
        credentials: Iterable[Credentials],
        *,
        region: str,
        hosts: HostRule,
        kind: str = "dsql",
        port: int | None = None,
        time_scale: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if kind not in KINDS:
            raise ConfigurationError(f"kind={kind!r} must be one of {sorted(KINDS)}")
        self.kind = kind
        self.port = port
        self._service, self._max_lifetime = KINDS[kind]
        self._by_key = {c.access_key: c for c in credentials}
        self.region = region
        self.hosts = hosts
        self.time_scale = time_scale
        self._clock = clock

    def check(self, token: str, user: str) -> str | None:
        """Return ``None`` if *token* lets *user* connect, else the reason it does not."""
        try:
            parsed = parse_token(token)
        except ValueError:
            return "malformed"
        if parsed.param("X-Amz-Algorithm") != ALGORITHM:
            return "algorithm"
        if parsed.param("X-Amz-SignedHeaders") != "host":
            return "signed_headers"
        scope = (parsed.param("X-Amz-Credential") or "").split("/")
        if len(scope) != 5 or scope[4] != "aws4_request":
            return "credential_scope"
        access_key, date, region, service = scope[:4]
        if service != self._service:
            return "service"
        if region != self.region:
            return "region"
        reason = self._check_operation(parsed.param("Action"), parsed.param("DBUser"), user)
        if reason is not None:
            return reason
        host, port = _split_netloc(parsed.netloc)
        if self.kind == "rds" and (
            port is None or (self.port is not None and port != str(self.port))
        ):
            return "port"
        credentials = self._by_key.get(access_key)
        if credentials is None:
            return "access_key"
        reason = self._check_time(parsed.param("X-Amz-Date"), parsed.param("X-Amz-Expires"), date)
        if reason is not None:
            return reason
        # Both ways: temporary credentials' tokens are refused by long-term keys and vice versa.
        if parsed.param("X-Amz-Security-Token") != credentials.token:
            return "session_token"
        expected = signature(
            host_header=parsed.netloc.lower(),
            query=parsed.query,
            secret_key=credentials.secret_key,
            region=region,
            service=service,
            timestamp=parsed.param("X-Amz-Date") or "",
        )
        if not hmac.compare_digest(expected, parsed.signature):
            return "signature"
        # Last: the host rule may look a name up in DNS, which only signed tokens may cause.
        if not self.hosts.accepts(host):
            return "host"
        return None

    def _check_operation(self, action: str | None, db_user: str | None, user: str) -> str | None:
        if self.kind == "rds":
            if action != "connect":
                return "action"
            return None if db_user == user else "db_user"
        if action != ("DbConnectAdmin" if user == "admin" else "DbConnect"):
            return "action"
        return None

    def _check_time(self, amz_date: str | None, expires: str | None, scope_date: str) -> str | None:
        if amz_date is None or expires is None or not expires.isdigit():
            return "malformed"
        try:
            signed_at = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
        except ValueError:
            return "malformed"
        if amz_date[:8] != scope_date:
            return "credential_scope"
        lifetime = int(expires)
        if lifetime > self._max_lifetime:
            return "expires_too_long"
        now = self._clock()
        if signed_at > now + MAX_CLOCK_SKEW:
            return "not_yet_valid"
        if now > signed_at + lifetime / self.time_scale:
            return "expired"
        return None
