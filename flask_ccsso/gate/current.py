"""The identity of the current request: ``current_identity``.

Resolved once per request and cached on ``g``: an ``Authorization: Bearer``
header goes to the bearer authenticator; otherwise the session gate reads the
session (deadlines), and the refresher renews tokens inside the refresh
window. :func:`current_outage_grace` tells whether this request is served on
an expired access token the identity provider could not renew
(``session.outageGrace``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from flask import Flask, g, request
from werkzeug.local import LocalProxy

from .._context import current_flask_app, unproxied
from ..exceptions import LoginRequired, SessionExpired
from ..identity import AnonymousIdentity, Identity
from ..state import get_state
from .refresh import G_OUTAGE_GRACE, OutageGrace

if TYPE_CHECKING:
    from ..state import CCSSOState


def bearer_header() -> str | None:
    """The token of an ``Authorization: Bearer`` header (the WSGI environ key,
    as ``request.headers`` reads it), or ``None``."""
    return _bearer_token(unproxied(request).environ)


def _bearer_token(environ: Mapping[str, Any]) -> str | None:
    auth: str = environ.get("HTTP_AUTHORIZATION", "")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else None


def load_identity(state: CCSSOState, app: Flask | None = None) -> Identity | AnonymousIdentity:
    """Who this request is, by the state's collaborators (uncached)."""
    token = bearer_header()
    if token is not None:
        return state.bearer_authenticator(token)
    identity = state.gate.current(app if app is not None else current_flask_app())
    if isinstance(identity, Identity):
        return state.refresher(state, identity)
    return identity


def resolve_identity() -> Identity | AnonymousIdentity:
    """Resolve the identity for this request once and cache it on ``g``."""
    ctx_g = unproxied(g)
    ident: Identity | AnonymousIdentity | None = getattr(ctx_g, "_ccsso_identity", None)
    if ident is not None:
        return ident
    app = current_flask_app()
    ident = load_identity(get_state(app), app)
    ctx_g._ccsso_identity = ident
    return ident


def signed_in(app: Flask, state: CCSSOState) -> Identity:
    """:func:`identity_required` for a caller that already holds the app and
    its state (:func:`~flask_ccsso.gate.decorators.enforce`, on every
    protected request: no context lookup is repeated)."""
    ctx_g = unproxied(g)
    ident: Identity | AnonymousIdentity | None = getattr(ctx_g, "_ccsso_identity", None)
    if ident is None:
        ident = load_identity(state, app)
        ctx_g._ccsso_identity = ident
    if isinstance(ident, Identity):
        return ident
    expired = getattr(ctx_g, "_ccsso_expired", None)
    if expired:
        raise SessionExpired(reason=expired)
    raise LoginRequired()


#: the former private name (tests and older code)
_get_identity = resolve_identity


def identity_required() -> Identity:
    """The current identity, or raise LoginRequired / SessionExpired."""
    ident = resolve_identity()
    if not isinstance(ident, Identity):
        expired = getattr(g, "_ccsso_expired", None)
        if expired:
            raise SessionExpired(reason=expired)
        raise LoginRequired()
    return ident


def current_outage_grace() -> OutageGrace | None:
    """How this request's session is served while its identity provider is
    unreachable: an :class:`~flask_ccsso.gate.refresh.OutageGrace` when the
    session's access token has expired and could not be renewed (it is
    stale; within ``session.outageGrace``), else ``None`` (a fresh or still
    valid token, a bearer caller, nobody signed in). Resolves the identity
    first, as ``current_identity`` does."""
    resolve_identity()
    grace: OutageGrace | None = getattr(unproxied(g), G_OUTAGE_GRACE, None)
    return grace


#: The identity of the current request (an :class:`Identity`, or a falsy
#: :class:`AnonymousIdentity`).
current_identity = cast("Identity | AnonymousIdentity", LocalProxy(resolve_identity))


__all__ = ["bearer_header", "current_identity", "current_outage_grace", "identity_required", "load_identity",
           "resolve_identity", "signed_in"]
