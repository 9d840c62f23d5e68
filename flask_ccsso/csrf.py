"""CSRF protection for requests that change state with the session cookie.

``SameSite=Lax`` keeps the session cookie off cross-site POSTs in current
browsers, but not off top-level GETs, not in older browsers, and not on posts
from a sibling subdomain (same *site*). So a request that changes state
because of who the cookie says you are carries a token that only pages of
this origin can read, and it changes nothing on a GET:

* :func:`csrf_token` -- this browser session's token: 32 random bytes kept
  server-side in the session, made on first use. Every sign-in rotates the
  session, so every sign-in gets a new token. In a template::

      <form method="post">
        <input type="hidden" name="csrf_token" value="{{ csrf_token() }}">

  or, for ``fetch``, the ``X-CSRF-Token`` header.
* :func:`csrf_protect` -- a view decorator: a POST/PUT/PATCH/DELETE without
  the token, with another one, or that the browser marks as cross-site is
  refused with :class:`~flask_ccsso.exceptions.CSRFError` (400) and a
  ``permission.denied`` audit event with reason ``csrf_failed``. Requests
  authenticated by a bearer token pass: a browser never adds that header on
  its own, and the request's identity is then the token's. Only a token
  that verifies counts: a request whose ``Authorization: Bearer`` header
  does not authenticate is refused (401) before the view runs, so the
  header cannot be added to a forged post to skip the check.

``/sso/logout`` uses the same check. No new crypto: the token is
``secrets.token_urlsafe`` and the comparison ``hmac.compare_digest``.
"""

from __future__ import annotations

import functools
import hmac
import secrets
from collections.abc import Callable
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from flask import g, request, session

from . import reasons, signals
from ._context import current_flask_app
from .exceptions import CCSSOError, CSRFError
from .gate.current import bearer_header, resolve_identity

F = TypeVar("F", bound=Callable[..., Any])

#: where the token lives inside the (server-side) session
SESSION_FIELD = "_ccsso_csrf"
#: the form field and the header a request carries it in
FORM_FIELD = "csrf_token"
HEADER = "X-CSRF-Token"
#: methods that must not change state, so need no token
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

_TOKEN_BYTES = 32
_MAX_TOKEN_LENGTH = 128


def csrf_token() -> str:
    """The CSRF token of this browser session (made and stored on first use)."""
    token = session.get(SESSION_FIELD)
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(_TOKEN_BYTES)
        session[SESSION_FIELD] = token
    return token


def cross_site() -> bool:
    """The browser says another site started this request.

    ``Sec-Fetch-Site`` (every current browser) decides; ``cross-site`` is
    refused, ``same-site`` (a sibling subdomain) is left to the token.
    Without it, an ``Origin`` naming another host decides; ``Origin: null``
    (sandboxed frames, some redirects, ``Referrer-Policy: no-referrer``)
    proves nothing either way and is left to the token too.
    """
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site.strip().lower() == "cross-site"
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return False
    try:
        host = urlsplit(origin).netloc
    except ValueError:
        return True
    return host.lower() != request.host.lower()


def _bearer_request() -> bool:
    """The request carries ``Authorization: Bearer`` (every app accepts bearer tokens)."""
    return bearer_header() is not None


def _bearer_authenticated() -> bool:
    """The request is an API caller's: its bearer token was verified.

    The *header* alone proves nothing: ``Authorization: Bearer x`` next to the
    session cookie would otherwise switch the check off for a view that then
    works on the cookie's session. So the token is verified first (the
    identity every ccsso check of this request will use); one that does not
    verify raises :class:`~flask_ccsso.exceptions.LoginRequired` (401, a
    ``login_failed`` signal) before the view runs.
    """
    if not _bearer_request():
        return False
    identity = resolve_identity()
    return bool(identity) and getattr(identity, "via", None) == "bearer"


def check_csrf() -> None:
    """Raise :class:`CSRFError` unless this request may change state.

    The reason the check failed (``missing``, ``mismatch``, ``cross_site``)
    is in ``exc.extra["check"]``; the token itself is never logged or echoed.
    """
    if cross_site():
        raise CSRFError("This request came from another site and was refused.", check="cross_site")
    given = request.headers.get(HEADER)
    if given is None and request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        given = request.form.get(FORM_FIELD)
    expected = session.get(SESSION_FIELD)
    if not given or not isinstance(expected, str) or not expected:
        raise CSRFError(check="missing")
    if len(given) > _MAX_TOKEN_LENGTH or not hmac.compare_digest(given.encode(), expected.encode()):
        raise CSRFError(check="mismatch")


def announce(exc: CSRFError) -> None:
    """A refused state-changing request is an access decision: audit it."""
    identity: Any = g.get("_ccsso_identity")
    if identity is None:
        try:
            identity = resolve_identity()
        except CCSSOError:
            identity = None
    app = current_flask_app()
    signals.permission_denied.send(app, identity=identity or None, skill=None, skills=[],
                                   reason=reasons.CSRF_FAILED, condition=f"csrf:{exc.extra.get('check')}",
                                   via="session", endpoint=request.endpoint)


def csrf_protect(view: F) -> F:
    """Refuse unsafe-method requests to ``view`` without this session's CSRF token.

    Put it on every view that changes state on a POST (or PUT, PATCH,
    DELETE) and render ``csrf_token()`` into its forms. Safe methods and
    requests whose bearer token verifies pass unchecked; a bearer header
    that does not verify is a 401.
    """

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if request.method not in SAFE_METHODS and not _bearer_authenticated():
            try:
                check_csrf()
            except CSRFError as exc:
                announce(exc)
                raise
        return view(*args, **kwargs)

    return cast(F, wrapper)


__all__ = ["FORM_FIELD", "HEADER", "CSRFError", "check_csrf", "cross_site", "csrf_protect", "csrf_token"]
