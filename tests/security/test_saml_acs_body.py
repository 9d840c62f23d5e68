"""The SAML ACS bounds the body before anything parses it: a post larger than
``2 * maxResponseSize + 8192`` is a 413 HTML page and an audit event, and is
never read into memory -- by its Content-Length before a byte is read, and a
chunked one (no Content-Length) as soon as the read passes the limit.

The chunked attack runs against a real HTTP server on loopback (werkzeug's,
which passes chunked bodies through as ``wsgi.input_terminated``, as
gunicorn does); memory is measured with tracemalloc while it is served.
"""

from __future__ import annotations

import io
import socket
import threading
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from werkzeug.serving import make_server

from tests.support.saml import login, post
from tests.support.saml_idp import User

MAX_RESPONSE = 16 * 1024
LIMIT = 2 * MAX_RESPONSE + 8192
MiB = 1024 * 1024


class LazyBody(io.RawIOBase):
    """``SAMLResponse=AAAA...`` of ``size`` bytes, made as it is read (never
    held whole); ``consumed`` counts the bytes the server read."""

    def __init__(self, size: int) -> None:
        self.prefix = b"SAMLResponse="
        self.size = size
        self.pos = 0
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:  # the test client measures the stream's length
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: 0, 1: self.pos, 2: self.size}[whence] + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buf: Any) -> int:
        n = min(len(buf), self.size - self.pos)
        if n <= 0:
            return 0
        data = b"A" * n
        if self.pos < len(self.prefix):
            head = self.prefix[self.pos:self.pos + n]
            data = head + data[len(head):]
        buf[:n] = data
        self.pos += n
        self.consumed += n
        return n


def refused_as_too_large(resp_status: int, mimetype: str, failures: list[dict[str, Any]]) -> bool:
    assert resp_status == 413, resp_status
    assert mimetype == "text/html", mimetype
    assert failures and failures[-1]["reason"] == "request_too_large", failures
    assert failures[-1]["provider"] == "google"
    return True


@pytest.mark.parametrize("size", [LIMIT + 1, 8 * MiB, 200 * MiB])
def test_declared_length_over_the_limit_is_refused_unread(saml_portal, failures, size):
    _app, client = saml_portal(maxResponseSize=MAX_RESPONSE)
    body = LazyBody(size)
    resp = client.post("/sso/google/acs", input_stream=body, content_length=size,
                       content_type="application/x-www-form-urlencoded")
    assert refused_as_too_large(resp.status_code, resp.mimetype, failures)
    assert body.consumed == 0


def test_the_limit_also_holds_at_a_custom_acs_path(saml_portal, failures):
    _app, client = saml_portal(maxResponseSize=MAX_RESPONSE, acsUrl="http://localhost/saml/consume")
    body = LazyBody(8 * MiB)
    resp = client.post("/saml/consume", input_stream=body, content_length=body.size,
                       content_type="application/x-www-form-urlencoded")
    assert refused_as_too_large(resp.status_code, resp.mimetype, failures)
    assert body.consumed == 0


def test_an_apps_own_hook_cannot_parse_past_the_limit(saml_portal):
    """The limit is in force before every ``before_request`` hook: an app
    hook that peeks at ``request.form`` (as CSRF libraries do) gets the 413."""
    app, client = saml_portal(maxResponseSize=MAX_RESPONSE)
    from flask import request

    def peek() -> None:
        request.form  # noqa: B018

    app.before_request_funcs.setdefault(None, []).insert(0, peek)
    body = LazyBody(8 * MiB)
    resp = client.post("/sso/google/acs", input_stream=body, content_length=body.size,
                       content_type="application/x-www-form-urlencoded")
    assert resp.status_code == 413
    assert body.consumed == 0


def test_a_real_sign_in_fits_the_limit(saml_portal, idp):
    _app, client = saml_portal(maxResponseSize=MAX_RESPONSE)
    assert post(client, idp.respond(login(client), User())).status_code == 303


# ------------------------------------------------------------------ chunked, through a real server

@pytest.fixture
def served(saml_portal) -> Iterator[tuple[Any, int]]:
    app, _ = saml_portal(maxResponseSize=MAX_RESPONSE)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app, server.server_port
    server.shutdown()
    server.server_close()


def _post_chunked(port: int, total: int) -> bytes:
    """POST ``total`` bytes chunked from one thread while this one reads the
    answer: the server may answer (and stop reading) long before the end."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (b"POST /sso/google/acs HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"A" * 65536
    first = b"SAMLResponse=" + chunk[13:]

    def send() -> None:
        try:
            sock.sendall(head)
            sent = 0
            while sent < total:
                data = first if sent == 0 else chunk
                sock.sendall(b"%x\r\n%s\r\n" % (len(data), data))
                sent += len(data)
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed: exactly what should happen

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    answer = b""
    try:
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    finally:
        sock.shutdown(socket.SHUT_RDWR)  # unblocks the sender too
        sock.close()
        sender.join(timeout=30)
    return answer


def test_chunked_post_is_refused_without_being_buffered(served, failures):
    _app, port = served
    total = 64 * MiB
    _post_chunked(port, LIMIT + 1)  # warm up: imports, templates, the first thread
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        answer = _post_chunked(port, total)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line.split()[1:2] == [b"413"], answer[:300]
    assert b"text/html" in answer.split(b"\r\n\r\n", 1)[0].lower()
    assert failures and failures[-1]["reason"] == "request_too_large"
    # the form was never parsed whole: nothing near the body's size was ever held
    # (the old code held the body twice over: the bytes, then the decoded form)
    assert peak < total / 4, f"peak {peak / MiB:.1f} MiB while serving a {total // MiB} MiB post"
