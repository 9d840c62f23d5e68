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

from flask import Response, current_app, g, jsonify, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException, InternalServerError

from .exceptions import CCSSOError, LoginRequired, StepUpRequired
from .gate.stepup import login_url_for
from .state import get_state

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
    blueprint = request.blueprint or ""
    endpoint = request.endpoint or ""
    if blueprint == "ccsso" or blueprint.startswith("ccsso_devidp") or endpoint.startswith("ccsso_callback_"):
        return True
    return request.path.startswith(get_state().url_prefix + "/")


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


def error_response(exc: HTTPException, *, as_json: bool | None = None, extra: dict[str, Any] | None = None,
                   action_url: str | None = None, action_label: str | None = None) -> Response:
    """The response for ``exc``: JSON (``error``, ``error_description`` and the
    error's :meth:`~flask_ccsso.exceptions.CCSSOError.body_extra`) for API
    clients (``as_json=None``: :func:`wants_json` decides), else the HTML
    message page; the error's own headers, ``no-store``, the library's
    security headers, a ``WWW-Authenticate`` challenge on a JSON 401."""
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
        html = render_template("ccsso/message.html", title=title, message=description,
                               reason=reason, request_id=None, action_url=action_url, action_label=action_label)
        resp = Response(html, mimetype="text/html")
    resp.status_code = code
    resp.headers["Cache-Control"] = "no-store"
    add_security_headers(resp)  # a page of ours, whichever route it answers
    if code == 503:
        resp.headers["Retry-After"] = "5"
    if code == 401 and isinstance(exc, CCSSOError) and (as_json or isinstance(exc, StepUpRequired)):
        resp.headers["WWW-Authenticate"] = bearer_challenge(exc)
    if isinstance(exc, CCSSOError):
        resp.headers.update(exc.response_headers())
    return resp


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
        nxt = request.full_path if request.method == "GET" else (
            request.referrer and urlsplit(request.referrer).path) or "/"
        return redirect(login_url_for(identity.provider, nxt.removesuffix("?"), get_state().url_prefix, exc.skill))
    if isinstance(exc, LoginRequired) and not wants_json():
        nxt = request.full_path.removesuffix("?") if request.method == "GET" else "/"
        login_view = current_app.config.get("CCSSO_LOGIN_VIEW")
        return redirect(url_for(login_view or "ccsso.choose", next=nxt))
    return error_response(exc)


def bearer_challenge(exc: CCSSOError) -> str:
    """``WWW-Authenticate`` for API clients (RFC 6750, RFC 9470 for step-up)."""
    if isinstance(exc, StepUpRequired):
        parts = ['Bearer error="insufficient_user_authentication"',
                 f'error_description="{_q(exc.description or "")}"']
        if exc.max_age is not None:
            parts.append(f'max_age="{int(exc.max_age)}"')
        if exc.acr_values:
            parts.append(f'acr_values="{_q(" ".join(exc.acr_values))}"')
        return ", ".join(parts)
    if getattr(exc, "code", None) == 401:
        err = "invalid_token" if request.headers.get("Authorization", "").lower().startswith("bearer ") else None
        return 'Bearer' + (f' error="{err}", error_description="{_q(exc.description or "")}"' if err else "")
    return "Bearer"


def _q(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', "'")


__all__ = ["SECURITY_HEADERS", "add_security_headers", "bearer_challenge", "error_response", "handle_error",
           "is_library_request", "library_security_headers", "login_url_for", "wants_json"]
