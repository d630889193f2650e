"""What a PgBouncer version can do, and the files that configure it. Pure, except :func:`detect`.

PgBouncer has no IAM support: the sidecar writes the token as the password of the database user
in PgBouncer's ``auth_file`` and reloads it. The database entry forces that user without a
password, so PgBouncer takes the server password from the auth file at every server login
(``get_srv_psw`` in PgBouncer's ``proto.c``). Clients log in as a different, local user with a
generated password; the HBA file admits that user only, so the token is never a client
credential.

Version facts, read from PgBouncer's source (``include/bouncer.h``, ``src/sbuf.c``) and
``NEWS.md``:

==============  ===================================================================
version         fact
==============  ===================================================================
before 1.16     ``MAX_PASSWORD`` 160: an IAM token never fits
1.16            996: short tokens only
1.17 to 1.25    2,048 (Debian bookworm's 1.18 among them)
after 1.25      65,531 (master since July 2026, in no release yet)
before 1.21     no protocol-level prepared statements in transaction mode
before 1.23     SIGTERM exits at once; SIGINT is the safe shutdown
before 1.24     every RELOAD marks every TLS server connection for closing (closed when
                released, so no query fails, but each refresh renews the server pool)
==============  ===================================================================

The password buffer includes the trailing NUL, so a password may have ``MAX_PASSWORD - 1``
bytes: longer ones are refused with "password too long in auth file".
"""

from __future__ import annotations

import re
import subprocess

from warmdb.errors import ConfigurationError, WarmdbError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "Capabilities",
    "PgBouncerError",
    "capabilities",
    "check_password",
    "default_settings",
    "detect",
    "parse_version",
    "render_auth_file",
    "render_hba",
    "render_ini",
]

# (first version, MAX_PASSWORD from then on), newest first.
_PASSWORD_BUFFERS = (((1, 26), 65_531), ((1, 17), 2_048), ((1, 16), 996), ((0,), 160))
# Characters that would need quoting in a connection string or the auth file.
_UNSAFE = re.compile(r"[\s'\"\\=#;]")
# Words an HBA file reads as something other than one user name.
_HBA_KEYWORDS = frozenset({"all", "sameuser", "samerole", "samegroup", "replication"})


class PgBouncerError(WarmdbError):
    """PgBouncer could not be found, started or reached."""

    __module__ = "warmdb.sidecar.pgbouncer"


class Capabilities:
    """What one PgBouncer version supports. Immutable.

    :ivar version: the version as a tuple, e.g. ``(1, 18, 0)``.
    :ivar password_limit: the longest password, in bytes, its auth file accepts.
    :ivar prepared_statements: protocol-level prepared statements work in transaction mode
        (``max_prepared_statements``, 1.21+).
    :ivar reload_drops_tls: a RELOAD renews every TLS server connection (before 1.24).
    :ivar sigterm_waits: SIGTERM waits for clients (1.23+); before, it exits at once.
    """

    __slots__ = (
        "password_limit",
        "prepared_statements",
        "reload_drops_tls",
        "sigterm_waits",
        "version",
    )

    def __init__(self, version: tuple[int, ...]) -> None:
        self.version = version
        self.password_limit = next(size for v, size in _PASSWORD_BUFFERS if version >= v) - 1
        self.prepared_statements = version >= (1, 21)
        self.reload_drops_tls = version < (1, 24)
        self.sigterm_waits = version >= (1, 23)

    @property
    def version_text(self) -> str:
        """The version as text, e.g. ``"1.18.0"``."""
        return ".".join(map(str, self.version))

    def __repr__(self) -> str:
        return (
            f"Capabilities(version={self.version_text!r}, password_limit={self.password_limit}, "
            f"prepared_statements={self.prepared_statements}, "
            f"reload_drops_tls={self.reload_drops_tls})"
        )


def parse_version(output: str) -> tuple[int, ...]:
    """The version in ``pgbouncer --version`` output (``"PgBouncer 1.18.0\\n..."``).

    :raises PgBouncerError: no version in *output*.
    """
    match = re.search(r"PgBouncer\s+(\d+)\.(\d+)(?:\.(\d+))?", output, re.IGNORECASE)
    if match is None:
        raise PgBouncerError("could not read a version from `pgbouncer --version`")
    return tuple(int(part) for part in match.groups(default="0"))


def capabilities(version: tuple[int, ...]) -> Capabilities:
    """The :class:`Capabilities` of *version*."""
    return Capabilities(version)


def detect(binary: str) -> Capabilities:
    """Run ``binary --version`` and return what that PgBouncer can do.

    :raises PgBouncerError: the binary cannot run or prints no version.
    """
    try:
        done = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise PgBouncerError(f"cannot run {binary!r}: {exc}") from exc
    return capabilities(parse_version(done.stdout + done.stderr))


def check_password(token: str, caps: Capabilities) -> None:
    """Refuse a token PgBouncer would truncate or reject, with advice.

    :raises ConfigurationError: *token* is longer than ``caps.password_limit`` bytes, or holds
        a character the auth file cannot carry. The message gives sizes, never the token.
    """
    size = len(token.encode())
    if size > caps.password_limit:
        raise ConfigurationError(
            f"the IAM token is {size} bytes but PgBouncer {caps.version_text} accepts passwords "
            f"of at most {caps.password_limit} bytes: use PgBouncer 1.17 or newer (2,047 "
            "bytes), and shorter credentials (a long AWS_SESSION_TOKEN makes long tokens)"
        )
    if '"' in token or "\n" in token or "\0" in token:
        raise ConfigurationError("the IAM token holds a character the PgBouncer auth file cannot")


def _checked_word(name: str, value: str) -> str:
    if not value or _UNSAFE.search(value):
        raise ConfigurationError(
            f"{name}={value!r} must be a non-empty word without spaces, quotes, '=', '#' or ';'"
        )
    return value


def render_auth_file(entries: Mapping[str, str]) -> str:
    """The ``auth_file`` text: one ``"user" "password"`` line per entry, plain-text secrets.

    A plain-text secret is what PgBouncer sends to the server when it logs in as that user.
    """
    lines = []
    for user, password in entries.items():
        _checked_word("user", user)
        if '"' in password or "\n" in password:
            raise ConfigurationError(f"the password of {user!r} holds a quote or a newline")
        lines.append(f'"{user}" "{password}"')
    return "\n".join(lines) + "\n"


def render_hba(client_user: str) -> str:
    """The ``auth_hba_file`` text: *client_user* only, with SCRAM, from anywhere it listens.

    The database user is in the auth file too (its password is the token); it must not be a
    way in.
    """
    user = _checked_word("client_user", client_user)
    if user.lower() in _HBA_KEYWORDS or user[0] in "+@":
        raise ConfigurationError(
            f"client_user={user!r} is an HBA keyword or pattern, which would admit other users"
        )
    return "".join(
        f"{kind} all {user} {address}scram-sha-256\n"
        for kind, address in (("local", ""), ("host", "0.0.0.0/0 "), ("host", "::/0 "))
    )


def render_ini(
    *,
    dbname: str,
    server_host: str,
    server_port: int,
    server_dbname: str,
    server_user: str,
    settings: Mapping[str, object],
) -> str:
    """The ``pgbouncer.ini`` text: one database entry and the ``[pgbouncer]`` *settings*.

    The entry forces *server_user* without a password, so the password comes from the auth
    file at every server login.

    :raises ConfigurationError: a name holds characters that would need quoting, or a setting
        value holds a newline.
    """
    entry = " ".join(
        [
            f"host={_checked_word('host', server_host)}",
            f"port={int(server_port)}",
            f"dbname={_checked_word('server dbname', server_dbname)}",
            f"user={_checked_word('user', server_user)}",
        ]
    )
    lines = ["[databases]", f"{_checked_word('dbname', dbname)} = {entry}", "", "[pgbouncer]"]
    for name, value in settings.items():
        text = _setting_text(value)
        if not re.fullmatch(r"[a-z_0-9]+", name) or "\n" in text or "\r" in text:
            raise ConfigurationError(f"PgBouncer setting {name!r} is malformed")
        lines.append(f"{name} = {text}")
    return "\n".join(lines) + "\n"


def _setting_text(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def default_settings(
    caps: Capabilities,
    *,
    listen_host: str,
    listen_port: int,
    directory: str,
    pool_size: int,
    client_user: str,
    sslmode: str,
    ca_file: str | None,
) -> dict[str, object]:
    """The ``[pgbouncer]`` settings the sidecar starts from; the caller may override any.

    Transaction pooling; TLS to the server; server connections renewed well before DSQL's
    60-minute cut; a failed server login retried after 1 second instead of 15, so a token
    or network hiccup does not stall clients; clients admitted by the HBA file only.
    """
    settings: dict[str, object] = {
        "listen_addr": listen_host,
        "listen_port": listen_port,
        "unix_socket_dir": directory,
        "unix_socket_mode": "0600",
        "auth_type": "hba",
        "auth_hba_file": f"{directory}/hba.conf",
        "auth_file": f"{directory}/auth.txt",
        "admin_users": client_user,
        "stats_users": client_user,
        "pool_mode": "transaction",
        "default_pool_size": pool_size,
        "max_db_connections": pool_size,
        "max_client_conn": 1000,
        "server_tls_sslmode": sslmode,
        "server_lifetime": 3000,
        "server_idle_timeout": 300,
        "server_connect_timeout": 5,
        "server_login_retry": 1,
        "query_wait_timeout": 60,
        "client_login_timeout": 30,
        "ignore_startup_parameters": "extra_float_digits",
        "log_connections": 0,
        "log_disconnections": 0,
    }
    if ca_file is not None:
        settings["server_tls_ca_file"] = ca_file
    if caps.prepared_statements:
        settings["max_prepared_statements"] = 200
    return settings
