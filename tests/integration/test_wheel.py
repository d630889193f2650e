"""The wheel a user installs: built from this tree, installed alone in a fresh virtual
environment with one driver, as a Lambda package would be.

It must carry ``py.typed`` (so type checkers read warmdb's hints), import nothing heavy, and
connect with an IAM token on the environment-credentials path without botocore.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest

from tests.integration.test_connect import REGION

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # --no-build-isolation: the build backend (hatchling) comes from the test environment, so
    # the build needs no download.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            out,
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("warmdb-*.whl")
    return built


@pytest.fixture(scope="module")
def fresh_python(wheel, tmp_path_factory) -> Path:
    env = tmp_path_factory.mktemp("fresh") / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    python = env / "bin" / "python"
    subprocess.run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            f"{wheel}[psycopg2]",
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return python


def test_wheel_ships_py_typed_and_no_tests(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "warmdb/py.typed" in names
    assert "warmdb/drivers.py" in names
    assert not [n for n in names if n.startswith("tests/")]


def test_type_checkers_read_the_installed_hints(fresh_python, tmp_path):
    """mypy, pointed at the fresh environment, sees warmdb's types: a wrong use is an error."""
    user_code = tmp_path / "handler.py"
    user_code.write_text(
        "import warmdb.psycopg2 as db\n"
        "keeper = db.warm(host='abc.dsql.us-east-1.on.aws')\n"
        "wrong: int = keeper.policy\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--python-executable",
            str(fresh_python),
            "--no-incremental",
            "--config-file",
            "/dev/null",
            str(user_code),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    # Without py.typed mypy would say the module has no type information instead.
    assert 'expression has type "Policy"' in result.stdout, result.stdout
    assert result.returncode == 1


def test_cold_connect_from_the_installed_wheel(
    fresh_python, tls_server, make_role, aws_credentials
):
    name = make_role(None, "trusted_wheel", trusted=True)
    script = textwrap.dedent(
        f"""
        import sys
        import warmdb.psycopg2 as db
        assert db.__file__.startswith(sys.prefix), db.__file__  # the installed copy
        conn = db.connect(host="127.0.0.1", port={tls_server.port}, user="{name}",
                          auth="dsql", region="{REGION}", dbname="postgres")
        cur = conn.cursor()
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
        heavy = ("boto3", "botocore", "logging", "dataclasses", "typing", "random",
                 "asyncio", "contextlib", "sqlalchemy")
        print(",".join(sorted(m for m in heavy if m in sys.modules)))
        """
    )
    result = subprocess.run(
        [fresh_python, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd="/",
    )
    assert result.stdout.strip() == ""
