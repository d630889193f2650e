"""`warmdb bench` / `warmdb probe` options: checked before anything starts, one-line errors."""

from __future__ import annotations

import pytest

from warmdb.bench.command import DEFAULT_HOLD, DEFAULT_HOLD_SCALE
from warmdb.cli import main


def run(argv: list[str]) -> int | str | None:
    """The exit status, whether main() returned it or argparse exited with it."""
    try:
        return main(argv)
    except SystemExit as stopped:
        return stopped.code


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "--iterations", "0"], "--iterations: '0' must be at least 1"),
        (["bench", "--patterns", "raw,nope"], "unknown pattern 'nope'"),
        (["bench", "--drivers", "nope"], "unknown driver 'nope'"),
        (["bench", "--port", "5433"], "--port needs --host"),
        (["bench", "-o", "application_name=x"], "--connect-arg needs --host"),
        (["bench", "-o", "novalue"], "'novalue' is not KEY=VALUE"),
        (["bench", "--requests", "10"], "--requests needs --concurrency"),
        (["bench", "--via-sidecar"], "--via-sidecar needs --concurrency"),
        (["bench", "--hold", "-1", "--concurrency", "2"], "'-1' must be 0 or more"),
        (["probe", "--repeat", "0"], "--repeat: '0' must be at least 1"),
        (["probe", "--sslmode"], "expected one argument"),
    ],
)
def test_usage_errors_are_one_line_with_exit_status_2(argv, message, capsys):
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["bench", "probe"])
def test_help_has_examples(command, capsys):
    with pytest.raises(SystemExit) as stopped:
        main([command, "--help"])
    assert stopped.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    assert f"warmdb {command} --host" in out


def test_hold_is_scaled_down_by_default():
    from warmdb.bench.command import options_from_args
    from warmdb.cli import _build_parser

    args = _build_parser("bench").parse_args(["bench", "--concurrency", "4"])
    options = options_from_args(args)
    assert options.hold == DEFAULT_HOLD * DEFAULT_HOLD_SCALE
    assert options.requests == 40
    assert len(options.variants) == 1


def test_real_endpoint_options_become_connect_arguments():
    from warmdb.bench.command import options_from_args
    from warmdb.cli import _build_parser

    args = _build_parser("bench").parse_args(
        ["bench", "--host", "h.example", "--port", "6000", "--user", "app", "--auth", "rds",
         "-o", "application_name=bench"]
    )  # fmt: skip
    options = options_from_args(args)
    assert options.kwargs == {
        "host": "h.example",
        "port": 6000,
        "user": "app",
        "auth": "rds",
        "application_name": "bench",
    }
