"""The routes: login, callback / ACS, metadata, logout, back-channel logout.

One blueprint, mounted at ``CCSSO_URL_PREFIX`` (default ``/sso``), with the
provider name in the path: ``/sso/<name>/login`` etc. A provider whose
``redirectUri`` has another path (such as ``/callback``) is served there
too. The views translate HTTP to provider calls and back; they take no access
decisions and parse no protocol messages themselves.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, current_app, g, redirect, request, session, url_for
from werkzeug.exceptions import Forbidden, MethodNotAllowed, RequestEntityTooLarge
from werkzeug.wrappers import Response

from . import csrf, reasons, signals
from ._context import current_flask_app
from ._validate import MAX_COUNT, setting_int, setting_number
from .backchannel import handle_backchannel_logout
from .exceptions import (
    AuthenticationFailed,
    CCSSOError,
    ConfigError,
    CSRFError,
    IdPUnavailable,
    LoginRateLimited,
    RequestTooLarge,
    UnknownProvider,
)
from .gate.bearer import AccountDeprovisioned
from .gate.freshness import max_auth_age
from .gate.session import browser_binding, check_store
from .gate.stepup import resubmit_notice_after, subject_mismatch, take_resubmit
from .identity import Identity
from .providers import fallback
from .providers.availability import PROBED
from .providers.base import (
    CallbackRequest,
    LoginRequest,
    LoginResult,
    Provider,
    limit_per_browser,
    pending_step_up,
    saved_pending,
)
from .providers.oidc import OIDCProvider
from .providers.saml import SAMLProvider
from .responses import DEFAULT_RETRY_AFTER, error_response, render_page, wants_json
from .sessions.interface import current_session
from .sessions.record import SESSION_KEY, SessionRecord, load_live
from .state import CCSSOState, get_state

log = logging.getLogger("flask_ccsso")

bp = Blueprint("ccsso", __name__, template_folder="templates")

_BAD_NEXT = re.compile(r"[\x00-\x1f\x7f\\]")

#: the longest ``next`` kept: it is stored with every pending sign-in, which
#: anyone may start without signing in (a longer one falls back to ``/``)
MAX_NEXT_LENGTH = 1024
#: default of ``CCSSO_LOGIN_RATE_LIMIT``: sign-ins one client address may start per window (count, seconds)
LOGIN_RATE_LIMIT = (600, 60.0)
#: default of ``CCSSO_MAX_PENDING_LOGINS``: pending sign-ins one browser keeps (the oldest is dropped)
MAX_PENDING_LOGINS = 8
#: session key listing this browser's pending sign-ins, oldest first
PENDING_KEY = "_ccsso_pending"


def safe_next(value: str | None, default: str = "/") -> str:
    """Only same-origin relative paths: ``/x?y``, never ``//host``, ``/\\host``,
    ``https://host`` or anything with control characters; at most
    :data:`MAX_NEXT_LENGTH` characters."""
    if not value or not isinstance(value, str) or len(value) > MAX_NEXT_LENGTH:
        return default
    if _BAD_NEXT.search(value) or not value.startswith("/") or value.startswith("//"):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    return value


def _state() -> CCSSOState:
    return get_state()


def _provider(name: str) -> Any:
    prov = _state().providers.get(name)
    if prov is None:
        raise UnknownProvider()
    return prov


def redirect_uri_for(prov: Any) -> str:
    configured = getattr(prov.settings, "redirect_uri", None) or getattr(prov.settings, "acs_url", None)
    if configured:
        return str(configured)
    endpoint = "ccsso.acs" if prov.protocol == "saml" else "ccsso.callback"
    return url_for(endpoint, provider=prov.name, _external=True)


def _unexpected(prov_name: str | None, exc: Exception) -> AuthenticationFailed:
    """Last line of defence at the protocol boundary: a provider bug or an
    input nobody foresaw becomes a 400 and an audit event, never a 500 page
    with a traceback. The traceback goes to the log for the operator."""
    log.exception("flask-ccsso: unexpected error while handling a sign-in response for provider %r", prov_name)
    return AuthenticationFailed("The sign-in response could not be processed.", reason=reasons.INVALID_RESPONSE)


@contextlib.contextmanager
def _audited(prov_name: str) -> Iterator[None]:
    """Run a provider call: every refusal is announced (``login_failed``) and
    anything unforeseen becomes a 400 through :func:`_unexpected`."""
    try:
        yield
    except CCSSOError as exc:
        _fail(prov_name, exc)
        raise
    except Exception as exc:
        err = _unexpected(prov_name, exc)
        _fail(prov_name, err)
        raise err from exc


def _fail(prov_name: str | None, exc: CCSSOError) -> None:
    """Every refused sign-in is announced with a machine-readable reason."""
    extra = getattr(exc, "extra", {}) or {}
    app = current_flask_app()
    signals.login_failed.send(app, provider=prov_name, reason=exc.reason, detail=exc.description,
                              subject=extra.get("subject"), email=extra.get("email"))


@bp.route("/<provider>/login", methods=["GET"])
def login(provider: str) -> Response:
    state = _state()
    prov = _provider(provider)
    check_store(session)
    refused = _over_login_rate(state, provider)
    if refused is not None:
        return refused
    next_url = safe_next(request.args.get("next"))
    # a step-up only when the skill exists: a made-up ``stepup`` is a plain sign-in, and waits like one
    step_up_skill = request.args.get("stepup")
    skill = state.config.skills.get(step_up_skill) if isinstance(step_up_skill, str) and step_up_skill else None
    if skill is None:
        known = _known_outage(prov, next_url)
        if known is not None:
            return known
    primary = _standing_in_for(state, prov)
    if primary is None and prov.settings.fallback_only:
        return _fallback_not_needed(state, prov, next_url)
    req = LoginRequest(redirect_uri=redirect_uri_for(prov), next_url=next_url,
                       browser_binding=browser_binding(create=True) if prov.protocol == "oidc" else None,
                       fallback_for=primary)
    if skill is not None:
        # stricter only: a step-up request can never weaken a sign-in
        req.force_authn = True
        req.max_age = int(max_auth_age(skill, state.config.session))
        req.acr_values = tuple(skill.acr_values)
        req.step_up_skill = step_up_skill
        req.previous_auth_time = _current_auth_time(provider)
    try:
        with _audited(provider):
            if prov.settings.fallback:
                # the signing keys too (cached: no network I/O), so a JWKS outage is met here, where
                # the fallbacks can be offered, rather than at the callback
                prov.ensure_published()
            url = prov.begin_login(req)
            _bound_per_browser(state)
    except IdPUnavailable as exc:
        # a step-up must come back from the provider of the session: no other is offered
        if req.step_up_skill or not prov.settings.fallback:
            raise
        return _fallback_page(prov, exc, next_url)
    return redirect(url, 302)


# -- IdP outage: offering the fallback providers --------------------------------------

@dataclass(frozen=True)
class FallbackOffer:
    """A fallback provider offered while another is unreachable, with its sign-in link."""

    provider: Provider
    #: its login URL, keeping ``next`` and naming the provider it stands in for
    url: str


@dataclass(frozen=True)
class Outage:
    """A provider known to be unreachable, and the fallbacks offered instead (the sign-in page's banner)."""

    provider: Provider
    offers: tuple[FallbackOffer, ...]


def _outage(prov: Provider, next_url: str) -> Outage:
    providers = _state().providers
    offers = tuple(FallbackOffer(providers[name], url_for("ccsso.login", provider=name, next=next_url,
                                                          fallback_for=prov.name))
                   for name in prov.settings.fallback if name in providers)
    return Outage(prov, offers)


def _known_outage(prov: Provider, next_url: str) -> Response | None:
    """A provider with fallbacks whose IdP could not be reached a moment ago
    (:data:`~flask_ccsso.providers.availability.RECHECK_AFTER`) is not tried
    again yet: the sign-in page offers its fallbacks straight away, so a dead
    IdP does not make every sign-in wait for its timeout. The refusal is
    announced like any other (``login_failed``, ``idp_unavailable``)."""
    if not prov.settings.fallback:
        return None
    known = prov.availability()
    if not known.down_within(prov.clock()):
        return None
    exc = IdPUnavailable(known.last_error, failure=known.failure)
    _fail(prov.name, exc)
    return _fallback_page(prov, exc, next_url)


def _fallback_page(prov: Provider, exc: IdPUnavailable, next_url: str) -> Response:
    """The answer to a sign-in at ``prov`` that failed because its IdP is
    unreachable, when ``prov`` names fallbacks: 503 either way -- the sign-in
    page with a banner and a link to each fallback for browsers, the usual
    JSON error with the fallbacks' login URLs for API clients."""
    outage = _outage(prov, next_url)
    if wants_json():
        return error_response(exc, as_json=True, extra={"provider": prov.name, "fallbacks": [
            {"provider": o.provider.name, "display_name": o.provider.settings.display_name, "login_url": o.url}
            for o in outage.offers]})
    html = render_page("ccsso/choose.html", providers=[o.provider for o in outage.offers], next_url=next_url,
                       outages=[outage], links={o.provider.name: o.url for o in outage.offers},
                       problem=exc.description,
                       retry_url=url_for("ccsso.login", provider=prov.name, next=next_url))
    resp = Response(html, status=503, mimetype="text/html")
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Retry-After"] = str(DEFAULT_RETRY_AFTER)
    return resp  # a page of the library: responses.library_security_headers adds the security headers


def _listing(state: CCSSOState, prov: Provider) -> list[Provider]:
    """The providers that name ``prov`` as a ``fallback`` (none for most providers)."""
    return fallback.listing(state.providers, prov)


def _standing_in_for(state: CCSSOState, prov: Provider) -> str | None:
    """The unavailable provider a sign-in at ``prov`` stands in for, or ``None``.

    What counts is the use of a fallback, not the link that led there: a
    sign-in at a provider some other provider lists as a ``fallback``, while
    that one is unavailable, is a fallback sign-in however it was started
    (the banner's link, the chooser, a typed URL). Unavailable means known
    to be (:func:`_known_down`), or found so now (:func:`_down`). The
    recorded status is read for every candidate before anything is fetched,
    so a break-glass sign-in never waits on a primary known to be dead. Only
    our own fetches decide: a crafted URL can neither invent an outage nor
    raise the alert.

    ``fallback_for`` (the banner's links carry it) only says which primary
    to name first when several list ``prov``. The verdict goes into the pending
    sign-in, so the alert fires once, when that sign-in completes."""
    primaries = _listing(state, prov)
    named = request.args.get("fallback_for")
    picked = next((p for p in primaries if p.name == named), None)
    if picked is not None and _down(picked):
        return picked.name
    others = [p for p in primaries if p is not picked]
    known = next((p for p in others if _known_down(p)), None)
    if known is not None:
        return known.name
    return next((p.name for p in others if _down(p)), None)


def _known_down(primary: Provider) -> bool:
    """``primary`` is known to be unavailable (no network I/O): a document
    could not be fetched and no cached copy serves, however long ago (the
    status changes only when a fetch succeeds -- the 30 s of
    :func:`_known_outage` only say when to try the IdP again, and a
    break-glass sign-in must not wait on a primary known to be dead), or its
    probe failed within ``RECHECK_AFTER`` seconds (a probe's verdict is only
    that old: the cached copies may serve again by now)."""
    known = primary.availability()
    return known.down_within(primary.clock()) or bool(set(known.documents) - {PROBED})


def _down(primary: Provider) -> bool:
    """``primary`` is known to be unavailable (:func:`_known_down`), or found
    so now: by :meth:`~flask_ccsso.providers.base.Provider.ensure_published`
    (no network I/O while the documents are cached; callers that wait for a
    fetch share its failure), and else by the active probe. A cached copy is
    not proof the primary is up -- a worker that fetched it once would keep
    break-glass locked through a whole outage -- so the probe (a fresh fetch,
    single-flight, at most one per ``RECHECK_AFTER`` per worker) settles it."""
    if _known_down(primary):
        return True
    if not primary.availability().unavailable:
        try:
            primary.ensure_published()
        except IdPUnavailable:
            return True
        except Exception:  # a provider bug must not turn the fallback's sign-in into a 500
            log.exception("flask-ccsso: could not tell whether provider %r is reachable", primary.name)
    return primary.probe_down()


def _needed(state: CCSSOState, prov: Provider) -> bool:
    """Whether a provider that some other provider lists as a fallback is
    needed now: one of those is known to be unavailable (no network I/O)."""
    return fallback.needed(state.providers, prov)


class FallbackNotNeeded(CCSSOError, Forbidden):
    """A sign-in at a ``fallbackOnly`` provider while every provider listing
    it can be reached. HTTP 403."""

    reason = reasons.FALLBACK_NOT_NEEDED
    description = "This sign-in is for emergencies only, and the everyday one can be reached."
    title = "Emergency sign-in not available"


def _fallback_not_needed(state: CCSSOState, prov: Provider, next_url: str) -> Response:
    """Refuse a sign-in at ``fallbackOnly`` ``prov``: 403 (the message page
    with a link to the everyday provider, or JSON naming it), announced as
    ``login_failed`` with reason ``fallback_not_needed``."""
    primaries = _listing(state, prov)
    names = " or ".join(p.settings.display_name for p in primaries)
    exc = FallbackNotNeeded(f"{prov.settings.display_name} is for emergencies only: it can be used while "
                            f"{names} cannot be reached, and {names} can be reached now. Sign in with {names}.")
    _fail(prov.name, exc)
    links = [(p, url_for("ccsso.login", provider=p.name, next=next_url)) for p in primaries]
    g._ccsso_retry_url = url_for("ccsso.choose", next=next_url)
    return error_response(exc, action_url=links[0][1], action_label=f"Sign in with {primaries[0].settings.display_name}",
                          extra={"provider": prov.name, "sign_in_with": [
                              {"provider": p.name, "display_name": p.settings.display_name, "login_url": url}
                              for p, url in links]})


def _announce_fallback(app: Flask, identity: Identity, provider: str, primary: str, method: str) -> None:
    """``auth.fallback_used``, then the alert signal of repeated failures
    (``key_type="idp_fallback"``, the person as ``key``): every sign-in
    through a fallback pages whoever is hooked to the alert."""
    signals.fallback_used.send(app, identity=identity, provider=provider, primary=primary, method=method)
    signals.failure_threshold.send(app, key_type="idp_fallback", key=identity.email or identity.id, count=1,
                                   window=0.0)


def _client_key(addr: str | None) -> str:
    """The address a sign-in is counted against: the IPv4 address, or the
    IPv6 /64 (one subscriber usually holds a whole /64 and can rotate inside it)."""
    try:
        ip = ipaddress.ip_address(addr or "")
    except ValueError:
        return "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False).network_address) + "/64"
    return str(ip)


def _over_login_rate(state: Any, provider: str) -> Response | None:
    """At most ``CCSSO_LOGIN_RATE_LIMIT`` sign-ins started per client address
    and window (a counter in the shared store, so every worker counts the
    same). Beyond it: 429 before anything is stored, and the first refusal of
    each window is audited (``auth.login_failed``, reason ``rate_limited``) --
    one event, not one per request, so the flood does not move to the audit
    trail."""
    limit = login_rate_limit(current_app.config)
    if limit is None:
        return None
    count_max, window = limit
    count = state.store.incr(f"login-rate:{_client_key(request.remote_addr)}", window)
    if count <= count_max:
        return None
    exc = LoginRateLimited(retry_after=window)
    if count == count_max + 1:
        _fail(provider, exc)
    return error_response(exc)


def _bound_per_browser(state: Any) -> None:
    """Keep at most ``CCSSO_MAX_PENDING_LOGINS`` pending sign-ins per browser
    (those with a binding; SAML sign-ins from a browser without a session are
    bounded by the address limit alone)."""
    saved = saved_pending()
    if saved is None or browser_binding(create=False) is None:
        return
    session[PENDING_KEY] = limit_per_browser(state.store, session.get(PENDING_KEY), saved[0],
                                             max_pending_logins(current_app.config))


def login_rate_limit(config: Any) -> tuple[int, float] | None:
    """``CCSSO_LOGIN_RATE_LIMIT`` as ``(count, seconds)``; ``None`` when switched off (``0``/``False``)."""
    value = config.get("CCSSO_LOGIN_RATE_LIMIT", LOGIN_RATE_LIMIT)
    if value is None or value is False or value == 0:
        return None
    if isinstance(value, (tuple, list)) and len(value) == 2:
        try:
            pair = {"count": value[0], "window": value[1]}
            return (int(setting_number(pair, "count", 0, minimum=1, maximum=MAX_COUNT, whole=True)),
                    setting_number(pair, "window", 0, minimum=1, maximum=86400))
        except ConfigError:
            pass  # the message below names the setting and both parts
    raise ConfigError("CCSSO_LOGIN_RATE_LIMIT", "must be (count, seconds): a whole count of at least 1 and a "
                      "window of 1 to 86400 seconds, or 0 to switch the limit off.", "e.g. (600, 60).")


def max_pending_logins(config: Any) -> int:
    """``CCSSO_MAX_PENDING_LOGINS``: pending sign-ins one browser keeps (1 to 100)."""
    return setting_int(config, "CCSSO_MAX_PENDING_LOGINS", MAX_PENDING_LOGINS, minimum=1, maximum=100)


@bp.record_once
def _check_settings(setup: Any) -> None:
    """Refuse bad limits when the app starts, not at the first sign-in; offer
    ``csrf_token()`` to templates (``ccsso_csrf_token()`` always, the short
    name unless another extension such as Flask-WTF took it)."""
    login_rate_limit(setup.app.config)
    max_pending_logins(setup.app.config)
    setup.app.jinja_env.globals["ccsso_csrf_token"] = csrf.csrf_token
    setup.app.jinja_env.globals.setdefault("csrf_token", csrf.csrf_token)


def _current_auth_time(provider: str) -> float | None:
    """``auth_time`` of this browser's signed-in session at ``provider``."""
    record = load_live(session.get(SESSION_KEY))
    return record.auth_time if record is not None and record.provider == provider else None


def _finish(provider: str, params_from_form: bool) -> Response:
    state = _state()
    prov = _provider(provider)
    app = current_flask_app()
    try:
        result = _finish_at_provider(state, prov, params_from_form)
    except IdPUnavailable as exc:
        # the IdP went away between the sign-in's start and its return (its JWKS, its metadata):
        # a provider with fallbacks offers them, as the login page does -- not to a step-up
        landing = _fallback_landing(prov, params_from_form)
        if landing is None:
            raise
        return _fallback_page(prov, exc, landing)
    if prov.settings.fallback_only and not result.fallback_for:
        # not started as a fallback sign-in (an unsolicited SAML response): refused as at the login
        refused = FallbackNotNeeded(f"{prov.settings.display_name} is for emergencies only, and this sign-in "
                                    "was not started while the provider it stands in for was unreachable.")
        _fail(provider, refused)
        raise refused
    if result.step_up:
        _refuse_another_person(provider, result.identity, safe_next(result.next_url))
    resubmit = take_resubmit()  # read before the sign-in clears the session
    try:
        # the session and its index entries are stored here, in one batch,
        # before the sign-in is announced: a sign-in that could not be stored
        # is a refused one (login_failed, store_unavailable), never a login
        state.gate.establish(app, result.identity, tokens=result.tokens, logout_state=result.logout_state)
    except CCSSOError as exc:  # the store went away between the check and the write
        _forget_here()  # nothing was stored: the 503 must not carry a signed-in session
        _fail(provider, exc)
        raise
    if state.deprovisioned is not None:
        _refuse_if_deprovisioned_meanwhile(state, provider, result.identity)
    g._ccsso_identity = result.identity
    signals.user_logged_in.send(app, identity=result.identity, provider=provider, method=prov.protocol,
                                step_up=result.step_up)
    if result.fallback_for and not result.step_up:
        _announce_fallback(app, result.identity, provider, result.fallback_for, prov.protocol)
    landing = safe_next(result.next_url)
    if result.step_up and result.step_up_skill:
        signals.stepup_satisfied.send(app, identity=result.identity, skill=result.step_up_skill, provider=provider)
        resubmit_notice_after(resubmit, skill=result.step_up_skill, landing=landing, now=state.clock(),
                              max_age=float(getattr(prov.settings, "login_state_ttl", 600.0)))
    return redirect(landing, 303 if params_from_form else 302)


def _callback_request(prov: Provider, params_from_form: bool) -> CallbackRequest:
    return CallbackRequest(args=request.args, form=request.form if params_from_form else {}, method=request.method,
                           url=request.url, redirect_uri=redirect_uri_for(prov),
                           browser_binding=browser_binding(create=False) if prov.protocol == "oidc" else None,
                           content_length=request.content_length)


def _fallback_landing(prov: Provider, params_from_form: bool) -> str | None:
    """For a callback whose IdP became unreachable: the ``next`` of its
    pending sign-in, which the fallback page's links keep -- or ``None``
    when no fallback is offered: ``prov`` names none or is not unavailable,
    the pending sign-in is a step-up (it must come back from this provider),
    or it cannot be told whether it is one."""
    if not prov.settings.fallback or not prov.availability().unavailable:
        return None
    pending = prov.pending_sign_in(_callback_request(prov, params_from_form))
    if pending is None or pending_step_up(pending):
        return None
    return safe_next(pending.get("next"))


def _finish_at_provider(state: CCSSOState, prov: Provider, params_from_form: bool) -> LoginResult:
    """The provider checks the IdP's answer (every refusal announced, :func:`_audited`)."""
    with _audited(prov.name):
        check_store(session)
        result = prov.finish_login(_callback_request(prov, params_from_form))
        if state.deprovisioned is not None and state.deprovisioned.any_marker(result.identity):
            # SCIM deprovisioned this person: no new session until SCIM re-activates them
            raise AccountDeprovisioned(subject=result.identity.subject, email=result.identity.email)
    return result


def _refuse_if_deprovisioned_meanwhile(state: CCSSOState, provider: str, identity: Identity) -> None:
    """The deprovisioning race, closed: SCIM writes its markers, then revokes the
    person's indexed sessions; a sign-in checked the markers before they were
    written, then stores its session (and index entries) in one batch. Checked
    again now that it is stored, either the markers are seen here (this session
    is ended and the sign-in refused) or they were written after the session was
    indexed, and the revocation that follows them finds it. One store read per
    sign-in, only with SCIM on."""
    assert state.deprovisioned is not None
    try:
        deprovisioned = state.deprovisioned.any_marker(identity)
    except CCSSOError as err:  # unknown either way: this browser leaves without the stored session
        _forget_here()  # (indexed: a revocation still finds the record)
        _fail(provider, err)
        raise
    if not deprovisioned:
        return
    exc = AccountDeprovisioned(subject=identity.subject, email=identity.email)
    try:
        state.sessions.sign_out(identity, current_session())
    finally:  # stored or not, this browser leaves without it; the record is ended or unreachable
        _forget_here()
        _fail(provider, exc)
    raise exc


def _refuse_another_person(provider: str, answered: Identity, asked_from: str) -> None:
    """A step-up must come back as the person signed in here
    (:func:`~flask_ccsso.gate.stepup.subject_mismatch`): otherwise 400
    ``stepup_subject_mismatch``, announced as ``login_failed`` (the actor is
    the session's person, the detail names the account that answered), and
    this browser's session is left exactly as it was -- checked before
    :meth:`~flask_ccsso.gate.session.SessionGate.establish` touches it.
    The page's "Try again" leads back to ``asked_from`` (which asks for the
    step-up again, with a fresh prompt), never to a plain sign-in: the IdP
    may still hold the other account's session and would sign it in silently."""
    record = _signed_in_record()
    try:
        before = record.person() if record is not None else None
    except (KeyError, TypeError, ValueError):
        before = None  # a damaged record is no one to protect; the sign-in replaces it
    exc = subject_mismatch(before, answered)
    if exc is None:
        return
    g._ccsso_retry_url = asked_from
    signals.login_failed.send(current_flask_app(), provider=provider, reason=exc.reason,
                              detail=f"step-up answered by another account ({answered.id}); the session was kept",
                              subject=exc.extra.get("subject"), email=exc.extra.get("email"))
    raise exc


@bp.route("/<provider>/callback", methods=["GET"])
def callback(provider: str) -> Response:
    return _finish(provider, params_from_form=False)


@bp.route("/<provider>/acs", methods=["POST"])
def acs(provider: str) -> Response:
    return _acs(provider)


def _acs(provider: str) -> Response:
    """The SAML ACS: the body is bounded (and read within the bound) before
    the form is handed on, so a huge post is a 413, not a parsed form."""
    prov = _provider(provider)
    with _audited(provider):
        _bound_body(prov, form=True)
    return _finish(provider, params_from_form=True)


def _body_limit(prov: Any) -> int | None:
    size = getattr(prov, "max_post_size", None)
    return int(size()) if callable(size) else None


def _set_body_limit(prov: Any) -> int | None:
    """Flask's per-request limits (3.1+): every later read of the body --
    ``request.form``, ``get_data``, an app's own hook -- stops at this many
    bytes with a 413 instead of buffering whatever was sent."""
    limit = _body_limit(prov)
    if limit is not None:
        request.max_content_length = limit
        request.max_form_memory_size = limit
    return limit


def _bound_body(prov: Any, *, form: bool) -> None:
    """Refuse a body over the route's limit (by its Content-Length, unread;
    a chunked one as soon as the read passes the limit), then read it:
    the form (ACS) or the raw bytes (SLO, which splits them itself)."""
    limit = _set_body_limit(prov)
    if limit is None:
        return
    length = request.content_length
    if length is not None and length > limit:
        raise RequestTooLarge(f"The SAML message is too large (this endpoint accepts at most {limit} bytes).")
    try:
        if form:
            request.form  # noqa: B018 - parse now, inside the limit
        else:
            request.get_data(cache=True)
        too_large = length is None and _stream_goes_on()
    except RequestEntityTooLarge:
        too_large = True
    if too_large:
        raise RequestTooLarge(f"The SAML message is too large (this endpoint accepts at most {limit} bytes).")


def _stream_goes_on() -> bool:
    """A streamed (chunked) body read whole stops silently at the limit;
    one more byte from the server's own stream tells whether it went on.
    Only where the server terminates the stream (``wsgi.input_terminated``),
    so the probe cannot wait for bytes that never come."""
    if "wsgi.input_terminated" not in request.environ:
        return False
    try:
        return bool(request.environ["wsgi.input"].read(1))
    except (OSError, ValueError):
        return False


@bp.url_value_preprocessor
def _early_body_limit(endpoint: str | None, values: dict[str, Any] | None) -> None:
    """URL value preprocessors run before every ``before_request`` hook (the
    app's included): the SAML endpoints' body limit is in force before any
    code of ours or the app's could parse the body."""
    if endpoint in ("ccsso.acs", "ccsso.slo") and request.method == "POST" and values:
        prov = _state().providers.get(str(values.get("provider") or ""))
        if prov is not None:
            _set_body_limit(prov)


@bp.route("/<provider>/metadata", methods=["GET"])
def metadata(provider: str) -> Response:
    prov = _provider(provider)
    if not hasattr(prov, "metadata_xml"):
        raise UnknownProvider("This provider has no SAML metadata.")
    xml = prov.metadata_xml(acs_url=redirect_uri_for(prov), slo_url=url_for("ccsso.slo", provider=provider,
                                                                           _external=True))
    return Response(xml, mimetype="application/samlmetadata+xml")


@bp.route("/<provider>/slo", methods=["GET", "POST"])
def slo(provider: str) -> Response:
    """SAML single logout endpoint (IdP-initiated requests and SP-initiated responses)."""
    prov = _provider(provider)
    if not isinstance(prov, SAMLProvider):
        raise UnknownProvider("This provider has no SAML single logout.")
    try:
        if request.method == "POST":
            _bound_body(prov, form=False)
        result = prov.handle_slo(request)
        if result.subject is None:  # the IdP answered a logout started here
            return redirect(url_for("ccsso.logged_out"))
        count = _state().sessions.revoke_at_idp(prov.name, result.subject, result.idp_sessions)
        signals.session_revoked.send(current_flask_app(),
                                     subject=result.subject, provider=prov.name, count=count, reason="saml_slo")
        return redirect(prov.logout_response_url(result.request_id or "", result.relay_state))
    except CCSSOError as exc:
        _fail_logout(provider, exc)
        raise
    except Exception as exc:
        log.exception("flask-ccsso: unexpected error while handling a SAML logout message for provider %r", provider)
        err = AuthenticationFailed("The logout message could not be processed.", reason=reasons.INVALID_RESPONSE)
        _fail_logout(provider, err)
        raise err from exc


def _fail_logout(prov_name: str, exc: CCSSOError) -> None:
    """Every refused logout message is announced like a refused sign-in (the
    audit trail's ``auth.login_failed``), its detail saying it was a logout,
    as the OIDC back-channel logout does."""
    app = current_flask_app()
    signals.login_failed.send(app, provider=prov_name, reason=exc.reason,
                              detail=f"SAML logout: {exc.description}", subject=None, email=None)


@bp.route("/<provider>/backchannel-logout", methods=["POST"])
def backchannel_logout(provider: str) -> Response:
    prov = _provider(provider)
    if not isinstance(prov, OIDCProvider):
        raise UnknownProvider("This provider has no back-channel logout.")
    return handle_backchannel_logout(_state(), prov, request)


#: headers of the library's own confirm page: never framed (a sign-out button
#: under someone else's page is clickjacking), never cached, no referrer out
def _signed_in_record() -> SessionRecord | None:
    return load_live(session.get(SESSION_KEY))


def _confirm_logout(status: int, message: str) -> Response:
    """The page that asks before signing out: a form posting back with the token."""
    html = render_page("ccsso/logout.html", title="Sign out?", message=message,
                       action_url=url_for("ccsso.logout"), field=csrf.FORM_FIELD, token=csrf.csrf_token())
    resp = Response(html, status=status, mimetype="text/html")
    # the library's security headers come from responses.library_security_headers;
    # no CSP form-action here: Chrome applies it to the POST's redirect to the IdP
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.route("/logout", methods=["GET", "POST"])
def logout() -> Any:
    """Sign out: only a POST carrying this session's CSRF token ends the session.

    A GET -- a link, a typed URL, an ``<img>`` or a top-level navigation
    another site started (SameSite=Lax cookies ride along on those) --
    changes nothing: browsers get a small confirm page whose form posts back
    with the token, API clients a 405. A POST without the token, with another
    one, or marked cross-site is refused (400, the confirm page again for
    browsers) and audited as ``permission.denied`` with reason ``csrf_failed``.
    """
    check_store(session)
    record = _signed_in_record()
    if request.method != "POST":
        if wants_json():
            return error_response(_LogoutNeedsPost())
        if record is None:
            return redirect(url_for("ccsso.logged_out"), 302)
        return _confirm_logout(200, "Do you want to sign out?")
    try:
        csrf.check_csrf()
    except CSRFError as exc:
        if record is None:  # nothing to protect: nobody is signed in
            return redirect(url_for("ccsso.logged_out"), 303)
        csrf.announce(exc)
        if wants_json():
            return error_response(exc)
        return _confirm_logout(400, "The sign-out request did not come from this portal's own page (or the page "
                                    "was out of date), so you are still signed in. Sign out now?")
    return _end_session(record)


class _LogoutNeedsPost(CCSSOError, MethodNotAllowed):
    reason = "method_not_allowed"
    description = f"Sign out with a POST carrying the CSRF token (form field {csrf.FORM_FIELD!r} or header {csrf.HEADER})."

    def __init__(self) -> None:
        super().__init__()
        self.valid_methods = ["POST"]

    def response_headers(self) -> dict[str, str]:
        return {"Allow": "POST"}


def _end_session(record: SessionRecord | None) -> Response:
    """End this browser's session here (and at the IdP, when it supports that).

    The session is ended in the store first (record and index entries, one
    batch: :meth:`~flask_ccsso.sessions.index.SessionIndex.sign_out`), and
    only then announced. When the store cannot be reached nothing changed:
    the answer is 503 (JSON for API clients), the audit trail records a
    refused sign-out (``auth.logout_failed``, reason ``store_unavailable``)
    -- never ``auth.logout`` -- and the session
    stays signed in, listed and revocable, for the person to sign out again."""
    state = _state()
    app = current_flask_app()
    target = url_for("ccsso.logged_out")
    if record is None:
        session.clear()
        return redirect(target, 303)
    identity = record.person()
    prov = state.providers.get(identity.provider)
    idp_url = None
    if prov is not None:
        try:
            idp_url = prov.logout_url(record.logout, url_for("ccsso.logged_out", _external=True))
        except CCSSOError:
            idp_url = None
    try:
        state.sessions.sign_out(identity, current_session())
    except CCSSOError as exc:
        g._ccsso_retry_url = url_for("ccsso.logout")  # "Try again" signs out again (the confirm page)
        signals.logout_failed.send(app, identity=identity, provider=identity.provider, reason=exc.reason,
                                   detail="the session could not be ended (session store unreachable); "
                                          "it is still signed in")
        raise
    _forget_here()
    signals.user_logged_out.send(app, identity=identity, provider=identity.provider, idp_logout=bool(idp_url))
    return redirect(idp_url or target, 303)


def _forget_here() -> None:
    """Empty this request's session without another store write: the store
    already holds what it should (the record deleted, or never written), so
    the end of the request only removes the cookie."""
    sess = current_session()
    sess.clear()
    sess.written = True


@bp.route("/logged-out", methods=["GET"])
def logged_out() -> str:
    return render_page("ccsso/message.html", title="Signed out", message="You have been signed out.",
                       reason=None, retry_url=url_for("ccsso.choose"), retry_label="Sign in again")


def register_callback_aliases(app: Flask, providers: Mapping[str, Provider], prefix: str) -> None:
    """Serve each provider's callback at the path of its configured redirectUri too."""
    for name, prov in providers.items():
        uri = getattr(prov.settings, "redirect_uri", None) or getattr(prov.settings, "acs_url", None)
        if not uri:
            continue
        path = urlsplit(uri).path or "/"
        is_saml = prov.protocol == "saml"
        default = f"{prefix}/{name}/{'acs' if is_saml else 'callback'}"
        if path == default:
            continue
        view = (lambda _n=name: _acs(_n)) if is_saml else (lambda _n=name: _finish(_n, False))
        app.add_url_rule(path, endpoint=f"ccsso_callback_{name}", view_func=view,
                         methods=["POST"] if is_saml else ["GET"])
        if is_saml and _alias_body_limit not in app.url_value_preprocessors[None]:
            app.url_value_preprocessor(_alias_body_limit)


def _alias_body_limit(endpoint: str | None, values: dict[str, Any] | None) -> None:
    """:func:`_early_body_limit` for an ACS served at its ``acsUrl`` path."""
    if endpoint and endpoint.startswith("ccsso_callback_") and request.method == "POST":
        prov = _state().providers.get(endpoint[len("ccsso_callback_"):])
        if prov is not None and prov.protocol == "saml":
            _set_body_limit(prov)


@bp.route("/login", methods=["GET"])
def choose() -> Response | str:
    """Provider chooser (or straight through when there is only one)."""
    state = _state()
    next_url = safe_next(request.args.get("next"))
    if len(state.providers) == 1 or state.config.default_provider and request.args.get("choose") is None:
        name = state.config.default_provider or next(iter(state.providers))
        return redirect(url_for("ccsso.login", provider=name, next=next_url))
    # providers known to be unreachable (their last fetch failed: no network I/O here) get a banner
    # offering their fallbacks, whose buttons then say whom they stand in for
    outages = [_outage(p, next_url) for p in state.providers.values()
               if p.settings.fallback and p.availability().unavailable]
    links = {o.provider.name: o.url for outage in outages for o in outage.offers}
    # a fallbackOnly provider shows only while a provider it stands in for is known to be unavailable
    shown = [p for p in state.providers.values() if not p.settings.fallback_only or _needed(state, p)]
    return render_page("ccsso/choose.html", providers=shown, next_url=next_url, outages=outages, links=links)
