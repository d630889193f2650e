"""Checking an IAM token the way Aurora DSQL does, as a pure function of token, user and clock.

A token passes when it is a SigV4 presigned ``GET`` for service ``dsql`` that:

* asks for ``Action=DbConnectAdmin`` when the user is ``admin`` and ``DbConnect`` otherwise;
* is scoped to the configured region and signed by one of the accepted access keys (with the
  same session token, when the accepted credentials carry one);
* has not expired: ``X-Amz-Date + X-Amz-Expires / time_scale`` is still ahead, the lifetime is
  at most 604,800 s, and the date is not more than five minutes in the future (SigV4's skew);
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
from warmdb.auth.tokens import DSQL_SERVICE, MAX_TOKEN_DURATION

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from warmdb.auth.credentials import Credentials

__all__ = ["HostRule", "TokenVerifier", "resolves_to_loopback"]

#: SigV4 accepts a request dated up to five minutes in the future (clock skew).
MAX_CLOCK_SKEW = 300.0


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


def _split_netloc(netloc: str) -> str:
    """The host part of a token's ``host[:port]``; IPv6 literals keep their brackets."""
    if netloc.startswith("["):
        return netloc.split("]", 1)[0] + "]"
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


class TokenVerifier:
    """Checks DSQL tokens for one endpoint.

    :param credentials: the accepted credentials (access key, secret key, session token).
    :param region: the endpoint's region.
    :param hosts: the host rule.
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
        time_scale: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
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
        if service != DSQL_SERVICE:
            return "service"
        if region != self.region:
            return "region"
        expected_action = "DbConnectAdmin" if user == "admin" else "DbConnect"
        if parsed.param("Action") != expected_action:
            return "action"
        credentials = self._by_key.get(access_key)
        if credentials is None:
            return "access_key"
        reason = self._check_time(parsed.param("X-Amz-Date"), parsed.param("X-Amz-Expires"), date)
        if reason is not None:
            return reason
        session_token = parsed.param("X-Amz-Security-Token")
        if credentials.token is not None and session_token != credentials.token:
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
        if not self.hosts.accepts(_split_netloc(parsed.netloc)):
            return "host"
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
        if lifetime > MAX_TOKEN_DURATION:
            return "expires_too_long"
        now = self._clock()
        if signed_at > now + MAX_CLOCK_SKEW:
            return "not_yet_valid"
        if now > signed_at + lifetime / self.time_scale:
            return "expired"
        return None
