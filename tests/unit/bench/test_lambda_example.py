"""examples/lambda-bench: the SAM template validates offline, the layer script runs dry."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "lambda-bench"


def cfn_lint() -> str:
    found = shutil.which("cfn-lint") or str(Path(sys.executable).parent / "cfn-lint")
    if not Path(found).exists():
        pytest.fail("cfn-lint is required (pip install 'warmdb[dev]')")
    return found


def test_template_passes_cfn_lint():
    done = subprocess.run(
        [cfn_lint(), str(EXAMPLE / "template.yaml")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_template_has_both_architectures_and_both_pythons():
    text = (EXAMPLE / "template.yaml").read_text()
    for runtime in ("python3.12", "python3.13"):
        for arch in ("x86_64", "arm64"):
            assert f"layers/{runtime}-{arch}/" in text
    assert text.count("Type: AWS::Serverless::Function") == 4


def test_layer_script_dry_run_builds_one_layer_per_python_and_architecture():
    done = subprocess.run(
        ["bash", str(EXAMPLE / "build-layers.sh"), "--dry-run"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "PIP": "pip"},
    )
    installs = [line for line in done.stdout.splitlines() if " install --target " in line]
    assert len(installs) == 4
    for line in installs:
        assert "--only-binary=:all:" in line
        assert "--platform manylinux" in line
        assert "aurora-dsql-python-connector==0.2.7" in line
    assert any("aarch64" in line and "--python-version 3.13" in line for line in installs)


def test_layer_script_help_and_bad_option():
    shown = subprocess.run(
        ["bash", str(EXAMPLE / "build-layers.sh"), "--help"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "--dry-run" in shown.stdout
    bad = subprocess.run(
        ["bash", str(EXAMPLE / "build-layers.sh"), "--nope"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0


def test_handler_source_compiles():
    source = (EXAMPLE / "src" / "handler.py").read_text()
    compile(source, "handler.py", "exec")
