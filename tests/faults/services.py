"""Private services the fault suite breaks: a redis-server, a PostgreSQL cluster, a TCP proxy that
can cut the network, and an HTTP collector.

Each runs on its own loopback port with its own temporary data directory, so stopping,
pausing or wiping it never touches the shared Redis (6379) or PostgreSQL (5432) other tests use.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import redis

from tests.scale.cluster import Proc, base_env, free_port
from tests.support.private_pg import PrivatePostgres
from tests.support.waiting import wait_for

#: the suite's waits (tests/support/waiting.py), under the name the fault tests use:
#: ``wait_until(predicate, timeout, what)``
wait_until = wait_for


# --------------------------------------------------------------------------- Redis

class RedisServer:
    """A throw-away ``redis-server``: no persistence, so a restart comes back empty."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: Proc | None = None
        self.starts = 0

    def start(self) -> None:
        server = shutil.which("redis-server")
        assert server, "redis-server is not installed"
        self.starts += 1
        argv = [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.tmp)]
        self.proc = Proc(f"redis-{self.starts}", argv, base_env(), self.tmp)
        wait_until(self.ping, 15, "the private redis-server")

    def ping(self) -> bool:
        assert self.proc is not None and self.proc.alive(), self.proc.log() if self.proc else "not started"
        try:
            client = redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except redis.RedisError:
            return False

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.popen.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.popen.pid, signal.SIGCONT)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.stop(sig=signal.SIGKILL)

    def stop(self) -> None:
        if self.proc is not None:
            self.resume_quietly()
            self.proc.stop(timeout=5)

    def resume_quietly(self) -> None:
        if self.proc is not None and self.proc.alive():
            try:
                os.kill(self.proc.popen.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


# --------------------------------------------------------------------------- PostgreSQL

#: the private cluster of tests/support/private_pg.py: ``init()``, then ``start()``/``stop()`` (a restart
#: keeps the data), ``pause()``/``resume()`` (a hang), ``remove()``
PostgresServer = PrivatePostgres


# --------------------------------------------------------------------------- a TCP proxy that can partition

class PartitionProxy:
    """A loopback TCP proxy in front of a server (a host's path to Redis).

    ``partition()`` cuts the network: bytes already in flight and new ones are held, not
    forwarded, and new connections are accepted but never connected (as a dropped route
    looks to the client: timeouts, not resets). ``heal()`` ends it; held connections are
    closed (their clients already timed out). ``partition_on(*markers)`` arms a partition that
    starts the moment a client sends a chunk containing one of ``markers`` (that chunk is held), so
    a fault can land between two store calls of one request. ``hold_on(...)`` holds only
    one chunk (of one connection) until :meth:`release`: a store call delayed mid-operation.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.partitioned = threading.Event()
        self.trigger: tuple[bytes, ...] | None = None
        self.after = False
        self.triggered = threading.Event()
        self.hold_marker: tuple[tuple[bytes, ...], bytes, bytes] | None = None
        self.held = threading.Event()
        self.released = threading.Event()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self._listener.settimeout(0.2)
        threading.Thread(target=self._accept, daemon=True, name="partition-proxy").start()

    def partition(self) -> None:
        self.partitioned.set()

    def partition_on(self, *markers: bytes) -> None:
        self.triggered.clear()
        self.after = False
        self.trigger = markers

    def partition_after(self, *markers: bytes) -> None:
        """Like :meth:`partition_on`, but the matching chunk is forwarded and its reply comes back;
        every chunk clients send after it is held (the next store call fails)."""
        self.triggered.clear()
        self.after = True
        self.trigger = markers

    def hold_on(self, arm: tuple[bytes, ...], hold: bytes, unless: bytes) -> None:
        """On a connection that sent a chunk containing every ``arm`` marker, hold its next chunk
        that contains ``hold`` and not ``unless`` until :meth:`release` (:attr:`held` is set then)."""
        self.held.clear()
        self.released.clear()
        self.hold_marker = (arm, hold, unless)

    def release(self) -> None:
        self.hold_marker = None
        self.released.set()

    def heal(self) -> None:
        self.trigger = None
        self.partitioned.clear()
        self.after = False
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.close()
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self.release()
        self.heal()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            self._conns.append(client)
        while self.partitioned.is_set() and not self._stop.is_set():
            time.sleep(0.05)  # a dropped route: the connection is never made upstream
        if self._stop.is_set():
            client.close()
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=2)
        except OSError:
            client.close()
            return
        with self._lock:
            self._conns.append(upstream)
        armed_hold = False
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([client, upstream], [], [], 0.2)
                for src in ready:
                    data = src.recv(65536)
                    if not data:
                        raise OSError("closed")
                    if src is client:
                        trigger = self.trigger
                        if trigger is not None and any(m in data for m in trigger):
                            self.trigger = None
                            self.triggered.set()
                            if self.after:
                                upstream.sendall(data)
                                self.partitioned.set()
                                continue
                            self.partitioned.set()
                        marker = self.hold_marker
                        if marker is not None:
                            arm, hold, unless = marker
                            if all(m in data for m in arm):
                                armed_hold = True
                            elif armed_hold and hold in data and unless not in data:
                                self.hold_marker = None
                                self.held.set()
                                self.released.wait(30)
                    while self.partitioned.is_set() and not self._stop.is_set() and not (
                            self.after and src is upstream):
                        time.sleep(0.05)  # held: never forwarded (the connection is closed by heal())
                    (upstream if src is client else client).sendall(data)
        except (OSError, ValueError):  # ValueError: select() on a socket heal() closed
            pass
        finally:
            for s in (client, upstream):
                try:
                    s.close()
                except OSError:
                    pass


# --------------------------------------------------------------------------- the collector

class EventCollector:
    """A real HTTP audit collector on 127.0.0.1 recording each accepted event's id and arrival time.

    ``mode``: ``"ok"``; ``"500"`` (answers 500, records nothing); ``"hang"`` (reads the request, then
    never answers until the mode changes: the client's read timeout fires; nothing is recorded).
    :meth:`refuse` closes the listening socket (connection refused); :meth:`listen` reopens it on
    the same port.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.mode = "ok"
        self.lock = threading.Lock()
        self.arrivals: list[tuple[str, str, float]] = []  # (event id, type, arrival time), duplicates kept
        self.posts = {"ok": 0, "500": 0, "hang": 0}
        self.conns: set[socket.socket] = set()
        self.server: ThreadingHTTPServer | None = None
        self.listen()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    def listen(self) -> None:
        collector = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with collector.lock:
                    collector.conns.add(self.connection)

            def finish(self) -> None:
                with collector.lock:
                    collector.conns.discard(self.connection)
                try:
                    super().finish()
                except OSError:
                    pass

            def do_POST(self) -> None:
                if collector.server is None:  # refusing: a kept-alive connection is cut, not served
                    self.close_connection = True
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                mode = collector.mode
                with collector.lock:
                    collector.posts[mode] = collector.posts.get(mode, 0) + 1
                if mode == "hang":
                    while collector.mode == "hang" and collector.server is not None:
                        time.sleep(0.05)
                    self.close_connection = True
                    return  # never answered: the connection just closes
                if mode == "500":
                    self._answer(500, b'{"error":"down"}')
                    return
                now = time.time()
                events = json.loads(body)
                with collector.lock:
                    collector.arrivals.extend((e["id"], e["type"], now) for e in events)
                self._answer(200, b'{"ok":true}')

            def _answer(self, status: int, payload: bytes) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def refuse(self) -> None:
        """Nothing listens any more, and kept-alive connections are cut (a stopped collector)."""
        if self.server is not None:
            server, self.server = self.server, None
            server.shutdown()
            server.server_close()
            with self.lock:
                conns = list(self.conns)
            for conn in conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.mode = "ok"
        self.refuse()

    def first_arrival(self) -> dict[str, float]:
        with self.lock:
            out: dict[str, float] = {}
            for eid, _type, t in self.arrivals:
                out.setdefault(eid, t)
            return out

    def copies(self) -> dict[str, int]:
        with self.lock:
            out: dict[str, int] = {}
            for eid, _type, _t in self.arrivals:
                out[eid] = out.get(eid, 0) + 1
            return out
