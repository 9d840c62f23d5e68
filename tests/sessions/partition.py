"""A network partition between the app and its store: a TCP proxy to cut and heal.

Stopping the store loses what it holds (the spare Redis keeps nothing on
disk); a partition does not. :class:`Partition` forwards loopback TCP to a
server until :meth:`Partition.cut`:

* ``"drop"`` -- packets vanish: connections stay open, nothing they send
  arrives and nothing comes back, so the client waits for its socket timeout
  (what a real partition does);
* ``"reset"`` -- every connection is closed and new ones are closed at once
  (a peer that answers with RST).

Nothing sent while cut ever reaches the server, so a command that failed did
not happen. :meth:`Partition.heal` closes the connections that lived through
the cut (as a real partition's connections die) and forwards again.
"""

from __future__ import annotations

import socket
import threading
from typing import Literal

Mode = Literal["drop", "reset"]


class Partition:
    """A TCP proxy on a free loopback port in front of ``127.0.0.1:<port>``."""

    def __init__(self, port: int) -> None:
        self.upstream = ("127.0.0.1", port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._mode: Mode | None = None
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    # -- control -----------------------------------------------------------------
    def cut(self, mode: Mode = "reset") -> None:
        with self._lock:
            self._mode = mode
            if mode == "reset":
                self._close_all()

    def heal(self) -> None:
        with self._lock:
            self._close_all()  # what lived through the cut is dead
            self._mode = None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._close_all()
        self._listener.close()

    # -- plumbing ----------------------------------------------------------------
    def _close_all(self) -> None:
        for a, b in self._pairs:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
        self._pairs.clear()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                if self._closed or self._mode == "reset":
                    client.close()
                    continue
                try:
                    server = socket.create_connection(self.upstream, timeout=5)
                except OSError:
                    client.close()
                    continue
                server.settimeout(None)
                self._pairs.append((client, server))
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                return
            if self._mode is None:
                try:
                    dst.sendall(data)
                except OSError:
                    return
            # cut: the bytes are lost on the way
