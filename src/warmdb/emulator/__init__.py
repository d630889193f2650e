"""A local endpoint that behaves like Aurora DSQL, on an embedded PostgreSQL.

Start one with ``warmdb emulate`` or, from Python, :func:`serve`::

    with warmdb.emulator.serve(time_scale=60) as dsql:
        psycopg.connect(**dsql.connection_params())

The names below are imported on first use, so ``import warmdb.emulator`` stays cheap.
"""

from __future__ import annotations

from warmdb.emulator._lazy import exports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from warmdb.emulator.lifecycle import random_credentials
    from warmdb.emulator.limits import Limits
    from warmdb.emulator.service import Emulator, serve
    from warmdb.emulator.stats import StatsSnapshot

__all__ = ["Emulator", "Limits", "StatsSnapshot", "random_credentials", "serve"]

__getattr__ = exports(
    __name__,
    {
        "Emulator": "warmdb.emulator.service",
        "Limits": "warmdb.emulator.limits",
        "StatsSnapshot": "warmdb.emulator.stats",
        "random_credentials": "warmdb.emulator.lifecycle",
        "serve": "warmdb.emulator.service",
    },
)
