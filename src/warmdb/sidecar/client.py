"""How warmdb's fronts reach a running sidecar: the one setting ``WARMDB_SIDECAR``.

When the environment variable names a sidecar's state file, every PostgreSQL front
(``connect()``, ``warm()``, pools, engines) connects to the sidecar instead of the endpoint it
was given: the sidecar was started with the real endpoint and signs the tokens. The state file
says where the sidecar listens, which database and user to ask for, and where the client
password is (read at each connect, so a restarted sidecar's new password is picked up). When
the sidecar's PgBouncer cannot keep protocol-level prepared statements in transaction mode,
each driver's adapter turns its own off (asyncpg's statement cache, psycopg's prepare
threshold).
"""

from __future__ import annotations

from warmdb.endpoint import POSTGRESQL
from warmdb.sidecar.state import read_state

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

__all__ = ["through_sidecar"]


def through_sidecar(path: str, kwargs: Mapping[str, object], adapter: Any) -> dict[str, object]:
    """The connect arguments for the sidecar whose state file is *path*, keeping the caller's
    driver arguments.

    :param kwargs: the caller's arguments; those naming the endpoint are replaced.
    :param adapter: the driver's adapter, for its transaction-pooling settings.
    :raises ConfigurationError: the state file or the password file cannot be read.
    """
    state = read_state(path)
    # Where the endpoint is and how to log in: the sidecar's business when it is in use.
    arguments = {k: v for k, v in kwargs.items() if k not in POSTGRESQL.endpoint_keys}
    if not state.prepared_statements:
        for name, value in adapter.transaction_pooling_defaults().items():
            arguments.setdefault(name, value)
    password_file = state.password_file
    arguments.update(
        host=state.host,
        port=state.port,
        user=state.user,
        dbname=state.dbname,
        auth="password",
        # Loopback to a local PgBouncer: no TLS to set up (the sidecar's server side has it).
        sslmode="disable",
        password=lambda: _read_password(password_file),
    )
    return arguments


def _read_password(path: str) -> str:
    from warmdb.sidecar.state import read_password

    return read_password(path)
