"""Which tables' schemas changed when: what DSQL's OC001 conflict needs. Thread-safe.

DSQL fails a transaction with ``40001`` and ``OC001`` when a DDL statement committed on a
table the transaction used, after the transaction began. PostgreSQL has no such check, so the
relays of one server share a :class:`SchemaLog`: each committed DDL advances a version and
stamps the tables it changed; at COMMIT a relay asks whether a table it used was stamped
after its transaction began.
"""

from __future__ import annotations

import threading

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["SchemaLog"]


class SchemaLog:
    """A version counter and the version at which each table's schema last changed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed: dict[str, int] = {}
        #: The version now: read without the lock, an int is read atomically.
        self.version = 0

    def record(self, tables: Iterable[str]) -> None:
        """A DDL statement changing *tables* has committed."""
        with self._lock:
            self.version += 1
            for table in tables:
                self._changed[table] = self.version

    def changed_since(self, tables: Iterable[str], version: int) -> bool:
        """Whether any of *tables* changed after *version*."""
        with self._lock:
            return any(self._changed.get(table, 0) > version for table in tables)
