"""OpenID Connect Back-Channel Logout 1.0: the IdP ends sessions directly.

``POST /sso/<name>/backchannel-logout`` with a form field ``logout_token``.
The OIDC provider validates the token
(:meth:`~flask_ccsso.providers.oidc.OIDCProvider.validate_logout_token`) as
section 2.6 asks, in its order:

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

Then this view ends the sessions on every worker and host through the session
index (:meth:`~flask_ccsso.sessions.index.SessionIndex.revoke_at_idp`): by
``sid``, narrowed to ``sub`` when both are given, or every session of ``sub``
at this provider. Section 2.8: 200 on success
(also when no session matched: the IdP's view is the same), 400 with an
``invalid_request`` JSON body when the token is not valid, and
``Cache-Control: no-store`` always. A store outage answers 503 so the IdP may
retry (section 2.8 leaves that case to the RP).
"""

from __future__ import annotations

import logging

from flask import Request
from werkzeug.exceptions import BadRequest, HTTPException, ServiceUnavailable
from werkzeug.wrappers import Response

from . import reasons, signals
from ._context import current_flask_app
from .exceptions import CCSSOError, IdPUnavailable, StoreUnavailable
from .providers.oidc import BACKCHANNEL_EVENT, LOGOUT_TOKEN_MAX_AGE, InvalidLogoutToken, OIDCProvider
from .responses import error_response
from .state import CCSSOState

log = logging.getLogger("flask_ccsso")

#: kept under its former name
MAX_AGE = LOGOUT_TOKEN_MAX_AGE
#: section 2.8: the answer is never cached
_NO_CACHE = {"Cache-Control": "no-cache, no-store", "Pragma": "no-cache"}


class LogoutTokenRefused(CCSSOError, BadRequest):
    """Section 2.8: a logout token that is not valid. HTTP 400, ``invalid_request``."""

    reason = "invalid_request"
    description = "The logout token is not valid."

    def response_headers(self) -> dict[str, str]:
        return dict(_NO_CACHE)


class LogoutUnavailable(CCSSOError, ServiceUnavailable):
    """The sessions could not be ended (store outage): HTTP 503 so the IdP may retry."""

    reason = "temporarily_unavailable"
    description = "The sessions could not be ended right now. Try again."

    def response_headers(self) -> dict[str, str]:
        return dict(_NO_CACHE)


def _refused(app: object, provider: str, description: str, detail: str) -> Response:
    signals.login_failed.send(app, provider=provider, reason=reasons.INVALID_TOKEN,
                              detail=f"back-channel logout: {detail}", subject=None, email=None)
    return _json(LogoutTokenRefused(description))


def _json(exc: HTTPException) -> Response:
    # the IdP is an API client whatever it sends as Accept
    return error_response(exc, as_json=True)


def handle_backchannel_logout(state: CCSSOState, provider: OIDCProvider, request: Request) -> Response:
    """Validate (the provider), end the sessions (the session index), announce, answer."""
    app = current_flask_app()
    token = request.form.get("logout_token") if request.method == "POST" else None
    if not token:
        return _json(LogoutTokenRefused("logout_token is missing."))
    try:
        claims = provider.validate_logout_token(token)
        sub, sid = claims.get("sub"), claims.get("sid")
        try:
            count = state.sessions.revoke_at_idp(provider.name, sub, (sid,) if sid is not None else ())
        except (StoreUnavailable, IdPUnavailable):
            # the 503 asks the IdP to retry: the retry must not be refused as
            # a replay of the jti recorded a moment ago
            try:
                provider.forget_logout_token(claims["jti"])
            except CCSSOError:
                log.warning("flask-ccsso: could not forget a back-channel logout jti after a store error")
            raise
    except InvalidLogoutToken as exc:
        description = exc.description or "The logout token is not valid."
        log.warning("flask-ccsso: refused a back-channel logout token from %s: %s", provider.name, description)
        return _refused(app, provider.name, description, description)
    except (StoreUnavailable, IdPUnavailable) as exc:
        return _json(LogoutUnavailable(exc.description))
    except CCSSOError as exc:  # pragma: no cover - defensive
        return _json(LogoutTokenRefused(exc.description))
    except Exception:  # an input nobody foresaw: 400 and an audit event, never a 500
        log.exception("flask-ccsso: unexpected error while handling a back-channel logout for %s", provider.name)
        return _refused(app, provider.name, "The logout token could not be processed.",
                        "the logout token could not be processed")
    signals.backchannel_logout.send(app, provider=provider.name, subject=sub, sid=sid, count=count)
    signals.session_revoked.send(app, subject=sub, provider=provider.name, count=count,
                                 reason="backchannel_logout")
    resp = Response("", status=200, mimetype="text/plain")
    resp.headers.update(_NO_CACHE)
    return resp


__all__ = ["BACKCHANNEL_EVENT", "MAX_AGE", "LogoutTokenRefused", "LogoutUnavailable", "handle_backchannel_logout"]
