"""The lazy logger acts as logging.getLogger once logging is in use, and costs nothing before."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

from warmdb._log import get_logger


def test_records_reach_logging_once_it_is_imported(caplog):
    caplog.set_level(logging.DEBUG, logger="warmdb.test")
    log = get_logger("warmdb.test")
    log.debug("debug %s", "one")
    log.info("info %d", 2)
    log.warning("warning %r", "three")
    assert [r.getMessage() for r in caplog.records] == ["debug one", "info 2", "warning 'three'"]
    assert {r.name for r in caplog.records} == {"warmdb.test"}


def test_debug_does_not_import_logging_but_warning_does():
    script = textwrap.dedent(
        """
        import sys
        from warmdb._log import get_logger
        log = get_logger("warmdb.x")
        log.debug("quiet %s", 1)
        before = "logging" in sys.modules
        log.warning("loud %s", 2)
        print(before, "logging" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
    assert "loud 2" in out.stderr  # logging's last-resort handler prints warnings
