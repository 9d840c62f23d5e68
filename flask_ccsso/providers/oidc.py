"""OpenID Connect through Authlib (OAuth 2.0 client) and joserfc (JOSE).

Closes what the libraries leave open (see docs/security.md):

* PKCE S256, ``state`` and ``nonce`` on every sign-in, not only when asked.
* ID token algorithms from a *local* allow-list (never ``none``, never HMAC
  against a public key), not from the IdP's metadata.
* ``iss``, ``aud``, ``azp``, ``exp``, ``iat``, ``nonce`` always checked, with
  the configured clock-skew leeway applied to every time claim.
* RFC 9207: an ``iss`` parameter on the authorization response must be the
  issuer (and may be required per provider).
* ``auth_time`` (and ``acr``) verified when step-up asked for ``max_age``
  (and ``acr_values``): a round trip that did not re-authenticate is refused.
* Discovery and JWKS cached with a TTL; an unknown ``kid`` refetches at most
  once per cooldown.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec
import requests
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jws, jwt
from joserfc.errors import (
    BadSignatureError,
    ClaimError,
    DecodeError,
    ExpiredTokenError,
    JoseError,
    MissingKeyError,
    UnsupportedAlgorithmError,
)
from joserfc.jws import CompactSignature, JWSRegistry

from .. import reasons
from ..config import OIDCSettings, OktaSettings, is_loopback_host
from ..exceptions import AuthenticationFailed, CCSSOError, IdPUnavailable
from ..identity import Identity, finite_time
from .base import CallbackRequest, LoginRequest, LoginResult, Provider, check_reauthenticated, pending_step_up
from .client_auth import AssertionKeySource, ClientAuthenticator
from .keys import JWKSCache, ResponseTooLarge, TTLDocument, fetch_json, loads_strict, read_capped, unreachable

# joserfc's registry knows which algorithms exist; the allow-list narrows it
_KTY_FOR_ALG = {"RS": "RSA", "PS": "RSA", "ES": "EC"}
#: longer lifetimes from the token endpoint are not believed (one year)
_MAX_EXPIRES_IN = 365 * 86400
#: at most this many keys are tried for one token (no kid, many keys)
_MAX_CANDIDATE_KEYS = 8
_REGISTRY_CACHE: dict[tuple[str, ...], JWSRegistry] = {}


def _registry(algorithms: tuple[str, ...]) -> JWSRegistry:
    reg = _REGISTRY_CACHE.get(algorithms)
    if reg is None:
        reg = _REGISTRY_CACHE[algorithms] = JWSRegistry(algorithms=list(algorithms))
    return reg


def _registry_claims(registry: jwt.JWTClaimsRegistry) -> tuple[str, ...]:
    """The claim names ``registry.validate`` acts on: those with a
    ``validate_<name>`` method, and those it has options for."""
    methods = {a[len("validate_"):] for a in dir(registry) if a.startswith("validate_") and a != "validate_"}
    return tuple(sorted(methods | set(registry.options)))


def _safe_code(value: str) -> str:
    """An IdP-supplied code, trimmed to what is safe to show and log."""
    return "".join(c for c in value[:64] if c.isalnum() or c in "_-.:") or "?"


def peek_jwt(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A compact JWS's header and payload, *unverified* (joserfc's own
    extraction, then JSON): only to pick the provider and the key, and
    to refuse early what is not the kind of token asked for; everything is
    verified afterwards. The one unverified peek in the package. Anything
    attacker input can make the decoding raise -- bad base64, not UTF-8, not
    JSON, nesting deep enough for ``RecursionError``, no ``alg`` -- is
    "malformed" (a 401 / 400), never a traceback."""
    _obj, header, claims = _extract(token)
    return header, claims


def _extract(token: str) -> tuple[CompactSignature, dict[str, Any], dict[str, Any]]:
    """:func:`peek_jwt`, keeping joserfc's extracted object: :meth:`OIDCProvider.decode_jwt`
    verifies the signature over *that* object, so the token is split, decoded and
    parsed once, and the claims it returns are the very ones the signature covers."""
    try:
        obj = jws.extract_compact(token.encode("ascii"))
        header = dict(obj.headers())
        claims = _decode_json(obj.payload)
    # msgspec.DecodeError is a ValueError only from msgspec 0.19 on: named too
    except (JoseError, ValueError, msgspec.DecodeError, UnicodeError, RecursionError, TypeError, AttributeError):
        raise AuthenticationFailed("The token is malformed.", reason=reasons.INVALID_TOKEN) from None
    if not isinstance(claims, dict) or _too_deep(header, claims, obj.payload):
        raise AuthenticationFailed("The token is malformed.", reason=reasons.INVALID_TOKEN)
    return obj, header, claims


#: RFC 8259 JSON, parsed in C: stricter than the ``json`` module (no ``NaN`` / ``Infinity``, no lone
#: surrogates; both refused as malformed) and about four times faster on a token's claims.
_decode_json = msgspec.json.Decoder().decode


def _too_deep(header: dict[str, Any], claims: dict[str, Any], payload: bytes | None) -> bool:
    """:func:`_nested_deeper_than` on header and claims. Each level of nesting
    opens a ``{`` or ``[`` in the JSON text, so claims whose text has no more
    of them than the limit cannot nest deeper (one inside a string only makes
    the count larger) and need no walk -- which is every real token."""
    if payload is not None and payload.count(b"{") + payload.count(b"[") <= MAX_JSON_DEPTH:
        return _nested_deeper_than(MAX_JSON_DEPTH, header)
    return _nested_deeper_than(MAX_JSON_DEPTH, header, claims)


#: JSON nesting a token's header or claims may have; deeper is malformed. Explicit,
#: because where ``json`` gives up with ``RecursionError`` depends on the Python
#: (about 1,000 levels on 3.10 and 3.11, several thousand on 3.13).
MAX_JSON_DEPTH = 32


def _nested_deeper_than(limit: int, *values: Any) -> bool:
    """Whether any of ``values`` nests lists/objects more than ``limit`` deep
    (iteratively: the check itself must not recurse)."""
    stack = [(value, 1) for value in values if isinstance(value, (dict, list))]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value
        if children and depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _unverified_sub(token: Any) -> str | None:
    """``sub`` of an ID token we verified earlier (kept server-side)."""
    if not isinstance(token, str) or token.count(".") != 2:
        return None
    try:
        sub = peek_jwt(token)[1].get("sub")
    except AuthenticationFailed:
        return None
    return sub if isinstance(sub, str) else None


def audiences(claims: Mapping[str, Any]) -> list[str]:
    """``aud`` as a list of strings (a string or a list; anything else: none)."""
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list):
        return [a for a in aud if isinstance(a, str)]
    return []


#: the claims an IdP names the client that obtained a token in: RFC 9068, OIDC, Okta, Entra ID v1
CLIENT_CLAIMS = ("client_id", "azp", "cid", "appid")


def token_client(claims: Mapping[str, Any]) -> str | None:
    """The OAuth client that obtained an access token (or an introspection
    answer's): ``client_id`` (RFC 9068), ``azp``, Okta's ``cid``, Entra's
    ``appid``. ``None`` when none is a string -- or when two of them name
    different clients: an IdP that lets a claim mapper add ``client_id`` must
    not let a token pass as the provisioning client's while its ``azp`` names another."""
    named = {claims.get(k) for k in CLIENT_CLAIMS if claims.get(k) is not None}
    if len(named) != 1:
        return None
    cid = named.pop()
    return cid if isinstance(cid, str) and cid else None


def token_scopes(claims: Mapping[str, Any]) -> list[str]:
    """``scp`` / ``scope`` (space-separated or a list) of an access token or
    introspection answer, sorted and without repeats."""
    out: list[str] = []
    for key in ("scp", "scope"):
        v = claims.get(key)
        if isinstance(v, str):
            out.extend(v.split())
        elif isinstance(v, list):
            out.extend(s for s in v if isinstance(s, str))
    return sorted(set(out))


#: RFC 9068 2.1: the ``typ`` header of an access token, when present
_ACCESS_TOKEN_TYP = {"jwt", "at+jwt"}
#: claims only ID tokens / logout tokens / security event tokens carry
_NOT_ACCESS_TOKEN_CLAIMS = ("nonce", "at_hash", "c_hash", "s_hash", "events")
#: Keycloak's ``typ`` *claim* of ID, refresh and logout tokens
NOT_ACCESS_TOKEN_TYP = {"id", "refresh", "offline", "logout"}
#: introspection ``token_type`` values that mean "an access token usable as Bearer"
_ACCESS_TOKEN_TYPES = {"bearer", "access_token", "urn:ietf:params:oauth:token-type:access_token"}
#: ``token_use`` (Cognito, Ory Hydra) of an access token
_ACCESS_TOKEN_USE = {"access", "access_token"}
SENDER_CONSTRAINED = ("The access token is bound to a key (DPoP or mutual TLS, 'cnf') and is not accepted "
                      "with the Bearer scheme: this API cannot verify the proof of possession.")

#: OIDC Back-Channel Logout 1.0: the event a logout token carries
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
#: logout tokens issued longer ago than this (seconds) are refused; the jti
#: replay cache keeps ids at least this long
LOGOUT_TOKEN_MAX_AGE = 600.0
_LOGOUT_TYPES = {"logout+jwt", "application/logout+jwt", "jwt"}


def _invalid(description: str) -> AuthenticationFailed:
    return AuthenticationFailed(description, reason=reasons.INVALID_TOKEN)


def check_access_token_type(header: Mapping[str, Any]) -> None:
    """RFC 9068 2.1: ``typ``, when present, is ``JWT`` or ``at+jwt``: an ID
    token for another purpose, a logout token, ... is refused (before the
    issuer is even looked at)."""
    typ = header.get("typ")
    if typ is not None and str(typ).lower().removeprefix("application/") not in _ACCESS_TOKEN_TYP:
        raise _invalid("The token is not an access token (typ).")


def check_introspected_token_kind(data: Mapping[str, Any]) -> bool:
    """Refuse an introspection answer that shows, by *any* field, that the
    token is not a plain access token: a refresh token (``token_type``
    ``refresh_token`` (Okta, the dev IdP), Keycloak's ``typ`` ``Refresh`` /
    ``Offline``, Cognito's / Hydra's ``token_use``), an ID token, or a
    sender-constrained token (``token_type`` ``DPoP``, a ``cnf`` member).
    ``token_type_hint`` is advisory (RFC 7662 2.1): the IdP may well answer
    for a refresh token. Returns whether ``token_type`` affirmatively said
    "access token"."""
    if "cnf" in data:
        raise _invalid(SENDER_CONSTRAINED)
    for key in ("token_type", "token_use", "typ"):
        value = data.get(key)
        if key in data and not isinstance(value, str):
            raise _invalid(f"The token's '{key}' is malformed.")
        if isinstance(value, str) and "refresh" in value.lower():
            raise _invalid("A refresh token is not an access token.")
    token_type = data.get("token_type")
    if isinstance(token_type, str) and token_type.lower() == "dpop":
        raise _invalid(SENDER_CONSTRAINED)
    if isinstance(token_type, str) and token_type.lower() not in _ACCESS_TOKEN_TYPES:
        raise _invalid("The token is not an access token (token_type).")
    use = data.get("token_use")
    if isinstance(use, str) and use.lower() not in _ACCESS_TOKEN_USE:
        raise _invalid("The token is not an access token (token_use).")
    typ = data.get("typ")
    if isinstance(typ, str) and typ.lower() in NOT_ACCESS_TOKEN_TYP:
        raise _invalid("The token is not an access token (typ).")
    return isinstance(token_type, str)


class InvalidLogoutToken(AuthenticationFailed):
    """A back-channel logout token failed a check of OIDC Back-Channel Logout 2.6."""

    def __init__(self, description: str) -> None:
        super().__init__(description, reason=reasons.INVALID_TOKEN)


def _half_hash(value: str, alg: str) -> str:
    """OIDC Core 3.1.3.6 ``at_hash``: left half of the hash matching ``alg``."""
    bits = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}
    fn = bits.get(alg[-3:], hashlib.sha256)
    if alg == "EdDSA":
        fn = hashlib.sha512
    digest = fn(value.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode("ascii")


class OIDCProvider(Provider):
    """Any discovery-capable OpenID Provider."""

    type: ClassVar[str] = "oidc"
    protocol: ClassVar[str] = "oidc"
    settings_class = OIDCSettings
    settings: OIDCSettings
    #: the private_key_jwt algorithm for an RSA key when ``clientAssertionAlgorithm`` is unset
    default_assertion_rsa_algorithm: ClassVar[str] = "RS256"
    #: private_key_jwt needs the key's certificate (the IdP finds the key by its thumbprint)
    assertion_needs_certificate: ClassVar[bool] = False

    def __init__(self, settings: OIDCSettings, **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        s = settings
        self.discovery = TTLDocument(self._load_discovery, s.discovery_ttl, self.clock, status=self.status,
                                     what="discovery document")
        self.jwks = JWKSCache(self._load_jwks, s.jwks_ttl, s.jwks_refresh_cooldown, self.clock, status=self.status)
        #: one claims registry per set of essential claims, built once (its clock is read per call)
        self._claims_registries: dict[tuple[str, ...], tuple[jwt.JWTClaimsRegistry, tuple[str, ...]]] = {}
        self.client_auth = self._client_authenticator()

    def _client_authenticator(self) -> ClientAuthenticator:
        """``tokenEndpointAuthMethod`` with its credentials; a private_key_jwt key
        is read here (inside the app context: relative paths are from the app
        root), so a missing or unusable key fails at start-up naming its key."""
        s = self.settings
        method = s.auth_method
        keys = None
        if method == "private_key_jwt" and s.client_assertion_key:
            from flask import current_app, has_app_context

            keys = AssertionKeySource(
                key=s.client_assertion_key, certificate=s.client_assertion_certificate,
                key_id=s.client_assertion_key_id, algorithm=s.client_assertion_algorithm, path=s.path,
                clock=self.clock, root=current_app.root_path if has_app_context() else None,
                rsa_default=self.default_assertion_rsa_algorithm, need_certificate=self.assertion_needs_certificate)
        return ClientAuthenticator(method=method, client_id=s.client_id, client_secret=s.client_secret, keys=keys,
                                   clock=self.clock)

    def authenticated_post(self, uri: str, form: Mapping[str, str], *, what: str) -> requests.Response:
        """POST ``form`` to one of the IdP's endpoints (token, introspection ...)
        as this client (``tokenEndpointAuthMethod``), through the provider's HTTP
        session, streaming: the caller reads the answer with ``read_capped``."""
        token_endpoint = self.metadata()["token_endpoint"]
        headers, body = self.client_auth.prepare(uri, form, token_endpoint=token_endpoint)
        try:
            return self.http.post(uri, data=body, headers=headers, timeout=self.settings.timeout, stream=True)
        except requests.RequestException as exc:
            raise unreachable(exc, uri, what, timeout=self.settings.timeout, provider=self.name) from exc

    # -- metadata ---------------------------------------------------------------
    def expected_issuer(self) -> str:
        return self.settings.issuer

    def _load_discovery(self) -> dict[str, Any]:
        doc = fetch_json(self.http, self.settings.discovery_url, self.settings.timeout, "discovery document")
        # OIDC Discovery 4.3: the issuer in the document MUST be identical to
        # the issuer the document was requested for.
        if doc.get("issuer") != self.expected_issuer():
            raise IdPUnavailable("The identity provider's discovery document names another issuer "
                                 "(check 'issuer' / 'tenantId' in the config).", reason=reasons.ISSUER_MISMATCH)
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(doc.get(key), str):
                raise IdPUnavailable(f"The identity provider's discovery document has no {key}.")
        # the code, client secret, tokens and the keys that vouch for them
        # never travel in clear text, whatever the document says
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri", "end_session_endpoint",
                    "introspection_endpoint", "userinfo_endpoint"):
            value = doc.get(key)
            if value is None and key not in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                continue
            parts = urlsplit(value) if isinstance(value, str) else None
            if (parts is None or parts.scheme not in ("https", "http") or not parts.hostname
                    or (parts.scheme == "http" and not is_loopback_host(parts.hostname))):
                raise IdPUnavailable(f"The identity provider's discovery document gives an unusable {key} "
                                     "(https is required).")
        return doc

    def _load_jwks(self) -> dict[str, Any]:
        return fetch_json(self.http, self.metadata()["jwks_uri"], self.settings.timeout, "signing keys (JWKS)")

    def metadata(self) -> dict[str, Any]:
        return self.discovery.get()

    def ensure_published(self) -> None:
        """The discovery document *and* the signing keys: a sign-in needs
        both, and an IdP whose JWKS cannot be fetched is down even while the
        discovery document is cached. From the caches when they hold a fresh
        copy (no network I/O); callers that wait for a fetch share its failure."""
        self.metadata()
        self.jwks.keyset()

    def probe(self) -> str:
        """A fresh fetch of the discovery document (not the cached copy)."""
        self._load_discovery()
        return "discovery document"

    # -- sign-in ------------------------------------------------------------------
    def authorize_params(self, req: LoginRequest) -> dict[str, str]:
        """Extra authorization-request parameters (presets add theirs)."""
        params = dict(self.settings.extra_authorize_params)
        if req.force_authn:
            params["prompt"] = "login"
        if req.max_age is not None:
            params["max_age"] = str(int(req.max_age))
        if req.acr_values:
            params["acr_values"] = " ".join(req.acr_values)
        return params

    def begin_login(self, req: LoginRequest) -> str:
        meta = self.metadata()
        state = secrets.token_urlsafe(32)
        nonce = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)  # 86 chars: within RFC 7636's 43..128
        params = {
            "response_type": "code",
            "client_id": self.settings.client_id,
            "redirect_uri": req.redirect_uri,
            "scope": " ".join(self.settings.scopes),
            "state": state,
            "nonce": nonce,
            "code_challenge": create_s256_code_challenge(verifier),
            "code_challenge_method": "S256",
        }
        params.update(self.authorize_params(req))
        self._save_pending(state, {
            "nonce": nonce, "verifier": verifier, "next": req.next_url, "bind": req.browser_binding,
            "redirect_uri": req.redirect_uri, "max_age": req.max_age, "acr_values": list(req.acr_values),
            "force": req.force_authn, "step_up_skill": req.step_up_skill, "prev_auth_time": req.previous_auth_time,
            "fallback_for": req.fallback_for,
        }, self.settings.login_state_ttl)
        endpoint = meta["authorization_endpoint"]
        parts = urlsplit(endpoint)
        query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
        return str(urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), "")))

    def pending_key(self, req: CallbackRequest) -> str | None:
        state = req.args.get("state")
        return state if isinstance(state, str) else None

    def finish_login(self, req: CallbackRequest) -> LoginResult:
        args = req.args
        # RFC 9207: when the response names an issuer it must be ours; this is
        # checked before anything else, and before the IdP's error is trusted.
        meta = self.metadata()
        iss = args.get("iss")
        if iss is not None and iss != self.expected_issuer():
            raise AuthenticationFailed("The sign-in response came from an unexpected issuer.",
                                       reason=reasons.ISSUER_MISMATCH)
        if iss is None and (self.settings.require_iss_parameter
                            or meta.get("authorization_response_iss_parameter_supported") is True):
            raise AuthenticationFailed("The sign-in response did not name its issuer.", reason=reasons.ISSUER_MISMATCH)
        pending = self._take_pending(args.get("state"), self.settings.login_state_ttl, req.browser_binding)
        if "error" in args:
            idp_code = _safe_code(str(args.get("error")))
            raise AuthenticationFailed(f"The identity provider refused the sign-in ({idp_code}).",
                                       reason=reasons.IDP_ERROR, idp_error=idp_code)
        code = args.get("code")
        if not code:
            raise AuthenticationFailed("The sign-in response carried no authorization code.", reason=reasons.BAD_REQUEST)
        tokens = self._exchange_code(code, pending)
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise AuthenticationFailed("The identity provider returned no ID token.", reason=reasons.INVALID_TOKEN)
        claims = self.validate_id_token(id_token, nonce=pending["nonce"], access_token=tokens.get("access_token"),
                                        max_age=pending.get("max_age"), acr_values=tuple(pending.get("acr_values") or ()),
                                        force=bool(pending.get("force")), started_at=float(pending["created"]),
                                        previous_auth_time=finite_time(pending.get("prev_auth_time")))
        identity = self.build_identity(claims, tokens)
        return LoginResult(
            identity=identity, next_url=pending.get("next") or "/", tokens=self._keep_tokens(tokens),
            logout_state={"id_token": id_token, "sid": claims.get("sid")},
            step_up_skill=pending.get("step_up_skill"),
            step_up=pending_step_up(pending), fallback_for=pending.get("fallback_for"),
        )

    def _token_request(self, **form: str) -> dict[str, Any]:
        """POST to the token endpoint (RFC 6749 4.1.3 / 6) through the provider's
        HTTP session (proxies, CA bundle, adapters), reading at most
        :data:`~.keys.MAX_IDP_RESPONSE_BYTES` within the timeout. The answer
        must be a JSON object with a string ``access_token`` of ``token_type``
        Bearer (RFC 6749 7.1: a client must not use a token type it does not
        understand -- a DPoP-bound or MAC token sent as Bearer would fail, or
        worse, work somewhere it should not)."""
        meta = self.metadata()
        s = self.settings
        # the client authenticates by tokenEndpointAuthMethod (client_auth)
        resp = self.authenticated_post(meta["token_endpoint"], form, what="token endpoint")
        try:
            raw = read_capped(resp, s.timeout)
        except (ResponseTooLarge, requests.RequestException) as exc:
            raise unreachable(exc, meta["token_endpoint"], "token endpoint", timeout=s.timeout) from exc
        try:
            body = loads_strict(raw)
        except (ValueError, RecursionError):
            body = None
        if not isinstance(body, dict):
            if resp.status_code >= 500:
                raise IdPUnavailable(f"The identity provider's token endpoint answered {resp.status_code}.")
            raise AuthenticationFailed("The identity provider's token response is not a JSON object.",
                                       reason=reasons.TOKEN_EXCHANGE_FAILED)
        if resp.status_code != 200 or "error" in body:
            if resp.status_code >= 500 and "error" not in body:
                raise IdPUnavailable(f"The identity provider's token endpoint answered {resp.status_code}.")
            err = body.get("error")
            code = _safe_code(err) if isinstance(err, str) else f"HTTP {resp.status_code}"
            raise AuthenticationFailed(f"The identity provider refused the token request ({code}).",
                                       reason=reasons.TOKEN_EXCHANGE_FAILED, idp_error=code)
        if not isinstance(body.get("access_token"), str) or not body["access_token"]:
            raise AuthenticationFailed("The token response has no access token.", reason=reasons.TOKEN_EXCHANGE_FAILED)
        token_type = body.get("token_type", "Bearer")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise AuthenticationFailed(f"The identity provider issued a token of type {_safe_code(str(token_type))!r}, "
                                       "not Bearer.", reason=reasons.TOKEN_EXCHANGE_FAILED)
        for key in ("id_token", "refresh_token", "scope"):
            if key in body and body[key] is not None and not isinstance(body[key], (str, list) if key == "scope" else str):
                raise AuthenticationFailed(f"The token response's {key} is malformed.",
                                           reason=reasons.TOKEN_EXCHANGE_FAILED)
        return body

    def _exchange_code(self, code: str, pending: Mapping[str, Any]) -> dict[str, Any]:
        return self._token_request(code=code, redirect_uri=pending["redirect_uri"], code_verifier=pending["verifier"],
                                   grant_type="authorization_code")

    def _keep_tokens(self, tokens: Mapping[str, Any]) -> dict[str, Any]:
        # expires_in against our own clock: Authlib's expires_at is computed
        # from the wall clock, which the injected clock may not be
        now = self.clock()
        expires_in = tokens.get("expires_in")
        if isinstance(expires_in, str) and expires_in.strip().isdigit():
            expires_in = int(expires_in)  # Entra ID v1 and others send a string
        seconds = finite_time(expires_in)
        expires_at: float | None
        if seconds is not None and 0 <= seconds <= _MAX_EXPIRES_IN:
            expires_at = now + seconds
        else:
            expires_at = None
        return {
            "access_token": tokens.get("access_token"),
            "refresh_token": tokens.get("refresh_token"),
            "id_token": tokens.get("id_token"),
            "expires_at": expires_at,
            "scope": tokens.get("scope"),
            "token_type": tokens.get("token_type", "Bearer"),
        }

    # -- token validation -----------------------------------------------------------
    def decode_jwt(self, token: str, *, algorithms: tuple[str, ...] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Verify a JWT's signature against the IdP's JWKS; return (header, claims)."""
        algs = algorithms or self.settings.allowed_algorithms
        if not isinstance(token, str) or token.count(".") != 2 or len(token) > 16384:
            raise AuthenticationFailed("The token is malformed.", reason=reasons.INVALID_TOKEN)
        obj, header, claims = _extract(token)
        alg = header.get("alg")
        if alg not in algs:
            raise AuthenticationFailed(f"Token algorithm {str(alg)[:16]!r} is not allowed.", reason=reasons.INVALID_TOKEN)
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthenticationFailed("The token is malformed.", reason=reasons.INVALID_TOKEN)
        if not self.jwks.has_kid(kid):
            # key rotation: refetch once (cooldown-limited), then give up
            self.jwks.refresh_for_unknown_kid()
            if not self.jwks.has_kid(kid):
                raise AuthenticationFailed("The token was signed with an unknown key.", reason=reasons.INVALID_TOKEN)
        # every key that may have signed it: duplicate kids (rollover), or no
        # kid at all with several keys; keys of another type or pinned to
        # another algorithm are skipped. jku / x5u / x5c / jwk headers are
        # never followed: only the IdP's published keys are tried.
        kty = _KTY_FOR_ALG.get(str(alg)[:2], "OKP" if alg == "EdDSA" else None)
        keys = self.jwks.signing_keys(kid, kty, str(alg))[:_MAX_CANDIDATE_KEYS]
        if not keys:
            raise AuthenticationFailed("The token was signed with an unknown key.", reason=reasons.INVALID_TOKEN)
        registry = _registry(tuple(algs))
        last: Exception | None = None
        for key in keys:
            # what jwt.decode does after splitting the token (jws.deserialize_compact):
            # the registry's header checks and algorithm allow-list, the key/alg check, the signature
            try:
                if jws.validate_compact(obj, key, algorithms=algs, registry=registry):
                    break
                last = BadSignatureError()
            except (BadSignatureError, MissingKeyError, UnsupportedAlgorithmError, DecodeError) as exc:
                last = exc
            except (JoseError, ValueError, TypeError) as exc:
                raise AuthenticationFailed("The token could not be verified.", reason=reasons.INVALID_TOKEN) from exc
        else:
            raise AuthenticationFailed("The token signature is not valid.", reason=reasons.INVALID_TOKEN) from last
        return header, claims

    def _check_time_claims(self, claims: Mapping[str, Any], *, essential: tuple[str, ...]) -> None:
        built = self._claims_registries.get(essential)
        if built is None:
            options: dict[str, Any] = {k: {"essential": True} for k in essential}
            registry = jwt.JWTClaimsRegistry(now=lambda: int(self.clock()), leeway=int(self.settings.clock_skew),
                                             **options)
            built = self._claims_registries[essential] = (registry, _registry_claims(registry))
        registry, names = built
        # the registry looks at a claim only when it has a validate_<claim> method or an
        # option for it: it is handed those claims alone (the same checks, without a
        # method lookup for every other claim the IdP sends)
        try:
            registry.validate({k: claims[k] for k in names if k in claims})
        except ExpiredTokenError as exc:
            raise AuthenticationFailed("The token has expired.", reason=reasons.TOKEN_EXPIRED) from exc
        except ClaimError as exc:
            raise AuthenticationFailed(f"The token's '{exc.claim}' claim is not valid.",
                                       reason=reasons.INVALID_TOKEN) from exc

    def validate_id_token(self, id_token: str, *, nonce: str | None, access_token: str | None = None,
                          max_age: int | None = None, acr_values: tuple[str, ...] = (), force: bool = False,
                          started_at: float | None = None,
                          previous_auth_time: float | None = None) -> dict[str, Any]:
        """OIDC Core 3.1.3.7, every step, with our own allow-list and leeway."""
        header, claims = self.decode_jwt(id_token)
        if claims.get("iss") != self.expected_issuer():
            raise AuthenticationFailed("The ID token was issued by someone else.", reason=reasons.ISSUER_MISMATCH)
        auds = audiences(claims)
        if self.settings.client_id not in auds:
            raise AuthenticationFailed("The ID token is meant for another application.", reason=reasons.INVALID_AUDIENCE)
        azp = claims.get("azp")
        if (len(auds) > 1 and azp is None) or (azp is not None and azp != self.settings.client_id):
            raise AuthenticationFailed("The ID token's authorized party is another application.",
                                       reason=reasons.INVALID_AUDIENCE)
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise AuthenticationFailed("The ID token has no subject.", reason=reasons.INVALID_TOKEN)
        self._check_time_claims(claims, essential=("exp", "iat"))
        if nonce is not None and (not isinstance(claims.get("nonce"), str)
                                  or not secrets.compare_digest(claims["nonce"], nonce)):
            raise AuthenticationFailed("The ID token does not belong to this sign-in.", reason=reasons.INVALID_NONCE)
        if access_token and isinstance(claims.get("at_hash"), str) and not secrets.compare_digest(
                claims["at_hash"], _half_hash(access_token, header["alg"])):
            raise AuthenticationFailed("The ID token does not match the access token.", reason=reasons.INVALID_TOKEN)
        self.check_freshness(claims, max_age=max_age, acr_values=acr_values, force=force, started_at=started_at,
                             previous_auth_time=previous_auth_time)
        self.check_claims(claims)
        return claims

    # -- access tokens (RFC 9068) and logout tokens -----------------------------------------
    def accepted_access_token_issuers(self) -> tuple[str, ...]:
        """The ``iss`` values this provider's access tokens carry."""
        return (self.expected_issuer(),)

    def check_client(self, claims: Mapping[str, Any]) -> None:
        """``allowedClients``: only tokens obtained by these OAuth clients
        (``client_id`` per RFC 9068, ``azp``, Okta's ``cid``, Entra's ``appid``)
        may call the API. Off by default: RFC 9068 lets any client of the
        audience call it."""
        allowed = self.settings.allowed_clients
        if not allowed:
            return
        cid = token_client(claims)
        if cid is None or cid not in allowed:
            raise _invalid("The token was obtained by a client that may not call this API.")

    def validate_access_token(self, token: str) -> tuple[dict[str, Any], Identity]:
        """A JWT access token (RFC 9068, Okta / Entra ID formats) whose issuer
        picked this provider: the signature (:meth:`decode_jwt`), ``iss`` one
        of :meth:`accepted_access_token_issuers`, ``aud`` one of ``audience``,
        not an ID / logout token, not sender-constrained (``cnf``: on the
        Bearer scheme nobody proves holding its key, RFC 9449 7.2, RFC 8705 3),
        a ``sub``, ``allowedClients``, ``exp`` required and ``nbf`` / ``iat``
        not in the future (with ``clockSkew``), and the preset's checks.
        Returns the claims and the identity (``via="bearer"``)."""
        try:
            _, claims = self.decode_jwt(token)
            if claims.get("iss") not in self.accepted_access_token_issuers():
                raise _invalid("The token was issued by someone else.")
            if not any(a in self.settings.audience for a in audiences(claims)):
                raise _invalid("The token is meant for another application (aud).")
            # an ID token (nonce, at_hash / c_hash / s_hash, Keycloak's typ
            # claim "ID") or a logout token / security event (events) is not
            # an access token, even when its aud is our client id: ID tokens
            # travel in URLs (id_token_hint) and must not open the API
            typ = claims.get("typ")
            if any(k in claims for k in _NOT_ACCESS_TOKEN_CLAIMS) or (
                    isinstance(typ, str) and typ.lower() in NOT_ACCESS_TOKEN_TYP):
                raise _invalid("An ID token is not an access token.")
            if "cnf" in claims:
                raise _invalid(SENDER_CONSTRAINED)
            if not isinstance(claims.get("sub"), str) or not claims["sub"]:
                raise _invalid("The token has no subject.")
            self.check_client(claims)
            self._check_time_claims(claims, essential=("exp",))
            self.check_claims(claims)
        except AuthenticationFailed as exc:
            exc.extra.setdefault("provider", self.name)
            raise
        return claims, self.build_identity(claims, {"scope": token_scopes(claims)}, via="bearer")

    def validate_introspection(self, data: Mapping[str, Any], *, now: float) -> tuple[Identity, float | None]:
        """An RFC 7662 answer about an opaque token routed to this provider,
        checked by the same rules as a JWT access token (:meth:`validate_access_token`):
        ``active`` must be ``true``, the kind of token
        (:func:`check_introspected_token_kind`), ``iss`` (when given) one of
        :meth:`accepted_access_token_issuers`, ``aud`` one of ``audience``
        (required unless ``introspectionRequireAudience: false`` and ``token_type``
        says access token), ``allowedClients``, ``exp`` (when given) finite and
        ahead, a ``sub``. Returns the identity (``via="bearer"``) and ``exp``
        (``None``: the IdP did not say; the caller bounds how long it trusts
        the answer)."""
        try:
            if data.get("active") is not True:
                raise _invalid("The access token is not active.")
            said_access_token = check_introspected_token_kind(data)
            if "iss" in data and data["iss"] not in self.accepted_access_token_issuers():
                raise _invalid("The token was issued by someone else.")
            auds = audiences(data)
            if "aud" in data and not auds:
                raise _invalid("The token's 'aud' is malformed.")
            if auds:
                if not any(a in self.settings.audience for a in auds):
                    raise _invalid("The token is meant for another application (aud).")
            elif getattr(self.settings, "introspection_require_audience", True) or not said_access_token:
                # a refresh token (oidc-provider answers one with neither aud nor
                # token_type) or another client's access token for no API at all
                raise _invalid("The token names no audience (aud), so it is not meant for this API.")
            self.check_client(data)
            exp = None
            if data.get("exp") is not None:
                exp = finite_time(data["exp"])
                if exp is None:
                    raise _invalid("The token's 'exp' is not valid.")
                if exp <= now:
                    raise AuthenticationFailed("The token has expired.", reason=reasons.TOKEN_EXPIRED)
            if not isinstance(data.get("sub"), str) or not data["sub"]:
                raise _invalid("The token has no subject.")
        except AuthenticationFailed as exc:
            exc.extra.setdefault("provider", self.name)
            raise
        return self.build_identity(data, {"scope": token_scopes(data)}, via="bearer"), exp

    def validate_logout_token(self, token: str) -> dict[str, Any]:
        """OIDC Back-Channel Logout 1.0 section 2.6, steps 1-6, in its order:
        the signature as an ID token's (an explicit ``typ`` must be
        ``logout+jwt`` or ``JWT``, so an access token cannot be replayed
        here); ``iss``, ``aud``, ``iat`` (present, not in the future, not
        older than :data:`LOGOUT_TOKEN_MAX_AGE`), ``exp`` (optional) with
        ``clockSkew``; ``sub`` and/or ``sid``; the back-channel ``events``
        member; no ``nonce``; and a ``jti`` not seen before (an atomic ``add``
        in the shared store, so the check holds across workers). Returns the
        claims; raises :class:`InvalidLogoutToken`."""
        try:
            header, claims = self.decode_jwt(token)
        except AuthenticationFailed as exc:
            raise InvalidLogoutToken(exc.description or "The logout token is not valid.") from None
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.lower() not in _LOGOUT_TYPES):
            raise InvalidLogoutToken("The token is not a logout token (typ).")
        if claims.get("iss") != self.expected_issuer():
            raise InvalidLogoutToken("The logout token was issued by someone else.")
        if self.settings.client_id not in audiences(claims):
            raise InvalidLogoutToken("The logout token is meant for another application.")
        now = self.clock()
        skew = float(self.settings.clock_skew)
        iat = claims.get("iat")
        if not isinstance(iat, (int, float)) or isinstance(iat, bool):
            raise InvalidLogoutToken("The logout token has no iat.")
        if iat > now + skew:
            raise InvalidLogoutToken("The logout token was issued in the future.")
        if iat < now - LOGOUT_TOKEN_MAX_AGE - skew:
            raise InvalidLogoutToken("The logout token is too old.")
        exp = claims.get("exp")
        if exp is not None and (not isinstance(exp, (int, float)) or isinstance(exp, bool) or exp <= now - skew):
            raise InvalidLogoutToken("The logout token has expired.")
        sub, sid = claims.get("sub"), claims.get("sid")
        if sub is not None and (not isinstance(sub, str) or not sub):
            raise InvalidLogoutToken("The logout token's sub is not a string.")
        if sid is not None and (not isinstance(sid, str) or not sid):
            raise InvalidLogoutToken("The logout token's sid is not a string.")
        if sub is None and sid is None:
            raise InvalidLogoutToken("The logout token names neither sub nor sid.")
        events = claims.get("events")
        if not isinstance(events, dict) or not isinstance(events.get(BACKCHANNEL_EVENT), dict):
            raise InvalidLogoutToken("The logout token has no back-channel logout event.")
        if "nonce" in claims:
            raise InvalidLogoutToken("A logout token must not contain a nonce.")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > 256:
            raise InvalidLogoutToken("The logout token has no jti.")
        keep = max(LOGOUT_TOKEN_MAX_AGE + 2 * skew, (float(exp) - now + skew) if exp is not None else 0.0)
        if not self.store.add(self._jti_key(jti), "1", keep):
            raise InvalidLogoutToken("The logout token was already used.")
        return claims

    def _jti_key(self, jti: str) -> str:
        return f"bcl-jti:{self.name}:{jti}"

    def forget_logout_token(self, jti: str) -> None:
        """Let a logout token be used again (its sessions could not be ended:
        the IdP's retry must not be refused as a replay)."""
        self.store.delete(self._jti_key(jti))

    def check_freshness(self, claims: Mapping[str, Any], *, max_age: int | None, acr_values: tuple[str, ...],
                        force: bool, started_at: float | None,
                        previous_auth_time: float | None = None) -> None:
        """Step-up: the IdP must really have re-authenticated (Authlib never checks)."""
        if max_age is None and not force and not acr_values:
            return
        now = self.clock()
        leeway = self.settings.clock_skew
        # finite numbers only: a NaN auth_time compares false with everything
        # and would pass every freshness test below
        auth_time = finite_time(claims.get("auth_time"))
        check_reauthenticated(auth_time, now=now, skew=leeway, max_age=max_age, force=force,
                              started_at=started_at, previous_auth_time=previous_auth_time)
        if acr_values and claims.get("acr") not in acr_values:
            raise AuthenticationFailed("The sign-in was not strong enough (acr).", reason=reasons.STEPUP_NOT_SATISFIED)

    def check_claims(self, claims: Mapping[str, Any]) -> None:
        """Preset-specific checks (Azure AD: ``tid``)."""

    # -- identity ------------------------------------------------------------------------
    def _str_list(self, value: Any) -> list[str]:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list):
            return [v for v in value if isinstance(v, str)]
        return []

    def granted_scopes(self, tokens: Mapping[str, Any]) -> frozenset[str]:
        scope = tokens.get("scope")
        if isinstance(scope, str):
            return frozenset(scope.split())
        if isinstance(scope, list):
            return frozenset(s for s in scope if isinstance(s, str))
        # RFC 6749 5.1: scope omitted means "as requested"
        return frozenset(self.settings.scopes)

    def resolve_groups(self, claims: Mapping[str, Any], tokens: Mapping[str, Any]) -> tuple[frozenset[str], bool]:
        """Groups from the ID token; presets override for overage handling."""
        return frozenset(self._str_list(claims.get(self.settings.groups_claim))), True

    def build_identity(self, claims: Mapping[str, Any], tokens: Mapping[str, Any], *, via: str = "session") -> Identity:
        groups, complete = self.resolve_groups(claims, tokens)
        roles = frozenset(self._str_list(claims.get(self.settings.roles_claim))) if self.settings.roles_claim else frozenset()
        auth_time = finite_time(claims.get("auth_time"))
        email = claims.get("email") or claims.get("preferred_username") or claims.get("upn")
        return Identity(
            subject=str(claims["sub"]), provider=self.name,
            email=email if isinstance(email, str) else None,
            name=claims.get("name") if isinstance(claims.get("name"), str) else None,
            groups=groups, scopes=self.granted_scopes(tokens), roles=roles,
            auth_time=auth_time,
            amr=tuple(self._str_list(claims.get("amr"))),
            acr=claims.get("acr") if isinstance(claims.get("acr"), str) else None,
            groups_complete=complete, via=via,
            session_index=claims.get("sid") if isinstance(claims.get("sid"), str) else None,
            tenant=claims.get("tid") if isinstance(claims.get("tid"), str) else None,
            claims={k: claims[k] for k in self.settings.keep_claims if k in claims},
        )

    # -- logout ----------------------------------------------------------------------------
    def logout_url(self, logout_state: Mapping[str, Any], post_logout_redirect_uri: str) -> str | None:
        if not self.settings.idp_logout:
            return None
        try:
            endpoint = self.metadata().get("end_session_endpoint")
        except IdPUnavailable:
            return None
        if not isinstance(endpoint, str):
            return None
        params = {"client_id": self.settings.client_id,
                  "post_logout_redirect_uri": self.settings.post_logout_redirect_uri or post_logout_redirect_uri}
        if logout_state.get("id_token"):
            params["id_token_hint"] = logout_state["id_token"]
        sep = "&" if "?" in endpoint else "?"
        return endpoint + sep + urlencode(params)

    # -- refresh -------------------------------------------------------------------------
    def refresh(self, tokens: Mapping[str, Any]) -> tuple[dict[str, Any], Identity | None]:
        refresh_token = tokens.get("refresh_token")
        if not refresh_token:
            raise CCSSOError("No refresh token.", reason=reasons.REFRESH_FAILED)
        new = self._token_request(grant_type="refresh_token", refresh_token=refresh_token)
        kept = self._keep_tokens(new)
        if not kept.get("refresh_token"):
            kept["refresh_token"] = refresh_token  # the IdP did not rotate it
        identity = None
        if isinstance(new.get("id_token"), str):
            # OIDC Core 12.2: iss/sub/aud as before; no nonce on refresh
            claims = self.validate_id_token(new["id_token"], nonce=None, access_token=new.get("access_token"))
            old_sub = _unverified_sub(tokens.get("id_token"))
            if old_sub is not None and claims.get("sub") != old_sub:
                # OIDC Core 12.2: sub MUST be the same as in the original ID
                # token -- a refresh must never turn the session into someone else
                raise AuthenticationFailed("The refreshed ID token names another person.",
                                           reason=reasons.INVALID_TOKEN)
            identity = self.build_identity(claims, kept)
            kept["id_token"] = new["id_token"]
        else:
            kept["id_token"] = tokens.get("id_token")
        return kept, identity

    def describe(self) -> dict[str, Any]:
        s = self.settings
        return {"name": self.name, "type": self.type, "issuer": s.issuer, "client_id": s.client_id,
                "client_secret": "***" if s.client_secret else None,
                "token_endpoint_auth_method": self.client_auth.method, "scopes": list(s.scopes),
                "redirect_uri": s.redirect_uri, "audience": list(s.audience)}


class OktaProvider(OIDCProvider):
    """Okta: the issuer as given (org or custom authorization server), groups
    in the ``groups`` claim (add a Groups claim to the authorization server)."""

    type: ClassVar[str] = "okta"
    settings_class = OktaSettings
