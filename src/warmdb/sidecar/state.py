"""The sidecar's state file: how clients find a running sidecar and log in to it.

The sidecar writes one JSON file in its private directory (mode 0700) and rewrites it, always
atomically, whenever something in it changes. Clients are pointed at it with one setting,
``WARMDB_SIDECAR=<path of the state file>``, and read it with :func:`read_state`::

    {"host": "127.0.0.1", "port": 6432, "dbname": "postgres", "user": "warmdb",
     "password_file": "/tmp/warmdb-sidecar/client-password", "pgbouncer_version": "1.18.0",
     "prepared_statements": false, "pid": 4242, ...}

The file holds no secret: the client password is in ``password_file`` (mode 0600 as well), and
the IAM token never leaves the sidecar's PgBouncer auth file.

This module is pure standard library (``json``, ``os``) so that any warmdb module, the lightest
included, can import it.
"""

from __future__ import annotations

import json
import os

from warmdb.errors import ConfigurationError

__all__ = [
    "ENVIRONMENT_VARIABLE",
    "SidecarState",
    "read_password",
    "read_state",
    "write_private_file",
    "write_state",
]

#: The one setting that points clients at a sidecar: the path of its state file.
ENVIRONMENT_VARIABLE = "WARMDB_SIDECAR"


class SidecarState:
    """Where a running sidecar listens and how to log in to it. Immutable.

    A plain class, not a dataclass: :mod:`dataclasses` imports :mod:`inspect`, which a cold
    start that only reads this file should not pay for.

    :ivar host: the address PgBouncer listens on (``127.0.0.1`` unless asked otherwise).
    :ivar port: its TCP port.
    :ivar dbname: the database name clients ask for.
    :ivar user: the user name clients log in as (not the database user behind it).
    :ivar password_file: a file (mode 0600) holding the client password, one line.
    :ivar pgbouncer_version: the running PgBouncer's version, e.g. ``"1.18.0"``.
    :ivar prepared_statements: whether protocol-level prepared statements work through it
        (PgBouncer 1.21+ in transaction mode); asyncpg needs ``statement_cache_size=0`` when
        they do not.
    :ivar pid: the sidecar's process id (the supervisor, not PgBouncer).
    :ivar unix_socket_dir: the directory of PgBouncer's Unix socket (a libpq ``host``), or
        ``None``.
    :ivar token_issued_at: Unix time the token in use was signed, or ``None``.
    :ivar token_expires_at: Unix time it expires, or ``None``.
    """

    __slots__ = (
        "dbname",
        "host",
        "password_file",
        "pgbouncer_version",
        "pid",
        "port",
        "prepared_statements",
        "token_expires_at",
        "token_issued_at",
        "unix_socket_dir",
        "user",
    )

    host: str
    port: int
    dbname: str
    user: str
    password_file: str
    pgbouncer_version: str
    prepared_statements: bool
    pid: int
    unix_socket_dir: str | None
    token_issued_at: float | None
    token_expires_at: float | None

    def __init__(
        self,
        *,
        host: str,
        port: int,
        dbname: str,
        user: str,
        password_file: str,
        pgbouncer_version: str,
        prepared_statements: bool,
        pid: int,
        unix_socket_dir: str | None = None,
        token_issued_at: float | None = None,
        token_expires_at: float | None = None,
    ) -> None:
        values = {
            "host": host,
            "port": port,
            "dbname": dbname,
            "user": user,
            "password_file": password_file,
            "pgbouncer_version": pgbouncer_version,
            "prepared_statements": prepared_statements,
            "pid": pid,
            "unix_socket_dir": unix_socket_dir,
            "token_issued_at": token_issued_at,
            "token_expires_at": token_expires_at,
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("SidecarState is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SidecarState):
            return NotImplemented
        return self.as_dict() == other.as_dict()

    def __hash__(self) -> int:
        return hash(tuple(self.as_dict().values()))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in self.as_dict().items())
        return f"SidecarState({fields})"

    def as_dict(self) -> dict[str, object]:
        """The state as JSON-ready data, in field order."""
        return {name: getattr(self, name) for name in _FIELDS}

    def replace(self, **changes: object) -> SidecarState:
        """A copy with *changes* applied."""
        return SidecarState(**{**self.as_dict(), **changes})  # type: ignore[arg-type]

    def password(self) -> str:
        """Read the client password from :attr:`password_file`.

        :raises ConfigurationError: the file is missing or empty.
        """
        return read_password(self.password_file)


_REQUIRED_TYPES: dict[str, tuple[type, ...]] = {
    "host": (str,),
    "port": (int,),
    "dbname": (str,),
    "user": (str,),
    "password_file": (str,),
    "pgbouncer_version": (str,),
    "prepared_statements": (bool,),
    "pid": (int,),
}
_OPTIONAL_TYPES: dict[str, tuple[type, ...]] = {
    "unix_socket_dir": (str,),
    "token_issued_at": (int, float),
    "token_expires_at": (int, float),
}
_FIELDS = (*_REQUIRED_TYPES, *_OPTIONAL_TYPES)


def read_state(path: str | os.PathLike[str]) -> SidecarState:
    """Read the state file a sidecar wrote at *path*.

    Unknown keys are ignored, so a newer sidecar's file stays readable.

    :raises ConfigurationError: the file is missing, unreadable, not JSON, or lacks a field;
        the message names the file, the field and :data:`ENVIRONMENT_VARIABLE`.
    """
    where = f"sidecar state file {os.fspath(path)!r} ({ENVIRONMENT_VARIABLE})"
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except FileNotFoundError:
        raise ConfigurationError(
            f"{where} does not exist: is `warmdb sidecar` running, with the same path?"
        ) from None
    except OSError as exc:
        raise ConfigurationError(f"{where} cannot be read: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise ConfigurationError(f"{where} is not valid JSON") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"{where} does not hold a JSON object")
    fields: dict[str, object] = {}
    for name, types in _REQUIRED_TYPES.items():
        if name not in data:
            raise ConfigurationError(f"{where} lacks {name!r}")
        fields[name] = _checked(where, name, data[name], types)
    for name, types in _OPTIONAL_TYPES.items():
        if data.get(name) is not None:
            fields[name] = _checked(where, name, data[name], types)
    return SidecarState(**fields)  # type: ignore[arg-type]


def _checked(where: str, name: str, value: object, types: tuple[type, ...]) -> object:
    # bool is an int in Python; a port of `true` is still malformed.
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise ConfigurationError(f"{where}: {name!r} has the wrong type")
    return value


def read_password(path: str | os.PathLike[str]) -> str:
    """Read a client password file (one line; surrounding whitespace is ignored).

    :raises ConfigurationError: the file is missing, unreadable or empty.
    """
    try:
        with open(path, encoding="utf-8") as file:
            password = file.read().strip()
    except OSError as exc:
        raise ConfigurationError(
            f"sidecar password file {os.fspath(path)!r} cannot be read: {exc.strerror}"
        ) from None
    if not password:
        raise ConfigurationError(f"sidecar password file {os.fspath(path)!r} is empty")
    return password


def write_private_file(
    path: str | os.PathLike[str], text: str, *, owner: tuple[int, int] | None = None
) -> None:
    """Write *text* to *path* atomically, readable by its owner only (mode 0600).

    The text goes to a temporary file in the same directory, created 0600 (never readable by
    others, not even for a moment), flushed to disk, then renamed over *path*: a reader sees the
    old file or the new one, and PgBouncer's RELOAD sees a changed inode.

    :param owner: ``(uid, gid)`` to give the file before it is renamed into place (when a
        root process writes for an unprivileged server), or ``None``.
    """
    path = os.fspath(path)
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        if owner is not None:
            os.chown(temporary, *owner)
        os.replace(temporary, path)
    except BaseException:
        # Not contextlib.suppress: this module imports json and os only.
        try:  # noqa: SIM105
            os.unlink(temporary)
        except OSError:
            pass
        raise


def write_state(
    path: str | os.PathLike[str], state: SidecarState, *, owner: tuple[int, int] | None = None
) -> None:
    """Write *state* to *path* as one JSON object, atomically, mode 0600."""
    write_private_file(path, json.dumps(state.as_dict(), sort_keys=True) + "\n", owner=owner)
