"""Shared pieces for the audit tests: a real local HTTP collector, a tiny app, PostgreSQL tables.

The ``collector`` and ``pg_table`` fixtures built on these live in tests/conftest.py.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from flask import Flask, request

from flask_ccsso import signals
from flask_ccsso.identity import Identity
from tests.support.network import free_port
from tests.support.waiting import wait_for  # noqa: F401  (the audit tests import it from here)

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

#: fake secrets passed in signal kwargs and claims; none may ever be written anywhere
SECRETS = {
    "access_token": "at-SECRET-4f1e9c7a",
    "id_token": "idt-SECRET-88b2d0e1",
    "refresh_token": "rt-SECRET-0c3d5a77",
    "token": "tok-SECRET-9911aa00",
    "client_secret": "cs-SECRET-7e7e7e7e",
    "cookie": "session=ck-SECRET-12ab34cd",
    "password": "pw-SECRET-hunter22",
}


class Collector:
    """A real HTTP server on 127.0.0.1 that records what it receives.

    ``mode``: ``"ok"``, ``"slow"`` (sleep ``delay`` first), ``"500"``/``"503"``/
    ``"401"``/``"404"`` (answer that status), ``"poison"`` (400 when the body
    contains ``POISON``). :meth:`stop` closes the listening socket (connection
    refused); :meth:`start` brings it back on the same port.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.mode = "ok"
        self.delay = 1.0
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.token_requests: list[dict[str, Any]] = []
        self.server: ThreadingHTTPServer | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                entry = {"path": self.path, "headers": dict(self.headers), "body": body, "status": 200}
                if self.path.startswith("/token"):
                    with collector.lock:
                        collector.token_requests.append(entry)
                    self._answer(200, json.dumps({"access_token": f"azure-at-{len(collector.token_requests)}",
                                                  "token_type": "Bearer", "expires_in": 3600}).encode())
                    return
                mode = collector.mode
                status = 200
                if mode == "slow":
                    time.sleep(collector.delay)
                elif mode in ("500", "503", "401", "404", "429"):
                    status = int(mode)
                elif mode == "poison" and b"POISON" in body:
                    status = 400
                entry["status"] = status
                with collector.lock:
                    collector.requests.append(entry)
                try:
                    self._answer(status, b'{"text":"Success","code":0}' if status == 200 else b'{"error":"x"}')
                except OSError:
                    pass  # the client gave up (read timeout)

            def _answer(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def accepted(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["status"] == 200]

    def events(self, fmt: str = "json") -> list[dict[str, Any]]:
        """Every event in accepted requests, in arrival order (duplicates kept)."""
        out = []
        for r in self.accepted():
            if fmt == "splunk-hec":
                out.extend(json.loads(line)["event"] for line in r["body"].splitlines() if line.strip())
            else:
                out.extend(json.loads(r["body"]))
        return out

    def all_bodies(self) -> bytes:
        with self.lock:
            return b"\n".join(r["body"] for r in self.requests + self.token_requests)


def make_app(tmp_path: Any, name: str = "audit_app") -> Flask:
    """A tiny app whose views send the real signals with ``sender=app`` inside a request."""
    app = Flask(name, instance_path=str(tmp_path / "instance"))
    app.config["TESTING"] = True

    def ident(subject: str = "00u-ada", email: str | None = "ada@example.com") -> Identity:
        return Identity(subject=subject, provider="okta", email=email, name="Ada",
                        groups=frozenset({"db-admins", "staff"}), scopes=frozenset({"openid"}),
                        claims={"department": "ops", "access_token": SECRETS["access_token"]})

    @app.post("/send/<name>")
    def send(name: str) -> str:
        sender = app
        n = int(request.args.get("n", 1))
        for _ in range(n):
            signal = getattr(signals, name)
            kwargs = dict(request.get_json(silent=True) or {})
            if kwargs.pop("_identity", True):
                kwargs.setdefault("identity", ident(kwargs.pop("_subject", "00u-ada")))
            else:
                kwargs.pop("_subject", None)
            signal.send(sender, **kwargs)
        return "ok"

    @app.get("/skill")
    def skill() -> str:
        signals.skill_invoked.send(app, identity=ident(), skill="database-migration",
                                   skills=("database-migration",), via="session", endpoint="skill")
        return "ok"

    return app


def fast_block(**extra: Any) -> dict[str, Any]:
    """A ``logging`` block tuned for tests: small batches, quick retries."""
    block: dict[str, Any] = {"level": "debug", "flushInterval": 0.05, "batchSize": 20, "retryAttempts": 2,
                             "retryBackoff": 0.01, "maxBackoff": 0.2, "includeUserClaims": True,
                             "includeGroupMemberships": True}
    block.update(extra)
    return block


def secret_free(blob: bytes | str) -> list[str]:
    """The secrets found in ``blob`` (should be none)."""
    text = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else blob
    return [v for v in SECRETS.values() if v in text or v.split("=", 1)[-1] in text]
