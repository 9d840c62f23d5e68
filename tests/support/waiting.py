"""Waiting for a condition instead of sleeping a fixed time: the one poll loop of the test suite.

Used by the audit tests (tests/support/audit.py re-exports it), the tutorial and README tests
(tests/support/tutorial.py), the private servers (tests/support/private_pg.py) and the fault
suite (tests/faults/services.py, as ``wait_until``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, what: str = "", *, interval: float = 0.05) -> T:
    """Call ``predicate`` until it returns something truthy and return that value.

    After ``timeout`` seconds fail with an :class:`AssertionError` naming ``what`` (or the
    predicate), so a test that never sees its condition says which one. An exception the
    predicate raises is not swallowed: a server that died fails at once, not at the timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)
