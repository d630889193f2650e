"""The state file: written atomically and privately, read back with clear errors."""

from __future__ import annotations

import json
import os
import stat

import pytest

from warmdb.errors import ConfigurationError
from warmdb.sidecar.state import (
    SidecarState,
    read_password,
    read_state,
    write_private_file,
    write_state,
)

STATE = SidecarState(
    host="127.0.0.1",
    port=6432,
    dbname="postgres",
    user="warmdb",
    password_file="/tmp/x/client-password",
    pgbouncer_version="1.18.0",
    prepared_statements=False,
    pid=4242,
    unix_socket_dir="/tmp/x",
    token_issued_at=1_795_239_650.0,
    token_expires_at=1_795_240_550.0,
)


def test_round_trip_is_private(tmp_path):
    path = tmp_path / "state.json"
    write_state(path, STATE)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_state(path) == STATE
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_rewrite_replaces_the_inode(tmp_path):
    # PgBouncer re-reads its auth file on RELOAD only when the file's stat changed.
    path = tmp_path / "auth"
    write_private_file(path, "a")
    before = path.stat().st_ino
    write_private_file(path, "b")
    assert path.read_text() == "b"
    assert path.stat().st_ino != before


def test_private_even_with_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        write_private_file(tmp_path / "f", "secret")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o600


def test_optional_fields_may_be_absent_and_unknown_ones_are_ignored(tmp_path):
    data = {k: v for k, v in STATE.as_dict().items() if not k.startswith(("token", "unix"))}
    data["from_the_future"] = [1, 2]
    (tmp_path / "s").write_text(json.dumps(data))
    state = read_state(tmp_path / "s")
    assert state.token_issued_at is None
    assert state.unix_socket_dir is None
    assert state.port == 6432


def test_missing_file(tmp_path):
    with pytest.raises(ConfigurationError, match=r"WARMDB_SIDECAR.*does not exist"):
        read_state(tmp_path / "absent.json")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        (json.dumps({**STATE.as_dict(), "port": "6432"}), "'port' has the wrong type"),
        (json.dumps({**STATE.as_dict(), "port": True}), "'port' has the wrong type"),
        (json.dumps({**STATE.as_dict(), "prepared_statements": 1}), "'prepared_statements'"),
        (json.dumps({k: v for k, v in STATE.as_dict().items() if k != "user"}), "lacks 'user'"),
    ],
)
def test_malformed_file(tmp_path, text, message):
    (tmp_path / "s").write_text(text)
    with pytest.raises(ConfigurationError, match=message):
        read_state(tmp_path / "s")


def test_password_file(tmp_path):
    (tmp_path / "p").write_text("s3cret\n")
    assert read_password(tmp_path / "p") == "s3cret"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigurationError, match="is empty"):
        read_password(tmp_path / "empty")
    with pytest.raises(ConfigurationError, match="cannot be read"):
        read_password(tmp_path / "absent")


def test_state_module_imports_only_json_os_and_errors():
    import ast
    import inspect

    from warmdb.sidecar import state

    tree = ast.parse(inspect.getsource(state))
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "json", "os", "warmdb.errors"}


def test_state_is_immutable_and_replace_copies():
    with pytest.raises(AttributeError):
        STATE.port = 1  # type: ignore[misc]
    moved = STATE.replace(port=7000)
    assert moved.port == 7000
    assert STATE.port == 6432
    assert moved != STATE
    assert STATE.replace() == STATE
    assert "password_file" in repr(STATE)
