"""The MySQL emulator for the integration tests, the three real drivers, and a raw client.

The session emulator (``mysql_emulator``) has RDS's defaults. Tests of one option start their
own with :func:`emulator` (about a second: MariaDB's install and start).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import time
from contextlib import contextmanager

import aiomysql
import mysql.connector
import pymysql
import pytest

from warmdb.auth.credentials import Credentials
from warmdb.auth.tokens import TokenSpec, sign_token
from warmdb.emulator.mysql import packets
from warmdb.emulator.mysql.service import MySQLEmulator

DRIVERS = ("pymysql", "mysql_connector", "aiomysql")


@contextmanager
def emulator(**options):
    """A fresh emulator for one test."""
    with MySQLEmulator(**options) as started:
        yield started


def signed(
    rds: MySQLEmulator,
    user: str = "admin",
    *,
    region: str | None = None,
    signed_at: float | None = None,
    credentials: Credentials | None = None,
    host: str | None = None,
    port: int | None = None,
) -> str:
    """A token as warmdb signs it, with one field changed on demand."""
    spec = TokenSpec(
        kind="rds",
        host=host or rds.hostname,
        port=port or rds.port,
        region=region or rds.region,
        user=user,
        expires_in=900,
    )
    return sign_token(spec, credentials or rds.credentials, signed_at or time.time())


class Session:
    """One driver connection behind a common, synchronous face."""

    def __init__(self, driver: str, conn, loop: asyncio.AbstractEventLoop | None = None):
        self.driver = driver
        self.conn = conn
        self.loop = loop
        # One cursor for the session's life: mysql-connector pings the server when a cursor
        # is made, which would hide what the next query itself runs into.
        self.cursor = conn.cursor() if loop is None else None

    def query(self, sql: str) -> list[tuple]:
        if self.loop is not None:
            return self.loop.run_until_complete(self._aquery(sql))
        self.cursor.execute(sql)
        return list(self.cursor.fetchall())

    async def _aquery(self, sql: str) -> list[tuple]:
        async with self.conn.cursor() as cursor:
            await cursor.execute(sql)
            return list(await cursor.fetchall())

    def close(self) -> None:
        # A connection the server dropped may fail to close: nothing to clean up then.
        with contextlib.suppress(Exception):
            self.conn.close()
        if self.loop is not None:
            self.loop.close()


def connect(
    driver: str,
    rds: MySQLEmulator,
    password: str,
    *,
    user: str = "admin",
    tls: bool = True,
    database: str | None = None,
) -> Session:
    """Log in with *driver*, as a user would with a token: TLS verified against the CA."""
    common = {"host": "127.0.0.1", "port": rds.port, "user": user, "password": password}
    if database:
        common["database"] = database
    if driver == "pymysql":
        tls_args = {"ssl": {"ca": str(rds.ca_path)}} if tls else {"ssl_disabled": True}
        return Session(driver, pymysql.connect(**common, **tls_args, connect_timeout=10))
    if driver == "mysql_connector":
        tls_args = {"ssl_ca": str(rds.ca_path), "ssl_verify_cert": True}
        if not tls:
            tls_args = {"ssl_disabled": True}
        conn = mysql.connector.connect(
            **common,
            **tls_args,
            auth_plugin="mysql_clear_password",
            use_pure=True,
            connection_timeout=10,
        )
        return Session(driver, conn)
    if driver == "aiomysql":
        if "database" in common:
            common["db"] = common.pop("database")
        loop = asyncio.new_event_loop()
        try:
            conn = loop.run_until_complete(
                aiomysql.connect(
                    **common,
                    ssl=rds.ssl_context() if tls else None,
                    connect_timeout=10,
                    autocommit=True,
                )
            )
        except BaseException:
            loop.close()
            raise
        return Session(driver, conn, loop)
    raise AssertionError(driver)


def error_number(exc: BaseException) -> int:
    """The MySQL error number of a driver's exception."""
    number = getattr(exc, "errno", None)
    if isinstance(number, int) and number > 0:
        return number
    return int(exc.args[0])


def refusal(driver: str, rds: MySQLEmulator, password: str, **kwargs) -> tuple[int, str]:
    """The error number and message a login with *password* fails with."""
    driver_errors = (pymysql.err.MySQLError, mysql.connector.Error)
    with pytest.raises(driver_errors) as info:
        connect(driver, rds, password, **kwargs).close()
    exc = info.value
    message = str(getattr(exc, "msg", None) or exc.args[-1])
    return error_number(exc), message


# A raw client, for what no driver sends -------------------------------------------------


class RawClient:
    """Speaks the MySQL login by hand: greeting, SSLRequest, TLS, handshake response."""

    def __init__(self, rds: MySQLEmulator) -> None:
        self.rds = rds
        self.sock: socket.socket = socket.create_connection(("127.0.0.1", rds.port), timeout=10)
        self.framer = packets.PacketFramer(1 << 24)
        self.pending: list[packets.Packet] = []
        self.greeting = packets.parse_greeting(self.read().payload)

    def read(self) -> packets.Packet:
        while not self.pending:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("closed")
            self.pending += self.framer.feed(data)
        return self.pending.pop(0)

    def send(self, seq: int, payload: bytes) -> None:
        self.sock.sendall(packets.encode_packet(seq, payload))

    def start_tls(self, caps: int = packets.RELAYABLE | packets.CLIENT_SSL) -> None:
        self.send(1, struct.pack("<IIB", caps, 1 << 24, 0x21) + bytes(23))
        context = ssl.create_default_context(cafile=str(self.rds.ca_path))
        self.sock = context.wrap_socket(self.sock, server_hostname="127.0.0.1")

    def handshake(self, seq: int, *, user: str = "admin", auth: bytes = b"x" * 20) -> None:
        payload = packets.handshake_response(
            capabilities=packets.RELAYABLE,
            max_packet=1 << 24,
            charset=0x21,
            user=user,
            auth_response=auth,
        )
        self.send(seq, payload)

    def is_closed(self) -> bool:
        """Whether the server closed the connection (after anything it still had to say)."""
        self.sock.settimeout(5)
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, ssl.SSLError):
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


def wait_for(predicate, timeout: float = 5.0) -> None:
    """Poll *predicate* until true; fail after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.01)
