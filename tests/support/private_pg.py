"""A private PostgreSQL cluster: ``initdb`` in a temporary directory, ``postgres`` on its own loopback port.

Stopping, freezing or locking it never touches the shared server on 5432 the other tests use.
The audit crash-safety tests (tests/audit/test_audit_crash_safety.py) freeze it; the fault suite
(tests/faults, as ``PostgresServer``) also stops and restarts it on the same data directory.

PostgreSQL refuses to run as root; as root the cluster belongs to the ``postgres`` user (its
directory is made outside pytest's 0700 temporary folder so that user can reach it).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from tests.support.audit import free_port
from tests.support.waiting import wait_for


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PrivatePostgres:
    """:meth:`init` once, then :meth:`start` / :meth:`stop` as often as a test likes; :meth:`remove` at the end."""

    def __init__(self, prefix: str = "ccsso-pg-") -> None:
        self.bin = _bin_dir()
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.data = self.dir / "data"
        self.log_path = self.dir / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def available(self) -> str | None:
        """Why no private cluster can run here, or None."""
        if self.bin is None:
            return "PostgreSQL server binaries (initdb) are not installed"
        return None

    def _as_postgres(self) -> dict[str, Any]:
        if os.geteuid() != 0:
            return {}
        entry = pwd.getpwnam("postgres")
        return {"user": entry.pw_uid, "group": entry.pw_gid}

    def init(self) -> None:
        """Create the cluster (``initdb``, trust authentication for ``postgres``)."""
        assert self.bin is not None, self.available()
        demote = self._as_postgres()
        if demote:
            os.chown(self.dir, demote["user"], demote["group"])
        os.chmod(self.dir, 0o700)
        subprocess.run([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                        "--no-sync", "-E", "UTF8"], check=True, capture_output=True, timeout=120,
                       cwd=str(self.dir), **demote)

    def start(self, timeout: float = 60.0) -> None:
        """Start the server on the cluster :meth:`init` made; return once it answers a query.

        Durability is off (``fsync``, ``synchronous_commit``, ``full_page_writes``): the tests
        freeze and stop the server, they never pull its power.
        """
        assert self.bin is not None, self.available()
        argv = [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.dir),
                "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off", "-c", "max_connections=100", "-c", "shared_buffers=16MB"]
        with open(self.log_path, "ab") as log:  # the server keeps its own copy of the descriptor
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, cwd=str(self.dir), **self._as_postgres())
        wait_for(self.ready, timeout, "the private PostgreSQL server", interval=0.1)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self) -> bool:
        """Whether the server answers ``SELECT 1``; an exited server fails at once, with its log."""
        if not self.alive():
            raise AssertionError(f"postgres exited:\n{self.log()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                pass
        except OSError:
            return False
        import psycopg

        try:
            with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                                 connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def stop(self, timeout: float = 20.0) -> None:
        """A fast shutdown (SIGINT to the postmaster): connections are closed, the port refuses.

        What is left of the process group after ``timeout`` is killed.
        """
        if self.proc is None:
            return
        self.resume()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.wait(10)

    def pause(self) -> None:
        """A hang: every process of the cluster stopped (the port still accepts, nothing answers)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.alive():
            assert self.proc is not None
            try:
                os.killpg(self.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def remove(self) -> None:
        """Stop the server and delete the cluster."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
