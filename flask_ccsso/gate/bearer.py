"""API callers: ``Authorization: Bearer <token>`` → :class:`Identity`.

Access tokens from the configured OIDC providers are accepted and checked
against the same skills as browser sessions (``identity.via == "bearer"``).

JWT access tokens (RFC 9068 and the Okta / Entra ID formats):

The JWT checks themselves are the OIDC provider's
(:meth:`~flask_ccsso.providers.oidc.OIDCProvider.validate_access_token`);
this module routes, caches and completes the identity.

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
5. a sender-constrained token (a ``cnf`` claim: DPoP ``jkt``, mTLS
   ``x5t#S256``, ...) is refused: on the Bearer scheme nobody proves holding
   its key (RFC 9449 7.2, RFC 8705 3), and this module verifies no such proof;
6. ``scp`` / ``scope`` (space-separated or a list) → scopes; the provider's
   groups / roles claims → groups / roles; ``auth_time``, ``amr``, ``acr``
   when the token has them (no ``auth_time`` → a sensitive skill answers with
   a step-up challenge).

Verified tokens are cached in-process, keyed by the SHA-256 of the token,
until their ``exp`` (a bounded LRU): repeated calls do not re-verify.

Opaque tokens use RFC 7662 introspection at exactly **one** provider: the one
whose ``introspectionTokenPrefix`` the token starts with, else the one marked
``introspectionDefault`` (or the only introspecting provider). A token is
never posted to every provider with each one's credentials, and one
provider's outage only affects the callers of that provider. An answer counts
only when it is ``active``, names an accepted ``aud`` (unless the provider
opts out with ``introspectionRequireAudience: false`` and the answer's
``token_type`` says access token), shows no sign of being a refresh, ID or
sender-constrained token (``token_type``, ``token_use``, ``typ``, ``cnf``),
and passes ``allowedClients`` (the OIDC provider's
:meth:`~flask_ccsso.providers.oidc.OIDCProvider.validate_introspection`
checks the answer; this module asks, limits and caches). Positive answers are cached for
``min(exp - now, 60 s)``; refusals for ``CCSSO_BEARER_REFUSAL_CACHE_SECONDS``
(keyed by the token's hash, never the token); and each client address may
cause at most ``CCSSO_BEARER_INTROSPECTION_LIMIT`` unsuccessful introspection
calls a minute at each provider (then 429), so a stream of made-up tokens
costs each IdP a bounded number of calls, and one IdP's outage does not use
up the limit of the same address's callers of another.

Groups: when a skill needs groups and the token carries no group claim
(opaque tokens, introspection answers, JWTs without ``groupsClaim``), the
groups come from the provider's userinfo endpoint with that token (as
oauth2-proxy does), cached per token hash until the token expires. When
userinfo has no groups either, the identity's groups are marked incomplete
and a group-gated skill answers 403 ``groups_incomplete``.

Deprovisioned people (SCIM ``active: false`` or ``DELETE``, when ``scim.enabled``):
every bearer request reads its markers in the shared store (:class:`DeprovisionedCheck`),
after the token caches, so a token verified before the deprovisioning is refused
from its response on: a ``401`` with reason ``deprovisioned`` and a ``login_failed``
signal. With SCIM off nothing is read.

A bad token is a ``401`` with ``WWW-Authenticate: Bearer error="invalid_token"``
and a ``login_failed`` signal (reason ``invalid_token``), never a 500; an
unreachable IdP is a ``503``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

import requests
from flask import Flask, g, has_request_context, request
from werkzeug.exceptions import Forbidden, TooManyRequests

from .. import reasons, signals
from .._context import current_flask_app
from .._validate import setting_number
from ..exceptions import AuthenticationFailed, CCSSOError, IdPUnavailable, LoginRequired
from ..identity import Identity, finite_time
from ..providers import fallback
from ..providers.base import Provider
from ..providers.keys import ResponseTooLarge, loads_strict, read_capped, unreachable
from ..providers.oidc import OIDCProvider, check_access_token_type, peek_jwt
from ..stores import SharedStore

#: how many verified tokens each process remembers
DEFAULT_CACHE_SIZE = 2048
#: the longest an introspection answer is trusted without asking again
INTROSPECTION_CACHE_SECONDS = 60.0
#: how long a refused opaque token is refused without asking the IdP again
REFUSAL_CACHE_SECONDS = 30.0
#: unsuccessful introspection calls one client address may cause at one provider per window
INTROSPECTION_LIMIT = 20
INTROSPECTION_LIMIT_WINDOW = 60.0
#: how many client addresses the limiter remembers
LIMITER_SIZE = 4096
#: reason code of a caller over the introspection limit
RATE_LIMITED = "rate_limited"
#: RFC 6750 2.1 b64token
_B64TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")

log = logging.getLogger("flask_ccsso")

T = TypeVar("T")


class TokenCache(Generic[T]):
    """A small thread-safe LRU of ``token hash -> (value, valid_until)``
    (identities, refusals, userinfo groups)."""

    def __init__(self, maxsize: int = DEFAULT_CACHE_SIZE) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[bytes, tuple[T, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: bytes, now: float) -> T | None:
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            if now >= item[1]:
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return item[0]

    def put(self, key: bytes, value: T, valid_until: float) -> None:
        with self._lock:
            self._data[key] = (value, valid_until)
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


class IntrospectionThrottled(CCSSOError, TooManyRequests):
    """This client address caused too many unsuccessful introspection calls. HTTP 429."""

    reason = RATE_LIMITED
    description = "Too many unrecognised access tokens from your address. Try again in a minute."


class AddressLimiter:
    """At most ``limit`` unsuccessful introspection calls per key and
    ``window`` (the bearer authenticator's key: provider and client address,
    IPv6 by /64, which one host usually holds whole); a bounded LRU of keys.
    A call reserves a unit first (so parallel requests cannot overshoot) and
    gives it back when the token turned out valid: callers with good tokens
    never run out."""

    def __init__(self, limit: int, window: float, maxsize: int = LIMITER_SIZE) -> None:
        self.limit, self.window, self.maxsize = limit, window, maxsize
        self._data: OrderedDict[str, list[float]] = OrderedDict()  # key -> [window_start, used, refused]
        self._lock = threading.Lock()

    @staticmethod
    def bucket(addr: str | None) -> str:
        try:
            ip = ipaddress.ip_address(addr or "")
        except ValueError:
            return "unknown"
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
            return str(ipaddress.ip_network(f"{ip}/64", strict=False))
        return str(ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else ip)

    def acquire(self, addr: str, now: float) -> bool | None:
        """``True``: go ahead; ``False``: over the limit; ``None``: over the
        limit for the first time in this window (log it once, not per call)."""
        with self._lock:
            item = self._data.get(addr)
            if item is None or now - item[0] >= self.window:
                item = [now, 0.0, 0.0]
                self._data[addr] = item
            self._data.move_to_end(addr)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)
            if item[1] >= self.limit:
                item[2] += 1
                return None if item[2] == 1 else False
            item[1] += 1
            return True

    def release(self, addr: str) -> None:
        with self._lock:
            item = self._data.get(addr)
            if item is not None and item[1] > 0:
                item[1] -= 1


def _invalid(description: str) -> AuthenticationFailed:
    return AuthenticationFailed(description, reason=reasons.INVALID_TOKEN)


def _client_address() -> str:
    return AddressLimiter.bucket(request.remote_addr if has_request_context() else None)


class BearerAuthenticator:
    """``state.bearer_authenticator``: ``token -> Identity``.

    :param providers: the app's providers (the OIDC ones accept tokens).
    :param clock: the extension's clock.
    :param groups_needed: some skill gates on groups (then a token without a
        group claim has its groups read from userinfo).
    """

    def __init__(self, providers: Mapping[str, Provider], clock: Callable[[], float], *, groups_needed: bool = True,
                 cache_size: int = DEFAULT_CACHE_SIZE,
                 refusal_seconds: float = REFUSAL_CACHE_SECONDS, introspection_limit: int = INTROSPECTION_LIMIT,
                 limit_window: float = INTROSPECTION_LIMIT_WINDOW,
                 deprovisioned: Callable[[Identity], bool] | None = None) -> None:
        self.providers = providers
        self.clock = clock
        self.groups_needed = groups_needed
        self.cache: TokenCache[Identity] = TokenCache(cache_size)
        #: refused opaque tokens: hash -> (description, reason, provider)
        self.refusals: TokenCache[tuple[str, str, str | None]] = TokenCache(cache_size)
        #: groups read from userinfo: hash -> (groups,) -- (None,): userinfo had none
        self.userinfo_groups: TokenCache[tuple[frozenset[str] | None]] = TokenCache(cache_size)
        self.refusal_seconds = refusal_seconds
        self.limiter = AddressLimiter(introspection_limit, limit_window)
        #: introspection calls made (tests, metrics)
        self.introspections = 0
        #: userinfo calls made (tests, metrics)
        self.userinfo_calls = 0
        #: ``identity -> deprovisioned?`` when SCIM is enabled (:class:`DeprovisionedCheck`):
        #: asked on every bearer request, after the caches, so a deprovision counts from its response on
        self.deprovisioned = deprovisioned

    # -- entry point -------------------------------------------------------------------
    def __call__(self, token: str) -> Identity:
        identity = self._checked(token)
        prov = self.providers.get(identity.provider)
        if prov is not None and fallback.refused_as_not_needed(self.providers, prov):
            # a break-glass provider's tokens serve only while a provider it stands in for is down
            err = LoginRequired("This identity provider is for emergencies only, and the everyday one can be "
                                "reached.", reason=reasons.FALLBACK_NOT_NEEDED)
            self._failed(identity.provider, reasons.FALLBACK_NOT_NEEDED, "bearer token of a fallbackOnly provider")
            g._ccsso_bearer_failure = err
            raise err
        if self.deprovisioned is not None and self.deprovisioned(identity):
            err = LoginRequired("This account has been deprovisioned.", reason=reasons.DEPROVISIONED)
            signals.login_failed.send(current_flask_app(), provider=identity.provider, reason=reasons.DEPROVISIONED,
                                      detail="bearer token of a deprovisioned person", subject=identity.subject,
                                      email=identity.email)
            g._ccsso_bearer_failure = err
            raise err
        return identity

    def _checked(self, token: str) -> Identity:
        failure = getattr(g, "_ccsso_bearer_failure", None)
        if failure is not None:  # once per request, one signal
            raise failure
        try:
            try:
                return self.authenticate(token)
            except (AuthenticationFailed, IdPUnavailable, IntrospectionThrottled):
                raise
            except Exception as exc:  # an input nobody foresaw: 401, never a 500
                log.exception("flask-ccsso: unexpected error while checking a bearer token")
                raise _invalid("The access token could not be verified.") from exc
        except AuthenticationFailed as exc:
            err = LoginRequired(exc.description or "The access token is not valid.", reason=reasons.INVALID_TOKEN)
            self._failed(exc.extra.get("provider"), reasons.INVALID_TOKEN, exc.description)
            g._ccsso_bearer_failure = err
            raise err from None
        except (IdPUnavailable, IntrospectionThrottled) as exc:
            reason = reasons.IDP_UNAVAILABLE if isinstance(exc, IdPUnavailable) else RATE_LIMITED
            self._failed(exc.extra.get("provider"), reason, exc.description)
            g._ccsso_bearer_failure = exc
            raise

    @staticmethod
    def _failed(provider: str | None, reason: str, detail: str | None) -> None:
        signals.login_failed.send(current_flask_app(),
                                  provider=provider, reason=reason, detail=detail, subject=None, email=None)

    def authenticate(self, token: str) -> Identity:
        """Verify ``token``; raise AuthenticationFailed / IdPUnavailable / IntrospectionThrottled."""
        if not token or len(token) > 16384 or not _B64TOKEN.match(token):
            raise _invalid("The access token is malformed.")
        key = hashlib.sha256(token.encode("ascii")).digest()
        now = self.clock()
        cached = self.cache.get(key, now)
        if cached is not None:
            return cached
        if token.count(".") == 2:
            prov, claims, identity, valid_until = self._verify_jwt(token, now)
            exp = float(claims["exp"])
        else:
            prov, claims, identity, valid_until = self._introspect(token, key, now)
            known = finite_time(claims.get("exp"))
            exp = known if known is not None else now + INTROSPECTION_CACHE_SECONDS
        identity, valid_until = self._complete_groups(prov, claims, identity, token, key, now, exp, valid_until)
        self.cache.put(key, identity, valid_until)
        return identity

    def verify_access_token(self, token: str, *, provider: str | None = None) -> tuple[str, dict[str, Any]]:
        """A JWT access token's provider name and verified claims, by every
        check :meth:`authenticate` applies to one (shape, ``typ``, the issuer's
        provider and its :meth:`~flask_ccsso.providers.oidc.OIDCProvider.validate_access_token`:
        signature, ``iss``, ``aud``, ``exp``, ``allowedClients``, ...), for a
        caller that decides by the claims itself (the SCIM endpoint: which
        client, which scope).

        What is left out is about *people*, and a provisioning client's token
        (client credentials) names none: no userinfo group completion and no
        deprovisioned check. Opaque tokens are refused (introspection would
        post the token to an IdP); nothing is cached, so no identity cache
        entry stands for claims it never held. Raises AuthenticationFailed
        (with ``provider`` when known) or IdPUnavailable; an input nobody
        foresaw is an AuthenticationFailed too, never a 500.

        ``provider``: verify with that provider only (its issuer must be the
        token's), instead of the first provider with the token's issuer -- two
        providers may share an issuer (one authorization server, a sign-in
        client and a provisioning audience)."""
        if not token or len(token) > 16384 or not _B64TOKEN.match(token):
            raise _invalid("The access token is malformed.")
        if token.count(".") != 2:
            raise _invalid("The access token is not a JWT.")
        try:
            if provider is None:
                prov, claims, _identity, _valid_until = self._verify_jwt(token, self.clock())
            else:
                prov, claims = self._verify_jwt_at(token, provider)
        except (AuthenticationFailed, IdPUnavailable):
            raise
        except Exception as exc:
            log.exception("flask-ccsso: unexpected error while checking a bearer token")
            raise _invalid("The access token could not be verified.") from exc
        return prov.name, claims

    # -- JWT ---------------------------------------------------------------------------
    def _oidc_providers(self) -> list[OIDCProvider]:
        return [p for p in self.providers.values() if isinstance(p, OIDCProvider)]

    def _issuers(self, prov: OIDCProvider) -> tuple[str, ...]:
        return prov.accepted_access_token_issuers()

    def _provider_for(self, iss: Any) -> OIDCProvider:
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
                return prov
        if unavailable is not None:
            raise unavailable
        raise _invalid("The token was issued by an identity provider this application does not trust.")

    def _verify_jwt(self, token: str, now: float) -> tuple[OIDCProvider, dict[str, Any], Identity, float]:
        """Route by the unverified ``iss`` (only to choose the provider and its
        keys); the provider verifies everything (``validate_access_token``)."""
        header, unverified = peek_jwt(token)
        check_access_token_type(header)
        prov = self._provider_for(unverified.get("iss"))
        claims, identity = prov.validate_access_token(token)
        return prov, claims, identity, float(claims["exp"]) + prov.settings.clock_skew

    def _verify_jwt_at(self, token: str, name: str) -> tuple[OIDCProvider, dict[str, Any]]:
        """:meth:`_verify_jwt` with the provider named, not routed by issuer."""
        header, unverified = peek_jwt(token)
        check_access_token_type(header)
        prov = self.providers.get(name)
        if not isinstance(prov, OIDCProvider):
            raise _invalid("The token's identity provider does not issue access tokens here.")
        if unverified.get("iss") not in self._issuers(prov):
            raise _invalid("The token was issued by another identity provider.")
        claims, _identity = prov.validate_access_token(token)
        return prov, claims

    # -- RFC 7662 ----------------------------------------------------------------------
    def _introspector_for(self, token: str) -> OIDCProvider:
        """The one provider this opaque token may be sent to (see the module
        docstring); start-up validation (``config._check_introspection_routing``)
        guarantees that at most one matches."""
        provs = [p for p in self._oidc_providers() if p.settings.introspection and p.settings.auth_method != "none"]
        if not provs:
            raise _invalid("The access token is not a JWT and no provider offers token introspection.")
        for prov in provs:
            prefix = getattr(prov.settings, "introspection_token_prefix", None)
            if prefix and token.startswith(prefix):
                return prov
        for prov in provs:
            if getattr(prov.settings, "introspection_default", False):
                return prov
        if len(provs) == 1 and not getattr(provs[0].settings, "introspection_token_prefix", None):
            return provs[0]
        raise _invalid("The access token is not a JWT and belongs to no provider that introspects tokens.")

    def _introspect(self, token: str, key: bytes, now: float) -> tuple[OIDCProvider, dict[str, Any], Identity, float]:
        refused = self.refusals.get(key, now)
        if refused is not None:
            description, reason, provider = refused
            raise AuthenticationFailed(description, reason=reason, provider=provider)
        prov = self._introspector_for(token)
        try:
            endpoint = prov.metadata().get("introspection_endpoint")
        except IdPUnavailable as exc:
            exc.extra.setdefault("provider", prov.name)
            raise
        if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
            raise _invalid("The access token is not a JWT and its provider offers no token introspection.")
        addr = _client_address()
        # per provider *and* address: the limit protects each IdP from made-up
        # tokens, and one IdP's outage (every call to it fails) must not use up
        # the limit of the same address's callers of another IdP
        bucket = f"{prov.name} {addr}"
        allowed = self.limiter.acquire(bucket, now)
        if not allowed:
            if allowed is None:
                log.warning("flask-ccsso: client address %s sent too many unrecognised bearer tokens for provider "
                            "%r; introspection paused for it for up to %g s", addr, prov.name, self.limiter.window)
            raise IntrospectionThrottled(provider=prov.name)
        data = self._ask(prov, endpoint, token)
        try:
            identity, exp = prov.validate_introspection(data, now=now)
        except AuthenticationFailed as exc:
            exc.extra.setdefault("provider", prov.name)
            self.refusals.put(key, (exc.description or "The access token is not valid.", exc.reason, prov.name),
                              now + self.refusal_seconds)
            raise
        self.limiter.release(bucket)
        limit = now + INTROSPECTION_CACHE_SECONDS
        return prov, data, identity, min(exp, limit) if exp is not None else limit

    def _ask(self, prov: OIDCProvider, endpoint: str, token: str) -> dict[str, Any]:
        s = prov.settings
        self.introspections += 1
        try:
            # as this client, the way the token endpoint sees it (tokenEndpointAuthMethod)
            resp = prov.authenticated_post(endpoint, {"token": token, "token_type_hint": "access_token"},
                                           what="introspection endpoint")
            if resp.status_code != 200:
                resp.close()
                raise IdPUnavailable(f"The identity provider answered {resp.status_code} to token introspection.",
                                     provider=prov.name)
            raw = read_capped(resp, s.timeout)
        except (ResponseTooLarge, requests.RequestException) as exc:
            raise unreachable(exc, endpoint, "introspection endpoint", timeout=s.timeout, provider=prov.name) from exc
        try:
            data = loads_strict(raw)
        except (ValueError, RecursionError) as exc:
            raise IdPUnavailable("The introspection answer is not JSON.", provider=prov.name) from exc
        if not isinstance(data, dict):
            raise IdPUnavailable("The introspection answer is not a JSON object.", provider=prov.name)
        return data

    # -- groups from userinfo ----------------------------------------------------------
    def _complete_groups(self, prov: OIDCProvider, claims: Mapping[str, Any], identity: Identity, token: str,
                         key: bytes, now: float, exp: float, valid_until: float) -> tuple[Identity, float]:
        """A token without the provider's group claim says nothing about
        groups -- it is not "no groups". Read them from userinfo (with the
        token itself, from the provider that vouched for it); when that has
        none either, mark the groups incomplete so that a group-gated skill
        answers ``groups_incomplete`` and says what the API needs."""
        if prov.settings.groups_claim in claims or not identity.groups_complete or not self.groups_needed:
            return identity, valid_until
        if prov.type == "azure-ad":  # Entra's userinfo never lists groups
            return dataclasses.replace(identity, groups_complete=False), valid_until
        cached = self.userinfo_groups.get(key, now)
        if cached is not None:
            groups = cached[0]
        else:
            try:
                groups = self._userinfo(prov, token, claims.get("sub"))
            except _UserinfoFailed:
                # not remembered: the next call after a short while asks again
                return (dataclasses.replace(identity, groups_complete=False),
                        min(valid_until, now + self.refusal_seconds))
            self.userinfo_groups.put(key, (groups,), exp)
        if groups is None:
            return dataclasses.replace(identity, groups_complete=False), valid_until
        return dataclasses.replace(identity, groups=groups), valid_until

    def _userinfo(self, prov: OIDCProvider, token: str, sub: Any) -> frozenset[str] | None:
        """The groups claim of the provider's userinfo answer for ``token``;
        ``None`` when the answer has none. Raises ``_UserinfoFailed`` when
        there is no usable answer (down, refused, not JSON, another ``sub``)."""
        s = prov.settings
        try:
            endpoint = prov.metadata().get("userinfo_endpoint")
        except IdPUnavailable as exc:
            raise _UserinfoFailed from exc
        if not isinstance(endpoint, str):
            return None
        self.userinfo_calls += 1
        try:
            resp = prov.http.get(endpoint, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                                 timeout=s.timeout, stream=True)
            if resp.status_code != 200:
                resp.close()
                log.warning("flask-ccsso: %s's userinfo endpoint answered %s", prov.name, resp.status_code)
                raise _UserinfoFailed
            data = loads_strict(read_capped(resp, s.timeout))
        except (requests.RequestException, ResponseTooLarge, ValueError, RecursionError) as exc:
            log.warning("flask-ccsso: could not read %s's userinfo for a bearer token's groups", prov.name)
            raise _UserinfoFailed from exc
        # OIDC Core 5.3.2: the userinfo sub MUST match the token's
        if not isinstance(data, dict) or data.get("sub") != sub:
            log.warning("flask-ccsso: %s's userinfo answer is not about the token's subject", prov.name)
            raise _UserinfoFailed
        if s.groups_claim not in data:
            return None
        return frozenset(prov._str_list(data[s.groups_claim]))


#: shared-store key prefixes of the deprovisioned markers (:mod:`flask_ccsso.scim` writes them)
DEPROVISIONED_EMAIL_PREFIX = "scim:deprovisioned:email:"
DEPROVISIONED_ID_PREFIX = "scim:deprovisioned:id:"


#: the longest value a store key holds as it is (a SQL store's keys are at most 255 characters)
MAX_KEY_PART = 120


def store_key_part(value: str) -> str:
    """``value`` as the end of a store key: itself, or when longer than
    :data:`MAX_KEY_PART` (or starting with ``#``, so the two never meet) ``#``
    and its SHA-256 -- an email may have 254 characters, a key may not."""
    if len(value) <= MAX_KEY_PART and not value.startswith("#"):
        return value
    return "#" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def deprovisioned_email_key(email: str) -> str:
    """The marker of a deprovisioned email (case-insensitive, as the session index's)."""
    return DEPROVISIONED_EMAIL_PREFIX + store_key_part(email.lower())


def deprovisioned_id_key(identity_id: str) -> str:
    """The marker of a deprovisioned ``provider:subject`` (case-sensitive: a subject is)."""
    return DEPROVISIONED_ID_PREFIX + store_key_part(identity_id)


class AccountDeprovisioned(CCSSOError, Forbidden):
    """A sign-in of a person SCIM deprovisioned: HTTP 403 until SCIM re-activates them."""

    reason = reasons.DEPROVISIONED
    description = "This account has been deprovisioned. Ask your administrator to re-activate it."


class DeprovisionedCheck:
    """``identity -> bool``: whether SCIM deprovisioned this person.

    Never cached (a deprovision counts from its response on): the email's
    marker when the identity has an email (or a subject that is one), and
    its ``provider:subject``'s (one to three keys, one store read). The SCIM endpoint writes both kinds, for the
    person's email addresses and every ``provider:subject`` it can tell.
    """

    def __init__(self, store: SharedStore) -> None:
        self.store = store

    def keys(self, identity: Identity) -> list[str]:
        """Every marker that names ``identity`` (a sign-in reads them all)."""
        emails = {e.lower() for e in (identity.email, identity.subject) if e and "@" in e}
        # a subject that is an email (Okta's org server: the login, case-insensitive) is marked as one too
        return [*(deprovisioned_email_key(e) for e in sorted(emails)), deprovisioned_id_key(identity.id)]

    def any_marker(self, identity: Identity) -> bool:
        """Whether any marker names ``identity``: all of them in one read
        (:meth:`~flask_ccsso.stores.SharedStore.get_many`), as a bearer
        request may make only one."""
        return any(value is not None for value in self.store.get_many(self.keys(identity)))

    # the bearer path asks the same as a sign-in, every marker: a token's email may be one SCIM
    # never listed (an alias, a UPN) while its subject is the person's externalId or userName
    __call__ = any_marker


class _UserinfoFailed(Exception):
    """userinfo gave no usable answer (never leaves this module)."""


def _app_number(app: Flask, key: str, default: float, low: float, high: float, *, whole: bool = False) -> float:
    app.config.setdefault(key, default)
    return setting_number(app.config, key, default, minimum=low, maximum=high, whole=whole)


def make_bearer_authenticator(app: Flask, providers: Mapping[str, Provider], clock: Callable[[], float],
                              skills: Iterable[Any], *,
                              deprovisioned: Callable[[Identity], bool] | None = None) -> BearerAuthenticator:
    """Built by ``init_app``: accept bearer tokens from the OIDC providers.
    ``CCSSO_BEARER_CACHE_SIZE`` (default 2048) bounds the token caches;
    ``CCSSO_BEARER_REFUSAL_CACHE_SECONDS`` (30) is how long a refused opaque
    token is refused without asking again; ``CCSSO_BEARER_INTROSPECTION_LIMIT``
    (20) is how many unsuccessful introspection calls one client address may
    cause at each provider per minute."""
    size = int(_app_number(app, "CCSSO_BEARER_CACHE_SIZE", DEFAULT_CACHE_SIZE, 1, 10_000_000, whole=True))
    refusal = _app_number(app, "CCSSO_BEARER_REFUSAL_CACHE_SECONDS", REFUSAL_CACHE_SECONDS, 0, 3600)
    limit = int(_app_number(app, "CCSSO_BEARER_INTROSPECTION_LIMIT", INTROSPECTION_LIMIT, 1, 1_000_000, whole=True))
    return BearerAuthenticator(providers, clock, groups_needed=any(getattr(s, "allowed_groups", None) for s in skills),
                               cache_size=size, refusal_seconds=refusal, introspection_limit=limit,
                               deprovisioned=deprovisioned)


__all__ = ["AccountDeprovisioned", "AddressLimiter", "BearerAuthenticator", "DeprovisionedCheck", "IntrospectionThrottled",
           "TokenCache", "deprovisioned_email_key", "deprovisioned_id_key", "make_bearer_authenticator"]
