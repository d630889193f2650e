"""Where to connect and how to authenticate, resolved once from arguments, DSN and environment.

:func:`resolve` turns what a caller wrote (keyword arguments, a DSN, the family's environment
variables such as ``PGHOST``, and ``AWS_*``) into an :class:`Endpoint` plus the driver
arguments warmdb does not interpret. Precedence is explicit and the same for every field::

    keyword argument  >  DSN  >  environment  >  default

The region is the exception: a region named by the host (``*.REGION.on.aws``,
``*.REGION.rds.amazonaws.com``) wins over ``AWS_REGION`` (the function's own region, not
necessarily the database's), and an explicit ``region=`` that contradicts the host is an error.

What differs between database families (default port, environment variables, DSN schemes,
TLS argument names) is one :class:`Family` row: :data:`POSTGRESQL` and :data:`MYSQL`.

A DSN may be a URL (``postgresql://user@host:port/db?region=..&profile=..``, ``mysql://...``),
a libpq ``key=value`` string, a bare host name, or a DSQL cluster id. Only what looks like a
cluster id (26 lowercase letters and digits) is expanded to ``ID.dsql.REGION.on.aws``;
``localhost``, IP addresses and other names are used as given.

Everything here is pure except the last-resort region lookup in the botocore profile.
"""

from __future__ import annotations

import os

from warmdb.auth.tokens import MAX_TOKEN_DURATION, RDS_TOKEN_DURATION, TokenSpec
from warmdb.errors import ConfigurationError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "AUTH_MODES",
    "FAMILIES",
    "MYSQL",
    "POSTGRESQL",
    "SSL_MODES",
    "Endpoint",
    "Family",
    "parse_dsn",
    "resolve",
]

#: ``dsql``: sign a DSQL token; ``rds``: sign an RDS IAM token; ``password``: send the
#: caller's password (or none) as the driver would.
AUTH_MODES = ("dsql", "rds", "password")
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
DEFAULT_TOKEN_DURATION = 900
DSQL_DEFAULT_USER = "admin"
DSQL_DEFAULT_DBNAME = "postgres"

# Host names are classified with string operations rather than regular expressions:
# compiling the patterns cost a cold start about 2 ms (python -X importtime).
_CLUSTER_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")

#: Parameters warmdb interprets, in every family, and never passes to a driver as they are.
#: Each family adds its own TLS spellings (:attr:`Family.endpoint_keys`).
ENDPOINT_KEYS = frozenset(
    {
        "host",
        "port",
        "user",
        "dbname",
        "database",
        "password",
        "region",
        "profile",
        "token_duration_secs",
        "auth",
        "sslmode",
        "sslrootcert",
    }
)


class Family:
    """What differs between database families at endpoint resolution. Immutable.

    :ivar name: ``"postgresql"`` or ``"mysql"``.
    :ivar default_port: the port when none is given.
    :ivar environment: endpoint field -> environment variable read when neither an argument
        nor the DSN gives the field.
    :ivar schemes: the URL schemes of its DSNs.
    :ivar tls_mode_key: the family's own name for the TLS mode argument (``sslmode`` is
        accepted in every family).
    :ivar tls_mode_values: the family's TLS mode values -> warmdb's (libpq's) names.
    :ivar tls_ca_key: the family's own name for the CA file argument (``sslrootcert`` is
        accepted in every family).
    :ivar supports_dsql: whether Aurora DSQL speaks this family's protocol.
    :ivar database_keys: the names the database's name may be given under (``dbname`` and
        ``database`` in every family; MySQL drivers also take ``db``).
    :ivar token_needs_tls: whether a token must never be sent without TLS, so the TLS mode
        ``disable`` is refused with a token (MySQL IAM logins send the token in clear with
        ``mysql_clear_password``; libpq's ``sslmode=disable`` stays a knowing choice).
    :ivar endpoint_keys: every argument warmdb interprets for this family.
    """

    __slots__ = (
        "database_keys",
        "default_port",
        "endpoint_keys",
        "environment",
        "name",
        "schemes",
        "supports_dsql",
        "tls_ca_key",
        "tls_mode_key",
        "tls_mode_values",
        "token_needs_tls",
    )

    def __init__(
        self,
        name: str,
        *,
        default_port: int,
        environment: dict[str, str],
        schemes: tuple[str, ...],
        tls_mode_key: str,
        tls_mode_values: dict[str, str],
        tls_ca_key: str,
        supports_dsql: bool,
        database_keys: tuple[str, ...] = ("dbname", "database"),
        token_needs_tls: bool = False,
    ) -> None:
        self.name = name
        self.default_port = default_port
        self.environment = environment
        self.schemes = schemes
        self.tls_mode_key = tls_mode_key
        self.tls_mode_values = tls_mode_values
        self.tls_ca_key = tls_ca_key
        self.supports_dsql = supports_dsql
        self.database_keys = database_keys
        self.token_needs_tls = token_needs_tls
        self.endpoint_keys = ENDPOINT_KEYS | {tls_mode_key, tls_ca_key, *database_keys}

    def __repr__(self) -> str:
        return f"<Family {self.name}>"


_LIBPQ_SSL_MODES = {mode: mode for mode in SSL_MODES}

#: PostgreSQL, Aurora PostgreSQL and Aurora DSQL: libpq's names and variables.
POSTGRESQL = Family(
    "postgresql",
    default_port=5432,
    environment={
        "host": "PGHOST",
        "port": "PGPORT",
        "user": "PGUSER",
        "dbname": "PGDATABASE",
        "sslmode": "PGSSLMODE",
        "sslrootcert": "PGSSLROOTCERT",
    },
    schemes=("postgresql", "postgres"),
    tls_mode_key="sslmode",
    tls_mode_values=_LIBPQ_SSL_MODES,
    tls_ca_key="sslrootcert",
    supports_dsql=True,
)
#: MySQL, MariaDB and Aurora MySQL: the mysql client's variables, ``ssl_mode`` / ``ssl_ca``.
MYSQL = Family(
    "mysql",
    default_port=3306,
    environment={"host": "MYSQL_HOST", "port": "MYSQL_TCP_PORT"},
    schemes=("mysql", "mariadb"),
    tls_mode_key="ssl_mode",
    tls_mode_values={
        **_LIBPQ_SSL_MODES,
        "DISABLED": "disable",
        "PREFERRED": "prefer",
        "REQUIRED": "require",
        "VERIFY_CA": "verify-ca",
        "VERIFY_IDENTITY": "verify-full",
    },
    tls_ca_key="ssl_ca",
    supports_dsql=False,
    database_keys=("dbname", "database", "db"),
    token_needs_tls=True,
)
#: The families by name.
FAMILIES = {family.name: family for family in (POSTGRESQL, MYSQL)}


class Endpoint:
    """A resolved connection target. Immutable; holds no secret.

    :ivar host: the host to connect to (cluster ids already expanded).
    :ivar port: the TCP port.
    :ivar dbname: the database, or ``None`` for the driver's default.
    :ivar user: the user, or ``None`` for the driver's default (password mode only).
    :ivar region: the AWS region, or ``None`` in password mode when none was found.
    :ivar auth: one of :data:`AUTH_MODES`.
    :ivar token_duration: token lifetime in seconds (token modes).
    :ivar profile: the AWS profile to take credentials from, or ``None``.
    :ivar sslmode: the libpq sslmode, or ``None`` for the driver's default.
    :ivar sslrootcert: CA file for ``verify-ca`` / ``verify-full``, ``"system"``, or ``None``.
    """

    __slots__ = (
        "auth",
        "dbname",
        "host",
        "port",
        "profile",
        "region",
        "sslmode",
        "sslrootcert",
        "token_duration",
        "user",
    )

    host: str
    port: int
    dbname: str | None
    user: str | None
    region: str | None
    auth: str
    token_duration: int
    profile: str | None
    sslmode: str | None
    sslrootcert: str | None

    def __init__(self, **fields: object) -> None:
        for name in self.__slots__:
            object.__setattr__(self, name, fields.pop(name))
        if fields:
            raise TypeError(f"unknown Endpoint fields: {sorted(fields)}")

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Endpoint is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Endpoint):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, n) for n in self.__slots__))

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in sorted(self.__slots__))
        return f"Endpoint({fields})"

    @property
    def uses_token(self) -> bool:
        """Whether connecting sends an IAM token as the password."""
        return self.auth != "password"

    def token_spec(self, *, expires_in: int | None = None) -> TokenSpec:
        """What to sign for this endpoint: its kind, host, port, region, user and lifetime.

        :param expires_in: seconds, when not the endpoint's own ``token_duration`` (the sidecar
            signs for its refresh plan's duration).
        :raises ConfigurationError: in password mode, where there is nothing to sign.
        """
        if self.auth == "password" or self.region is None or self.user is None:
            # resolve() guarantees region and user in the token modes.
            raise ConfigurationError("this endpoint uses a password, not an IAM token")
        return TokenSpec(
            kind=self.auth,
            host=self.host,
            port=self.port,
            region=self.region,
            user=self.user,
            expires_in=self.token_duration if expires_in is None else expires_in,
        )


def is_cluster_id(text: str) -> bool:
    """Whether *text* has the shape of a DSQL cluster id: 26 lowercase letters and digits."""
    return len(text) == 26 and _CLUSTER_ID_CHARS.issuperset(text)


def is_region(text: str) -> bool:
    """Whether *text* is shaped like an AWS region name: ``us-east-1``, ``us-gov-west-1``."""
    parts = text.split("-")
    return (
        len(parts) >= 3
        and len(parts[0]) == 2
        and all(p.isascii() and p.isalpha() and p.islower() for p in parts[:-1])
        and parts[-1].isascii()
        and parts[-1].isdigit()
    )


def _labels(host: str) -> list[str]:
    return host.lower().removesuffix(".").split(".")


def _dsql_region(labels: list[str]) -> str | None:
    # CLUSTER.dsql[-SUFFIX].REGION.on.aws
    if len(labels) >= 5 and labels[-2:] == ["on", "aws"] and is_region(labels[-3]):
        service = labels[-4]
        if service == "dsql" or (service.startswith("dsql-") and len(service) > 5):
            return labels[-3]
    return None


def _rds_region(labels: list[str]) -> str | None:
    # NAME.ID.REGION.rds.amazonaws.com[.cn]
    if labels[-1:] == ["cn"]:
        labels = labels[:-1]
    if len(labels) >= 5 and labels[-3:] == ["rds", "amazonaws", "com"] and is_region(labels[-4]):
        return labels[-4]
    return None


def region_from_host(host: str) -> str | None:
    """Return the region named in a DSQL or RDS host name, or ``None``."""
    labels = _labels(host)
    return _dsql_region(labels) or _rds_region(labels)


def is_dsql_host(host: str) -> bool:
    """Whether *host* is a DSQL endpoint name (``*.dsql[-x].REGION.on.aws``)."""
    return _dsql_region(_labels(host)) is not None


def is_rds_host(host: str) -> bool:
    """Whether *host* is an RDS or Aurora endpoint name (``*.REGION.rds.amazonaws.com``)."""
    return _rds_region(_labels(host)) is not None


def parse_dsn(dsn: str, family: Family = POSTGRESQL) -> dict[str, str]:
    """Parse a DSN into a flat dict of strings (libpq keyword names).

    Accepts a URL of one of the family's schemes (``postgresql://``, ``mysql://``...), a
    ``key=value`` string, or a bare host name or cluster id (returned as ``{"host": dsn}``).

    :raises ConfigurationError: the DSN is malformed. The message never repeats a password.
    """
    if not isinstance(dsn, str):
        raise ConfigurationError(f"dsn must be a string, not {type(dsn).__name__}")
    text = dsn.strip()
    if not text:
        return {}
    if "\0" in text:
        raise ConfigurationError("dsn contains a NUL character")
    if "://" in text:
        return _parse_url(text, family)
    if "=" in text:
        return _parse_keyword_value(text)
    if any(c.isspace() for c in text) or "/" in text:
        raise ConfigurationError(
            f"dsn is neither a {family.schemes[0]}:// URL, a key=value string, nor a host name"
        )
    return {"host": text}


def _parse_url(url: str, family: Family) -> dict[str, str]:
    from urllib.parse import parse_qsl, unquote

    scheme, _, rest = url.partition("://")
    if scheme.lower() not in family.schemes:
        raise ConfigurationError(
            f"dsn scheme {scheme!r} is not supported: use "
            f"{family.schemes[0]}://user@host:port/dbname"
        )
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    params: dict[str, str] = {}
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, has_password, password = userinfo.partition(":")
        if user:
            params["user"] = unquote(user)
        if has_password:
            params["password"] = unquote(password)
    if "," in netloc:
        raise ConfigurationError("dsn names several hosts: warmdb connects to one host")
    if netloc.startswith("["):
        host, closed, port = netloc[1:].partition("]")
        if not closed:
            raise ConfigurationError("dsn host starts with '[' but has no closing ']'")
        if port and not port.startswith(":"):
            raise ConfigurationError("dsn has text after the bracketed host that is not a :port")
        port = port.removeprefix(":")
    else:
        host, _, port = netloc.partition(":")
    if host:
        params["host"] = unquote(host)
    if port:
        params["port"] = port
    if path:
        params["dbname"] = unquote(path)
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ConfigurationError("dsn query string is malformed") from None
    for key, value in pairs:
        params[key] = value
    return params


def _parse_keyword_value(text: str) -> dict[str, str]:
    # libpq's conninfo syntax: key = value pairs; values single-quoted when they hold spaces,
    # with backslash escaping a quote or a backslash.
    import re

    keyword = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*")
    params: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        match = keyword.match(text, pos)
        if match is None:
            if text[pos:].strip():
                raise ConfigurationError("dsn is not a valid key=value connection string")
            break
        key, pos = match.group(1), match.end()
        value: list[str] = []
        if text.startswith("'", pos):
            pos += 1
            while True:
                if pos >= len(text):
                    raise ConfigurationError(f"dsn value of {key!r} has no closing quote")
                char = text[pos]
                if char == "\\" and pos + 1 < len(text):
                    value.append(text[pos + 1])
                    pos += 2
                elif char == "'":
                    pos += 1
                    break
                else:
                    value.append(char)
                    pos += 1
        else:
            while pos < len(text) and not text[pos].isspace():
                if text[pos] == "\\" and pos + 1 < len(text):
                    pos += 1
                value.append(text[pos])
                pos += 1
        params[key] = "".join(value)
    return params


def resolve(
    dsn: str | None,
    kwargs: Mapping[str, object],
    environ: Mapping[str, str] | None = None,
    *,
    family: Family = POSTGRESQL,
) -> tuple[Endpoint, object, dict[str, object]]:
    """Resolve a connect call into ``(endpoint, password, driver_kwargs)``.

    :param dsn: the DSN, if any (see :func:`parse_dsn`).
    :param family: the database family: its default port, environment variables, DSN
        schemes and TLS argument names.
    :param kwargs: the caller's keyword arguments: warmdb's (``host``, ``port``, ``user``,
        ``dbname``/``database``, ``password``, ``region``, ``profile``,
        ``token_duration_secs``, ``auth``, ``sslmode``, ``sslrootcert``) and the driver's.
    :param environ: the environment; :data:`os.environ` by default.
    :returns: the endpoint; the caller's password (a string, a callable, or ``None``) in
        password mode, else ``None``; and every other argument, DSN ones included, for the
        driver (keyword arguments win over DSN fields of the same name).
    :raises ConfigurationError: a value is missing, malformed or contradictory.
    """
    env = os.environ if environ is None else environ
    from_dsn = parse_dsn(dsn, family) if dsn is not None else {}
    variables = family.environment

    def pick(key: str, *aliases: str) -> object | None:
        for name in (key, *aliases):
            for source in (kwargs.get(name), from_dsn.get(name)):
                if source is not None:
                    return source
        env_key = variables.get(key)
        return env.get(env_key) if env_key else None

    dbname = _pick_dbname(
        kwargs, from_dsn, env.get(variables.get("dbname", ""), None), family.database_keys
    )
    host_text = pick("host")
    if host_text is None:
        where = f", or set {variables['host']}" if "host" in variables else ""
        raise ConfigurationError(
            f"host is required: pass host= or a DSN{where} "
            "(e.g. host='abc123.dsql.us-east-1.on.aws')"
        )
    host = _check_text("host", host_text)
    explicit_region = pick("region")
    region = None if explicit_region is None else _check_region(explicit_region)
    cluster_id = is_cluster_id(host)
    auth = _pick_auth(
        pick("auth"), host, cluster_id, kwargs.get("password") or from_dsn.get("password")
    )
    if auth == "dsql" and not family.supports_dsql:
        raise ConfigurationError(
            f"Aurora DSQL speaks PostgreSQL: a {family.name} driver cannot connect to "
            f"{host!r} (use warmdb.psycopg, warmdb.psycopg2 or warmdb.asyncpg)"
        )

    if auth != "password":
        if kwargs.get("password") is not None or from_dsn.get("password") is not None:
            raise ConfigurationError(
                f"password conflicts with auth={auth!r}: the IAM token is the password; "
                "drop the password or pass auth='password'"
            )
        if "," in host or host.startswith("/"):
            raise ConfigurationError(
                f"host {host!r} cannot be signed into a token: give one TCP host name"
            )
        host_region = region_from_host(host)
        if region is not None and host_region is not None and region != host_region:
            raise ConfigurationError(
                f"region={region!r} contradicts host {host!r}, which is in {host_region!r}"
            )
        region = region or host_region or _region_from_environment(env, pick("profile"))
        if region is None:
            raise ConfigurationError(
                f"no AWS region for host {host!r}: pass region='us-east-1' (or put it in the "
                "DSN), set AWS_REGION, or use the full endpoint name "
                "(CLUSTER.dsql.REGION.on.aws)"
            )
        if cluster_id:
            host = f"{host}.dsql.{region}.on.aws"
    else:
        region = region or region_from_host(host)

    user = pick("user")
    if user is None and auth == "dsql":
        user = DSQL_DEFAULT_USER
    if user is None and auth == "rds":
        raise ConfigurationError("user is required for RDS IAM authentication (user='iam_user')")
    if dbname is None and auth == "dsql":
        dbname = DSQL_DEFAULT_DBNAME

    token_duration = _check_token_duration(pick("token_duration_secs"), auth)
    sslmode = pick("sslmode", family.tls_mode_key)
    sslmode = None if sslmode is None else _check_sslmode(sslmode, auth, family)
    if sslmode is None and auth != "password":
        sslmode = "require"
    sslrootcert = pick("sslrootcert", family.tls_ca_key)
    if sslmode in ("verify-ca", "verify-full") and sslrootcert is None and auth != "password":
        # libpq would fall back to ~/.postgresql/root.crt; the other drivers to the system
        # store. Be explicit and equal for all drivers: the system store.
        sslrootcert = "system"

    endpoint = Endpoint(
        host=host,
        port=_check_port(pick("port"), family.default_port),
        dbname=None if dbname is None else _check_text("dbname", dbname),
        user=None if user is None else _check_text("user", user),
        region=region,
        auth=auth,
        token_duration=token_duration,
        profile=None if pick("profile") is None else _check_text("profile", pick("profile")),
        sslmode=sslmode,
        sslrootcert=None if sslrootcert is None else _check_text("sslrootcert", sslrootcert),
    )
    password = kwargs.get("password")
    if password is None:
        password = from_dsn.get("password")
    keys = family.endpoint_keys
    driver_kwargs: dict[str, object] = {k: v for k, v in from_dsn.items() if k not in keys}
    driver_kwargs.update((k, v) for k, v in kwargs.items() if k not in keys)
    return endpoint, (password if auth == "password" else None), driver_kwargs


def _pick_dbname(
    kwargs: Mapping[str, object],
    from_dsn: Mapping[str, str],
    from_env: str | None,
    keys: tuple[str, ...],
) -> str | None:
    given = [(key, kwargs[key]) for key in keys if kwargs.get(key) is not None]
    for key, value in given[1:]:
        if value != given[0][1]:
            raise ConfigurationError(
                f"{given[0][0]}={given[0][1]!r} and {key}={value!r} disagree: pass one of them"
            )
    candidates = [value for _, value in given[:1]]
    candidates += [from_dsn[key] for key in keys if from_dsn.get(key) is not None]
    for source in (*candidates, from_env):
        if source is not None:
            return _check_text("dbname", source)
    return None


def _pick_auth(auth: object | None, host: str, cluster_id: bool, password: object) -> str:
    if auth is not None:
        if auth not in AUTH_MODES:
            raise ConfigurationError(f"auth={auth!r} is not one of {', '.join(AUTH_MODES)}")
        return str(auth)
    if cluster_id or is_dsql_host(host):
        return "dsql"
    if password is None and is_rds_host(host):
        return "rds"
    return "password"


def _region_from_environment(env: Mapping[str, str], profile: object | None) -> str | None:
    for key in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        if env.get(key):
            return _check_region(env[key])
    try:
        import botocore.session
    except ImportError:
        return None
    region = botocore.session.Session(profile=profile).get_config_variable("region")
    return _check_region(region) if region else None


def _check_text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a string, not {type(value).__name__}")
    if not value.strip():
        raise ConfigurationError(f"{name} is empty")
    if "\0" in value:
        raise ConfigurationError(f"{name} contains a NUL character")
    return value


def _check_region(value: object) -> str:
    region = _check_text("region", value)
    if not is_region(region):
        raise ConfigurationError(f"region={region!r} is not an AWS region name like 'us-east-1'")
    return region


def _check_int(name: str, value: object) -> int:
    if isinstance(value, bool):
        raise ConfigurationError(f"{name} must be an integer, not a bool")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise ConfigurationError(f"{name} must be an integer, got {value!r}")


def _check_port(value: object | None, default: int) -> int:
    if value is None:
        return default
    port = _check_int("port", value)
    if not 1 <= port <= 65535:
        raise ConfigurationError(f"port must be between 1 and 65535, got {port}")
    return port


def _check_token_duration(value: object | None, auth: str) -> int:
    if value is None:
        return RDS_TOKEN_DURATION if auth == "rds" else DEFAULT_TOKEN_DURATION
    duration = _check_int("token_duration_secs", value)
    if not 1 <= duration <= MAX_TOKEN_DURATION:
        raise ConfigurationError(
            f"token_duration_secs must be between 1 and {MAX_TOKEN_DURATION} (7 days), "
            f"got {duration}"
        )
    if auth == "rds" and duration != RDS_TOKEN_DURATION:
        raise ConfigurationError(
            f"RDS IAM tokens always last {RDS_TOKEN_DURATION} s: drop token_duration_secs"
        )
    return duration


def _check_sslmode(value: object, auth: str, family: Family) -> str:
    mode = family.tls_mode_values.get(value) if isinstance(value, str) else None
    if mode is None:
        choices = ", ".join(family.tls_mode_values)
        raise ConfigurationError(f"{family.tls_mode_key}={value!r} is not one of {choices}")
    if auth != "password" and mode == "disable" and family.token_needs_tls:
        raise ConfigurationError(
            f"{family.tls_mode_key}={value!r} would send the IAM token in clear text (MySQL "
            "IAM logins use mysql_clear_password): use 'require', 'verify-ca' or 'verify-full'"
        )
    value = mode
    if auth != "password" and value in ("allow", "prefer"):
        raise ConfigurationError(
            f"sslmode={value!r} could send the IAM token unencrypted: use 'require', "
            "'verify-ca' or 'verify-full' (or 'disable' to turn TLS off knowingly)"
        )
    return str(value)
