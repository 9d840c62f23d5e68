"""API callers: ``Authorization: Bearer <token>`` → :class:`Identity`.

Access tokens from the configured OIDC providers are accepted and checked
against the same skills as browser sessions (``identity.via == "bearer"``).

JWT access tokens (RFC 9068 and the Okta / Entra ID formats):

1. the provider is picked by the token's *unverified* ``iss`` (each provider's
   issuer; Entra ID accepts its tenant's v2 and v1 issuers) -- only to choose
   the keys, everything is verified after;
2. ``typ``, when present, must be ``JWT`` or ``at+jwt`` (RFC 9068 2.1): an ID
   token for another purpose, a logout token, ... is refused; a token with a
   ``nonce`` claim is an ID token, not an access token, and is refused too;
3. the signature is verified with ``provider.decode_jwt``: the provider's
   cached JWKS, the local algorithm allow-list (never ``none``, never HMAC),
   an unknown ``kid`` refetching the JWKS at most once per cooldown;
4. ``iss`` exact, ``aud`` one of the provider's ``audience`` (default: its
   client id), ``exp`` required, ``nbf`` / ``iat`` not in the future, all with
   the provider's ``clockSkew`` leeway; Entra ID: ``tid`` is the tenant;
5. ``scp`` / ``scope`` (space-separated or a list) → scopes; the provider's
   groups / roles claims → groups / roles; ``auth_time``, ``amr``, ``acr``
   when the token has them (no ``auth_time`` → a sensitive skill answers with
   a step-up challenge).

Verified tokens are cached in-process, keyed by the SHA-256 of the token,
until their ``exp`` (a bounded LRU): repeated calls do not re-verify.

Opaque tokens use RFC 7662 introspection at providers whose discovery
document has an ``introspection_endpoint`` and whose ``introspection``
setting is true (the default), authenticating with the client id and secret.
Providers are asked in config order until one says ``active``. Positive
answers are cached in-process for ``min(exp - now, 60 s)``, so a busy API
client costs one introspection call a minute per token and process; a token
revoked at the IdP can keep working for up to that minute.

A bad token is a ``401`` with ``WWW-Authenticate: Bearer error="invalid_token"``
and a ``login_failed`` signal (reason ``invalid_token``), never a 500; an
unreachable IdP is a ``503``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests
from flask import Flask, current_app, g

from . import reasons, signals
from .exceptions import AuthenticationFailed, IdPUnavailable, LoginRequired
from .identity import Identity
from .providers.keys import ResponseTooLarge, finite_number, loads_strict, read_capped

if TYPE_CHECKING:
    from .extension import CCSSOState
    from .providers.oidc import OIDCProvider

#: how many verified tokens each process remembers
DEFAULT_CACHE_SIZE = 2048
#: the longest an introspection answer is trusted without asking again
INTROSPECTION_CACHE_SECONDS = 60.0
#: RFC 6750 2.1 b64token
_B64TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
_ACCEPTED_TYP = {"jwt", "at+jwt"}
#: claims only ID tokens / logout tokens / security event tokens carry
_NOT_ACCESS_TOKEN_CLAIMS = ("nonce", "at_hash", "c_hash", "s_hash", "events")
#: Keycloak's ``typ`` *claim* of ID, refresh and logout tokens
_NOT_ACCESS_TOKEN_TYP = {"id", "refresh", "offline", "logout"}

log = logging.getLogger("flask_ccsso")


class TokenCache:
    """A small thread-safe LRU of ``token hash -> (identity, valid_until)``."""

    def __init__(self, maxsize: int = DEFAULT_CACHE_SIZE) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[bytes, tuple[Identity, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: bytes, now: float) -> Identity | None:
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            if now >= item[1]:
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return item[0]

    def put(self, key: bytes, identity: Identity, valid_until: float) -> None:
        with self._lock:
            self._data[key] = (identity, valid_until)
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


def _invalid(description: str) -> AuthenticationFailed:
    return AuthenticationFailed(description, reason=reasons.INVALID_TOKEN)


def _peek_claims(token: str) -> dict[str, Any]:
    """The payload, unverified: only to pick the provider."""
    try:
        part = token.split(".")[1]
        part += "=" * (-len(part) % 4)
        data = json.loads(base64.urlsafe_b64decode(part.encode("ascii")))
    except (ValueError, IndexError, UnicodeError):
        raise _invalid("The token is malformed.") from None
    if not isinstance(data, dict):
        raise _invalid("The token is malformed.")
    return data


def _peek_header(token: str) -> dict[str, Any]:
    try:
        part = token.split(".")[0]
        part += "=" * (-len(part) % 4)
        data = json.loads(base64.urlsafe_b64decode(part.encode("ascii")))
    except (ValueError, UnicodeError):
        raise _invalid("The token is malformed.") from None
    if not isinstance(data, dict):
        raise _invalid("The token is malformed.")
    return data


def _scopes(claims: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for key in ("scp", "scope"):
        v = claims.get(key)
        if isinstance(v, str):
            out.extend(v.split())
        elif isinstance(v, list):
            out.extend(s for s in v if isinstance(s, str))
    return sorted(set(out))


def _check_client(prov: OIDCProvider, claims: Mapping[str, Any]) -> None:
    """``allowedClients``: only tokens obtained by these OAuth clients
    (``client_id`` per RFC 9068, ``azp``, Okta's ``cid``, Entra's ``appid``) may call the API.
    Off by default: RFC 9068 lets any client of the audience call it."""
    allowed = prov.settings.allowed_clients
    if not allowed:
        return
    cid = claims.get("client_id") or claims.get("azp") or claims.get("cid") or claims.get("appid")
    if not isinstance(cid, str) or cid not in allowed:
        raise _invalid("The token was obtained by a client that may not call this API.")


def _auds(claims: Mapping[str, Any]) -> list[str]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list):
        return [a for a in aud if isinstance(a, str)]
    return []


class BearerAuthenticator:
    """``state.bearer_authenticator``: ``(state, token) -> Identity``."""

    def __init__(self, state: CCSSOState, *, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self.state = state
        self.cache = TokenCache(cache_size)
        #: introspection calls made (tests, metrics)
        self.introspections = 0

    # -- entry point -------------------------------------------------------------------
    def __call__(self, state: CCSSOState, token: str) -> Identity:
        failure = getattr(g, "_ccsso_bearer_failure", None)
        if failure is not None:  # once per request, one signal
            raise failure
        try:
            try:
                return self.authenticate(token)
            except (AuthenticationFailed, IdPUnavailable):
                raise
            except Exception as exc:  # an input nobody foresaw: 401, never a 500
                log.exception("flask-ccsso: unexpected error while checking a bearer token")
                raise _invalid("The access token could not be verified.") from exc
        except AuthenticationFailed as exc:
            err = LoginRequired(exc.description or "The access token is not valid.", reason=reasons.INVALID_TOKEN)
            signals.login_failed.send(current_app._get_current_object(),  # type: ignore[attr-defined]
                                      provider=exc.extra.get("provider"), reason=reasons.INVALID_TOKEN,
                                      detail=exc.description, subject=None, email=None)
            g._ccsso_bearer_failure = err
            raise err from None
        except IdPUnavailable as exc:
            signals.login_failed.send(current_app._get_current_object(),  # type: ignore[attr-defined]
                                      provider=exc.extra.get("provider"), reason=reasons.IDP_UNAVAILABLE,
                                      detail=exc.description, subject=None, email=None)
            g._ccsso_bearer_failure = exc
            raise

    def authenticate(self, token: str) -> Identity:
        """Verify ``token``; raise AuthenticationFailed / IdPUnavailable."""
        if not token or len(token) > 16384 or not _B64TOKEN.match(token):
            raise _invalid("The access token is malformed.")
        key = hashlib.sha256(token.encode("ascii")).digest()
        now = self.state.clock()
        cached = self.cache.get(key, now)
        if cached is not None:
            return cached
        if token.count(".") == 2:
            identity, valid_until = self._verify_jwt(token, now)
        else:
            identity, valid_until = self._introspect(token, now)
        self.cache.put(key, identity, valid_until)
        return identity

    # -- JWT ---------------------------------------------------------------------------
    def _oidc_providers(self) -> list[OIDCProvider]:
        return [p for p in self.state.providers.values()  # type: ignore[misc]
                if getattr(p, "protocol", None) == "oidc"]

    def _issuers(self, prov: OIDCProvider) -> tuple[str, ...]:
        accepted = getattr(prov, "accepted_access_token_issuers", None)
        if accepted is not None:
            return tuple(accepted())
        return (prov.expected_issuer(),)

    def _provider_for(self, iss: Any) -> tuple[OIDCProvider, tuple[str, ...]]:
        if not isinstance(iss, str) or not iss:
            raise _invalid("The token names no issuer.")
        unavailable: IdPUnavailable | None = None
        for prov in self._oidc_providers():
            try:
                issuers = self._issuers(prov)
            except IdPUnavailable as exc:
                unavailable = exc
                continue
            if iss in issuers:
                return prov, issuers
        if unavailable is not None:
            raise unavailable
        raise _invalid("The token was issued by an identity provider this application does not trust.")

    def _verify_jwt(self, token: str, now: float) -> tuple[Identity, float]:
        header = _peek_header(token)
        typ = header.get("typ")
        if typ is not None:
            t = str(typ).lower()
            t = t.removeprefix("application/")
            if t not in _ACCEPTED_TYP:
                raise _invalid("The token is not an access token (typ).")
        prov, issuers = self._provider_for(_peek_claims(token).get("iss"))
        try:
            _, claims = prov.decode_jwt(token)
            if claims.get("iss") not in issuers:
                raise _invalid("The token was issued by someone else.")
            auds = _auds(claims)
            if not any(a in prov.settings.audience for a in auds):
                raise _invalid("The token is meant for another application (aud).")
            # an ID token (nonce, at_hash / c_hash / s_hash, Keycloak's typ
            # claim "ID") or a logout token / security event (events) is not
            # an access token, even when its aud is our client id: ID tokens
            # travel in URLs (id_token_hint) and must not open the API
            if any(k in claims for k in _NOT_ACCESS_TOKEN_CLAIMS) or (
                    isinstance(claims.get("typ"), str) and claims["typ"].lower() in _NOT_ACCESS_TOKEN_TYP):
                raise _invalid("An ID token is not an access token.")
            if not isinstance(claims.get("sub"), str) or not claims["sub"]:
                raise _invalid("The token has no subject.")
            _check_client(prov, claims)
            prov._check_time_claims(claims, essential=("exp",))
            prov.check_claims(claims)
        except AuthenticationFailed as exc:
            exc.extra.setdefault("provider", prov.name)
            raise
        identity = prov.build_identity(claims, {"scope": _scopes(claims)}, via="bearer")
        return identity, float(claims["exp"]) + prov.settings.clock_skew

    # -- RFC 7662 ----------------------------------------------------------------------
    def _introspectors(self) -> list[tuple[OIDCProvider, str]]:
        out = []
        for prov in self._oidc_providers():
            if not prov.settings.introspection or not prov.settings.client_secret:
                continue
            try:
                endpoint = prov.metadata().get("introspection_endpoint")
            except IdPUnavailable:
                continue
            if isinstance(endpoint, str) and endpoint.startswith(("https://", "http://")):
                out.append((prov, endpoint))
        return out

    def _introspect(self, token: str, now: float) -> tuple[Identity, float]:
        candidates = self._introspectors()
        if not candidates:
            raise _invalid("The access token is not a JWT and no provider offers token introspection.")
        for prov, endpoint in candidates:
            data = self._ask(prov, endpoint, token)
            if data.get("active") is not True:
                continue
            try:
                return self._from_introspection(prov, data, now)
            except AuthenticationFailed as exc:
                exc.extra.setdefault("provider", prov.name)
                raise
        raise _invalid("The access token is not active.")

    def _ask(self, prov: OIDCProvider, endpoint: str, token: str) -> dict[str, Any]:
        s = prov.settings
        self.introspections += 1
        try:
            # RFC 6749 2.3.1: client id and secret are form-encoded before Basic
            resp = prov.http.post(endpoint, data={"token": token, "token_type_hint": "access_token"},
                                  auth=(quote(s.client_id, safe=""), quote(s.client_secret or "", safe="")),
                                  headers={"Accept": "application/json"}, timeout=s.timeout, stream=True)
            if resp.status_code != 200:
                resp.close()
                raise IdPUnavailable(f"The identity provider answered {resp.status_code} to token introspection.",
                                     provider=prov.name)
            raw = read_capped(resp, s.timeout)
        except ResponseTooLarge as exc:
            raise IdPUnavailable("The introspection answer is too large or too slow.", provider=prov.name) from exc
        except requests.RequestException as exc:
            raise IdPUnavailable("Could not reach the identity provider's introspection endpoint.",
                                 provider=prov.name) from exc
        try:
            data = loads_strict(raw)
        except (ValueError, RecursionError) as exc:
            raise IdPUnavailable("The introspection answer is not JSON.", provider=prov.name) from exc
        if not isinstance(data, dict):
            raise IdPUnavailable("The introspection answer is not a JSON object.", provider=prov.name)
        return data

    def _from_introspection(self, prov: OIDCProvider, data: dict[str, Any], now: float) -> tuple[Identity, float]:
        if "iss" in data and data["iss"] not in self._issuers(prov):
            raise _invalid("The token was issued by someone else.")
        if "aud" in data and not any(a in prov.settings.audience for a in _auds(data)):
            raise _invalid("The token is meant for another application (aud).")
        _check_client(prov, data)
        token_type = data.get("token_type")
        if isinstance(token_type, str) and token_type.lower() not in ("bearer", "access_token", "dpop"):
            raise _invalid("The token is not an access token.")
        exp = data.get("exp")
        if exp is not None:
            exp = finite_number(exp)
            if exp is None:
                raise _invalid("The token's 'exp' is not valid.")
            if exp <= now:
                raise AuthenticationFailed("The token has expired.", reason=reasons.TOKEN_EXPIRED)
        if not isinstance(data.get("sub"), str) or not data["sub"]:
            raise _invalid("The token has no subject.")
        identity = prov.build_identity(data, {"scope": _scopes(data)}, via="bearer")
        limit = now + INTROSPECTION_CACHE_SECONDS
        return identity, min(float(exp), limit) if exp is not None else limit


def init_state(app: Flask, state: CCSSOState) -> None:
    """Called by ``init_app``: accept bearer tokens from the OIDC providers.
    ``CCSSO_BEARER_CACHE_SIZE`` (default 2048) bounds the token cache."""
    size = int(app.config.setdefault("CCSSO_BEARER_CACHE_SIZE", DEFAULT_CACHE_SIZE))
    state.bearer_authenticator = BearerAuthenticator(state, cache_size=size)


__all__ = ["BearerAuthenticator", "TokenCache", "init_state"]
