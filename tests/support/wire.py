"""Counting a Redis store's round trips on the wire: one entry per send, with the command names."""

from __future__ import annotations

import re
import threading
from typing import Any

import redis

_COMMAND = re.compile(rb"\*\d+\r\n\$\d+\r\n([A-Za-z]+)\r\n")


class Wire:
    """What the connections of one pool send: one entry (the command names)
    per send, i.e. per round trip."""

    def __init__(self) -> None:
        self.sends: list[list[str]] = []
        self.lock = threading.Lock()

    def connection_class(self) -> type[redis.Connection]:
        wire = self

        class CountingConnection(redis.Connection):
            def send_packed_command(self, command: Any, check_health: bool = True) -> None:
                data = command if isinstance(command, (bytes, bytearray)) else b"".join(command)
                with wire.lock:
                    wire.sends.append([m.decode().upper() for m in _COMMAND.findall(data)])
                super().send_packed_command(command, check_health)

        return CountingConnection

    def commands(self) -> list[list[str]]:
        """The round trips, but a new connection's handshake."""
        return [s for s in self.sends if s[:1] not in (["HELLO"], ["CLIENT"], ["AUTH"], ["SELECT"])]

    def writes(self) -> list[list[str]]:
        """The round trips that wrote something."""
        reads = {"GET", "PING", "SMEMBERS", "SCAN", "PTTL", "TTL", "EXISTS"}
        return [s for s in self.commands() if set(s) - reads]


def count_round_trips(store: Any) -> Wire:
    """Every connection ``store`` opens from now on counts its sends."""
    wire = Wire()
    pool = store.client.connection_pool
    pool.connection_class = wire.connection_class()
    pool.disconnect()  # connections made before count nothing: drop them
    pool.reset()  # and forget them, or the pool would reconnect the old (uncounted) ones
    idle = getattr(store, "_idle", None)
    if isinstance(idle, list):  # a store that keeps its own idle connections
        for conn in idle:
            conn.disconnect()
        idle.clear()
    return wire
