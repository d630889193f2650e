"""The embedded upstream server's lifetime: it dies with its owner, not with a thread."""

from __future__ import annotations

import sys
import threading
import time

import psycopg
import pytest

from warmdb.emulator.postgres import EmbeddedPostgres

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="parent-death signal: Linux only"
)


def test_server_started_from_a_thread_outlives_the_thread():
    # The kernel's parent-death signal follows the thread that forked the server: a server
    # forked by this short-lived thread itself would be killed as the thread ends.
    started: list[EmbeddedPostgres] = []
    thread = threading.Thread(target=lambda: started.append(EmbeddedPostgres().start()))
    thread.start()
    thread.join()
    (postgres,) = started
    try:
        time.sleep(0.5)
        assert postgres.is_running
        with psycopg.connect(**postgres.libpq_params()) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        postgres.stop()
