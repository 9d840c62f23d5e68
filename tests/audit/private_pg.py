"""A private PostgreSQL server for the audit fault tests: ``initdb`` in a temporary directory,
``postgres`` on its own loopback port, so freezing or locking it never touches the shared
server on 5432. Under root the cluster runs as the ``postgres`` user (PostgreSQL refuses root).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.audit import free_port


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PrivatePostgres:
    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self.dir = Path(tempfile.mkdtemp(prefix="ccsso-audit-pg-"))  # outside pytest's 0700 tmp: postgres reads it
        self.proc: subprocess.Popen[bytes] | None = None

    def _as_postgres(self) -> dict[str, Any]:
        if os.geteuid() != 0:
            return {}
        entry = pwd.getpwnam("postgres")
        return {"user": entry.pw_uid, "group": entry.pw_gid}

    def start(self) -> None:
        assert self.bin is not None, "PostgreSQL server binaries (initdb) are not installed"
        demote = self._as_postgres()
        if demote:
            os.chown(self.dir, demote["user"], demote["group"])
        os.chmod(self.dir, 0o700)
        data = self.dir / "data"
        subprocess.run([str(self.bin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync",
                        "-E", "UTF8"], check=True, capture_output=True, timeout=120, cwd=str(self.dir), **demote)
        log = open(self.dir / "postgres.log", "wb")  # noqa: SIM115 - the server writes it until stop()
        self.proc = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(data), "-p", str(self.port), "-k", str(self.dir),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=50",
             "-c", "shared_buffers=16MB"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            cwd=str(self.dir), **demote)
        log.close()
        deadline = time.monotonic() + 60
        while not self._ready():
            assert self.proc.poll() is None, (self.dir / "postgres.log").read_text(errors="replace")
            assert time.monotonic() < deadline, "the private PostgreSQL did not start"
            time.sleep(0.1)

    def _ready(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                                 connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def pause(self) -> None:
        """Freeze every process of the cluster: the port accepts, nothing answers."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGCONT)

    def remove(self) -> None:
        if self.proc is not None:
            self.resume()
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)  # fast shutdown
                try:
                    self.proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
