"""The SAML ACS bounds the body before anything parses it: a post larger than
``2 * maxResponseSize + 8192`` is a 413 HTML page and an audit event, and is
never read into memory -- by its Content-Length before a byte is read, and a
chunked one (no Content-Length) as soon as the read passes the limit.

The chunked attack runs against a real HTTP server on loopback (werkzeug's,
which passes chunked bodies through as ``wsgi.input_terminated``, as
gunicorn does); what the app read of the body is counted at ``wsgi.input``
itself, so nothing else the process does at the same time can blur it (a
process-wide memory peak could, on a loaded machine).
"""

from __future__ import annotations

import io
import socket
import threading
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

class CountingInput:
    """``wsgi.input`` wrapper that counts the body bytes the app reads."""

    def __init__(self, stream: Any, tally: list[int]) -> None:
        self._stream = stream
        self._tally = tally

    def _count(self, data: bytes) -> bytes:
        self._tally[0] += len(data)
        return data

    def read(self, *args: Any) -> bytes:
        return self._count(self._stream.read(*args))

    def readline(self, *args: Any) -> bytes:
        return self._count(self._stream.readline(*args))

    def readinto(self, buf: Any) -> int:
        n = self._stream.readinto(buf)
        self._tally[0] += n or 0
        return n

    def __iter__(self) -> Iterator[bytes]:
        for line in self._stream:
            yield self._count(line)


@pytest.fixture
def served(saml_portal) -> Iterator[tuple[Any, int, list[int]]]:
    app, _ = saml_portal(maxResponseSize=MAX_RESPONSE)
    tally = [0]
    inner = app.wsgi_app

    def counting(environ: dict[str, Any], start_response: Any) -> Any:
        environ["wsgi.input"] = CountingInput(environ["wsgi.input"], tally)
        return inner(environ, start_response)

    app.wsgi_app = counting
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app, server.server_port, tally
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
    _app, port, tally = served
    total = 64 * MiB
    answer = _post_chunked(port, total)
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line.split()[1:2] == [b"413"], answer[:300]
    assert b"text/html" in answer.split(b"\r\n\r\n", 1)[0].lower()
    assert failures and failures[-1]["reason"] == "request_too_large"
    # the form was never parsed whole: the app stopped reading just past the limit
    # (the old code read the whole body, then decoded it into a form)
    assert tally[0] <= LIMIT + 64 * 1024, f"read {tally[0]} bytes of a {total // MiB} MiB post"
