"""The in-process backend: one process (tests, single-process tools)."""

from __future__ import annotations

import builtins
import threading
import time
from collections.abc import Callable
from typing import Any

from .base import Change, SharedStore


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
