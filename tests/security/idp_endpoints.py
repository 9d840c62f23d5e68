"""A scripted IdP's RFC 7662 introspection and OIDC userinfo endpoints, on real
HTTP (loopback), for the bearer-token attack tests (this module holds no tests).

Each test decides what the IdP answers for a token (vendor answer shapes:
Okta, Keycloak, Ory Hydra, oidc-provider ...); the server records every call
with the client credentials that came with it, so tests can count IdP calls
and check that a token and a secret only ever went where they belong.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from tests.support.local_op import CLIENT_ID, CLIENT_SECRET, LocalOP


class ScriptedIdP:
    """``/introspect`` (client-authenticated, Basic) and ``/userinfo`` (Bearer)."""

    def __init__(self, client_id: str = CLIENT_ID, client_secret: str = CLIENT_SECRET) -> None:
        self.client_id, self.client_secret = client_id, client_secret
        #: token -> introspection answer (default: {"active": false})
        self.answers: dict[str, dict[str, Any]] = {}
        #: token -> userinfo answer (default: 401)
        self.userinfo: dict[str, dict[str, Any]] = {}
        #: every introspection call: {"token", "client_id", "client_secret"}
        self.calls: list[dict[str, Any]] = []
        #: every userinfo call: the bearer token it carried
        self.userinfo_calls: list[str] = []
        #: != 200: the endpoints fail with this status (an outage)
        self.status = 200
        #: != 200: only userinfo fails with this status
        self.userinfo_status = 200
        self._lock = threading.Lock()
        self.server = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        base = f"http://127.0.0.1:{self.server.server_port}"
        self.introspection_url = f"{base}/introspect"
        self.userinfo_url = f"{base}/userinfo"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reset(self) -> None:
        with self._lock:
            self.answers, self.userinfo, self.calls, self.userinfo_calls = {}, {}, [], []
            self.status = self.userinfo_status = 200

    def close(self) -> None:
        self.server.shutdown()

    def serve_for(self, op: LocalOP) -> None:
        """Announce these endpoints in ``op``'s discovery document."""
        op.extra_metadata["introspection_endpoint"] = self.introspection_url
        op.extra_metadata["userinfo_endpoint"] = self.userinfo_url

    @staticmethod
    def _json(data: Any, status: int = 200) -> Response:
        return Response(json.dumps(data), status=status, mimetype="application/json")

    def _wsgi(self, environ: Any, start_response: Any) -> Any:
        req = Request(environ)
        if req.path == "/introspect" and req.method == "POST":
            resp = self._introspect(req)
        elif req.path == "/userinfo":
            resp = self._userinfo(req)
        else:
            resp = Response("not found", status=404)
        return resp(environ, start_response)

    def _introspect(self, req: Request) -> Response:
        auth = req.authorization
        with self._lock:
            self.calls.append({"token": req.form.get("token"), "client_id": auth.username if auth else None,
                               "client_secret": auth.password if auth else None})
        if self.status != 200:
            return Response("the IdP is down", status=self.status)
        if auth is None or (auth.username, auth.password) != (self.client_id, self.client_secret):
            return self._json({"error": "invalid_client"}, 401)
        return self._json(self.answers.get(req.form.get("token", ""), {"active": False}))

    def _userinfo(self, req: Request) -> Response:
        header = req.headers.get("Authorization", "")
        token = header[7:] if header[:7].lower() == "bearer " else ""
        with self._lock:
            self.userinfo_calls.append(token)
        if self.status != 200 or self.userinfo_status != 200:
            return Response("the IdP is down", status=self.status if self.status != 200 else self.userinfo_status)
        answer = self.userinfo.get(token)
        if answer is None:
            return self._json({"error": "invalid_token"}, 401)
        return self._json(answer)


@contextmanager
def scripted_idp(client_id: str = CLIENT_ID, client_secret: str = CLIENT_SECRET) -> Iterator[ScriptedIdP]:
    idp = ScriptedIdP(client_id, client_secret)
    try:
        yield idp
    finally:
        idp.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}
