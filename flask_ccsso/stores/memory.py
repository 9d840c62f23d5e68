"""The in-process backend: one process (tests, single-process tools)."""

from __future__ import annotations

import builtins
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .base import Batch, Change, SharedStore


class MemoryStore(SharedStore):
    """In-process store for tests and single-process tools."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._data: dict[str, tuple[Any, float]] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def _live(self, key: str) -> Any:
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] <= self._clock():
            self._data.pop(key, None)
            return None
        return item[0]

    def get(self, key: str) -> str | None:
        with self._lock:
            v = self._live(key)
            return v if isinstance(v, str) else None

    def get_many(self, keys: Sequence[str]) -> list[str | None]:
        with self._lock:
            return [v if isinstance(v := self._live(key), str) else None for key in keys]

    def set(self, key: str, value: str, ttl: float) -> None:
        with self._lock:
            self._data[key] = (value, self._clock() + ttl)

    def add(self, key: str, value: str, ttl: float) -> bool:
        with self._lock:
            if self._live(key) is not None:
                return False
            self._data[key] = (value, self._clock() + ttl)
            return True

    def pop(self, key: str) -> str | None:
        with self._lock:
            v = self._live(key)
            self._data.pop(key, None)
            return v if isinstance(v, str) else None

    def delete(self, *keys: str) -> None:
        with self._lock:
            for k in keys:
                self._data.pop(k, None)

    def set_add(self, key: str, member: str, ttl: float) -> None:
        with self._lock:
            s = self._live(key)
            s = set(s) if isinstance(s, set) else set()
            s.add(member)
            self._data[key] = (s, self._clock() + ttl)

    def set_members(self, key: str) -> builtins.set[str]:
        with self._lock:
            s = self._live(key)
            return set(s) if isinstance(s, set) else set()

    def set_remove(self, key: str, *members: str) -> None:
        with self._lock:
            s = self._live(key)
            if isinstance(s, set):
                s.difference_update(members)

    def update(self, key: str, decide: Callable[[str | None], Change]) -> bool:
        with self._lock:
            current = self._live(key)
            change = decide(current if isinstance(current, str) else None)
            if change is None:
                return False
            self._data[key] = (change[0], self._clock() + change[1])
            return True

    def keys(self, prefix: str) -> list[str]:
        with self._lock:
            return [k for k in list(self._data) if k.startswith(prefix) and self._live(k) is not None]

    def incr(self, key: str, ttl: float) -> int:
        with self._lock:
            v = self._live(key)
            if isinstance(v, str) and v.isdigit():
                count = int(v) + 1
                self._data[key] = (str(count), self._data[key][1])
                return count
            self._data[key] = ("1", self._clock() + ttl)
            return 1

    def write_many(self, batch: Batch) -> None:
        """Every write of ``batch`` under the lock: no reader sees part of it."""
        with self._lock:
            now = self._clock()
            for w in batch.writes:
                if w.op == "set":
                    self._data[w.key] = (w.values[0], now + w.ttl)
                elif w.op == "delete":
                    self._data.pop(w.key, None)
                elif w.op == "set_add":
                    s = self._live(w.key)
                    members = set(s) if isinstance(s, set) else set()
                    members.update(w.values)
                    self._data[w.key] = (members, now + w.ttl)
                elif w.op == "set_remove":
                    s = self._live(w.key)
                    if isinstance(s, set):
                        s.difference_update(w.values)
                else:  # pragma: no cover - Batch makes no other
                    raise ValueError(f"unknown write {w.op!r}")
