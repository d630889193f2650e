"""A local endpoint that behaves like RDS for MySQL with IAM authentication, on MariaDB.

Start one with ``warmdb emulate --engine mysql`` or, from Python, :func:`serve`::

    with warmdb.emulator.mysql.serve(idle_client_timeout=2) as rds:
        pymysql.connect(**rds.connection_params())

The names below are imported on first use, so ``import warmdb.emulator.mysql`` stays cheap.
"""

from __future__ import annotations

from warmdb.emulator._lazy import exports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from warmdb.emulator.mysql.limits import MySQLLimits, MySQLStatsSnapshot
    from warmdb.emulator.mysql.service import MySQLEmulator, serve

__all__ = ["MySQLEmulator", "MySQLLimits", "MySQLStatsSnapshot", "serve"]

__getattr__ = exports(
    __name__,
    {
        "MySQLEmulator": "warmdb.emulator.mysql.service",
        "MySQLLimits": "warmdb.emulator.mysql.limits",
        "MySQLStatsSnapshot": "warmdb.emulator.mysql.limits",
        "serve": "warmdb.emulator.mysql.service",
    },
)
