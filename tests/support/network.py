"""Loopback ports for the servers the tests start: the one ``free_port`` of the suite.

Re-exported where it used to be defined (tests/support/audit.py, sessions.py, tutorial.py,
tests/stores/servers.py, tests/scale/cluster.py), so their importers keep working.
"""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


__all__ = ["free_port"]
