"""The embedded MariaDB: unprivileged, private, Unix socket only, and gone with its owner."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pymysql
import pytest

from tests.integration.emulator.mysql.conftest import wait_for
from warmdb.emulator.mysql.mariadb import EmbeddedMariaDB


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


def _is_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_private_directory_unprivileged_account_socket_only(mysql_emulator):
    db = mysql_emulator.upstream
    base = Path(db.socket_path).parent
    info = base.stat()
    assert info.st_mode & 0o777 == 0o700
    if os.geteuid() == 0:
        import pwd

        assert info.st_uid != 0
        assert _uid_of(db.pid) == info.st_uid == pwd.getpwnam("mysql").pw_uid
    # The data template later servers copy is just as private.
    from warmdb.emulator.mysql import mariadb

    for template in mariadb._templates.values():
        assert template.stat().st_mode & 0o777 == 0o700
        assert template.stat().st_uid == info.st_uid
    conn = pymysql.connect(unix_socket=db.socket_path, user="root")
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT @@skip_networking, @@innodb_flush_log_at_trx_commit")
            assert cursor.fetchone() == (1, 0)
    finally:
        conn.close()


def test_stop_removes_the_directory():
    db = EmbeddedMariaDB().start()
    base = Path(db.socket_path).parent
    pid = db.pid
    assert base.is_dir()
    db.stop()
    assert not base.exists()
    assert not _is_alive(pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_server_dies_with_its_owner(tmp_path):
    script = textwrap.dedent(
        """
        import sys, threading
        from warmdb.emulator.mysql import mariadb
        # Started from a short-lived thread: the spawner must still tie it to the process.
        box = {}
        thread = threading.Thread(target=lambda: box.update(db=mariadb.EmbeddedMariaDB().start()))
        thread.start(); thread.join()
        db = box["db"]
        template = next(iter(mariadb._templates.values()))
        print(db.pid, db.socket_path, template, flush=True)
        sys.stdin.read()
        """
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        pid_text, socket_path, template = owner.stdout.readline().split()
        pid = int(pid_text)
        assert _is_alive(pid)
        time.sleep(0.2)
        assert _is_alive(pid), "the server died with the starting thread"
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        wait_for(lambda: not _is_alive(pid), timeout=15)
    finally:
        if owner.poll() is None:
            owner.kill()
        # Killed, the owner could not clean up: its server directory and data template.
        shutil.rmtree(Path(socket_path).parent, ignore_errors=True)
        shutil.rmtree(template, ignore_errors=True)
