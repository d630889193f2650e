"""The Lambda layer zip: warmdb in python/, the launcher in extensions/, PgBouncer if given."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "build-sidecar-layer"


def test_layer_contents_and_modes(tmp_path, pgbouncer_binary):
    output = tmp_path / "layer.zip"
    done = subprocess.run(
        [str(SCRIPT), "--output", str(output), "--pgbouncer", pgbouncer_binary],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == str(output)
    with zipfile.ZipFile(output) as layer:
        entries = {info.filename: info.external_attr >> 16 for info in layer.infolist()}
    assert entries["extensions/warmdb-sidecar"] & 0o777 == 0o755
    assert entries["bin/pgbouncer"] & 0o777 == 0o755
    for module in ("__init__.py", "sidecar/command.py", "sidecar/state.py", "auth/sigv4.py"):
        assert f"python/warmdb/{module}" in entries
    assert not any("__pycache__" in name for name in entries)


def test_bad_arguments_exit_2(tmp_path):
    done = subprocess.run(
        [str(SCRIPT), "--pgbouncer", str(tmp_path / "absent")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
