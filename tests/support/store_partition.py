"""An app whose session store sits behind a network partition that falls mid-request.

Shared by tests/sessions/test_logout_partition.py and tests/sessions/test_signin_store_write.py:
the store is a Redis of its own (:class:`~tests.support.sessions.SpareRedis`) reached through a
:class:`~tests.sessions.partition.Partition`; :func:`cut_mid_request` arms the cut for one
request, after that request read its session; :func:`until_store_answers` waits out the heal.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask, Request, request

from tests.sessions.partition import Mode, Partition
from tests.support.sessions import SpareRedis
from tests.support.skills import JSON


@contextmanager
def partitioned_redis() -> Iterator[Partition]:
    """A spare Redis behind a :class:`Partition`; the app's store URL is the proxy's ``url``."""
    server = SpareRedis()
    server.start()
    try:
        proxy = Partition(server.port)
        try:
            yield proxy
        finally:
            proxy.close()
    finally:
        server.stop()


def cut_mid_request(app: Flask, net: Partition, when: Callable[[Request], bool], mode: Mode = "reset") -> None:
    """Cut ``net`` the first time a request ``when`` accepts runs, once: in a ``before_request``,
    so the session was read before the store went away (as the issues saw it)."""
    armed = [True]

    @app.before_request
    def partition_mid_request() -> None:
        if armed and when(request):
            armed.clear()
            net.cut(mode)


def until_store_answers(client: Any, timeout: float = 30.0) -> Any:
    """The first answer to ``GET /me`` (JSON) that is not a 503, or the last one after ``timeout``.

    The client reconnects after the heal; a circuit breaker may hold the store closed a little
    longer. The answer is returned rather than asserted, so the test says what it expected.
    """
    deadline = time.monotonic() + timeout
    while True:
        resp = client.get("/me", headers=JSON)
        if resp.status_code != 503 or time.monotonic() > deadline:
            return resp
        time.sleep(0.05)
