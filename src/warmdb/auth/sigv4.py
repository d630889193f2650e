"""AWS Signature Version 4 query presigning, as pure functions.

This is the part of botocore that an IAM database token needs, and nothing more: a token is a
presigned ``GET https://HOST/?Action=...`` URL with the scheme removed. Importing botocore
costs a Lambda cold start tens of milliseconds; these few functions cost microseconds, and the
unit tests prove them byte-for-byte equal to botocore's
``generate_db_connect_admin_auth_token``, ``generate_db_connect_auth_token`` and
``generate_db_auth_token``.

The steps follow the SigV4 specification (and botocore's ``SigV4QueryAuth``):

1. the query: operation parameters, then the ``X-Amz-*`` authentication parameters;
2. the canonical request: method, path, sorted query, the ``host`` header, payload hash;
3. the string to sign: algorithm, timestamp, credential scope, hash of the canonical request;
4. the signing key: an HMAC chain over date, region, service and ``aws4_request``;
5. the signature: HMAC of the string to sign, appended as ``X-Amz-Signature``.

:func:`parse_token` and :func:`signature` also serve the other side (the local emulator), which
recomputes a token's signature to check it. Nothing here logs: a signature, a canonical request
or a signing key is as sensitive as the token it makes.
"""

from __future__ import annotations

import hashlib
import hmac
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "ALGORITHM",
    "ParsedToken",
    "amz_timestamp",
    "canonical_query",
    "parse_token",
    "presign",
    "signature",
]

ALGORITHM = "AWS4-HMAC-SHA256"
# SigV4 leaves the RFC 3986 unreserved bytes as they are and %XX-encodes every other byte of
# the UTF-8 text. This table does what ``urllib.parse.quote(value, safe="-_.~")`` does (a unit
# test compares them) without importing urllib.parse, which costs a cold start about 2 ms.
_UNRESERVED = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~"
_ENCODED = tuple(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in range(256))
# SHA-256 of the empty payload: a presigned GET carries no body.
_EMPTY_PAYLOAD_SHA256 = hashlib.sha256(b"").hexdigest()


def amz_timestamp(epoch_seconds: float) -> str:
    """Format a Unix time as SigV4's ``X-Amz-Date``, e.g. ``20261121T054050Z``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(int(epoch_seconds)))


def _encode(value: str) -> str:
    if value.isascii() and value.isalnum():
        return value
    return "".join([_ENCODED[b] for b in value.encode("utf-8")])


def canonical_query(pairs: Sequence[tuple[str, str]]) -> str:
    """Return the canonical query string: each key and value encoded, sorted, joined by ``&``."""
    return "&".join(f"{k}={v}" for k, v in sorted((_encode(k), _encode(v)) for k, v in pairs))


def _host_header(host: str, port: int | None) -> str:
    # As botocore (and HTTP) do: the host header is lowercase and omits the default https port.
    return host.lower() if port in (None, 443) else f"{host.lower()}:{port}"


def _signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    key = hmac.new(f"AWS4{secret_key}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def signature(
    *,
    host_header: str,
    query: Sequence[tuple[str, str]],
    secret_key: str,
    region: str,
    service: str,
    timestamp: str,
) -> str:
    """Return the hex SigV4 signature of a presigned ``GET /`` request.

    :param host_header: the ``host`` header as signed (lowercase, ``:port`` unless 443).
    :param query: every query parameter except ``X-Amz-Signature``, decoded.
    :param timestamp: the ``X-Amz-Date`` value.
    """
    canonical_request = "\n".join(
        ("GET", "/", canonical_query(query), f"host:{host_header}\n", "host", _EMPTY_PAYLOAD_SHA256)
    )
    scope = f"{timestamp[:8]}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        (ALGORITHM, timestamp, scope, hashlib.sha256(canonical_request.encode()).hexdigest())
    )
    key = _signing_key(secret_key, timestamp[:8], region, service)
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


def presign(
    *,
    host: str,
    port: int | None,
    service: str,
    region: str,
    operation: Sequence[tuple[str, str]],
    access_key: str,
    secret_key: str,
    session_token: str | None,
    expires_in: int,
    timestamp: str,
) -> str:
    """Return a presigned ``GET https://host[:port]/?...`` URL without its scheme: a DB token.

    :param port: ``None`` when the URL carries no port (DSQL tokens); RDS tokens carry one.
    :param operation: the operation's parameters in URL order, e.g. ``[("Action", "connect")]``.
    :param expires_in: ``X-Amz-Expires``, seconds.
    :param timestamp: ``X-Amz-Date``, see :func:`amz_timestamp`.
    """
    auth: list[tuple[str, str]] = [
        ("X-Amz-Algorithm", ALGORITHM),
        ("X-Amz-Credential", f"{access_key}/{timestamp[:8]}/{region}/{service}/aws4_request"),
        ("X-Amz-Date", timestamp),
        ("X-Amz-Expires", str(expires_in)),
        ("X-Amz-SignedHeaders", "host"),
    ]
    if session_token is not None:
        auth.append(("X-Amz-Security-Token", session_token))
    query = [*operation, *auth]
    sig = signature(
        host_header=_host_header(host, port),
        query=query,
        secret_key=secret_key,
        region=region,
        service=service,
        timestamp=timestamp,
    )
    netloc = host if port is None else f"{host}:{port}"
    encoded = "&".join(f"{_encode(k)}={_encode(v)}" for k, v in query)
    return f"{netloc}/?{encoded}&X-Amz-Signature={sig}"


class ParsedToken:
    """The parts of a DB token, decoded. Holds secrets: its repr shows only parameter names.

    :ivar netloc: ``host`` or ``host:port`` as written in the token.
    :ivar query: every query parameter in token order, decoded, ``X-Amz-Signature`` excluded.
    :ivar signature: the hex signature the token carries.
    """

    __slots__ = ("netloc", "query", "signature")

    def __init__(self, netloc: str, query: list[tuple[str, str]], signature: str) -> None:
        self.netloc = netloc
        self.query = query
        self.signature = signature

    def param(self, name: str) -> str | None:
        """Return the first value of query parameter *name*, or ``None``."""
        return next((v for k, v in self.query if k == name), None)

    def __repr__(self) -> str:
        return f"ParsedToken(netloc={self.netloc!r}, params={[k for k, _ in self.query]!r})"


def parse_token(token: str) -> ParsedToken:
    """Split a DB token into host, decoded query and signature.

    :raises ValueError: the text is not shaped like a presigned token. The message never
        repeats the token.
    """
    # The verifying side is a server, not a cold start: urllib's decoder is fine here.
    from urllib.parse import unquote

    netloc, sep, query_string = token.partition("/?")
    if not sep or not netloc or not query_string:
        raise ValueError("not a presigned token: expected HOST/?QUERY")
    query: list[tuple[str, str]] = []
    sig = None
    for pair in query_string.split("&"):
        key, eq, value = pair.partition("=")
        if not eq:
            raise ValueError("not a presigned token: query parameter without '='")
        key, value = unquote(key, errors="strict"), unquote(value, errors="strict")
        if key == "X-Amz-Signature":
            if sig is not None:
                raise ValueError("not a presigned token: X-Amz-Signature given twice")
            sig = value
        else:
            query.append((key, value))
    if sig is None:
        raise ValueError("not a presigned token: no X-Amz-Signature")
    return ParsedToken(netloc, query, sig)
