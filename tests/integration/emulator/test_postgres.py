"""The embedded upstream server's lifetime: it dies with its owner, not with a thread."""

from __future__ import annotations

import stat
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


def test_fresh_clusters_come_from_a_private_initdb_template(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("WARMDB_CACHE_DIR", str(cache))
    with EmbeddedPostgres() as first:
        (template,) = cache.iterdir()
        assert (template / "PG_VERSION").is_file()
        assert stat.S_IMODE(cache.stat().st_mode) == 0o700
        with psycopg.connect(**first.libpq_params(), autocommit=True) as conn:
            conn.execute("create table only_in_first (id int)")
    # The copy is a new cluster: nothing of the first one's data, and it serves.
    with EmbeddedPostgres() as second, psycopg.connect(**second.libpq_params()) as conn:
        assert not (second.log_path.parent / "initdb.log").exists()
        row = conn.execute("select to_regclass('only_in_first')").fetchone()
        assert row == (None,)
