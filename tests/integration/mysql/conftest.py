"""warmdb's MySQL drivers against the MySQL emulator (RDS IAM checks in front of MariaDB).

``rds`` is one emulator for the session, with RDS's defaults; tests of one option start their
own with :func:`tests.integration.emulator.mysql.conftest.emulator`. :class:`Front` puts each
driver's keeper, pool and engine behind one synchronous face, so a behaviour is tested once
for all of them.
"""

from __future__ import annotations

import asyncio
import contextlib

import mysql.connector
import pymysql
import pytest
import sqlalchemy
import sqlalchemy.exc
from sqlalchemy import text

import warmdb.aiomysql
import warmdb.mysql_connector
import warmdb.pymysql
import warmdb.sqlalchemy
from warmdb import drivers
from warmdb.auth.tokens import TOKEN_CACHE
from warmdb.emulator.mysql.service import MySQLEmulator

DRIVERS = ("pymysql", "mysql_connector", "aiomysql")
MODULES = {
    "pymysql": warmdb.pymysql,
    "mysql_connector": warmdb.mysql_connector,
    "aiomysql": warmdb.aiomysql,
}
DIALECTS = {
    "pymysql": "mysql+pymysql",
    "mysql_connector": "mysql+mysqlconnector",
    "aiomysql": "mysql+aiomysql",
}
#: What a failed query raises through any front: the drivers' errors, SQLAlchemy's wrapper.
QUERY_ERRORS = (pymysql.err.MySQLError, mysql.connector.Error, sqlalchemy.exc.DBAPIError)
#: Every (driver, front) pair: keepers, warmdb's pools and engines.
FRONTS = [f"{driver}-{kind}" for kind in ("keeper", "pool", "engine") for driver in DRIVERS]


@pytest.fixture(scope="session")
def rds():
    with MySQLEmulator() as started:
        yield started


def iam_kwargs(rds: MySQLEmulator, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """warmdb's arguments for *rds* with IAM tokens and verified TLS (``VERIFY_IDENTITY``
    against the emulator's CA), its credentials in the environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", rds.credentials.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", rds.credentials.secret_key)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return {
        "host": "127.0.0.1",
        "port": rds.port,
        "user": "admin",
        "auth": "rds",
        "region": rds.region,
        "ssl_mode": "VERIFY_IDENTITY",
        "ssl_ca": str(rds.ca_path),
    }


@pytest.fixture
def rds_kwargs(rds, monkeypatch):
    return iam_kwargs(rds, monkeypatch)


@pytest.fixture(autouse=True)
def fresh_tokens():
    """Tokens cached by one test (for one emulator's key) must not serve another."""
    TOKEN_CACHE.clear()
    yield
    TOKEN_CACHE.clear()


class Front:
    """One driver's keeper, pool or engine, used synchronously: ``query(sql)`` checks a
    connection out, runs *sql* and gives the connection back."""

    def __init__(self, name: str, kwargs: dict[str, object]) -> None:
        self.name = name
        self.driver, self.kind = name.rsplit("-", 1)
        module = MODULES[self.driver]
        self.is_async = self.driver == "aiomysql"
        self.adapter = drivers.adapter_class(self.driver, is_async=self.is_async)()
        self.loop = asyncio.new_event_loop() if self.is_async else None
        kwargs = dict(kwargs)
        if self.kind == "keeper":
            self.target = module.warm(**kwargs)
        elif self.kind == "pool":
            # Opened at the first checkout, as a keeper is: a connection's age counts from
            # the face's first use.
            opened = {} if self.is_async else {"open": False}
            self.target = module.pool(**kwargs, min_size=1, max_size=1, **opened)
        else:
            url = DIALECTS[self.driver] + "://"
            host, port, user = kwargs.pop("host"), kwargs.pop("port"), kwargs.pop("user")
            url += f"{user}@{host}:{port}/"
            factory = (
                warmdb.sqlalchemy.create_async_engine
                if self.is_async
                else warmdb.sqlalchemy.create_engine
            )
            self.target = factory(url, pool_size=1, max_overflow=0, **kwargs)

    def query(self, sql: str) -> list[tuple]:
        if self.loop is not None:
            return self.loop.run_until_complete(self._aquery(sql))
        if self.kind == "engine":
            with self.target.connect() as conn:
                return [tuple(row) for row in conn.execute(text(sql)).all()]
        with self.target.connection() as conn:
            return self.adapter.execute(conn, sql)

    async def _aquery(self, sql: str) -> list[tuple]:
        if self.kind == "engine":
            async with self.target.connect() as conn:
                return [tuple(row) for row in (await conn.execute(text(sql))).all()]
        async with self.target.connection() as conn:
            return await self.adapter.execute(conn, sql)

    def connection_id(self) -> int:
        return int(self.query("SELECT CONNECTION_ID()")[0][0])

    def close(self) -> None:
        target = self.target
        if self.kind == "engine":
            if self.loop is not None:
                self.loop.run_until_complete(target.dispose())
            else:
                target.dispose()
        elif self.loop is not None:
            self.loop.run_until_complete(target.close())
        else:
            target.close()
        if self.loop is not None:
            self.loop.close()


@contextlib.contextmanager
def front(name: str, kwargs: dict[str, object]):
    opened = Front(name, kwargs)
    try:
        yield opened
    finally:
        opened.close()


def kill(rds: MySQLEmulator, connection_id: int) -> None:
    """End a connection from MariaDB's side, as an operator or a fail-over would."""
    with (
        contextlib.closing(
            pymysql.connect(unix_socket=rds.upstream.socket_path, user="root")
        ) as admin,
        admin.cursor() as cursor,
    ):
        cursor.execute(f"KILL {int(connection_id)}")


def plain_engine(rds: MySQLEmulator, **engine_kwargs) -> sqlalchemy.engine.Engine:
    """Seed 004's engine without warmdb: SQLAlchemy's pool, a token per connect through
    ``creator=``, no recycle, no pre-ping."""

    def creator():
        return pymysql.connect(**rds.connection_params(), connect_timeout=10)

    return sqlalchemy.create_engine("mysql+pymysql://", creator=creator, **engine_kwargs)
