"""The injectable clock the tests hand to the extension."""

from __future__ import annotations

import time


class Clock:
    """A clock the extension takes: tests move time instead of sleeping."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
