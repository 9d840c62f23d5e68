"""Turning errors into responses: HTML for browsers, JSON for APIs.

The one place this happens. An error class carries what its response needs
(status, ``reason``, :meth:`~flask_ccsso.exceptions.CCSSOError.body_extra`,
:meth:`~flask_ccsso.exceptions.CCSSOError.response_headers`), like Authlib's
errors; :func:`error_response` renders any of them and :func:`handle_error`
(the app's error handler for :class:`~flask_ccsso.exceptions.CCSSOError`)
adds the browser redirects for sign-in and step-up.

Never a traceback, never a secret: only the error's ``description`` (written
to be safe to show) and its ``reason`` code.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, g, jsonify, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.wrappers import Response as BaseResponse

from ._context import unproxied
from .exceptions import CCSSOError, ConfigError, LoginRequired, SkillRequired, StepUpRequired, StoreUnavailable
from .gate.stepup import forget_resubmit, login_url_for, remember_resubmit
from .state import EXTENSION_KEY, get_state

log = logging.getLogger("flask_ccsso")

_TITLES = {400: "Sign-in failed", 401: "Sign-in required", 403: "Access denied", 404: "Not found",
           429: "Too many requests", 503: "Temporarily unavailable"}


#: what every page flask-ccsso itself serves carries (the app's own pages are
#: the app's business). The pages need nothing but their inline ``<style>``:
#: no script runs, nothing frames them (clickjacking of the sign-in chooser,
#: the sign-out confirmation, the dev IdP's login), and no ``Referer`` leaves
#: them -- the OIDC callback URL holds the authorization ``code`` and
#: ``state``, and the redirect it answers with would pass them on.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
                               "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def add_security_headers(response: Response) -> Response:
    """Add :data:`SECURITY_HEADERS`, keeping any the app already set."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def is_library_request() -> bool:
    """Is this request for a page of flask-ccsso's own: its blueprint, a
    callback alias (a ``redirectUri`` outside the prefix), the development
    IdP mounted on this app, or any path under the prefix (its 404s)."""
    req = unproxied(request)  # after every response: one context lookup
    endpoint = req.endpoint or ""
    blueprint = (req.blueprint or "") if "." in endpoint else ""
    if blueprint == "ccsso" or blueprint.startswith("ccsso_devidp") or endpoint.startswith("ccsso_callback_"):
        return True
    return req.path.startswith(get_state().url_prefix + "/")


def library_security_headers(response: Response) -> Response:
    """``after_request``: :data:`SECURITY_HEADERS` on the library's own pages."""
    if is_library_request():
        add_security_headers(response)
    return response


def wants_json() -> bool:
    """API clients: a bearer token, or an Accept header preferring JSON over HTML."""
    if request.headers.get("Authorization", "").lower().startswith("bearer "):
        return True
    if request.is_json and request.method != "GET":
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    if best == "application/json":
        return request.accept_mimetypes["application/json"] > request.accept_mimetypes["text/html"]
    return False


#: ``app.config`` keys for the way out of the library's pages ("Back to <app>")
APP_NAME_KEY = "CCSSO_APP_NAME"
HOME_URL_KEY = "CCSSO_HOME_URL"


def page_settings(app: Flask) -> tuple[str, str]:
    """``(app name, home URL)`` for the library's pages: ``CCSSO_APP_NAME``
    (default ``app.name``) and ``CCSSO_HOME_URL`` (default ``/``; a path on
    this site or an absolute http(s) URL). Checked at ``init_app``, so a bad
    one is a start-up :class:`~flask_ccsso.exceptions.ConfigError`, never a
    broken link on an error page."""
    name = app.config.get(APP_NAME_KEY) or app.name
    home = app.config.get(HOME_URL_KEY) or "/"
    if not isinstance(name, str) or not name.strip() or any(ord(c) < 32 for c in name):
        raise ConfigError(APP_NAME_KEY, "must be a one-line text.", "e.g. app.config['CCSSO_APP_NAME'] = 'Portal'.")
    parts = urlsplit(home) if isinstance(home, str) else None
    relative = parts is not None and home.startswith("/") and not home.startswith("//") and not parts.netloc
    absolute = parts is not None and parts.scheme in ("http", "https") and bool(parts.netloc)
    if not (relative or absolute) or any(ord(c) < 33 for c in str(home)):
        raise ConfigError(HOME_URL_KEY, f"must be a path such as '/' or an http(s) URL, not {home!r}.",
                          "e.g. app.config['CCSSO_HOME_URL'] = '/dashboard'.")
    return name.strip(), home


def render_page(template: str, **context: Any) -> str:
    """Render one of the library's pages (``ccsso/*.html``) with what every
    page links to: ``app_name`` and ``home_url`` (:func:`page_settings`).
    An app's own ``templates/ccsso/<name>.html`` wins over the library's
    (Flask searches the app's template folder first)."""
    app_name, home_url = page_settings(current_app)
    context.setdefault("app_name", app_name)
    context.setdefault("home_url", home_url)
    return render_template(template, **context)


def retry_url() -> str | None:
    """Where "Try again" leads from an error page: a failed sign-in (a page of
    the library: callback, ACS, login) starts a new sign-in; any other page
    answered by GET (access denied, a store outage) is loaded again; a
    refused form post has no safe repeat, so no link. A view may name its
    own (``g._ccsso_retry_url``): a refused step-up retries the step-up from
    the page that asked for it, not a plain sign-in."""
    chosen = g.get("_ccsso_retry_url")
    if isinstance(chosen, str):
        return chosen
    if is_library_request():
        return url_for("ccsso.choose")
    if request.method in ("GET", "HEAD"):
        return request.full_path.removesuffix("?")
    return None


def error_response(exc: HTTPException, *, as_json: bool | None = None, extra: dict[str, Any] | None = None,
                   action_url: str | None = None, action_label: str | None = None) -> Response:
    """The response for ``exc``: JSON (``error``, ``error_description`` and the
    error's :meth:`~flask_ccsso.exceptions.CCSSOError.body_extra`) for API
    clients (``as_json=None``: :func:`wants_json` decides), else the HTML
    message page (``ccsso/message.html``, with "Try again" -- see
    :func:`retry_url` -- and "Back to <app>"); the error's own headers,
    ``no-store``, the library's security headers, a ``WWW-Authenticate``
    challenge on a JSON 401."""
    code = exc.code or 500
    reason = getattr(exc, "reason", None) or "error"
    description = exc.description or _TITLES.get(code, "Error")
    as_json = wants_json() if as_json is None else as_json
    if as_json:
        body: dict[str, Any] = {"error": reason, "error_description": description}
        if isinstance(exc, CCSSOError):
            body.update(exc.body_extra())
        body.update(extra or {})
        resp = jsonify(body)
    else:
        title = getattr(exc, "title", None) or _TITLES.get(code, "Error")
        html = render_page("ccsso/message.html", title=title, message=description, reason=reason, request_id=None,
                           retry_url=retry_url(), action_url=action_url, action_label=action_label)
        resp = Response(html, mimetype="text/html")
    resp.status_code = code
    resp.headers["Cache-Control"] = "no-store"
    add_security_headers(resp)  # a page of ours, whichever route it answers
    if code == 503:
        resp.headers["Retry-After"] = str(_retry_after(exc))
    if code == 401 and isinstance(exc, CCSSOError) and (as_json or isinstance(exc, StepUpRequired)):
        resp.headers["WWW-Authenticate"] = bearer_challenge(exc)
    elif code == 403 and isinstance(exc, SkillRequired) and exc.missing_scopes and _sent_bearer():
        resp.headers["WWW-Authenticate"] = bearer_challenge(exc)  # RFC 6750 3.1 insufficient_scope
    if isinstance(exc, CCSSOError):
        resp.headers.update(exc.response_headers())
    return resp


#: the ``Retry-After`` of a 503 when nothing knows better (seconds)
DEFAULT_RETRY_AFTER = 5


def _retry_after(exc: HTTPException) -> int:
    """The ``Retry-After`` of a 503 (an error raised with its own ``retry_after``
    overrides it, :meth:`~flask_ccsso.exceptions.CCSSOError.response_headers`).

    An unreachable store whose circuit breaker is open is not tried again
    before the breaker's cool-down ends: the 503 says how long that is (whole
    seconds, rounded up, at least 1). The error often cannot carry it itself:
    a session that could not be read becomes a :class:`StoreUnavailable`
    later, in the request gate, and a failed save is answered after the
    fact. So the breakers of the app's stores (the session store's and the
    shared state's) are asked here, at answer time; the longer wait wins.
    Otherwise (a refused connection, which fails at once and opens no
    breaker) it is :data:`DEFAULT_RETRY_AFTER`."""
    if isinstance(exc, StoreUnavailable) and exc.extra.get("retry_after") is None:
        state = current_app.extensions.get(EXTENSION_KEY)
        stores = (getattr(current_app.session_interface, "store", None), getattr(state, "store", None))
        breakers = [breaker for store in stores if (breaker := getattr(store, "breaker", None)) is not None]
        waits: list[int] = [wait for breaker in breakers if (wait := breaker.retry_after()) is not None]
        if waits:
            return max(waits)
    return DEFAULT_RETRY_AFTER


def store_unavailable_into(response: BaseResponse) -> None:
    """Turn ``response`` -- already made, when saving the session failed --
    into the 503 of :class:`~flask_ccsso.exceptions.StoreUnavailable`, as
    :func:`error_response` answers it anywhere else: JSON to API clients
    (:func:`wants_json`), the library's page to browsers. Nothing of the
    view's answer survives that could claim success: its body, its redirect
    and its cookies go; headers an ``after_request`` hook added (CORS, say)
    stay. (The session interface calls this; see
    :attr:`~flask_ccsso.sessions.interface.CCSSOSessionInterface.unavailable_answer`.)"""
    answer = error_response(StoreUnavailable())
    for name in ("Location", "Set-Cookie", "Content-Type", "Content-Length", "Content-Encoding", "ETag",
                 "Last-Modified", "Content-Disposition"):
        response.headers.pop(name, None)
    response.status_code = answer.status_code
    response.set_data(answer.get_data())
    for name, value in answer.headers.items():
        if name != "Content-Length":  # set_data set it
            response.headers[name] = value


def handle_error(exc: CCSSOError) -> Response:
    """The app's error handler for every :class:`CCSSOError`: a browser that
    must sign in (again, or more strongly) is redirected; everything else is
    :func:`error_response`."""
    if not isinstance(exc, HTTPException):
        # a ConfigError or similar at request time is a bug on our side; show
        # a plain 500 page without details, log the rest for the operator
        log.error("flask-ccsso: %s", exc)
        return error_response(InternalServerError("Single sign-on is misconfigured; the operator has been told."))
    if isinstance(exc, StepUpRequired):
        identity = g.get("_ccsso_identity")
        if wants_json() or not identity or getattr(identity, "via", None) == "bearer":
            return error_response(exc)
        return _step_up_redirect(exc, identity)
    if isinstance(exc, LoginRequired) and not wants_json():
        nxt = request.full_path.removesuffix("?") if request.method == "GET" else "/"
        login_view = current_app.config.get("CCSSO_LOGIN_VIEW")
        return redirect(url_for(login_view or "ccsso.choose", next=nxt))
    return error_response(exc)


#: methods a browser repeats by itself after the step-up (the round trip ends in a GET)
_REPEATABLE = ("GET", "HEAD")


def _step_up_redirect(exc: StepUpRequired, identity: Any) -> BaseResponse:
    """Send a browser to its IdP for step-up, and back to where it was.

    A GET comes back to the same URL. A form post cannot be replayed (the
    round trip ends in a GET, and replaying a sensitive post nobody pressed
    again is what CSRF defences forbid), so the browser comes back to the
    page the form was on -- and that page learns, through
    :func:`~flask_ccsso.gate.stepup.stepup_notice`, that nothing was carried
    out and the form must be sent again. Never silently dropped."""
    state = get_state()
    if request.method in _REPEATABLE:
        forget_resubmit()
        nxt = request.full_path.removesuffix("?")
    else:
        nxt = _form_page()
        remember_resubmit(exc.skill or "", request.method, request.path, nxt, state.clock())
    return redirect(login_url_for(identity.provider, nxt, state.url_prefix, exc.skill))


def _form_page() -> str:
    """The page a non-GET request came from: the ``Referer`` when it is this
    origin (path and query; another site's page is never a destination);
    else the request's own path when that route answers GET (a form posting
    to its own page, the usual Flask pattern); else ``/``."""
    ref = urlsplit(request.referrer or "")
    here = urlsplit(request.host_url)
    if ref.scheme == here.scheme and ref.netloc == here.netloc and ref.path.startswith("/"):
        return ref.path + (f"?{ref.query}" if ref.query else "")
    rule = request.url_rule
    if rule is not None and rule.methods is not None and "GET" in rule.methods:
        return request.path
    return "/"


def bearer_challenge(exc: CCSSOError) -> str:
    """``WWW-Authenticate`` for API clients (RFC 6750: ``invalid_token``, ``insufficient_scope``;
    RFC 9470 for step-up)."""
    if isinstance(exc, StepUpRequired):
        parts = ['Bearer error="insufficient_user_authentication"',
                 f'error_description="{_q(exc.description or "")}"']
        if exc.max_age is not None:
            parts.append(f'max_age="{int(exc.max_age)}"')
        if exc.acr_values:
            parts.append(f'acr_values="{_q(" ".join(exc.acr_values))}"')
        return ", ".join(parts)
    if isinstance(exc, SkillRequired) and exc.missing_scopes:
        # RFC 6750 3.1: the token lacks scopes the skill requires; scope= names what to ask for
        return (f'Bearer error="insufficient_scope", error_description="{_q(exc.description or "")}", '
                f'scope="{_q(" ".join(exc.missing_scopes))}"')
    if getattr(exc, "code", None) == 401:
        err = "invalid_token" if _sent_bearer() else None
        return 'Bearer' + (f' error="{err}", error_description="{_q(exc.description or "")}"' if err else "")
    return "Bearer"


def _sent_bearer() -> bool:
    """Whether this request presented a bearer token (``Authorization: Bearer ...``)."""
    return request.headers.get("Authorization", "").lower().startswith("bearer ")


def _q(text: str) -> str:
    """``text`` as a quoted-string's content within RFC 6750's charset (``%x20-21 / %x23-5B /
    %x5D-7E``): a description may echo a token's header (its ``alg``), and a character a WSGI
    server cannot send as latin-1 (or a control character) would turn the 401 into a 500."""
    return "".join(c if " " <= c <= "~" and c not in '"\\' else ("'" if c == '"' else "?") for c in text)


__all__ = ["SECURITY_HEADERS", "add_security_headers", "bearer_challenge", "error_response", "handle_error",
           "is_library_request", "library_security_headers", "login_url_for", "page_settings", "render_page",
           "retry_url", "store_unavailable_into", "wants_json"]
