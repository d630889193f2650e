"""What every driver module does around the driver's own connect.

A :class:`ConnectPlan` is made once per ``connect()`` call (or once per pool or keeper): it
holds the resolved :class:`~warmdb.endpoint.Endpoint`, the driver's pass-through arguments,
the :class:`~warmdb.policy.Policy` and the way to get the password.
:meth:`ConnectPlan.password` is called per connect attempt, so a token is always fresh enough
and a callable password is called every time.

:func:`raise_connect_error` turns a driver's connect failure into a :class:`~warmdb.ConnectError`,
with the SQLSTATE and the retry reason reachable and every secret that was sent scrubbed from
the text. :func:`open_with_retry` and :func:`open_with_retry_async` run one driver's connect
attempt under the rate governor and the policy's retry schedule, and report events.
"""

from __future__ import annotations

import time

from warmdb import events
from warmdb._log import get_logger
from warmdb.auth.credentials import credentials_source
from warmdb.auth.tokens import TOKEN_CACHE, TokenSpec
from warmdb.endpoint import resolve
from warmdb.errors import AuthenticationError, ConfigurationError, ConnectError
from warmdb.governor import current_governor
from warmdb.policy import Policy, policy_for
from warmdb.retry import AUTH, RetrySchedule, classify

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping
    from typing import NoReturn, TypeVar

    from warmdb.auth.credentials import Credentials
    from warmdb.endpoint import Endpoint

    T = TypeVar("T")

__all__ = [
    "ConnectPlan",
    "libpq_params",
    "open_with_retry",
    "open_with_retry_async",
    "raise_connect_error",
]

logger = get_logger("warmdb.connect")

# Connect failures from libpq-based drivers carry the server's message but not its SQLSTATE.
# These are the messages the servers warmdb targets send, mapped to the code they carry.
_SQLSTATE_BY_MESSAGE = (
    ("IAM authentication failed", "28000"),
    ("password authentication failed", "28P01"),
    ("no pg_hba.conf entry", "28000"),
    ("pg_hba.conf rejects connection", "28000"),
    ("rate exceeded", "53400"),
    ("too many open connections", "53300"),
    ("too many clients already", "53300"),
    ("remaining connection slots are reserved", "53300"),
    ("the database system is starting up", "57P03"),
    ("the database system is shutting down", "57P03"),
)
_REDACTED = "<redacted>"


class ConnectPlan:
    """A resolved connect call: endpoint, driver arguments and password source.

    :param dsn: the caller's DSN, if any.
    :param kwargs: the caller's keyword arguments (warmdb's and the driver's).
    :param custom_credentials_provider: a botocore ``CredentialProvider`` tried first.
    :param policy: how connections live and connects are retried; the preset for the
        endpoint's auth mode (:func:`warmdb.policy.policy_for`) by default.
    """

    __slots__ = ("_credentials", "_password", "_spec", "driver_kwargs", "endpoint", "policy")

    endpoint: Endpoint
    driver_kwargs: dict[str, object]
    policy: Policy

    def __init__(
        self,
        dsn: str | None,
        kwargs: Mapping[str, object],
        *,
        custom_credentials_provider: object | None = None,
        policy: Policy | None = None,
    ) -> None:
        endpoint, password, driver_kwargs = resolve(dsn, kwargs)
        if policy is not None and not isinstance(policy, Policy):
            raise ConfigurationError(
                f"policy must be a warmdb.policy.Policy, not {type(policy).__name__}"
            )
        self.endpoint = endpoint
        self.driver_kwargs = driver_kwargs
        self.policy = policy if policy is not None else policy_for(endpoint.auth)
        self._password = password
        if custom_credentials_provider is not None and not endpoint.uses_token:
            raise ConfigurationError(
                "custom_credentials_provider needs auth='dsql' or auth='rds' "
                f"(host {endpoint.host!r} resolved to auth='password')"
            )
        if endpoint.uses_token:
            # resolve() guarantees both in the token modes.
            assert endpoint.user is not None
            assert endpoint.region is not None
            self._spec: TokenSpec | None = TokenSpec(
                kind=endpoint.auth,
                host=endpoint.host,
                port=endpoint.port,
                region=endpoint.region,
                user=endpoint.user,
                expires_in=endpoint.token_duration,
            )
            self._credentials: Callable[[], Credentials] | None = credentials_source(
                profile=endpoint.profile, custom_provider=custom_credentials_provider
            )
        else:
            self._spec = None
            self._credentials = None

    def password(self) -> str | None:
        """Return the password for one connect attempt.

        A token (cached while fresh) in the token modes; in password mode the caller's string,
        the result of calling the caller's callable, or ``None``.

        :raises ConfigurationError: the password callable returned an awaitable (use the async
            driver functions for an async password callable) or something else than a string.
        """
        password = self._raw_password()
        if hasattr(password, "__await__"):
            close = getattr(password, "close", None)
            if close is not None:
                close()  # don't leave a never-awaited coroutine warning behind
            raise ConfigurationError(
                "the password callable returned an awaitable: use an async connect function"
            )
        return _check_password(password)

    async def password_async(self) -> str | None:
        """Like :meth:`password`, awaiting the password callable's result if it is awaitable."""
        password = self._raw_password()
        if hasattr(password, "__await__"):
            password = await password
        return _check_password(password)

    def _raw_password(self) -> object:
        if self._spec is not None:
            assert self._credentials is not None
            credentials = self._credentials()
            logger.debug(
                "IAM token (%s) for %s@%s in %s",
                self._spec.action,
                self._spec.user,
                self._spec.host,
                self._spec.region,
            )
            return TOKEN_CACHE.get(self._spec, credentials)
        password = self._password
        if callable(password):
            return password()
        return password

    @property
    def uses_token(self) -> bool:
        """Whether each connect signs (or reuses) an IAM token."""
        return self._spec is not None

    def discard_token(self) -> None:
        """Forget the cached token, so the next :meth:`password` signs a new one."""
        if self._spec is not None:
            TOKEN_CACHE.discard(self._spec)

    def secrets_of(self, password: object) -> list[str]:
        """The strings that must never appear in a message after *password* was sent."""
        if not isinstance(password, str) or not password:
            return []
        found = [password]
        if self._spec is not None:
            # A token embeds its signature and the session token; either alone is a secret.
            for marker in ("X-Amz-Signature=", "X-Amz-Security-Token="):
                _, sep, rest = password.partition(marker)
                if sep:
                    value = rest.split("&", 1)[0]
                    found.append(value)
                    from urllib.parse import unquote

                    found.append(unquote(value))
        return [s for s in found if len(s) >= 4]

    def __repr__(self) -> str:
        return f"ConnectPlan({self.endpoint!r})"


def _check_password(password: object) -> str | None:
    if password is None or isinstance(password, str):
        return password
    raise ConfigurationError(f"password must be a string, not {type(password).__name__}")


def sqlstate_of(exc: BaseException) -> str | None:
    """Return the SQLSTATE of a driver exception, from the driver or derived from its message."""
    for attribute in ("sqlstate", "pgcode"):
        code = getattr(exc, attribute, None)
        if isinstance(code, str) and len(code) == 5:
            return code
    text = str(exc)
    return next((code for fragment, code in _SQLSTATE_BY_MESSAGE if fragment in text), None)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each secret in *text* with a placeholder."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, _REDACTED)
    return text


def raise_connect_error(
    exc: BaseException, *, driver: str, endpoint: Endpoint, secrets: Iterable[str]
) -> NoReturn:
    """Raise the :class:`ConnectError` for a driver's connect failure *exc*, ``from exc``.

    When the driver's own text contains a secret, the cause is suppressed instead (a traceback
    would print the driver's text); the SQLSTATE is kept either way.
    """
    secrets = list(secrets)
    raw = str(exc).strip() or type(exc).__name__
    text = scrub(raw, secrets)
    sqlstate = sqlstate_of(exc)
    is_auth = sqlstate is not None and sqlstate.startswith("28")
    cls = AuthenticationError if is_auth else ConnectError
    where = f"{endpoint.host}:{endpoint.port}"
    detail = f" [SQLSTATE {sqlstate}]" if sqlstate else ""
    error = cls(
        f"{driver} could not connect to {where} as {endpoint.user!r}: {text}{detail}",
        sqlstate=sqlstate,
        driver=driver,
        reason=classify(exc, sqlstate),
    )
    logger.debug("connect to %s failed: %s%s", where, text, detail)
    if text != raw:
        raise error from None
    raise error from exc


def libpq_params(plan: ConnectPlan, password: object, libpq_version: int) -> dict[str, object]:
    """The keyword arguments for a libpq-based driver's connect (psycopg, psycopg2).

    The policy's ``connect_timeout`` applies unless the caller gave libpq's own.

    libpq understands ``sslrootcert=system`` from version 16; for older libraries it is
    replaced by the path of OpenSSL's default CA bundle, which is what "system" means.
    """
    endpoint = plan.endpoint
    params: dict[str, object] = {"host": endpoint.host, "port": endpoint.port}
    if endpoint.user is not None:
        params["user"] = endpoint.user
    if endpoint.dbname is not None:
        params["dbname"] = endpoint.dbname
    if password is not None:
        params["password"] = password
    if endpoint.sslmode is not None:
        params["sslmode"] = endpoint.sslmode
    rootcert = endpoint.sslrootcert
    if rootcert == "system" and libpq_version < 160000:
        import ssl

        paths = ssl.get_default_verify_paths()
        rootcert = paths.cafile or paths.openssl_cafile
    if rootcert is not None:
        params["sslrootcert"] = rootcert
    timeout = plan.policy.connect_timeout
    if timeout is not None:
        # libpq takes whole seconds and treats anything below 2 as 2.
        params["connect_timeout"] = max(2, -int(-timeout // 1))
    params.update(plan.driver_kwargs)
    return params


def open_with_retry(
    plan: ConnectPlan,
    attempt: Callable[[], T],
    *,
    driver: str,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
) -> T:
    """Call *attempt* (one driver connect) until it succeeds or the plan's policy gives up.

    Each attempt first takes a token from the process-wide rate governor, if one is set.
    Transient failures (:mod:`warmdb.retry`) are retried with backoff inside
    ``policy.retry_timeout``; an authentication failure with an IAM token is retried once,
    at once, with a newly signed token. Every retry and the final connect are reported to
    :mod:`warmdb.events`.

    :raises ConnectError: the last attempt's error, when the policy gives up.
    """
    started = clock()
    schedule = RetrySchedule(plan.policy, started)
    waited = 0.0
    attempts = 0
    while True:
        governor = current_governor()
        if governor is not None:
            waited += governor.acquire()
        attempts += 1
        attempt_started = clock()
        try:
            connection = attempt()
        except ConnectError as error:
            delay = _next_delay(plan, schedule, error, attempts, clock(), driver)
            if delay > 0:
                sleep(delay)
                waited += delay
            continue
        _report_connect(plan, driver, attempts, started, attempt_started, waited, clock())
        return connection


async def open_with_retry_async(
    plan: ConnectPlan,
    attempt: Callable[[], Awaitable[T]],
    *,
    driver: str,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """:func:`open_with_retry` for an async *attempt*; waits are ``asyncio.sleep``."""
    import asyncio

    started = clock()
    schedule = RetrySchedule(plan.policy, started)
    waited = 0.0
    attempts = 0
    while True:
        governor = current_governor()
        if governor is not None:
            waited += await governor.acquire_async()
        attempts += 1
        attempt_started = clock()
        try:
            connection = await attempt()
        except ConnectError as error:
            delay = _next_delay(plan, schedule, error, attempts, clock(), driver)
            if delay > 0:
                await asyncio.sleep(delay)
                waited += delay
            continue
        _report_connect(plan, driver, attempts, started, attempt_started, waited, clock())
        return connection


def _next_delay(
    plan: ConnectPlan,
    schedule: RetrySchedule,
    error: ConnectError,
    attempts: int,
    now: float,
    driver: str,
) -> float:
    """The wait before the next attempt; re-raises *error* when there is none."""
    delay = schedule.next_delay(error.reason, now, fresh_token=plan.uses_token)
    if delay is None:
        raise error
    if error.reason == AUTH:
        plan.discard_token()
    endpoint = plan.endpoint
    events.emit_retry(
        events.RetryEvent(
            driver=driver,
            host=endpoint.host,
            port=endpoint.port,
            attempt=attempts,
            reason=error.reason or "",
            sqlstate=error.sqlstate,
            delay=delay,
        )
    )
    return delay


def _report_connect(
    plan: ConnectPlan,
    driver: str,
    attempts: int,
    started: float,
    attempt_started: float,
    waited: float,
    now: float,
) -> None:
    endpoint = plan.endpoint
    events.emit_connect(
        events.ConnectEvent(
            driver=driver,
            host=endpoint.host,
            port=endpoint.port,
            user=endpoint.user,
            attempts=attempts,
            seconds=now - started,
            connect_seconds=now - attempt_started,
            waited_seconds=waited,
        )
    )
