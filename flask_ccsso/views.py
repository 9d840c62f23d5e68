"""The routes: login, callback / ACS, metadata, logout, back-channel logout.

One blueprint, mounted at ``CCSSO_URL_PREFIX`` (default ``/sso``), with the
provider name in the path: ``/sso/<name>/login`` etc. A provider whose
``redirectUri`` has another path (the seed's ``/callback``) is served there
too. The views translate HTTP to provider calls and back; they take no access
decisions and parse no protocol messages themselves.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, current_app, g, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from . import reasons, signals
from .exceptions import AuthenticationFailed, CCSSOError, UnknownProvider
from .providers.base import CallbackRequest, LoginRequest
from .session import SESSION_KEY, browser_binding, check_store

log = logging.getLogger("flask_ccsso")

bp = Blueprint("ccsso", __name__, template_folder="templates")

_BAD_NEXT = re.compile(r"[\x00-\x1f\x7f\\]")


def safe_next(value: str | None, default: str = "/") -> str:
    """Only same-origin relative paths: ``/x?y``, never ``//host``, ``/\\host``,
    ``https://host`` or anything with control characters."""
    if not value or not isinstance(value, str) or len(value) > 2048:
        return default
    if _BAD_NEXT.search(value) or not value.startswith("/") or value.startswith("//"):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    return value


def _state() -> Any:
    from .extension import get_state

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
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    signals.login_failed.send(app, provider=prov_name, reason=exc.reason, detail=exc.description,
                              subject=extra.get("subject"), email=extra.get("email"))


@bp.route("/<provider>/login", methods=["GET"])
def login(provider: str) -> Response:
    state = _state()
    prov = _provider(provider)
    check_store(session)
    next_url = safe_next(request.args.get("next"))
    step_up_skill = request.args.get("stepup")
    req = LoginRequest(redirect_uri=redirect_uri_for(prov), next_url=next_url,
                       browser_binding=browser_binding(create=True) if prov.protocol == "oidc" else None)
    if step_up_skill:
        # stricter only: a step-up request can never weaken a sign-in
        skill = state.config.skills.get(step_up_skill)
        if skill is not None:
            req.force_authn = True
            req.max_age = int(state.max_auth_age(skill))
            req.acr_values = tuple(skill.acr_values)
            req.step_up_skill = step_up_skill
            req.previous_auth_time = _current_auth_time(provider)
    with _audited(provider):
        url = prov.begin_login(req)
    return redirect(url, 302)


def _current_auth_time(provider: str) -> float | None:
    """``auth_time`` of this browser's signed-in session at ``provider``."""
    data = session.get(SESSION_KEY)
    ident = data.get("identity") if isinstance(data, dict) and not data.get("ended") else None
    if not isinstance(ident, dict) or ident.get("provider") != provider:
        return None
    value = ident.get("auth_time")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _finish(provider: str, params_from_form: bool) -> Response:
    state = _state()
    prov = _provider(provider)
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    with _audited(provider):
        check_store(session)
        cb = CallbackRequest(args=request.args, form=request.form if params_from_form else {}, method=request.method,
                             url=request.url, redirect_uri=redirect_uri_for(prov),
                             browser_binding=browser_binding(create=False) if prov.protocol == "oidc" else None,
                             content_length=request.content_length)
        result = prov.finish_login(cb)
    try:
        state.gate.establish(app, result.identity, tokens=result.tokens, logout_state=result.logout_state)
    except CCSSOError as exc:  # the store went away between the check and the write
        session.clear()  # half-written: the 503 must not carry a signed-in session
        _fail(provider, exc)
        raise
    g._ccsso_identity = result.identity
    signals.user_logged_in.send(app, identity=result.identity, provider=provider, method=prov.protocol,
                                step_up=result.step_up)
    if result.step_up and result.step_up_skill:
        signals.stepup_satisfied.send(app, identity=result.identity, skill=result.step_up_skill, provider=provider)
    return redirect(safe_next(result.next_url), 303 if params_from_form else 302)


@bp.route("/<provider>/callback", methods=["GET"])
def callback(provider: str) -> Response:
    return _finish(provider, params_from_form=False)


@bp.route("/<provider>/acs", methods=["POST"])
def acs(provider: str) -> Response:
    return _finish(provider, params_from_form=True)


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
    if not hasattr(prov, "handle_slo"):
        raise UnknownProvider("This provider has no SAML single logout.")
    try:
        return prov.handle_slo(request, _state())  # type: ignore[no-any-return]
    except CCSSOError:
        raise
    except Exception as exc:
        log.exception("flask-ccsso: unexpected error while handling a SAML logout message for provider %r", provider)
        raise AuthenticationFailed("The logout message could not be processed.", reason=reasons.INVALID_RESPONSE) from exc


@bp.route("/<provider>/backchannel-logout", methods=["POST"])
def backchannel_logout(provider: str) -> Response:
    prov = _provider(provider)
    handler = getattr(_state(), "backchannel_logout", None)
    if handler is None or prov.protocol != "oidc":
        raise UnknownProvider("This provider has no back-channel logout.")
    return handler(prov, request)  # type: ignore[no-any-return]


def _cross_site() -> bool:
    """A request another site started (logout CSRF): ``Sec-Fetch-Site`` says
    so in every current browser; ``Origin`` is the fallback for older ones."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin is not None and origin != "null":
        return origin.rstrip("/") != request.host_url.rstrip("/")
    return origin == "null"


@bp.route("/logout", methods=["GET", "POST"])
def logout() -> Any:
    state = _state()
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    check_store(session)
    if _cross_site() and isinstance(session.get(SESSION_KEY), dict):
        # another site cannot sign people out (SameSite=Lax still sends the
        # cookie on a top-level GET): ask, with a same-origin link
        return render_template("ccsso/message.html", title="Sign out?",
                               message="Another site asked to sign you out. Sign out now?", reason=None,
                               action_url=url_for("ccsso.logout"), action_label="Sign out"), 200
    data = session.get(SESSION_KEY)
    target = url_for("ccsso.logged_out")
    if isinstance(data, dict) and "identity" in data:
        from .identity import Identity

        identity = Identity.from_dict(data["identity"])
        prov = state.providers.get(identity.provider)
        idp_url = None
        if prov is not None:
            try:
                idp_url = prov.logout_url(data.get("logout") or {}, url_for("ccsso.logged_out", _external=True))
            except CCSSOError:
                idp_url = None
        state.forget_session(identity, session.sid)  # type: ignore[attr-defined]
        session.clear()
        signals.user_logged_out.send(app, identity=identity, provider=identity.provider, idp_logout=bool(idp_url))
        if idp_url:
            target = idp_url
    else:
        session.clear()
    return redirect(target, 303 if request.method == "POST" else 302)


@bp.route("/logged-out", methods=["GET"])
def logged_out() -> str:
    return render_template("ccsso/message.html", title="Signed out", message="You have been signed out.",
                           reason=None, action_url="/", action_label="Back to the portal")


def register_callback_aliases(app: Flask, state: Any) -> None:
    """Serve each provider's callback at the path of its configured redirectUri too."""
    prefix = state.url_prefix
    for name, prov in state.providers.items():
        uri = getattr(prov.settings, "redirect_uri", None) or getattr(prov.settings, "acs_url", None)
        if not uri:
            continue
        path = urlsplit(uri).path or "/"
        is_saml = prov.protocol == "saml"
        default = f"{prefix}/{name}/{'acs' if is_saml else 'callback'}"
        if path == default:
            continue
        view = (lambda _n=name: _finish(_n, True)) if is_saml else (lambda _n=name: _finish(_n, False))
        app.add_url_rule(path, endpoint=f"ccsso_callback_{name}", view_func=view,
                         methods=["POST"] if is_saml else ["GET"])


@bp.route("/login", methods=["GET"])
def choose() -> Response | str:
    """Provider chooser (or straight through when there is only one)."""
    state = _state()
    next_url = safe_next(request.args.get("next"))
    if len(state.providers) == 1 or state.config.default_provider and request.args.get("choose") is None:
        name = state.config.default_provider or next(iter(state.providers))
        return redirect(url_for("ccsso.login", provider=name, next=next_url))
    return render_template("ccsso/choose.html", providers=list(state.providers.values()), next_url=next_url)
