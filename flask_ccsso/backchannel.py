"""OpenID Connect Back-Channel Logout 1.0: the IdP ends sessions directly.

``POST /sso/<name>/backchannel-logout`` with a form field ``logout_token``.
The token is validated as section 2.6 asks, in its order:

1. "Validate the Logout Token signature in the same way that an ID Token
   signature is validated" -- the IdP's JWKS and our local algorithm
   allow-list (:meth:`OIDCProvider.decode_jwt`); an explicit ``typ`` must be
   ``logout+jwt`` (or the generic ``JWT``), so an access token cannot be
   replayed here.
2. "Validate the iss, aud, iat, and exp Claims in the same way they are
   validated in ID Tokens" -- ``iss`` is the provider's issuer, our client id
   is in ``aud``, ``iat`` is present and not in the future nor older than
   :data:`MAX_AGE`, ``exp`` (optional here) has not passed; all with the
   provider's ``clockSkew``.
3. "Verify that the Logout Token contains a sub Claim, a sid Claim, or
   both."
4. "Verify that the Logout Token contains an events Claim whose value is JSON
   object containing the member name
   http://schemas.openid.net/event/backchannel-logout."
5. "Verify that the Logout Token does not contain a nonce Claim." (this is
   what keeps an ID token from passing as a logout token)
6. "Optionally verify that another Logout Token with the same jti value has
   not been recently received." -- always done here, through an atomic
   ``add`` in the shared store, so the check holds across workers.

Then the sessions are ended on every worker and host: by ``sid`` (the
``idpsid:<provider>:<sid>`` index), narrowed to ``sub`` when both are given,
or every session of ``sub`` at this provider. Section 2.8: 200 on success
(also when no session matched: the IdP's view is the same), 400 with an
``invalid_request`` JSON body when the token is not valid, and
``Cache-Control: no-store`` always. A store outage answers 503 so the IdP may
retry (section 2.8 leaves that case to the RP).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from flask import Flask, Request, current_app
from werkzeug.wrappers import Response

from . import reasons, signals
from .exceptions import AuthenticationFailed, CCSSOError, IdPUnavailable, StoreUnavailable

if TYPE_CHECKING:
    from .extension import CCSSOState

log = logging.getLogger("flask_ccsso")

BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
#: logout tokens issued longer ago than this (seconds) are refused; the jti
#: replay cache keeps ids at least this long
MAX_AGE = 600.0
_TYPES = {"logout+jwt", "application/logout+jwt", "jwt"}


class InvalidLogoutToken(Exception):
    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


def init_state(app: Flask, state: CCSSOState) -> None:
    def handler(provider: Any, request: Request) -> Response:
        return handle(state, provider, request)

    state.backchannel_logout = handler


def _answer(status: int, body: dict[str, Any] | None = None) -> Response:
    resp = Response(json.dumps(body) if body is not None else "", status=status,
                    mimetype="application/json" if body is not None else "text/plain")
    resp.headers["Cache-Control"] = "no-cache, no-store"
    resp.headers["Pragma"] = "no-cache"
    return resp


def _jti_key(provider: Any, jti: str) -> str:
    return f"bcl-jti:{provider.name}:{jti}"


def validate_logout_token(state: CCSSOState, provider: Any, token: str) -> dict[str, Any]:
    """Section 2.6, steps 1-6 (see the module doc). Returns the claims."""
    try:
        header, claims = provider.decode_jwt(token)
    except AuthenticationFailed as exc:
        raise InvalidLogoutToken(exc.description or "The logout token is not valid.") from None
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in _TYPES):
        raise InvalidLogoutToken("The token is not a logout token (typ).")
    if claims.get("iss") != provider.expected_issuer():
        raise InvalidLogoutToken("The logout token was issued by someone else.")
    aud = claims.get("aud")
    auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if provider.settings.client_id not in auds:
        raise InvalidLogoutToken("The logout token is meant for another application.")
    now = state.clock()
    skew = float(provider.settings.clock_skew)
    iat = claims.get("iat")
    if not isinstance(iat, (int, float)) or isinstance(iat, bool):
        raise InvalidLogoutToken("The logout token has no iat.")
    if iat > now + skew:
        raise InvalidLogoutToken("The logout token was issued in the future.")
    if iat < now - MAX_AGE - skew:
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
    keep = max(MAX_AGE + 2 * skew, (float(exp) - now + skew) if exp is not None else 0.0)
    if not state.store.add(_jti_key(provider, jti), "1", keep):
        raise InvalidLogoutToken("The logout token was already used.")
    return claims


def handle(state: CCSSOState, provider: Any, request: Request) -> Response:
    """``state.backchannel_logout``: validate, end the sessions, answer."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    token = request.form.get("logout_token") if request.method == "POST" else None
    if not token:
        return _answer(400, {"error": "invalid_request", "error_description": "logout_token is missing."})
    try:
        claims = validate_logout_token(state, provider, token)
        sub, sid = claims.get("sub"), claims.get("sid")
        try:
            count = end_sessions(state, provider.name, sub, sid)
        except (StoreUnavailable, IdPUnavailable):
            # the 503 asks the IdP to retry: the retry must not be refused as
            # a replay of the jti recorded a moment ago
            try:
                state.store.delete(_jti_key(provider, claims["jti"]))
            except CCSSOError:
                log.warning("flask-ccsso: could not forget a back-channel logout jti after a store error")
            raise
    except InvalidLogoutToken as exc:
        log.warning("flask-ccsso: refused a back-channel logout token from %s: %s", provider.name, exc.description)
        signals.login_failed.send(app, provider=provider.name, reason=reasons.INVALID_TOKEN,
                                  detail=f"back-channel logout: {exc.description}", subject=None, email=None)
        return _answer(400, {"error": "invalid_request", "error_description": exc.description})
    except (StoreUnavailable, IdPUnavailable) as exc:
        return _answer(503, {"error": "temporarily_unavailable", "error_description": exc.description})
    except CCSSOError as exc:  # pragma: no cover - defensive
        return _answer(400, {"error": "invalid_request", "error_description": exc.description})
    except Exception:  # an input nobody foresaw: 400 and an audit event, never a 500
        log.exception("flask-ccsso: unexpected error while handling a back-channel logout for %s", provider.name)
        signals.login_failed.send(app, provider=provider.name, reason=reasons.INVALID_TOKEN,
                                  detail="back-channel logout: the logout token could not be processed",
                                  subject=None, email=None)
        return _answer(400, {"error": "invalid_request", "error_description": "The logout token could not be processed."})
    signals.backchannel_logout.send(app, provider=provider.name, subject=sub, sid=sid, count=count)
    signals.session_revoked.send(app, subject=sub, provider=provider.name, count=count,
                                 reason="backchannel_logout")
    return _answer(200)


def end_sessions(state: CCSSOState, provider: str, sub: str | None, sid: str | None) -> int:
    """End the RP sessions the logout token names; returns how many were live."""
    store = state.store
    if sid is not None:
        sids: set[str] = set(store.set_members(f"idpsid:{provider}:{sid}"))
        if sub is not None:
            sids &= set(store.set_members(f"user:{provider}:{sub}"))
        count = state.revoke_sids(sids)
        store.delete(f"idpsid:{provider}:{sid}")
        if sub is not None and sids:
            store.set_remove(f"user:{provider}:{sub}", *sids)
        return count
    assert sub is not None
    sids = store.set_members(f"user:{provider}:{sub}")
    count = state.revoke_sids(sids)
    store.delete(f"user:{provider}:{sub}")
    return count
