"""Which driver a connection belongs to, and whether an exception is a transaction conflict.

Pure lookups, no I/O. A conflict is recognised anywhere in the exception's chain: the
exception itself, SQLAlchemy's ``.orig``, ``__cause__`` and ``__context__``, so an error
wrapped by an ORM or by the caller's own ``raise ... from`` is still retried. At each link the
driver's adapter is asked first (:meth:`warmdb.drivers.Adapter.classify`); a driver-independent
check of ``sqlstate`` / ``pgcode`` / ``errno`` and of DSQL's message markers follows, so an
exception from a driver warmdb does not know is recognised too.
"""

from __future__ import annotations

import re

from warmdb.drivers import REGISTRY, adapter_class
from warmdb.errors import ConfigurationError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from warmdb.drivers import Adapter

__all__ = ["CONFLICT_ERRNOS", "CONFLICT_SQLSTATES", "adapter_for_connection", "conflict_code"]

#: SQLSTATEs of a lost concurrency conflict: DSQL's codes, PostgreSQL's serialization
#: failure and deadlock. Running the transaction again may succeed.
CONFLICT_SQLSTATES = frozenset({"OC000", "OC001", "40001", "40P01"})
#: MySQL's conflicts, by server error number: deadlock, lock wait timeout.
CONFLICT_ERRNOS = {1213: "1213", 1205: "1205"}
# DSQL sends SQLSTATE 40001 with the finer code at the start of the message; drivers that
# keep only the text (or wrappers that keep only str()) still carry it.
_MARKER = re.compile(r"\b(OC00[01])\b")
# An exception chain longer than this is not followed further (a guard against cycles
# that ids cannot catch, e.g. exceptions rebuilt at each step).
_MAX_LINKS = 16

_ADAPTERS: dict[tuple[type, bool], Adapter] = {}


def adapter_for_connection(conn: object, *, is_async: bool) -> Adapter:
    """The adapter of the driver that made *conn*, found from its type through the registry.

    A subclass of a driver's connection class (psycopg's ``connection_class``...) and a
    pool's proxy (asyncpg's ``PoolConnectionProxy``) are recognised by their package.
    Cached per type.

    :raises ConfigurationError: no registered driver made *conn*, or the driver has no
        adapter of that kind (sync or async).
    """
    key = (type(conn), is_async)
    adapter = _ADAPTERS.get(key)
    if adapter is None:
        adapter = _ADAPTERS[key] = _find_adapter(type(conn), is_async=is_async)
    return adapter


def _find_adapter(cls: type, *, is_async: bool) -> Adapter:
    packages = {klass.__module__.partition(".")[0] for klass in cls.__mro__}
    for entry in REGISTRY.values():
        if entry.library.partition(".")[0] in packages:
            return adapter_class(entry.name, is_async=is_async)()
    raise ConfigurationError(
        f"{cls.__module__}.{cls.__qualname__} is not a connection of a driver warmdb knows "
        f"({', '.join(sorted(REGISTRY))}), nor a keeper, pool, engine or session factory"
    )


def conflict_code(exc: BaseException, adapter: Adapter | None = None) -> str | None:
    """The conflict *exc* reports, or ``None`` when it is not a conflict.

    :param adapter: the driver's adapter, when known; asked first at every link.
    :returns: ``"OC000"`` / ``"OC001"`` (DSQL), ``"40001"`` (serialization failure),
        ``"40P01"`` (deadlock), ``"1213"`` / ``"1205"`` (MySQL), or ``None``.
    """
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending and len(seen) < _MAX_LINKS:
        link = pending.pop(0)
        if id(link) in seen:
            continue
        seen.add(id(link))
        code = _own_code(link, adapter)
        if code is not None:
            return code
        for nxt in (getattr(link, "orig", None), link.__cause__, link.__context__):
            if isinstance(nxt, BaseException):
                pending.append(nxt)
    return None


def _own_code(exc: BaseException, adapter: Adapter | None) -> str | None:
    """The conflict code of *exc* alone, not following its chain."""
    if adapter is not None:
        try:
            conflict = adapter.classify(exc).conflict
        except Exception:  # an adapter meeting a foreign exception must not hide the error
            conflict = None
        if conflict is not None:
            return conflict
    state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    if isinstance(state, str) and state in CONFLICT_SQLSTATES:
        if state == "40001":
            marker = _MARKER.search(str(exc))
            return marker.group(1) if marker else state
        return state
    errno = getattr(exc, "errno", None)
    if isinstance(errno, int) and errno in CONFLICT_ERRNOS and not isinstance(exc, OSError):
        return CONFLICT_ERRNOS[errno]
    if state is None and errno is None:
        marker = _MARKER.search(str(exc))
        if marker:
            return marker.group(1)
    return None
