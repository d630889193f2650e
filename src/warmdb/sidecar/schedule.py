"""When the sidecar signs a new token, and how long it waits before restarting PgBouncer. Pure.

A token is checked only when a server connection logs in, so the token in PgBouncer's auth file
must be valid at every moment a new server connection may open: the sidecar writes a new one
when two thirds of the old one's lifetime have passed, leaving a third (five minutes of a
fifteen-minute token) for a slow refresh, a retry, or a frozen Lambda environment that thaws.

Each refresh reloads PgBouncer. Before 1.24, a RELOAD renews every TLS server connection (each
is closed when its client releases it, and the next one logs in again), so the refresh
interval is the server pool's lifetime. Where the token's lifetime is ours to choose (DSQL), it
is then six hours instead of fifteen minutes, keeping that churn rare; RDS tokens always last
fifteen minutes, so there the churn remains, and the plan says so.
"""

from __future__ import annotations

from warmdb._record import Record
from warmdb.auth.tokens import MAX_TOKEN_DURATION, RDS_TOKEN_DURATION
from warmdb.errors import ConfigurationError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from warmdb.sidecar.pgbouncer import Capabilities

__all__ = ["RefreshPlan", "plan_refresh", "restart_delay"]

#: DSQL token lifetime when RELOAD is cheap (PgBouncer 1.24+): DSQL's own default.
DSQL_TOKEN_DURATION = 900
#: DSQL token lifetime when every RELOAD renews the TLS server connections (before 1.24).
DSQL_TOKEN_DURATION_CHURN = 6 * 3600
#: The share of a token's lifetime after which the next one is signed.
REFRESH_SHARE = 2 / 3


class RefreshPlan(Record):
    """How long tokens last and how often a new one is written.

    :ivar token_duration: the lifetime signed into each token (``X-Amz-Expires``), seconds.
    :ivar refresh_interval: seconds between refreshes, already divided by the time scale.
    :ivar note: why this plan, for the log when it has a cost (TLS churn), else ``None``.
    """

    _shown = "token_duration={token_duration}, refresh_interval={refresh_interval!r}"

    token_duration: int
    refresh_interval: float
    note: str | None


def plan_refresh(
    kind: str,
    caps: Capabilities,
    *,
    token_duration: int | None = None,
    time_scale: float = 1.0,
) -> RefreshPlan:
    """The refresh plan for *kind* (``"dsql"`` or ``"rds"``) tokens on PgBouncer *caps*.

    :param token_duration: the DSQL token lifetime in seconds, or ``None`` for the version's
        default (15 minutes, or 6 hours before 1.24). RDS tokens always last 15 minutes.
    :param time_scale: divides the refresh interval (tests against an emulator whose tokens
        expire *time_scale* times faster).
    :raises ConfigurationError: a bad lifetime or scale.
    """
    if not time_scale > 0:
        raise ConfigurationError(f"time_scale={time_scale!r} must be greater than 0")
    version = caps.version_text
    note = None
    if kind == "rds":
        if token_duration not in (None, RDS_TOKEN_DURATION):
            raise ConfigurationError("RDS IAM tokens always last 900 seconds")
        duration = RDS_TOKEN_DURATION
        if caps.reload_drops_tls:
            note = (
                f"PgBouncer {version} renews every TLS server connection at each RELOAD, and "
                "RDS tokens last 15 minutes: the server pool is renewed every 10 minutes "
                "(PgBouncer 1.24+ keeps it)"
            )
    elif kind == "dsql":
        if token_duration is None:
            churn = caps.reload_drops_tls
            duration = DSQL_TOKEN_DURATION_CHURN if churn else DSQL_TOKEN_DURATION
            if churn:
                note = (
                    f"PgBouncer {version} renews every TLS server connection at each RELOAD: "
                    f"tokens last {duration // 3600} hours so that happens every "
                    f"{duration * REFRESH_SHARE / 3600:g} hours (PgBouncer 1.24+ avoids it)"
                )
        else:
            duration = token_duration
        if not 60 <= duration <= MAX_TOKEN_DURATION:
            raise ConfigurationError(
                f"token_duration={duration!r} must be between 60 and {MAX_TOKEN_DURATION} seconds"
            )
    else:
        raise ConfigurationError(f"auth={kind!r} must be 'dsql' or 'rds' for the sidecar")
    return RefreshPlan(
        token_duration=duration, refresh_interval=duration * REFRESH_SHARE / time_scale, note=note
    )


def restart_delay(failures: int, *, base: float = 0.1, cap: float = 10.0) -> float:
    """Seconds to wait before restarting PgBouncer after *failures* quick exits in a row.

    Doubles from *base* up to *cap*: a PgBouncer that dies once is back at once; one that
    cannot start does not spin.
    """
    if failures <= 0:
        return 0.0
    return float(min(cap, base * 2 ** (failures - 1)))
