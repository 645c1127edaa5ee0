"""The system under test: the embedded PostgreSQL and gateway replicas as separate processes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from gateway.store.database import EmbeddedPostgres


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Replica:
    def __init__(self, name: str, port: int, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._env = env
        self._log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0) -> None:
        log = self._log_path.open("a")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self._env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"replica {self.name} exited; see {self._log_path}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"replica {self.name} not ready in {timeout:.0f} s; see {self._log_path}")

    def kill(self) -> None:
        """kill -9: no graceful shutdown, transactions in flight are cut."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


class Cluster:
    """Embedded PostgreSQL (or DATABASE_URL) plus N gateway replicas on loopback ports."""

    def __init__(self, replicas: int, admin_token: str, *, chunk_size: int = 128) -> None:
        self.work_dir = Path(tempfile.mkdtemp(prefix="driftgate-loadtest-"))
        self.admin_token = admin_token
        self._count = replicas
        self._chunk_size = chunk_size
        self.database: EmbeddedPostgres | None = None
        self.dsn = ""
        self.replicas: list[Replica] = []

    def start(self) -> None:
        self.dsn = os.environ.get("DATABASE_URL", "")
        if not self.dsn:
            self.database = EmbeddedPostgres(self.work_dir / "pgdata")
            self.dsn = self.database.start()
        env = {
            **os.environ,
            "DATABASE_URL": self.dsn,
            "DRIFTGATE_ADMIN_TOKEN": self.admin_token,
            "DRIFTGATE_BACKFILL__CHUNK_SIZE": str(self._chunk_size),
            "DRIFTGATE_BACKFILL__POLL_INTERVAL_S": "0.5",
            "DRIFTGATE_SERVER__SYNC_POLL_INTERVAL_S": "0.5",
            "DRIFTGATE_LOGGING__LEVEL": "WARNING",
            # two replicas, PostgreSQL and the load generator share the cores: one inference
            # thread per replica keeps onnxruntime from oversubscribing them
            "DRIFTGATE_MODELS__INTRA_OP_THREADS": os.environ.get("DRIFTGATE_MODELS__INTRA_OP_THREADS", "1"),
        }
        for i in range(self._count):
            replica = Replica(
                f"replica-{i + 1}",
                free_port(),
                {**env, "DRIFTGATE_SERVER__REPLICA_ID": f"replica-{i + 1}"},
                self.work_dir,
            )
            replica.start()
            self.replicas.append(replica)

    @property
    def urls(self) -> list[str]:
        return [r.url for r in self.replicas]

    def restart_database(self, down_s: float) -> None:
        """Stop PostgreSQL, keep it down for `down_s`, start it again on the same data directory."""
        if self.database is None:
            raise RuntimeError("restarting PostgreSQL needs the embedded server (DATABASE_URL is set)")
        data_dir = self.database.data_dir
        self.database.stop()
        time.sleep(down_s)
        self.database = EmbeddedPostgres(data_dir)
        self.database.start()

    def stop(self, *, keep_logs: bool = False) -> None:
        """Stop the replicas and the database, then delete the database's files and, unless
        `keep_logs` (a failed run: the replicas' logs say why), the whole working folder."""
        for replica in self.replicas:
            replica.stop()
        if self.database is not None and not self.database.stop():
            return  # another process still uses the server: its files stay
        shutil.rmtree(self.work_dir / "pgdata" if keep_logs else self.work_dir, ignore_errors=True)
