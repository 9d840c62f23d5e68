"""What every provider offers the views and the request gate.

A provider speaks one protocol. It builds the URL that starts a sign-in,
checks what comes back, and turns it into an :class:`~flask_ccsso.identity.Identity`.
It knows no routes (the views hand it the redirect URL) and takes no access
decisions (the skills policy does).

Pending sign-ins live in the shared store under a random key (OIDC ``state``,
SAML request id), never in the cookie: several tabs can sign in at once, any
worker can finish a sign-in another started, and a SAML POST that arrives
without the SameSite=Lax cookie still finds its request.

Because anyone can start a sign-in without being anyone, what a pending
sign-in costs the store is bounded: the entry holds only what the callback
needs (defaults are left out, ``next`` is capped by the views), it lives
``loginStateTtl`` seconds, one browser keeps at most a few of them
(:func:`limit_per_browser`, the oldest is dropped) and the views cap the
sign-ins one client address may start per window.
"""

from __future__ import annotations

import builtins
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import requests
from flask import g, has_request_context

from .. import reasons
from ..exceptions import AuthenticationFailed, CCSSOError
from ..identity import FUTURE, Identity, auth_time_problem
from .availability import Availability, FetchStatus, Probe

if TYPE_CHECKING:
    from ..config import ProviderSettings
    from ..stores import SharedStore


@dataclass
class LoginRequest:
    """What the views ask a provider for when a sign-in starts."""

    #: absolute URL the IdP sends the person back to (callback / ACS)
    redirect_uri: str
    #: same-origin path to land on afterwards (already checked by the views)
    next_url: str = "/"
    #: opaque value tying the pending sign-in to this browser (``None`` where
    #: the protocol cannot carry the cookie back, i.e. SAML POST)
    browser_binding: str | None = None
    #: the unreachable provider this sign-in stands in for (the views checked
    #: that it names this one as a ``fallback`` and is down); kept in the
    #: pending sign-in, so the finished sign-in is announced as a fallback
    fallback_for: str | None = None
    #: step-up: force a fresh authentication
    force_authn: bool = False
    max_age: int | None = None
    acr_values: tuple[str, ...] = ()
    #: the skill that asked for step-up (for the audit trail)
    step_up_skill: str | None = None
    #: step-up: the ``auth_time`` of the session that asked; the answer must
    #: carry a newer one (clock-skew independent proof of re-authentication)
    previous_auth_time: float | None = None


@dataclass
class CallbackRequest:
    """The parts of the HTTP request a provider needs at the callback / ACS."""

    args: Mapping[str, str]
    form: Mapping[str, str]
    method: str
    url: str
    redirect_uri: str
    browser_binding: str | None = None
    content_length: int | None = None


@dataclass
class LoginResult:
    identity: Identity
    next_url: str
    #: OIDC tokens kept server-side (access/refresh/id token, expires_at, scope)
    tokens: dict[str, Any] | None = None
    #: protocol facts needed at logout (id_token for the hint, SAML NameID ...)
    logout_state: dict[str, Any] = field(default_factory=dict)
    #: the pending request asked for step-up (skill name), and it was verified
    step_up_skill: str | None = None
    step_up: bool = False
    #: the pending request was a fallback for this unreachable provider (:attr:`LoginRequest.fallback_for`)
    fallback_for: str | None = None


@dataclass(frozen=True)
class SingleLogout:
    """What a verified single-logout message from the IdP asks of the app.

    ``subject`` ``None``: it answered a logout started here (nothing more to
    end). Otherwise the IdP's logout request: end ``subject``'s sessions at
    this provider, narrowed to those started by one of ``idp_sessions`` when
    given, then answer request ``request_id`` (with ``relay_state``).
    """

    subject: str | None
    idp_sessions: tuple[str, ...] = ()
    request_id: str | None = None
    relay_state: str | None = None


class Provider(ABC):
    """Base class: one configured IdP."""

    #: the ``provider`` values in config that select this class
    type: ClassVar[str]
    #: ``"oidc"`` or ``"saml"``
    protocol: ClassVar[str]
    #: this type's settings struct: its fields declare the type's config keys
    settings_class: ClassVar[builtins.type[ProviderSettings]]

    @classmethod
    def config_keys(cls) -> tuple[str, ...]:
        """The keys a provider block of this type may hold."""
        return cls.settings_class.config_keys()

    def __init__(self, settings: ProviderSettings, *, store: SharedStore, clock: Callable[[], float],
                 http: requests.Session | None = None) -> None:
        self.settings = settings
        self.name = settings.name
        self.store = store
        self.clock = clock
        self.http = http or requests.Session()
        #: how fetching what the IdP publishes went (:meth:`availability`); the document caches write it
        self.status = FetchStatus(clock)
        self._probe = Probe(self.probe, self.status, clock)

    def availability(self) -> Availability:
        """Whether this provider's IdP could be reached lately: the last
        successful fetch, the last error, and whether a sign-in here fails
        now for want of a document (no network I/O: see
        :mod:`~flask_ccsso.providers.availability`)."""
        return self.status.snapshot()

    def ensure_published(self) -> None:
        """Fetch -- or take from the cache -- what a sign-in here needs from
        the IdP (discovery and signing keys, metadata), raising
        :class:`~flask_ccsso.exceptions.IdPUnavailable` when it cannot be had:
        the views' cheap check of whether a provider is down (no network I/O
        while the caches hold a fresh copy). A provider type that fetches
        nothing has nothing to do."""

    def probe(self) -> str | None:
        """Fetch afresh -- bypassing the caches -- the document that shows
        whether the IdP answers, raising
        :class:`~flask_ccsso.exceptions.IdPUnavailable` when it does not;
        the document's name (``None``: nothing to fetch). Only
        :meth:`probe_down` calls it."""
        return None

    def probe_down(self) -> bool:
        """Whether the IdP is down by an active check (:class:`~.availability.Probe`:
        single-flight, at most one fetch per ``RECHECK_AFTER`` seconds). For
        unlocking a ``fallbackOnly`` provider only -- never a normal sign-in
        or a protected request."""
        return self._probe.down()

    def startup(self) -> None:
        """Load what can be checked at start-up (runs inside an app context).

        A provider that reads files (SAML metadata, keys) does it here so a
        bad path fails when the app starts, not on the first sign-in.
        """

    # -- pending sign-ins -----------------------------------------------------
    def _save_pending(self, key: str, data: dict[str, Any], ttl: float) -> None:
        """Store a pending sign-in under ``login:<key>`` for ``ttl`` seconds.

        Fields holding their default (``None``, ``False``, empty, ``next``
        ``/``) are left out: readers use ``.get()`` with the same defaults, and
        an unauthenticated request should cost the store as little as
        possible. The key is noted on ``g`` so the view that started the
        sign-in can bound how many one browser keeps (:func:`limit_per_browser`).
        """
        data = compact_pending(dict(data, provider=self.name, created=self.clock()))
        self.store.set(f"login:{key}", json.dumps(data, separators=(",", ":")), ttl)
        if has_request_context():
            g._ccsso_pending_saved = (key, ttl)

    def _take_pending(self, key: str | None, ttl: float, binding: str | None, *, check_binding: bool = True) -> dict[str, Any]:
        """Consume a pending sign-in exactly once (atomic pop in the store)."""
        if not key or len(key) > 512:
            raise AuthenticationFailed("The sign-in response did not match a sign-in that was started here.",
                                       reason=reasons.STATE_MISSING)
        raw = self.store.pop(f"login:{key}")
        if raw is None:
            raise AuthenticationFailed("This sign-in link was already used or has expired. Please sign in again.",
                                       reason=reasons.STATE_MISSING)
        data: dict[str, Any] = json.loads(raw)
        if data.get("provider") != self.name:
            raise AuthenticationFailed("The sign-in response came back to the wrong provider.",
                                       reason=reasons.STATE_MISMATCH)
        if has_request_context():
            g._ccsso_pending_taken = data  # for the views, should the sign-in fail after this (pending_sign_in)
        if self.clock() - float(data.get("created", 0)) > ttl:
            raise AuthenticationFailed("The sign-in took too long. Please sign in again.", reason=reasons.STATE_EXPIRED)
        if check_binding and data.get("bind") != binding:
            if binding is None:
                # the most common cause by far is configuration, not an attack:
                # say what to check
                raise AuthenticationFailed(
                    "The browser came back without the session cookie it had when the sign-in started. "
                    "Check that the portal is opened on the same host name as its redirect URI, and that "
                    "session.cookieSecure is false when it is served over plain http.",
                    reason=reasons.STATE_MISMATCH)
            raise AuthenticationFailed("The sign-in response belongs to another browser session.",
                                       reason=reasons.STATE_MISMATCH)
        return data

    def pending_key(self, req: CallbackRequest) -> str | None:
        """The key of the pending sign-in the callback ``req`` answers, when
        the protocol names it plainly (OIDC ``state``); ``None`` otherwise."""
        return None

    def pending_sign_in(self, req: CallbackRequest) -> dict[str, Any] | None:
        """The pending sign-in the callback ``req`` answers, for a view whose
        sign-in failed on the way (the IdP became unreachable): the one this
        request already took, else the one :meth:`pending_key` names, read
        and left in place. ``None`` when it cannot be told (a SAML response
        whose IdP metadata could not be had is not even parsed)."""
        taken = g.get("_ccsso_pending_taken") if has_request_context() else None
        if isinstance(taken, dict) and taken.get("provider") == self.name:
            return taken
        key = self.pending_key(req)
        if not key or len(key) > 512:
            return None
        try:
            raw = self.store.get(f"login:{key}")
            data = json.loads(raw) if raw is not None else None
        except (CCSSOError, ValueError):
            return None
        return data if isinstance(data, dict) and data.get("provider") == self.name else None

    # -- the protocol ---------------------------------------------------------
    @abstractmethod
    def begin_login(self, req: LoginRequest) -> str:
        """Return the URL to send the browser to."""

    @abstractmethod
    def finish_login(self, req: CallbackRequest) -> LoginResult:
        """Check the IdP's answer and return who signed in; raise a
        :class:`~flask_ccsso.exceptions.CCSSOError` otherwise."""

    def logout_url(self, logout_state: Mapping[str, Any], post_logout_redirect_uri: str) -> str | None:
        """Where to send the browser to end the IdP session (``None``: nowhere)."""
        return None

    # optional capabilities (OIDC): bearer tokens, refresh, back-channel logout
    def validate_bearer(self, token: str) -> Identity:
        raise AuthenticationFailed("This provider does not accept bearer tokens.", reason=reasons.INVALID_TOKEN)

    def refresh(self, tokens: Mapping[str, Any]) -> tuple[dict[str, Any], Identity | None]:
        raise CCSSOError("This provider cannot refresh tokens.", reason=reasons.REFRESH_FAILED)

    def describe(self) -> dict[str, Any]:
        """A secret-free summary for ``flask ccsso check-config``."""
        return {"name": self.name, "type": self.type}


# -- the step-up round trip -------------------------------------------------------

def check_reauthenticated(auth_time: float | None, *, now: float, skew: float, max_age: float | None,
                          force: bool, started_at: float | None, previous_auth_time: float | None,
                          future_reason: str = reasons.INVALID_TOKEN) -> None:
    """The IdP must really have re-authenticated on a step-up round trip
    (OIDC ``prompt=login`` / ``max_age``, SAML ``ForceAuthn``), or raise
    :class:`AuthenticationFailed` (``stepup_not_satisfied``).

    Every provider's return leg goes through here, so the rule is one:

    * the sign-in time passes :func:`~flask_ccsso.identity.auth_time_problem`
      (known, not in the future beyond ``skew``, within ``max_age``), with
      ``max_age`` widened by the skew: the IdP's time is compared with our clock;
    * ``force``: the sign-in is not older than the request that asked for it
      (``started_at``, less the skew);
    * ``force`` with a ``max_age``: when the sign-in that asked
      (``previous_auth_time``) was already too old, the IdP must not hand that
      same sign-in back -- compared on the IdP's own clock, so no skew can hide
      it (with ``maxAuthAge <= clockSkew`` the checks above cannot).

    ``future_reason`` is the protocol's reason for an unbelievable time (a bad
    token, a bad SAML response).
    """
    if max_age is None and not force:
        return
    stale = AuthenticationFailed("The identity provider did not ask you to sign in again.",
                                 reason=reasons.STEPUP_NOT_SATISFIED)
    if auth_time is None:
        raise AuthenticationFailed("The identity provider did not say when you signed in.",
                                   reason=reasons.STEPUP_NOT_SATISFIED)
    problem = auth_time_problem(auth_time, now=now, max_age=None if max_age is None else max_age + skew, skew=skew)
    if problem == FUTURE:
        raise AuthenticationFailed("The sign-in time is in the future.", reason=future_reason)
    if problem is not None:
        raise stale
    if (force and previous_auth_time is not None and max_age is not None and started_at is not None
            and started_at - previous_auth_time > max_age and auth_time <= previous_auth_time):
        raise stale
    if force and started_at is not None and auth_time < started_at - skew:
        raise stale


# -- bounds on pending sign-ins ---------------------------------------------------

def pending_step_up(pending: Mapping[str, Any]) -> bool:
    """Whether a pending sign-in is a step-up round trip (it forced a fresh
    authentication or bounded its age): the answer must re-authenticate the
    same person at the same provider, so no other provider may stand in."""
    return bool(pending.get("force") or pending.get("max_age") is not None)


def compact_pending(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` without the fields that hold their default value."""
    return {k: v for k, v in data.items()
            if v is not None and v is not False and v != [] and v != () and v != ""
            and not (k == "next" and v == "/")}


def saved_pending() -> tuple[str, float] | None:
    """``(key, ttl)`` of the pending sign-in this request saved, if any."""
    value = g.get("_ccsso_pending_saved") if has_request_context() else None
    return value if isinstance(value, tuple) else None


def limit_per_browser(store: SharedStore, known: Any, key: str, max_per_browser: int) -> list[str]:
    """The list of a browser's pending sign-in keys after it started ``key``:
    at most ``max_per_browser``, newest last; the entries of the keys that
    fall off are deleted from the store.

    Several tabs may sign in at once, so a browser keeps a few; a script that
    keeps its cookie and asks again and again only ever holds the newest
    ``max_per_browser``. The views keep the list in the browser's session
    (written anyway: it holds the browser binding), so it costs no store key
    of its own; a sign-in rotates the session and starts a new list.
    """
    keys = [k for k in known if isinstance(k, str) and k != key] if isinstance(known, list) else []
    keys.append(key)
    cut = max(0, len(keys) - max(1, max_per_browser))
    if cut:
        store.delete(*(f"login:{k}" for k in keys[:cut]))
    return keys[cut:]
