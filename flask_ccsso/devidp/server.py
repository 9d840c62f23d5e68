"""A development-only OpenID Connect provider built on Authlib's server side.

Relying parties talk to it exactly as to Okta: discovery, ``/authorize`` (code
flow, PKCE S256 required), ``/token`` (authorization code and refresh token
grants, refresh tokens rotated), ``/jwks``, ``/userinfo``, ``/introspect``
(RFC 7662), ``/revoke`` (RFC 7009) and ``/end_session`` (RP-Initiated Logout).

It refuses to start unless it is switched on twice (``enabled=True`` in code
and ``CCSSO_DEVIDP_ENABLED=1`` in the environment) and, by default, unless
its issuer is a loopback address. At request time it answers only peers on
this machine: the TCP peer address (``REMOTE_ADDR`` as the WSGI server saw
it, never the ``Host`` header) must be loopback, unless
``CCSSO_DEVIDP_ALLOW_REMOTE=1`` (or ``allow_remote=True``) says otherwise and
a WARNING says so at start-up. See ``docs/devidp.md``.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

from authlib.common.urls import add_params_to_uri
from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import InvalidRequestError
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant, RefreshTokenGrant
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from authlib.oauth2.rfc9207 import IssuerParameter
from authlib.oidc.core.errors import LoginRequiredError
from authlib.oidc.core.grants import OpenIDCode
from authlib.oidc.rpinitiated import EndSessionEndpoint
from flask import Blueprint, Flask, Response, current_app, jsonify, render_template, request
from itsdangerous import BadSignature, URLSafeSerializer
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey

from .keys import ALG, load_or_create_key, public_jwks, verification_keys
from .models import (
    ACR_LOA1,
    ACR_MFA,
    ACR_VALUES_SUPPORTED,
    DEFAULT_AUDIENCE,
    STANDARD_SCOPES,
    DevClient,
    DevUser,
    _AuthlibClient,
    default_users,
)
from .store import AuthContext, CodeRecord, DevStore, TokenRecord

__all__ = ["ALLOW_REMOTE_ENV_VAR", "COOKIE_NAME", "ENABLE_ENV_VAR", "DevIdP", "create_devidp_blueprint"]

log = logging.getLogger("flask_ccsso.devidp")

#: The environment variable that must be ``1`` for the IdP to start.
ENABLE_ENV_VAR = "CCSSO_DEVIDP_ENABLED"
#: The environment variable that, set to ``1``, lets peers other than loopback in.
ALLOW_REMOTE_ENV_VAR = "CCSSO_DEVIDP_ALLOW_REMOTE"
#: The IdP's own sign-in cookie (signed, scoped to the IdP's path).
COOKIE_NAME = "ccsso_devidp"
WARNING_TEXT = "DEVELOPMENT IDENTITY PROVIDER — never use in production"

CODE_LIFETIME = 60
ID_TOKEN_LIFETIME = 3600
REFRESH_TOKEN_LIFETIME = 8 * 3600
SESSION_LIFETIME = 12 * 3600
LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
CLAIMS_SUPPORTED = (
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "acr",
    "amr",
    "azp",
    "sid",
    "at_hash",
    "name",
    "preferred_username",
    "email",
    "email_verified",
    "groups",
)
_LOOPBACK_NAMES = ("localhost",)


# ---------------------------------------------------------------------------
# start-up checks
# ---------------------------------------------------------------------------
def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_switches(enabled: bool, issuer: str, allow_non_loopback: bool) -> None:
    if not enabled or os.environ.get(ENABLE_ENV_VAR) != "1":
        raise RuntimeError(
            "The flask-ccsso development identity provider refuses to start: it needs BOTH "
            f"enabled=True in code AND the environment variable {ENABLE_ENV_VAR}=1 "
            f"(enabled={enabled!r}, {ENABLE_ENV_VAR}={os.environ.get(ENABLE_ENV_VAR)!r}). "
            "It signs anyone in as anyone: never turn it on in production."
        )
    parts = urlsplit(issuer)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RuntimeError(f"The development IdP issuer must be an http(s) URL, got {issuer!r}.")
    if issuer.endswith("/") or parts.query or parts.fragment:
        raise RuntimeError(
            f"The development IdP issuer {issuer!r} must have no trailing slash, query or fragment "
            "(OIDC Discovery §3 compares issuers as exact strings), e.g. 'http://127.0.0.1:5000/devidp'."
        )
    if not allow_non_loopback and not _is_loopback(parts.hostname):
        raise RuntimeError(
            f"The development IdP refuses issuer {issuer!r}: its host is not localhost, 127.0.0.1 or [::1]. "
            "Pass allow_non_loopback=True if you really mean to expose it (for example inside a container "
            f"network; requests from other machines also need {ALLOW_REMOTE_ENV_VAR}=1), and never on a "
            "production host."
        )


def _loopback_address(value: str | None) -> bool:
    """``value`` is a literal loopback IP address (127.0.0.0/8, ``::1``, or
    ``::ffff:127.x.x.x``). Names are not resolved: ``REMOTE_ADDR`` is an
    address, and anything else (empty, a UNIX socket path, garbage) is not
    proof that the caller sits on this machine."""
    if not value:
        return False
    try:
        addr = ipaddress.ip_address(value.strip().strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback


def _forwarded_for(environ: dict[str, Any]) -> list[str]:
    """Every client address a proxy header names (``X-Forwarded-For``,
    ``X-Real-IP``, ``Forwarded: for=``). Used only to *refuse*: a request a
    local proxy relays for someone on the network is not from this machine."""
    out: list[str] = []
    for key in ("HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP"):
        out.extend(part.strip() for part in str(environ.get(key) or "").split(",") if part.strip())
    for element in str(environ.get("HTTP_FORWARDED") or "").replace(",", ";").split(";"):
        name, _, value = element.strip().partition("=")
        if name.strip().lower() == "for":
            value = value.strip().strip('"')
            if value.startswith("["):
                value = value[1:].split("]", 1)[0]
            elif value.count(":") == 1:
                value = value.split(":", 1)[0]  # "192.0.2.1:4711"
            out.append(value)
    return out


def peer_is_local(environ: dict[str, Any]) -> bool:
    """Did this request come from this machine?

    The TCP peer as the WSGI server reported it decides: ``REMOTE_ADDR``
    before any ``ProxyFix`` rewrote it (``werkzeug.proxy_fix.orig``) *and*
    after, so neither a forged ``X-Forwarded-For`` nor a trusted proxy can
    turn a remote caller into a local one. The ``Host`` header plays no
    part (anyone can send ``Host: 127.0.0.1``). A request relayed by a local
    proxy on behalf of a non-loopback client is refused too.
    """
    orig = environ.get("werkzeug.proxy_fix.orig")
    peers = [environ.get("REMOTE_ADDR")]
    if isinstance(orig, dict):
        peers.append(orig.get("REMOTE_ADDR"))
    peers.extend(_forwarded_for(environ))
    return all(_loopback_address(p) for p in peers)


def remote_allowed(allow_remote: bool) -> bool:
    """The explicit switch: ``allow_remote=True`` in code or ``CCSSO_DEVIDP_ALLOW_REMOTE=1``."""
    return allow_remote or os.environ.get(ALLOW_REMOTE_ENV_VAR) == "1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _at_hash(access_token: str) -> str:
    """OIDC Core §3.1.3.6: base64url of the left-most half of SHA-256 of the token."""
    return _b64(hashlib.sha256(access_token.encode()).digest()[:16])


@dataclass
class _Principal:
    """The signed-in person plus how and when they signed in."""

    user: DevUser
    context: AuthContext


# ---------------------------------------------------------------------------
# the runtime: keys, storage, token minting
# ---------------------------------------------------------------------------
class _IdP:
    """Everything one development IdP needs at request time.

    Bound lazily to the first app the blueprint is registered on (the default
    key lives in that app's instance folder).
    """

    def __init__(
        self,
        *,
        issuer: str,
        clients: Sequence[DevClient],
        users: Sequence[DevUser],
        key_path: str | None,
        clock: Callable[[], float],
        access_token_lifetime: int,
        enabled: bool = False,
        allow_non_loopback: bool = False,
    ) -> None:
        self.issuer = issuer
        # kept so ``flask ccsso devidp-token`` can check the same two switches again
        self.enabled = enabled
        self.allow_non_loopback = allow_non_loopback
        self.cookie_path = urlsplit(issuer).path or "/"
        self.secure_cookie = issuer.startswith("https:")
        self.users = {u.username: u for u in users}
        self.custom_scopes = tuple(
            dict.fromkeys(s for u in users for s in u.allowed_scopes if s not in STANDARD_SCOPES)
        )
        self.scopes_supported = STANDARD_SCOPES + self.custom_scopes
        self.clients = {c.client_id: _AuthlibClient(c, self.scopes_supported) for c in clients}
        self.key_path = key_path
        self.clock = clock
        self.access_token_lifetime = access_token_lifetime
        self._lock = threading.Lock()
        self._bound = False
        self.key: RSAKey
        self.store: DevStore
        self.serializer: URLSafeSerializer

    def bind(self, app: Any) -> None:
        with self._lock:
            if self._bound:
                return
            key_path = self.key_path or os.path.join(app.instance_path, "ccsso-devidp-key.json")
            self.key = load_or_create_key(key_path)
            self.keys = verification_keys(self.key)
            self.store = DevStore(os.path.join(os.path.dirname(os.path.abspath(key_path)), "ccsso-devidp.sqlite3"))
            self.store.purge(self.now())
            self.serializer = URLSafeSerializer(self.store.secret("cookie"), salt="ccsso-devidp-cookie")
            self._bound = True
        log.warning(
            "\n%s\n  %s\n  issuer: %s\n  key:    %s\n%s", "!" * 72, WARNING_TEXT, self.issuer, key_path, "!" * 72
        )

    def now(self) -> int:
        return int(self.clock())

    def url(self, path: str) -> str:
        return self.issuer + path

    # -- scopes ---------------------------------------------------------------
    def filter_scope(self, scope: str | None, user: DevUser) -> str:
        """Drop custom scopes the user is not allowed (Okta's scope policies)."""
        return " ".join(s for s in (scope or "").split() if s in STANDARD_SCOPES or s in user.allowed_scopes)

    # -- principals -----------------------------------------------------------
    def principal(self, context: AuthContext | None) -> _Principal | None:
        if context is None:
            return None
        user = self.users.get(context.username)
        return _Principal(user, context) if user else None

    # -- minting --------------------------------------------------------------
    def _sign(self, claims: dict[str, Any], typ: str = "JWT") -> str:
        header = {"alg": ALG, "kid": self.key.kid, "typ": typ}
        return jwt.encode(header, claims, self.key, algorithms=[ALG])

    def access_token(self, client: _AuthlibClient, principal: _Principal, scope: str) -> tuple[str, dict[str, Any]]:
        now = self.now()
        user, ctx = principal.user, principal.context
        claims = {
            "iss": self.issuer,
            "sub": user.sub,
            "aud": client.dev.audience,
            "iat": now,
            "exp": now + self.access_token_lifetime,
            "jti": secrets.token_urlsafe(16),
            "client_id": client.client_id,
            "scope": scope,
            "groups": list(user.groups),
            "email": user.email,
            "auth_time": ctx.auth_time,
            "acr": ctx.acr,
            "amr": list(ctx.amr),
        }
        # RFC 9068 §2.1: JWT access tokens are typed "at+jwt" so an ID token can
        # never be replayed as an access token (or the other way round).
        return self._sign(claims, typ="at+jwt"), claims

    def issue_access_token(
        self, *, client_id: str, username: str, scope: str | None = None, mfa: bool = False
    ) -> tuple[str, dict[str, Any], str]:
        """Mint an access token without the browser flow (``flask ccsso devidp-token``).

        The token is the one ``/token`` would hand out after ``username``
        signed in just now (``auth_time`` = now) for ``client_id``: same key,
        same audience, and the scope goes through the same checks (a scope no
        user has is refused as ``invalid_scope``; a custom scope the user is not
        allowed is dropped). Its record is stored, so ``/introspect``,
        ``/userinfo`` and ``/revoke`` know it. No refresh token, no ID token.

        ``scope=None`` asks for every scope the IdP supports but
        ``offline_access``, so the grant is everything this user may have.

        :returns: ``(token, claims, requested_scope)``.
        :raises LookupError: unknown client or user.
        :raises ValueError: a scope this IdP does not know.
        """
        client = self.clients.get(client_id)
        if client is None:
            raise LookupError(f"unknown client {client_id!r} (known: {', '.join(sorted(self.clients))})")
        user = self.users.get(username)
        if user is None:
            raise LookupError(f"unknown user {username!r} (known: {', '.join(self.users)})")
        if scope is None:
            scope = " ".join(s for s in self.scopes_supported if s != "offline_access")
        unknown = [s for s in scope.split() if s not in self.scopes_supported]
        if unknown:  # what Authlib's validate_requested_scope answers at /authorize
            raise ValueError(f"invalid_scope: {' '.join(unknown)} (supported: {' '.join(self.scopes_supported)})")
        granted = self.filter_scope(scope, user)
        acr, amr = (ACR_MFA, ["pwd", "otp"]) if mfa else (ACR_LOA1, ["pwd"])
        # A sign-in of its own (not a row in the sessions table: nothing to log out of).
        context = AuthContext(user.username, self.now(), acr, amr, secrets.token_urlsafe(24))
        value, claims = self.access_token(client, _Principal(user, context), granted)
        self.store.save_token(
            jti=claims["jti"],
            refresh_token=None,
            family=secrets.token_urlsafe(16),
            origin_code=None,
            client_id=client.client_id,
            scope=granted,
            context=context,
            issued_at=claims["iat"],
            access_expires_at=claims["exp"],
            refresh_expires_at=None,
        )
        log.warning("devidp: access token issued outside the browser flow for %s (client %s)", username, client_id)
        return value, claims, scope

    def id_token(
        self, client: _AuthlibClient, principal: _Principal, *, access_token: str | None, nonce: str | None
    ) -> str:
        now = self.now()
        user, ctx = principal.user, principal.context
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": user.sub,
            "aud": client.client_id,
            "azp": client.client_id,
            "iat": now,
            "exp": now + ID_TOKEN_LIFETIME,
            # Always present, also after a refresh, where OIDC Core §12.2 wants the
            # time of the *original* authentication.
            "auth_time": ctx.auth_time,
            "acr": ctx.acr,
            "amr": list(ctx.amr),
            "sid": ctx.sid,
            "name": user.name,
            "preferred_username": user.username,
            "email": user.email,
            "email_verified": True,
            "groups": list(user.groups),
        }
        if nonce:
            claims["nonce"] = nonce
        if access_token:
            claims["at_hash"] = _at_hash(access_token)
        return self._sign(claims)

    def logout_token(self, client_id: str, sub: str, sid: str) -> str:
        """OIDC Back-Channel Logout 1.0 §2.4."""
        now = self.now()
        claims = {
            "iss": self.issuer,
            "aud": client_id,
            "iat": now,
            "exp": now + 120,
            "jti": secrets.token_urlsafe(16),
            "sub": sub,
            "sid": sid,
            "events": {LOGOUT_EVENT: {}},
        }
        return self._sign(claims, typ="logout+jwt")

    def decode_access_token(self, value: str) -> dict[str, Any] | None:
        try:
            token = jwt.decode(value, self.keys, algorithms=[ALG])
        except (JoseError, ValueError):
            return None
        if token.header.get("typ") != "at+jwt" or token.claims.get("iss") != self.issuer:
            return None
        return dict(token.claims)

    def access_record(self, value: str) -> TokenRecord | None:
        claims = self.decode_access_token(value)
        if claims is None or "jti" not in claims:
            return None
        return self.store.token_by_jti(str(claims["jti"]), self.now())

    # -- the IdP's own cookie -------------------------------------------------
    def read_cookie(self) -> dict[str, str]:
        raw = request.cookies.get(COOKIE_NAME)
        if not raw:
            return {}
        try:
            data = self.serializer.loads(raw)
        except BadSignature:
            return {}
        return data if isinstance(data, dict) else {}

    def write_cookie(self, response: Response, data: dict[str, str]) -> None:
        response.set_cookie(
            COOKIE_NAME,
            self.serializer.dumps(data),
            path=self.cookie_path,
            httponly=True,
            samesite="Lax",
            secure=self.secure_cookie,
        )

    def current_context(self, cookie: dict[str, str]) -> AuthContext | None:
        sid = cookie.get("sid")
        return self.store.get_session(sid, self.now()) if sid else None

    # -- back-channel logout --------------------------------------------------
    def notify_logout(self, sid: str) -> None:
        for client_id, username in self.store.clients_of_session(sid):
            client = self.clients.get(client_id)
            user = self.users.get(username)
            if client is None or user is None or not client.dev.backchannel_logout_uri:
                continue
            token = self.logout_token(client_id, user.sub, sid)
            threading.Thread(
                target=_deliver_logout_token, args=(client.dev.backchannel_logout_uri, token), daemon=True
            ).start()


def _deliver_logout_token(uri: str, logout_token: str) -> None:
    """POST a logout token (Back-Channel Logout §2.5); failures are only logged."""
    import requests

    try:
        resp = requests.post(uri, data={"logout_token": logout_token}, timeout=5)
        if resp.status_code >= 400:
            log.warning("devidp: back-channel logout to %s answered %s", uri, resp.status_code)
    except requests.RequestException as exc:
        log.warning("devidp: back-channel logout to %s failed: %s", uri, exc)


# ---------------------------------------------------------------------------
# Authlib plumbing
# ---------------------------------------------------------------------------
class _Server(AuthorizationServer):
    idp: _IdP


_CLIENT_AUTH = ["client_secret_basic", "client_secret_post", "none"]


class _CodeGrant(AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = _CLIENT_AUTH
    server: _Server

    def save_authorization_code(self, code: str, request: Any) -> None:
        idp = self.server.idp
        principal: _Principal = request.user
        data = request.payload.data
        idp.store.save_code(
            code,
            client_id=request.client.client_id,
            redirect_uri=request.payload.redirect_uri,
            scope=idp.filter_scope(request.scope, principal.user),
            nonce=data.get("nonce"),
            code_challenge=data.get("code_challenge"),
            code_challenge_method=data.get("code_challenge_method"),
            context=principal.context,
            expires_at=idp.now() + CODE_LIFETIME,
        )

    def query_authorization_code(self, code: str, client: _AuthlibClient) -> CodeRecord | None:
        # Consumed here, atomically, rather than in delete_authorization_code:
        # two workers racing with the same code cannot both win.
        return self.server.idp.store.consume_code(code, client.client_id, self.server.idp.now())

    def delete_authorization_code(self, authorization_code: CodeRecord) -> None:
        pass  # already consumed by query_authorization_code

    def authenticate_user(self, authorization_code: CodeRecord) -> _Principal | None:
        return self.server.idp.principal(authorization_code.context)


class _RequireS256(CodeChallenge):
    """PKCE is required of every client, and only with S256 (RFC 9700 §2.1.1)."""

    SUPPORTED_CODE_CHALLENGE_METHOD: ClassVar[list[str]] = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    CODE_CHALLENGE_METHODS: ClassVar[dict[str, Any]] = {"S256": CodeChallenge.CODE_CHALLENGE_METHODS["S256"]}

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: send 'code_challenge' with 'code_challenge_method=S256'.")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("Only 'code_challenge_method=S256' is supported.")
        super().validate_code_challenge(grant, redirect_uri)


class _OpenIDCode(OpenIDCode):
    def __init__(self, idp: _IdP) -> None:
        super().__init__(require_nonce=False)
        self.idp = idp

    def exists_nonce(self, nonce: str, request: Any) -> bool:
        return self.idp.store.nonce_used(request.payload.client_id, nonce)

    def encode_id_token(self, token: dict[str, Any], request: Any) -> str:
        # Replaces Authlib's LegacyMixin claim assembly, which reads time.time()
        # directly (our clock is injectable) and knows nothing of sid/azp/groups.
        return self.idp.id_token(
            request.client,
            request.user,
            access_token=token.get("access_token"),
            nonce=request.authorization_code.get_nonce(),
        )

    def validate_openid_authorization_request(self, grant: Any, redirect_uri: str) -> None:
        # OIDC Core §3.1.2.1: redirect_uri is REQUIRED in an authentication request.
        if not grant.request.payload.redirect_uri:
            raise InvalidRequestError("Missing 'redirect_uri' in request.")
        super().validate_openid_authorization_request(grant, redirect_uri)


class _RefreshGrant(RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = _CLIENT_AUTH
    INCLUDE_NEW_REFRESH_TOKEN = True  # rotation: every refresh returns a new refresh token
    server: _Server

    def authenticate_refresh_token(self, refresh_token: str) -> TokenRecord | None:
        idp = self.server.idp
        return idp.store.rotate_refresh(refresh_token, self.request.client.client_id, idp.now())

    def authenticate_user(self, refresh_token: TokenRecord) -> _Principal | None:
        return self.server.idp.principal(refresh_token.context)

    def revoke_old_credential(self, refresh_token: TokenRecord) -> None:
        pass  # already retired atomically by authenticate_refresh_token

    def issue_token(self, user: _Principal, refresh_token: TokenRecord) -> dict[str, Any]:
        idp = self.server.idp
        # Re-apply the scope policy: a user who lost a custom scope loses it on refresh.
        scope = idp.filter_scope(self.request.payload.scope or refresh_token.get_scope(), user.user)
        token: dict[str, Any] = self.generate_token(user=user, scope=scope, include_refresh_token=True)
        if "openid" in scope.split():
            # OIDC Core §12.2: a refreshed ID token, with current claims (groups).
            token["id_token"] = idp.id_token(self.request.client, user, access_token=token["access_token"], nonce=None)
        return token


class _AccessTokenValidator(BearerTokenValidator):
    def __init__(self, idp: _IdP) -> None:
        super().__init__()
        self.idp = idp

    def authenticate_token(self, token_string: str) -> TokenRecord | None:
        return self.idp.access_record(token_string)


class _TokenLookup:
    idp: _IdP

    def query_token(self, token_string: str, token_type_hint: str | None) -> TokenRecord | None:
        now = self.idp.now()
        # The hint is only a hint (RFC 7009 §2.1, RFC 7662 §2.1): try both kinds.
        if token_type_hint == "refresh_token":
            return self.idp.store.token_by_refresh(token_string, now) or self.idp.access_record(token_string)
        return self.idp.access_record(token_string) or self.idp.store.token_by_refresh(token_string, now)


class _Introspection(_TokenLookup, IntrospectionEndpoint):
    CLIENT_AUTH_METHODS: ClassVar[list[str]] = ["client_secret_basic", "client_secret_post"]

    def __init__(self, idp: _IdP) -> None:
        super().__init__(None)
        self.idp = idp

    def check_permission(self, token: TokenRecord, client: _AuthlibClient, request: Any) -> bool:
        # The client the token was issued to, or a resource server registered
        # with the token's audience, may look at it.
        if token.client_id == client.client_id:
            return True
        owner = self.idp.clients.get(token.client_id)
        return token.kind == "access_token" and owner is not None and owner.dev.audience == client.dev.audience

    def introspect_token(self, token: TokenRecord) -> dict[str, Any]:
        user = self.idp.users.get(token.context.username)
        owner = self.idp.clients.get(token.client_id)
        payload: dict[str, Any] = {
            "active": user is not None,
            "iss": self.idp.issuer,
            "client_id": token.client_id,
            "scope": token.scope,
            "username": token.context.username,
            "token_type": "Bearer" if token.kind == "access_token" else "refresh_token",
            "iat": token.issued_at,
            "exp": token.access_expires_at if token.kind == "access_token" else token.refresh_expires_at,
            "auth_time": token.context.auth_time,
            "acr": token.context.acr,
        }
        if token.kind == "access_token":
            payload["jti"] = token.jti
            payload["aud"] = owner.dev.audience if owner else DEFAULT_AUDIENCE
        if user is not None:
            payload.update(sub=user.sub, email=user.email, groups=list(user.groups))
        return payload


class _Revocation(_TokenLookup, RevocationEndpoint):
    CLIENT_AUTH_METHODS = _CLIENT_AUTH  # RFC 7009 §2.1: public clients revoke with their client_id

    def __init__(self, idp: _IdP) -> None:
        super().__init__(None)
        self.idp = idp

    def revoke_token(self, token: TokenRecord, request: Any) -> None:
        self.idp.store.revoke(token)


class _EndSession(EndSessionEndpoint):
    def __init__(self, idp: _IdP) -> None:
        super().__init__(None)
        self.idp = idp

    def get_server_jwks(self) -> Any:
        return self.idp.keys

    def get_algorithms(self) -> list[str]:
        return [ALG]

    def validate_request(self, request: Any) -> Any:
        req = super().validate_request(request)
        # Authlib checks the signature only; the issuer must be us as well.
        if req.id_token_claims is not None and req.id_token_claims.get("iss") != self.idp.issuer:
            raise InvalidRequestError("'id_token_hint' was not issued by this provider.")
        return req

    def end_session(self, end_session_request: Any) -> None:
        sids = set()
        sid = self.idp.read_cookie().get("sid")
        if sid:
            sids.add(sid)
        claims = end_session_request.id_token_claims or {}
        if claims.get("sid"):
            sids.add(str(claims["sid"]))
        for sid in sids:
            if self.idp.store.delete_session(sid):
                self.idp.notify_logout(sid)


class _Issuer(IssuerParameter):
    """RFC 9207: every authorization response carries ``iss``."""

    def __init__(self, issuer: str) -> None:
        self.issuer = issuer

    def get_issuer(self) -> str:
        return self.issuer


def _build_server(idp: _IdP) -> tuple[_Server, ResourceProtector]:
    server = _Server(query_client=idp.clients.get, save_token=lambda token, req: _save_token(idp, token, req))
    server.idp = idp
    server.scopes_supported = list(idp.scopes_supported)

    def generate(
        grant_type: str,
        client: _AuthlibClient,
        user: _Principal | None = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        if user is None:  # no grant without a user is registered
            raise InvalidRequestError("This provider only issues tokens for a signed-in user.")
        value, _ = idp.access_token(client, user, scope or "")
        token: dict[str, Any] = {
            "token_type": "Bearer",
            "access_token": value,
            "expires_in": idp.access_token_lifetime,
            "scope": scope or "",
        }
        if include_refresh_token:
            token["refresh_token"] = secrets.token_urlsafe(48)
        return token

    server.register_token_generator("default", generate)
    server.register_grant(_CodeGrant, [_RequireS256(required=True), _OpenIDCode(idp)])
    server.register_grant(_RefreshGrant)
    server.register_endpoint(_Introspection(idp))
    server.register_endpoint(_Revocation(idp))
    server.register_endpoint(_EndSession(idp))
    server.register_extension(_Issuer(idp.issuer))

    protector = ResourceProtector()
    protector.register_token_validator(_AccessTokenValidator(idp))
    return server, protector


def _save_token(idp: _IdP, token: dict[str, Any], request: Any) -> None:
    claims = idp.decode_access_token(token["access_token"])
    assert claims is not None  # we just minted it
    principal: _Principal = request.user
    if request.refresh_token is not None:  # refresh grant: same family, same sign-in
        family, origin = request.refresh_token.family, None
    else:
        family, origin = secrets.token_urlsafe(16), request.authorization_code.code_hash
    refresh = token.get("refresh_token")
    idp.store.save_token(
        jti=claims["jti"],
        refresh_token=refresh,
        family=family,
        origin_code=origin,
        client_id=request.client.client_id,
        scope=token.get("scope", ""),
        context=principal.context,
        issued_at=claims["iat"],
        access_expires_at=claims["exp"],
        refresh_expires_at=claims["iat"] + REFRESH_TOKEN_LIFETIME if refresh else None,
    )


# ---------------------------------------------------------------------------
# the blueprint
# ---------------------------------------------------------------------------
def _as_response(value: object) -> Response:
    """Authlib's Flask integration answers with :class:`flask.Response`; Authlib
    ships no types, so this says so (and fails loudly if that ever changes)."""
    if not isinstance(value, Response):
        raise TypeError(f"Authlib answered with {type(value).__name__}, not a flask.Response")
    return value


def _discovery_document(idp: _IdP) -> dict[str, Any]:
    """OpenID Connect Discovery 1.0 §3, as Okta publishes it."""
    auth_methods = ["client_secret_basic", "client_secret_post", "none"]
    return {
        "issuer": idp.issuer,
        "authorization_endpoint": idp.url("/authorize"),
        "token_endpoint": idp.url("/token"),
        "userinfo_endpoint": idp.url("/userinfo"),
        "jwks_uri": idp.url("/jwks"),
        "end_session_endpoint": idp.url("/end_session"),
        "introspection_endpoint": idp.url("/introspect"),
        "revocation_endpoint": idp.url("/revoke"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [ALG],
        "token_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": list(idp.scopes_supported),
        "claims_supported": list(CLAIMS_SUPPORTED),
        "acr_values_supported": list(ACR_VALUES_SUPPORTED),
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "authorization_response_iss_parameter_supported": True,
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
    }


def _mfa_required() -> bool:
    """The request asks for MFA only (``acr_values`` names it and not LoA1)."""
    wanted = request.args.get("acr_values", "").split()
    return ACR_MFA in wanted and ACR_LOA1 not in wanted


def _requested_max_age() -> int | None:
    """``max_age`` of the authorization request (OIDC Core §3.1.2.1), checked."""
    raw = request.args.get("max_age")
    if raw is None:
        return None
    try:
        max_age = int(raw)
    except ValueError:
        max_age = -1
    if max_age < 0:
        raise InvalidRequestError("'max_age' must be a non-negative integer.")
    return max_age


def _csrf_value(cookie: dict[str, str]) -> str:
    return cookie.get("csrf") or secrets.token_urlsafe(16)


def _form_csrf_ok(cookie: dict[str, str]) -> bool:
    """The posted form carries the CSRF value of the IdP's own cookie."""
    return bool(cookie.get("csrf")) and secrets.compare_digest(request.form.get("csrf", ""), cookie["csrf"])


def _remote_refusal() -> Response:
    log.warning("devidp: refused a request from %s to %s (peer is not loopback; set %s=1 to allow)",
                request.environ.get("REMOTE_ADDR") or "an unknown address", request.path, ALLOW_REMOTE_ENV_VAR)
    return Response(
        "403 Forbidden: the development identity provider only answers requests from this machine "
        f"(a loopback peer address). Set {ALLOW_REMOTE_ENV_VAR}=1 to open it to the network -- never in "
        "production.\n",
        status=403, mimetype="text/plain", headers={"Cache-Control": "no-store"},
    )


def _no_framing(response: Response) -> Response:
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


class _Views:
    """The IdP's HTTP endpoints, over one :class:`_IdP` and its Authlib server."""

    def __init__(self, idp: _IdP, *, open_to_network: bool) -> None:
        self.idp = idp
        self.open_to_network = open_to_network
        self.server, self.require_oauth = _build_server(idp)

    def register(self, bp: Blueprint) -> None:
        """Mount every endpoint on ``bp`` (the endpoint names are the public ones)."""
        bp.before_request(self.local_peers_only)
        bp.after_request(_no_framing)
        for rule, endpoint, methods in (
            ("/.well-known/openid-configuration", "discovery", ["GET"]),
            ("/jwks", "jwks", ["GET"]),
            ("/authorize", "authorize", ["GET", "POST"]),
            ("/token", "token", ["POST"]),
            ("/userinfo", "userinfo", ["GET", "POST"]),
            ("/introspect", "introspect", ["POST"]),
            ("/revoke", "revoke", ["POST"]),
            ("/end_session", "end_session", ["GET", "POST"]),
        ):
            bp.add_url_rule(rule, endpoint, getattr(self, endpoint), methods=methods)

    # -- every request ------------------------------------------------------------
    def local_peers_only(self) -> Response | None:
        # every endpoint, discovery included: the decision is the TCP peer's
        # address, which a client cannot choose (the Host header it can)
        if self.open_to_network or peer_is_local(request.environ):
            return None
        return _remote_refusal()

    # -- response helpers ---------------------------------------------------------
    def page(self, template: str, status: int = 200, **context: Any) -> Response:
        html = render_template(f"devidp/{template}", warning=WARNING_TEXT, issuer=self.idp.issuer, **context)
        response = current_app.make_response((html, status))
        response.headers["Cache-Control"] = "no-store"
        return response

    def with_iss(self, response: Response) -> Response:
        if response.location:
            response.location = add_params_to_uri(response.location, {"iss": self.idp.issuer})
        return response

    def error_response(self, error: OAuth2Error) -> Response:
        if error.redirect_uri:  # a validated redirect URI: tell the client (with iss, RFC 9207 §2)
            return self.with_iss(_as_response(self.server.handle_error_response(None, error)))
        return self.page("error.html", error.status_code or 400, error=error.error, description=error.description)

    def authorization_response(self, grant: Any, principal: _Principal | None) -> Response:
        return _as_response(self.server.create_authorization_response(grant=grant, grant_user=principal))

    # -- discovery ----------------------------------------------------------------
    def discovery(self) -> Response:
        return jsonify(_discovery_document(self.idp))

    def jwks(self) -> Response:
        response = jsonify(public_jwks(self.idp.key))
        response.headers["Cache-Control"] = "public, max-age=300"
        return response

    # -- sign-in ------------------------------------------------------------------
    def reauth_reason(self, principal: _Principal | None) -> str | None:
        """Why the person must (re-)authenticate now, or ``None`` for single sign-on."""
        if principal is None:
            return "Sign in to continue."
        prompts = request.args.get("prompt", "").split()
        if "login" in prompts:
            return "The application asked you to sign in again (prompt=login)."
        if "select_account" in prompts:
            return "Choose an account (prompt=select_account)."
        max_age = _requested_max_age()
        # OIDC Core §3.1.2.1: max_age=0 is equivalent to prompt=login.
        if max_age is not None and (max_age == 0 or self.idp.now() - principal.context.auth_time > max_age):
            return f"Your sign-in is older than max_age={max_age} seconds; sign in again."
        if _mfa_required() and principal.context.acr != ACR_MFA:
            return f"The application requires multi-factor authentication (acr_values={ACR_MFA})."
        return None

    def authorize(self) -> Response:
        cookie = self.idp.read_cookie()
        principal = self.idp.principal(self.idp.current_context(cookie))
        try:
            # Validates client, redirect_uri, scope, PKCE, nonce and prompt=none.
            grant = self.server.get_consent_grant(end_user=principal)
        except OAuth2Error as error:
            return self.error_response(error)
        if request.method == "POST":
            return self.sign_in(grant, cookie)
        try:
            reason = self.reauth_reason(principal)
            if reason is not None and "none" in request.args.get("prompt", "").split():
                # OIDC Core §3.1.2.6: prompt=none and the End-User must authenticate.
                raise LoginRequiredError()
        except OAuth2Error as error:
            error.redirect_uri = grant.redirect_uri
            error.state = request.args.get("state")
            return self.error_response(error)
        if reason is None:  # single sign-on: the existing session is good enough
            return self.authorization_response(grant, principal)
        return self.login_page(grant, principal, reason, cookie)

    def login_page(self, grant: Any, principal: _Principal | None, reason: str, cookie: dict[str, str]) -> Response:
        csrf = _csrf_value(cookie)
        response = self.page(
            "login.html",
            reason=reason,
            users=list(self.idp.users.values()),
            client_id=grant.client.dev.client_id,
            scope=request.args.get("scope", ""),
            mfa_required=_mfa_required(),
            current=principal.user.username if principal else None,
            csrf=csrf,
            action=request.full_path,
        )
        self.idp.write_cookie(response, {**cookie, "csrf": csrf})
        return response

    def sign_in(self, grant: Any, cookie: dict[str, str]) -> Response:
        idp, form = self.idp, request.form
        if not _form_csrf_ok(cookie):
            return self.page(
                "error.html",
                400,
                error="invalid_request",
                description="The sign-in form expired or came from another site; start again from the application.",
            )
        if form.get("cancel"):
            return self.authorization_response(grant, None)
        user = idp.users.get(form.get("username", ""))
        if user is None:
            return self.page("error.html", 400, error="invalid_request", description="Unknown user.")
        use_mfa = bool(form.get("mfa")) or _mfa_required()
        acr, amr = (ACR_MFA, ["pwd", "otp"]) if use_mfa else (ACR_LOA1, ["pwd"])
        now = idp.now()
        old_sid = cookie.get("sid")
        if old_sid:
            idp.store.delete_session(old_sid)
        sid = idp.store.create_session(user.username, now, acr, amr, now + SESSION_LIFETIME)
        principal = _Principal(user, AuthContext(user.username, now, acr, amr, sid))
        log.info("devidp: %s signed in (acr=%s) for client %s", user.username, acr, grant.client.client_id)
        response = self.authorization_response(grant, principal)
        idp.write_cookie(response, {"sid": sid, "csrf": secrets.token_urlsafe(16)})
        return response

    # -- tokens -------------------------------------------------------------------
    def token(self) -> Response:
        return _as_response(self.server.create_token_response())

    def userinfo(self) -> Response:
        with self.require_oauth.acquire("openid") as record:
            user = self.idp.users.get(record.context.username)
            if user is None:
                return Response(status=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
            response = jsonify(
                sub=user.sub,
                name=user.name,
                preferred_username=user.username,
                email=user.email,
                email_verified=True,
                groups=list(user.groups),
            )
            response.headers["Cache-Control"] = "no-store"
            return response

    def introspect(self) -> Response:
        return _as_response(self.server.create_endpoint_response("introspection"))

    def revoke(self) -> Response:
        return _as_response(self.server.create_endpoint_response("revocation"))

    # -- RP-Initiated Logout ------------------------------------------------------
    def end_session(self) -> Response:
        cookie = self.idp.read_cookie()
        try:
            req = self.server.validate_endpoint_request("end_session")
        except OAuth2Error as error:
            return self.page("error.html", 400, error=error.error, description=error.description)
        refusal = self.logout_redirect_refusal(req)
        if refusal is not None:
            return refusal
        if req.needs_confirmation:
            if request.method == "GET":
                return self.confirm_logout_page(cookie)
            if not _form_csrf_ok(cookie):
                return self.page("error.html", 400, error="invalid_request", description="Logout form expired.")
        answer = self.server.create_endpoint_response("end_session", req)
        response = _as_response(answer) if answer is not None else self.page("logged_out.html")
        response.delete_cookie(COOKIE_NAME, path=self.idp.cookie_path)
        return response

    def logout_redirect_refusal(self, req: Any) -> Response | None:
        """RP-Initiated Logout §3/§4: never redirect to an unregistered URI."""
        wanted = request.values.get("post_logout_redirect_uri")
        if not wanted or req.redirect_uri is not None:
            return None
        accepted = req.client.dev.accepted_post_logout_redirect_uris() if req.client is not None else ()
        why = (
            "the request carries no valid id_token_hint"
            if wanted in accepted
            else f"it is not registered for this client (accepted: {', '.join(accepted) or 'none'})"
        )
        return self.page(
            "error.html",
            400,
            error="invalid_request",
            description=f"post_logout_redirect_uri {wanted!r} refused: {why}.",
        )

    def confirm_logout_page(self, cookie: dict[str, str]) -> Response:
        csrf = _csrf_value(cookie)
        response = self.page("confirm_logout.html", csrf=csrf, action=request.full_path)
        self.idp.write_cookie(response, {**cookie, "csrf": csrf})
        return response


class _DevIdPBlueprint(Blueprint):
    """The IdP's blueprint, carrying its runtime: ``flask ccsso devidp-token``
    finds it as ``ccsso_devidp`` among ``app.blueprints``."""

    def __init__(self, name: str, idp: _IdP) -> None:
        super().__init__(name, __name__, template_folder="templates", url_prefix=urlsplit(idp.issuer).path or None)
        self.ccsso_devidp = idp
        self.record_once(lambda state: idp.bind(state.app))


def _warn_open_to_network(allow_remote: bool) -> None:
    log.warning(
        "\n%s\n  %s\n  %s: the development IdP answers requests from ANY address, not only this\n"
        "  machine. Anyone who can reach this port can sign in as anyone. Never in production.\n%s",
        "!" * 72, WARNING_TEXT, "allow_remote=True" if allow_remote else f"{ALLOW_REMOTE_ENV_VAR}=1", "!" * 72,
    )


def _check_clients(clients: Sequence[DevClient]) -> None:
    if not clients:
        raise RuntimeError("The development IdP needs at least one DevClient.")
    for c in clients:
        if not c.redirect_uris:
            raise RuntimeError(f"DevClient {c.client_id!r} has no redirect_uris.")

def create_devidp_blueprint(
    *,
    issuer: str,
    clients: list[DevClient],
    users: list[DevUser] | None = None,
    enabled: bool = False,
    key_path: str | None = None,
    clock: Callable[[], float] = time.time,
    allow_non_loopback: bool = False,
    access_token_lifetime: int = 3600,
    name: str = "ccsso_devidp",
    allow_remote: bool = False,
) -> Blueprint:
    """Build the development IdP as a blueprint whose URL prefix is the issuer's path.

    :param issuer: the exact issuer URL, no trailing slash, e.g.
        ``http://127.0.0.1:5000/devidp``; its path becomes the blueprint's
        ``url_prefix`` and the cookie path.
    :param clients: the relying parties that may use it.
    :param users: people who can sign in; defaults to alice, bob, carol, dave and erin.
    :param enabled: must be ``True`` — and ``CCSSO_DEVIDP_ENABLED=1`` must be set.
    :param key_path: where the private signing JWK is kept (created 0600 if
        missing); the SQLite state file sits in the same folder. Defaults to
        ``<instance_path>/ccsso-devidp-key.json`` of the app it is registered on.
    :param clock: seconds since the epoch; tests pass a fake clock.
    :param allow_non_loopback: allow an issuer host other than localhost /
        127.0.0.1 / [::1].
    :param access_token_lifetime: seconds an access token lives.
    :param allow_remote: answer requests whose TCP peer is not a loopback
        address (by default they get a plain ``403``). ``CCSSO_DEVIDP_ALLOW_REMOTE=1``
        does the same; either way a WARNING is logged at start-up.
    :raises RuntimeError: if either switch is off, or the issuer is not
        acceptable.
    """
    _check_switches(enabled, issuer, allow_non_loopback)
    open_to_network = remote_allowed(allow_remote)
    if open_to_network:
        _warn_open_to_network(allow_remote)
    _check_clients(clients)
    idp = _IdP(
        issuer=issuer,
        clients=clients,
        users=users if users is not None else default_users(),
        key_path=key_path,
        clock=clock,
        access_token_lifetime=access_token_lifetime,
        enabled=enabled,
        allow_non_loopback=allow_non_loopback,
    )
    bp = _DevIdPBlueprint(name, idp)
    _Views(idp, open_to_network=open_to_network).register(bp)
    return bp


class DevIdP:
    """Mount the development IdP on an app, Flask-extension style::

        DevIdP(app, issuer="http://127.0.0.1:5000/devidp", enabled=True,
               clients=[DevClient("portal", "secret", ["http://127.0.0.1:5000/sso/okta/callback"])])

    ``url_prefix`` defaults to ``/devidp`` and must be the end of the issuer's
    path (the issuer is what browsers and relying parties see).
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        issuer: str,
        clients: list[DevClient],
        users: list[DevUser] | None = None,
        url_prefix: str = "/devidp",
        enabled: bool = False,
        key_path: str | None = None,
        clock: Callable[[], float] = time.time,
        allow_non_loopback: bool = False,
        access_token_lifetime: int = 3600,
        allow_remote: bool = False,
    ) -> None:
        url_prefix = "/" + url_prefix.strip("/") if url_prefix.strip("/") else ""
        path = urlsplit(issuer).path
        if not path.endswith(url_prefix):
            raise RuntimeError(
                f"The development IdP issuer {issuer!r} does not end with its url_prefix {url_prefix!r}; "
                f"use e.g. issuer='http://127.0.0.1:5000{url_prefix}'."
            )
        self.url_prefix = url_prefix
        self.issuer = issuer
        self.blueprint = create_devidp_blueprint(
            issuer=issuer,
            clients=clients,
            users=users,
            enabled=enabled,
            key_path=key_path,
            clock=clock,
            allow_non_loopback=allow_non_loopback,
            access_token_lifetime=access_token_lifetime,
            allow_remote=allow_remote,
        )
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        if "ccsso_devidp" in app.extensions:
            raise RuntimeError("A development IdP is already registered on this app.")
        app.extensions["ccsso_devidp"] = self
        app.register_blueprint(self.blueprint, url_prefix=self.url_prefix or None)
