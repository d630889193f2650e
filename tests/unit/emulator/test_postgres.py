"""Where the upstream's server binaries come from: the override, the system, the pgserver wheel."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from warmdb.emulator import postgres
from warmdb.emulator.postgres import PostgresNotFoundError, find_bin_dir


def server_binaries(bin_dir: Path) -> Path:
    bin_dir.mkdir(parents=True)
    for name in ("initdb", "postgres"):
        (bin_dir / name).touch()
    return bin_dir


@pytest.fixture
def bare_machine(monkeypatch, tmp_path):
    """No override, no pg_config or postgres on PATH, no Debian server packages."""
    monkeypatch.delenv("WARMDB_PG_BIN", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(postgres, "_SYSTEM_ROOT", tmp_path / "usr-lib-postgresql")


def with_pgserver(monkeypatch, package_dir: Path | None) -> None:
    """Pretend the pgserver wheel is installed in *package_dir* (or is not, for ``None``)."""
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        if name != "pgserver":
            return real_find_spec(name, *args)
        if package_dir is None:
            return None
        return SimpleNamespace(submodule_search_locations=[str(package_dir)])

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_override_comes_first(monkeypatch, tmp_path):
    custom = server_binaries(tmp_path / "custom" / "bin")
    monkeypatch.setenv("WARMDB_PG_BIN", str(custom))
    assert find_bin_dir() == custom


def test_newest_system_version_wins(bare_machine, monkeypatch, tmp_path):
    root = tmp_path / "usr-lib-postgresql"
    for version in ("9.6", "15", "13"):
        server_binaries(root / version / "bin")
    with_pgserver(monkeypatch, None)
    assert find_bin_dir() == root / "15" / "bin"


def test_pgserver_wheel_when_no_system_server(bare_machine, monkeypatch, tmp_path):
    wheel = server_binaries(tmp_path / "pgserver" / "pginstall" / "bin")
    with_pgserver(monkeypatch, tmp_path / "pgserver")
    assert find_bin_dir() == wheel


def test_nothing_anywhere_says_what_to_install(bare_machine, monkeypatch):
    with_pgserver(monkeypatch, None)
    with pytest.raises(PostgresNotFoundError, match="WARMDB_PG_BIN"):
        find_bin_dir()
