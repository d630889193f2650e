"""What every front does around a driver's own connect, through the driver's adapter.

A :class:`ConnectPlan` is made once per ``connect()`` call (or once per pool, keeper or
engine): it holds the driver's :class:`~warmdb.drivers.Adapter`, the resolved
:class:`~warmdb.endpoint.Endpoint`, the driver's pass-through arguments (checked against the
adapter's, so a misspelled keyword fails at once, naming the closest valid one), the
:class:`~warmdb.policy.Policy` and the way to get the password. :meth:`ConnectPlan.password`
is called per connect attempt, so a token is always fresh enough and a password callable is
called every time.

:func:`open_connection` and :func:`open_connection_async` run connect attempts under the rate
governor and the policy's :class:`~warmdb.retry.Backoff`, report events, and turn a driver's
failure into a :class:`~warmdb.ConnectError` whose class, SQLSTATE and retry reason come from
the adapter's classification and whose text holds no secret that was sent. The attempts are
written once, as steps (:mod:`warmdb._steps`), and the decision after each failure is
:class:`Attempts`.
"""

from __future__ import annotations

import os
import time
from functools import partial

from warmdb import events
from warmdb._arguments import did_you_mean
from warmdb._log import get_logger
from warmdb._steps import run, run_async
from warmdb.auth.credentials import credentials_source
from warmdb.auth.tokens import TOKEN_CACHE, TokenSpec
from warmdb.endpoint import FAMILIES, resolve
from warmdb.errors import AuthenticationError, ConfigurationError, ConnectError, CredentialsError
from warmdb.governor import current_governor, endpoint_governor
from warmdb.policy import Policy, policy_for
from warmdb.retry import AUTH, REFUSED, Backoff

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterable, Mapping
    from typing import Any

    from warmdb.auth.credentials import Credentials
    from warmdb.endpoint import Endpoint
    from warmdb.governor import RateGovernor

__all__ = [
    "Attempts",
    "ConnectPlan",
    "connect_error",
    "open_connection",
    "open_connection_async",
]

logger = get_logger("warmdb.connect")

_REDACTED = "<redacted>"
# Keyword arguments every driver function takes besides the endpoint's and the driver's.
_FRONT_KEYS = frozenset({"policy", "custom_credentials_provider"})


class ConnectPlan:
    """A resolved connect call: driver adapter, endpoint, driver arguments, password source.

    :param dsn: the caller's DSN, if any.
    :param kwargs: the caller's keyword arguments (warmdb's and the driver's).
    :param adapter: the driver's :class:`warmdb.drivers.Adapter` (typed loosely here:
        :mod:`warmdb.drivers` builds on this module's plans, not the other way round).
    :param custom_credentials_provider: a botocore ``CredentialProvider`` tried first.
    :param policy: how connections live and connects are retried; the preset for the
        endpoint's auth mode (:func:`warmdb.policy.policy_for`) by default.
    :raises ConfigurationError: a bad, unknown or contradictory argument.
    """

    __slots__ = (
        "_credentials",
        "_password",
        "_spec",
        "adapter",
        "driver_kwargs",
        "endpoint",
        "event_origin",
        "governor",
        "policy",
        "via_sidecar",
    )

    adapter: Any
    endpoint: Endpoint
    driver_kwargs: dict[str, object]
    policy: Policy
    #: where this plan's events come from: ``driver``, ``host`` and ``port``, the fields every
    #: :mod:`warmdb.events` event starts with (made once; never changed)
    event_origin: dict[str, Any]
    #: the per-endpoint bucket of the policy's ``connect_rate``, or ``None``
    governor: RateGovernor | None
    #: whether ``WARMDB_SIDECAR`` redirected the plan to a sidecar
    via_sidecar: bool

    def __init__(
        self,
        dsn: str | None,
        kwargs: Mapping[str, object],
        *,
        adapter: Any,
        custom_credentials_provider: object | None = None,
        policy: Policy | None = None,
    ) -> None:
        family = FAMILIES[adapter.family]
        sidecar = os.environ.get("WARMDB_SIDECAR") if family.supports_dsql else None
        if sidecar:
            from warmdb.sidecar.client import through_sidecar

            # The sidecar holds the endpoint and signs the tokens (docs/sidecar.md).
            dsn, kwargs = None, through_sidecar(sidecar, kwargs, adapter)
            custom_credentials_provider = None
        self.via_sidecar = bool(sidecar)
        endpoint, password, driver_kwargs = resolve(dsn, kwargs, family=family)
        unknown = sorted(set(driver_kwargs) - adapter.driver_keys)
        if unknown:
            valid = adapter.driver_keys | family.endpoint_keys | _FRONT_KEYS
            raise ConfigurationError(
                f"unknown argument {unknown[0]!r} for {adapter.name}"
                + did_you_mean(unknown[0], valid)
            )
        if policy is not None and not isinstance(policy, Policy):
            raise ConfigurationError(
                f"policy must be a warmdb.policy.Policy, not {type(policy).__name__}"
            )
        if isinstance(password, str) and "\0" in password:
            raise ConfigurationError("password contains a NUL character")
        if password is not None and not isinstance(password, str) and not callable(password):
            raise ConfigurationError(
                f"password must be a string or a callable, not {type(password).__name__}"
            )
        self.adapter = adapter
        self.endpoint = endpoint
        self.event_origin = {"driver": adapter.name, "host": endpoint.host, "port": endpoint.port}
        self.driver_kwargs = driver_kwargs
        self.policy = policy if policy is not None else policy_for(endpoint.auth)
        rate = self.policy.connect_rate
        self.governor = (
            None if rate is None else endpoint_governor(endpoint.host, endpoint.port, rate)
        )
        self._password = password
        if custom_credentials_provider is not None and not endpoint.uses_token:
            raise ConfigurationError(
                "custom_credentials_provider needs auth='dsql' or auth='rds' "
                f"(host {endpoint.host!r} resolved to auth='password')"
            )
        if endpoint.uses_token:
            self._spec: TokenSpec | None = endpoint.token_spec()
            self._credentials: Callable[[], Credentials] | None = credentials_source(
                profile=endpoint.profile, custom_provider=custom_credentials_provider
            )
        else:
            self._spec = None
            self._credentials = None
        adapter.check_plan(self)

    def password(self) -> str | None:
        """Return the password for one connect attempt.

        A token (cached while fresh) in the token modes; in password mode the caller's string,
        the result of calling the caller's callable, or ``None``.

        :raises CredentialsError: no credentials to sign with, or the password callable
            raised or returned something not a string.
        :raises ConfigurationError: the password callable returned an awaitable (use an async
            front).
        """
        password = self._raw_password()
        if hasattr(password, "__await__"):
            close = getattr(password, "close", None)
            if close is not None:
                close()  # don't leave a never-awaited coroutine warning behind
            # A sync front given an async callable: a configuration mistake, not a failure.
            raise ConfigurationError(
                "the password callable returned an awaitable: use an async connect function"
            )
        return _check_password(password)

    async def password_async(self) -> str | None:
        """Like :meth:`password`, awaiting the password callable's result if it is awaitable."""
        password = self._raw_password()
        if hasattr(password, "__await__"):
            try:
                password = await password
            except Exception as exc:
                raise _callable_failed(exc) from exc
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
            try:
                return password()
            except Exception as exc:
                raise _callable_failed(exc) from exc
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
        return f"ConnectPlan({self.adapter.name}, {self.endpoint!r})"


def _callable_failed(exc: Exception) -> CredentialsError:
    # The callable's own text may hold anything, a secret included: only its type is named.
    return CredentialsError(f"the password callable raised {type(exc).__name__}")


def _check_password(password: object) -> str | None:
    if password is None:
        return None
    if not isinstance(password, str):
        raise CredentialsError(
            f"the password callable returned {type(password).__name__}, not a string"
        )
    if "\0" in password:
        raise CredentialsError("the password callable returned a password with a NUL character")
    return password


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each secret in *text* with a placeholder."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, _REDACTED)
    return text


def connect_error(exc: BaseException, plan: ConnectPlan, password: object) -> ConnectError:
    """The :class:`ConnectError` for a driver's connect failure *exc*, caused by it.

    The class, SQLSTATE, error number and retry reason come from the adapter's
    classification. When the driver's own text contains a secret, the cause is left out
    instead (a traceback would print the driver's text); the codes are kept either way.
    Raise it outside the ``except`` block that caught *exc*, so the driver's exception is not
    its context either.
    """
    adapter = plan.adapter
    endpoint = plan.endpoint
    raw = str(exc).strip() or type(exc).__name__
    text = scrub(raw, plan.secrets_of(password))
    verdict = adapter.classify(exc)
    cls = AuthenticationError if verdict.reason == AUTH else ConnectError
    where = f"{endpoint.host}:{endpoint.port}"
    as_user = f" as {endpoint.user!r}" if endpoint.user is not None else ""
    code = verdict.sqlstate or (str(verdict.errno) if verdict.errno is not None else None)
    detail = f" [{'SQLSTATE' if verdict.sqlstate else 'error'} {code}]" if code else ""
    error = cls(
        f"{adapter.name} could not connect to {where}{as_user}: {text}{detail}",
        sqlstate=verdict.sqlstate,
        errno=verdict.errno,
        driver=adapter.name,
        reason=verdict.reason,
    )
    logger.debug("connect to %s failed: %s%s", where, text, detail)
    error.__cause__ = exc if text == raw else None
    error.__suppress_context__ = True
    return error


class Attempts:
    """The connect attempts of one open: what to do after each failure. No I/O.

    :param plan: gives the policy (retry budget) and the endpoint reported in events.
    :param now: the monotonic time of the first attempt.
    """

    __slots__ = ("_auth_retried", "_backoff", "_warned", "attempts", "plan", "started", "waited")

    def __init__(self, plan: ConnectPlan, now: float) -> None:
        self.plan = plan
        self.started = now
        self.attempts = 0
        self.waited = 0.0
        # Made at the first failure: most opens succeed at once and need no schedule.
        self._backoff: Backoff | None = None
        self._auth_retried = False
        self._warned = False

    def failed(self, error: ConnectError, now: float) -> float:
        """The seconds to wait before the next attempt after *error*; re-raises it when the
        policy gives up. An authentication failure with a token is retried once, at once,
        with a new token."""
        plan = self.plan
        if error.reason == AUTH:
            if self._auth_retried or not plan.uses_token:
                raise error
            self._auth_retried = True
            plan.discard_token()
            delay = 0.0
        else:
            if not error.reason:
                raise error
            schedule = self._backoff or Backoff.from_policy(plan.policy).start(self.started)
            backoff = schedule.increment(now)
            if backoff is None:
                raise error
            self._backoff = backoff
            delay = backoff.delay
        if error.reason == REFUSED and not self._warned:
            # A mistyped port looks like a server that is not up yet: say so at once, instead
            # of retrying in silence for the whole retry budget.
            self._warned = True
            logger.warning(
                "%s refused the connection; retrying for up to %.0f s "
                "(policy.retry_timeout): is the port right?",
                f"{plan.endpoint.host}:{plan.endpoint.port}",
                plan.policy.retry_timeout,
            )
        events.emit_retry(
            events.RetryEvent(
                **plan.event_origin,
                attempt=self.attempts,
                reason=error.reason or "",
                sqlstate=error.sqlstate,
                delay=delay,
            )
        )
        self.waited += delay
        return delay

    def succeeded(self, attempt_started: float, now: float) -> None:
        """Report the open connection (see :class:`warmdb.events.ConnectEvent`)."""
        plan = self.plan
        events.emit_connect(
            events.ConnectEvent(
                **plan.event_origin,
                user=plan.endpoint.user,
                attempts=self.attempts,
                seconds=now - self.started,
                connect_seconds=now - attempt_started,
                waited_seconds=self.waited,
            )
        )


def open_connection(
    plan: ConnectPlan,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
) -> Any:
    """Open one connection for *plan* with its sync adapter, retrying as its policy says.

    Each attempt first takes a token from the process-wide rate governor and the policy's
    per-endpoint one, when they are set, then
    a password (a fresh enough token), then calls the driver's connect.

    :raises ConnectError: the last attempt's error, when the policy gives up.
    :raises CredentialsError: no password could be had.
    """
    return run(_open_steps(plan, clock, sleep, is_async=False))


async def open_connection_async(
    plan: ConnectPlan, *, clock: Callable[[], float] = time.monotonic
) -> Any:
    """:func:`open_connection` for an async adapter; waits are ``asyncio.sleep``."""
    import asyncio

    return await run_async(_open_steps(plan, clock, asyncio.sleep, is_async=True))


def _open_steps(
    plan: ConnectPlan, clock: Callable[[], float], sleep: Callable[[float], Any], *, is_async: bool
) -> Generator[Callable[[], Any], Any, Any]:
    """The connect attempts of one open, as steps (:mod:`warmdb._steps`)."""
    adapter = plan.adapter
    attempts = Attempts(plan, clock())
    while True:
        for governor in (current_governor(), plan.governor):
            # A reservation is due now or after a wait: only a wait is a step (no await, no
            # call into the loop, on the usual path).
            wait = 0.0 if governor is None else governor.reserve()
            if wait > 0:
                yield partial(sleep, wait)
                attempts.waited += wait
        attempts.attempts += 1
        attempt_started = clock()
        password = yield plan.password_async if is_async else plan.password
        params = adapter.connect_params(plan, password)
        try:
            conn = yield partial(adapter.connect_raw, params)
        except adapter.connect_errors as exc:
            error = connect_error(exc, plan, password)
        else:
            attempts.succeeded(attempt_started, clock())
            return conn
        # Outside the except block: the error must not carry the driver's as its context.
        delay = attempts.failed(error, clock())
        if delay > 0:
            yield partial(sleep, delay)
