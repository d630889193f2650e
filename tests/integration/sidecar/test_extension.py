"""The Lambda extension flow against a local stand-in of the Extensions API.

The real API exists only inside Lambda. The stand-in records every request (method, path,
headers, body) and answers ``/event/next`` from a script of events.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
import pytest

from tests.integration.sidecar.conftest import process_gone, sidecar_for, wait_for
from warmdb.emulator.postgres import free_port
from warmdb.errors import ConfigurationError
from warmdb.sidecar.extension import run_extension
from warmdb.sidecar.state import read_state

LAUNCHER = Path(__file__).resolve().parents[3] / "extensions" / "warmdb-sidecar"


class ExtensionsApi:
    """An HTTP server playing Lambda's Extensions API on 127.0.0.1."""

    identifier = "4cd1e9a5-6d56-4d5b-9a38-4c3a9d1f0d1e"

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.events: queue.Queue[dict] = queue.Queue()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _record(self) -> dict:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                entry = {
                    "method": self.command,
                    "path": self.path,
                    "headers": dict(self.headers),
                    "body": json.loads(body) if body else None,
                }
                api.requests.append(entry)
                return entry

            def _reply(self, status: int, body: dict, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                entry = self._record()
                if entry["path"] == "/2020-01-01/extension/register":
                    self._reply(
                        200,
                        {"functionName": "f", "functionVersion": "$LATEST", "handler": "h"},
                        {"Lambda-Extension-Identifier": api.identifier},
                    )
                elif entry["path"] == "/2020-01-01/extension/init/error":
                    self._reply(202, {"status": "OK"})
                else:
                    self._reply(404, {})

            def do_GET(self) -> None:
                entry = self._record()
                if entry["path"] != "/2020-01-01/extension/event/next":
                    self._reply(404, {})
                    return
                self._reply(200, api.events.get(timeout=30))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def paths(self) -> list[str]:
        return [f"{r['method']} {r['path'].rsplit('/extension', 1)[1]}" for r in self.requests]


@pytest.fixture
def api():
    stand_in = ExtensionsApi()
    stand_in.thread.start()
    yield stand_in
    stand_in.server.shutdown()
    stand_in.server.server_close()


INVOKE = {"eventType": "INVOKE", "deadlineMs": 1, "requestId": "r1", "invokedFunctionArn": "a"}
SHUTDOWN = {"eventType": "SHUTDOWN", "shutdownReason": "spindown", "deadlineMs": 1}


def test_register_loop_and_shutdown(api, dsql, pgbouncer_binary):
    sidecar = sidecar_for(dsql, pgbouncer=pgbouncer_binary)
    seen: list[int | None] = []
    api.events.put(INVOKE)
    api.events.put(INVOKE)
    api.events.put(SHUTDOWN)
    code = run_extension(
        sidecar.start,
        {"AWS_LAMBDA_RUNTIME_API": api.address},
        name="warmdb-sidecar",
        started=lambda s: seen.append(s.pgbouncer_pid),
    )
    assert code == 0
    assert api.paths() == [
        "POST /register",
        "GET /event/next",
        "GET /event/next",
        "GET /event/next",
    ]
    register = api.requests[0]
    assert register["headers"]["Lambda-Extension-Name"] == "warmdb-sidecar"
    assert register["body"] == {"events": ["INVOKE", "SHUTDOWN"]}
    for request in api.requests[1:]:
        assert request["headers"]["Lambda-Extension-Identifier"] == ExtensionsApi.identifier
    # PgBouncer ran before registration, and is gone after SHUTDOWN.
    (pid,) = seen
    assert pid is not None
    assert process_gone(pid)


def test_managed_instances_register_for_shutdown_only(api, dsql, pgbouncer_binary):
    sidecar = sidecar_for(dsql, pgbouncer=pgbouncer_binary)
    api.events.put(SHUTDOWN)
    environ = {
        "AWS_LAMBDA_RUNTIME_API": api.address,
        "AWS_LAMBDA_INITIALIZATION_TYPE": "lambda-managed-instances",
    }
    assert run_extension(sidecar.start, environ, name="x") == 0
    assert api.requests[0]["body"] == {"events": ["SHUTDOWN"]}
    assert api.requests[0]["headers"]["Lambda-Extension-Name"] == "x"


def test_init_error_is_reported(api):
    def start():
        raise ConfigurationError("--host is required (or WARMDB_SIDECAR_HOST)")

    assert run_extension(start, {"AWS_LAMBDA_RUNTIME_API": api.address}, name="n") == 1
    assert api.paths() == ["POST /register", "POST /init/error"]
    error = api.requests[1]
    assert error["headers"]["Lambda-Extension-Identifier"] == ExtensionsApi.identifier
    assert error["headers"]["Lambda-Extension-Function-Error-Type"] == "Extension.ConfigInvalid"
    assert error["body"] == {
        "errorMessage": "--host is required (or WARMDB_SIDECAR_HOST)",
        "errorType": "Extension.ConfigInvalid",
    }


@pytest.fixture
def open_base():
    base = Path(tempfile.mkdtemp(prefix="warmdb-sidecar-test-"))
    base.chmod(0o711)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def launcher_environment(api, dsql, pgbouncer_binary, base: Path) -> dict[str, str]:
    """What a function's configuration would set, plus the stand-in's address."""
    return {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(Path(__file__).resolve().parents[3] / "src"),
        "WARMDB_SIDECAR_PYTHON": sys.executable,
        "AWS_LAMBDA_RUNTIME_API": api.address,
        "AWS_LAMBDA_INITIALIZATION_TYPE": "lambda-managed-instances",
        "AWS_ACCESS_KEY_ID": dsql.credentials.access_key,
        "AWS_SECRET_ACCESS_KEY": dsql.credentials.secret_key,
        "AWS_REGION": dsql.region,
        "WARMDB_SIDECAR": str(base / "sidecar" / "state.json"),
        "WARMDB_SIDECAR_HOST": "localhost",
        "WARMDB_SIDECAR_PORT": str(dsql.port),
        "WARMDB_SIDECAR_AUTH": "dsql",
        "WARMDB_SIDECAR_SSLROOTCERT": str(dsql.ca_path),
        "WARMDB_SIDECAR_LISTEN": f"127.0.0.1:{free_port()}",
        "WARMDB_SIDECAR_PGBOUNCER": pgbouncer_binary,
    }


def test_launcher_runs_the_sidecar_until_shutdown(api, dsql, pgbouncer_binary, open_base):
    env = launcher_environment(api, dsql, pgbouncer_binary, open_base)
    process = subprocess.Popen(
        [str(LAUNCHER), "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        info = json.loads(process.stdout.readline() or "null")
        assert info is not None, process.stderr.read()
        wait_for(lambda: api.paths()[-1:] == ["GET /event/next"])
        assert api.requests[0]["headers"]["Lambda-Extension-Name"] == "warmdb-sidecar"
        assert api.requests[0]["body"] == {"events": ["SHUTDOWN"]}
        # A function process finds the sidecar through WARMDB_SIDECAR alone.
        state = read_state(env["WARMDB_SIDECAR"])
        with psycopg.connect(
            host=state.host,
            port=state.port,
            user=state.user,
            password=state.password(),
            dbname=state.dbname,
        ) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        api.events.put(SHUTDOWN)
        assert process.wait(10) == 0
        assert process_gone(info["pgbouncer_pid"])
        assert "Traceback" not in process.stderr.read()
    finally:
        process.kill()
        process.wait()


def test_launcher_reports_a_failed_start(api, dsql, pgbouncer_binary, open_base):
    env = launcher_environment(api, dsql, pgbouncer_binary, open_base)
    env["WARMDB_SIDECAR_PGBOUNCER"] = "/nonexistent/pgbouncer"
    done = subprocess.run([str(LAUNCHER)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert api.paths() == ["POST /register", "POST /init/error"]
    error = api.requests[1]
    assert error["headers"]["Lambda-Extension-Function-Error-Type"] == "Extension.ConfigInvalid"
    assert "pgbouncer" in error["body"]["errorMessage"]
    assert "Traceback" not in done.stderr
