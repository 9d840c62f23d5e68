"""A small in-process OpenID Provider for fast unit tests.

It serves real HTTP on 127.0.0.1 (discovery, JWKS, token endpoint) from a
thread, checks PKCE and client authentication at its token endpoint (leniently
by default; strictly, by one registered method -- including RFC 7523
``private_key_jwt`` against registered public keys -- once
``client_auth_method`` is set), and signs
ID tokens with real RSA keys through joserfc. Tests decide what an ID token
says (or hand over a forged one) for each authorization code. The real,
third-party provider is in tests/interop/.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, RSAKey
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

CLIENT_ID = "portal"
CLIENT_SECRET = "portal-secret"
#: RFC 7523 2.2
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: the algorithms this OP accepts for client assertions
ASSERTION_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]


class LocalOP:
    def __init__(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "k1", "use": "sig", "alg": "RS256"}, private=True)
        self.keys = [self.key]
        self.codes: dict[str, dict[str, Any]] = {}
        self.jwks_hits = 0
        self.discovery_hits = 0
        self.token_hits = 0
        self.extra_metadata: dict[str, Any] = {}
        #: RFC 7662 answers by opaque token (served at /introspect, see :meth:`_introspect`)
        self.introspection_answers: dict[str, dict[str, Any]] = {}
        self.refresh_handler: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        self.graph_pages: list[dict[str, Any]] = []
        self.graph_fail = False
        self.down = False
        self.reset_client_auth()
        self.server = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        self.port = self.server.server_port
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()

    def reset_client_auth(self) -> None:
        """Back to the lenient check of every existing test (Basic, or the form, with the secret or none)."""
        #: ``None``: lenient; else the one method the client is registered with
        self.client_auth_method: str | None = None
        #: private_key_jwt: the client's registered public keys (joserfc keys)
        self.client_keys: list[Any] = []
        #: private_key_jwt: when set, the assertion's ``x5t#S256`` must be one of these (Entra ID style)
        self.client_thumbprints: set[str] | None = None
        #: ``jti`` of every assertion accepted: a second use is refused
        self.seen_jtis: set[str] = set()
        #: one entry per token request: method, verdict and (for assertions) header and claims
        self.client_auth_log: list[dict[str, Any]] = []
        #: the OP's own time (a test hands in its Clock) and its leeway for assertion times
        self.clock: Callable[[], float] = time.time
        self.assertion_leeway = 30

    # -- keys & tokens ----------------------------------------------------------
    def rotate(self, keep_old: bool = False) -> RSAKey:
        kid = "k" + secrets.token_hex(4)
        new = RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"}, private=True)
        self.keys = [new] + (self.keys if keep_old else [])
        self.key = new
        return new

    def sign(self, claims: dict[str, Any], *, key: Any = None, alg: str = "RS256", header: dict[str, Any] | None = None) -> str:
        key = key or self.key
        hdr = {"alg": alg, "kid": key.kid} if hasattr(key, "kid") and key.kid else {"alg": alg}
        hdr.update(header or {})
        return jwt.encode(hdr, claims, key, algorithms=[alg])

    def id_claims(self, nonce: str | None, **over: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": "u-alice", "aud": CLIENT_ID, "exp": now + 300, "iat": now,
                  "auth_time": now, "nonce": nonce, "email": "alice@example.com", "name": "Alice Admin",
                  "groups": ["database-admins", "senior-developers"], "sid": "op-sid-1", "amr": ["pwd"],
                  "acr": "urn:ccsso:loa1"}
        claims.update(over)
        return {k: v for k, v in claims.items() if v is not None}

    def issue_code(self, authorize_url: str, *, id_token: str | None = None, claims: dict[str, Any] | None = None,
                   scope: str | None = "openid profile email", access_token: str | None = None,
                   expires_in: int = 3600, refresh_token: str | None = "rt-1", error: str | None = None) -> dict[str, str]:
        """Play the authorization endpoint: returns the callback query params."""
        q = {k: v[0] for k, v in parse_qs(urlsplit(authorize_url).query).items()}
        if error:
            return {"error": error, "state": q["state"]}
        code = secrets.token_urlsafe(16)
        if id_token is None:
            id_token = self.sign(claims if claims is not None else self.id_claims(q.get("nonce")))
        self.codes[code] = {"q": q, "id_token": id_token, "scope": scope, "expires_in": expires_in,
                            "access_token": access_token or ("at-" + secrets.token_hex(8)),
                            "refresh_token": refresh_token}
        return {"code": code, "state": q["state"]}

    # -- HTTP -------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        md = {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "end_session_endpoint": f"{self.issuer}/logout",
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
        }
        md.update(self.extra_metadata)
        return md

    def _json(self, data: Any, status: int = 200) -> Response:
        return Response(json.dumps(data), status=status, mimetype="application/json")

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        req = Request(environ)
        resp = self._route(req)
        return resp(environ, start_response)

    def _route(self, req: Request) -> Response:
        if self.down:
            return Response("down", status=503)
        if req.path == "/.well-known/openid-configuration":
            self.discovery_hits += 1
            return self._json(self.metadata())
        if req.path == "/jwks":
            self.jwks_hits += 1
            return self._json(KeySet(self.keys).as_dict(private=False))
        if req.path == "/token" and req.method == "POST":
            self.token_hits += 1
            return self._token(req)
        if req.path == "/introspect" and req.method == "POST":
            return self._introspect(req)
        if req.path.startswith("/graph/"):
            return self._graph(req)
        return Response("not found", status=404)

    def _client_ok(self, req: Request) -> bool:
        auth = req.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            raw = base64.b64decode(auth[6:]).decode()
            cid, _, secret = raw.partition(":")
            from urllib.parse import unquote

            return unquote(cid) == CLIENT_ID and unquote(secret) == CLIENT_SECRET
        return req.form.get("client_id") == CLIENT_ID and req.form.get("client_secret") in (CLIENT_SECRET, None)

    def _client_strict(self, req: Request) -> str | None:
        """Why the request does not authenticate as the client by
        :attr:`client_auth_method` (``None``: it does)."""
        method = self.client_auth_method
        form = req.form
        auth = req.headers.get("Authorization", "")
        entry: dict[str, Any] = {"method": method, "basic": auth.startswith("Basic "),
                                 "form_secret": "client_secret" in form, "assertion": "client_assertion" in form}
        self.client_auth_log.append(entry)
        if method == "client_secret_basic":
            if not auth.startswith("Basic ") or "client_secret" in form or "client_assertion" in form:
                return "expected client_secret_basic"
            return None if self._client_ok(req) else "wrong client id or secret"
        if auth or (method != "private_key_jwt" and "client_assertion" in form):
            return "unexpected credentials for " + str(method)
        if method == "client_secret_post":
            ok = form.get("client_id") == CLIENT_ID and form.get("client_secret") == CLIENT_SECRET
            return None if ok else "wrong client id or secret"
        if method != "private_key_jwt":
            return "unsupported method"
        if "client_secret" in form:
            return "a secret was sent"
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            return "wrong client_assertion_type"
        if "client_id" in form and form["client_id"] != CLIENT_ID:
            return "client_id does not match"
        return self._check_assertion(form.get("client_assertion", ""), entry)

    def _check_assertion(self, assertion: str, entry: dict[str, Any]) -> str | None:
        try:
            header = dict(jws.extract_compact(assertion.encode()).headers())
        except (JoseError, ValueError, UnicodeError):
            return "malformed assertion"
        entry["header"] = header
        if self.client_thumbprints is not None and header.get("x5t#S256") not in self.client_thumbprints:
            return "unknown certificate thumbprint"
        keys = [k for k in self.client_keys if not header.get("kid") or k.kid in (None, header.get("kid"))]
        token = None
        for key in keys:
            try:
                token = jwt.decode(assertion, key, algorithms=ASSERTION_ALGORITHMS)
                break
            except JoseError:
                continue
        if token is None:
            return "bad signature"
        claims = token.claims
        entry["claims"] = claims
        now = self.clock()
        leeway = self.assertion_leeway
        if claims.get("iss") != CLIENT_ID or claims.get("sub") != CLIENT_ID:
            return "iss/sub is not the client id"
        aud = claims.get("aud")
        if f"{self.issuer}/token" not in (aud if isinstance(aud, list) else [aud]):
            return "wrong aud"
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, (int, float)) or exp < now - leeway:
            return "expired"
        if isinstance(iat, (int, float)) and iat > now + leeway:
            return "issued in the future"
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            return "no jti"
        if jti in self.seen_jtis:
            return "jti replayed"
        self.seen_jtis.add(jti)
        return None

    def _introspect(self, req: Request) -> Response:
        """RFC 7662 for the opaque tokens in :attr:`introspection_answers`, the
        client authenticated as at the token endpoint (strictly when
        :attr:`client_auth_method` is set). Served only once the test names it in
        ``extra_metadata["introspection_endpoint"]``."""
        refused = self._refuse_client(req)
        if refused is not None:
            return refused
        return self._json(self.introspection_answers.get(req.form.get("token", ""), {"active": False}))

    def _refuse_client(self, req: Request) -> Response | None:
        """The 401 for a request that does not authenticate as the client (token
        and introspection endpoints alike), or ``None`` when it does."""
        if self.client_auth_method is not None:
            problem = self._client_strict(req)
            self.client_auth_log[-1]["problem"] = problem
            if problem is not None:
                return self._json({"error": "invalid_client", "error_description": problem}, 401)
        elif not self._client_ok(req):
            return self._json({"error": "invalid_client"}, 401)
        return None

    def _token(self, req: Request) -> Response:
        refused = self._refuse_client(req)
        if refused is not None:
            return refused
        if req.form.get("grant_type") == "refresh_token":
            if self.refresh_handler is None:
                return self._json({"error": "invalid_grant"}, 400)
            return self._json(self.refresh_handler(dict(req.form)))
        code = req.form.get("code", "")
        entry = self.codes.pop(code, None)
        if entry is None:
            return self._json({"error": "invalid_grant", "error_description": "unknown code"}, 400)
        q = entry["q"]
        verifier = req.form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if q.get("code_challenge_method") != "S256" or challenge != q.get("code_challenge"):
            return self._json({"error": "invalid_grant", "error_description": "PKCE"}, 400)
        if req.form.get("redirect_uri") != q.get("redirect_uri"):
            return self._json({"error": "invalid_grant", "error_description": "redirect_uri"}, 400)
        body = {"access_token": entry["access_token"], "token_type": "Bearer", "expires_in": entry["expires_in"],
                "id_token": entry["id_token"]}
        if entry["scope"] is not None:
            body["scope"] = entry["scope"]
        if entry["refresh_token"]:
            body["refresh_token"] = entry["refresh_token"]
        return self._json(body)

    def _graph(self, req: Request) -> Response:
        if self.graph_fail:
            return self._json({"error": "boom"}, 500)
        if not req.headers.get("Authorization", "").startswith("Bearer "):
            return self._json({"error": "unauthorized"}, 401)
        page = int(req.args.get("page", "0"))
        data = dict(self.graph_pages[page]) if page < len(self.graph_pages) else {"value": []}
        if page + 1 < len(self.graph_pages):
            data["@odata.nextLink"] = f"{self.issuer}/graph/me/transitiveMemberOf/microsoft.graph.group?page={page + 1}"
        return self._json(data)
