"""Who may call the SCIM endpoint: the ``scim.token`` secret, or an OAuth access token.

Two kinds of ``Authorization: Bearer`` credential, either or both configured:

* the static secret ``scim.token`` (the IdP's "Secret Token" / "HTTP Header"
  mode), compared in constant time;
* a JWT access token issued by the OIDC provider ``scim.tokenProvider``
  (Entra ID's OAuth2 client-credentials provisioning, Okta's "OAuth 2" mode).
  It is verified by the gate's bearer verification
  (:meth:`~flask_ccsso.gate.bearer.BearerAuthenticator.verify_access_token`:
  signature by the provider's JWKS, ``iss``, ``aud``, ``exp``, ``typ``, ...),
  never by a check of its own here. What this module adds is the SCIM rule:
  the token must come from ``tokenProvider`` (another trusted provider's
  token, or an opaque one, is a 401), name one of ``tokenClients`` (the
  audience is the portal, but only the provisioning client may change its
  directory; else 403) and carry ``tokenScope`` as a scope or an Entra app
  role (else 403).

Every refusal is logged once, at WARNING, with the reason, the provider and
the client when known, and the caller's address -- never the token.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping
from typing import Any

from flask import request
from scim2_models import AuthenticationScheme, ForbiddenException, SCIMException, UnauthorizedException

from ..config import ScimSettings
from ..exceptions import AuthenticationFailed, IdPUnavailable
from ..providers.oidc import token_client, token_scopes
from ..state import get_state

log = logging.getLogger("flask_ccsso")


class IdPUnreachable(Exception):
    """The token provider could not be reached (discovery, JWKS): a 503, so the IdP retries."""


def token_grants(claims: Mapping[str, Any]) -> set[str]:
    """What a token is granted: its scopes (``scp`` / ``scope``), and the app roles
    (``roles``) of an *app-only* token. Entra ID puts a client-credentials token's
    application permissions in ``roles`` (it has no scopes) -- but also a person's
    app-role assignments in their own delegated tokens, which carry ``scp`` (and
    ``idtyp: user`` when asked for): those roles are the person's, not a
    provisioning client's, so they grant nothing here."""
    granted = set(token_scopes(claims))
    app_only = not granted and claims.get("idtyp", "app") == "app"
    roles = claims.get("roles")
    if app_only and isinstance(roles, list):
        granted.update(r for r in roles if isinstance(r, str))
    elif app_only and isinstance(roles, str):
        granted.add(roles)
    return granted


class ScimAuthenticator:
    """``authorization header -> None``, or raise the SCIM error to answer with
    (:class:`UnauthorizedException`, :class:`ForbiddenException`) or
    :class:`IdPUnreachable`."""

    def __init__(self, settings: ScimSettings) -> None:
        self.secret = (settings.token or "").encode()
        self.provider = settings.token_provider
        self.clients = frozenset(settings.token_clients)
        self.scope = settings.token_scope

    def __call__(self, authorization: str) -> None:
        scheme, _, given = authorization.partition(" ")
        given = given.strip()
        if scheme.lower() == "bearer" and given:
            if self.secret and hmac.compare_digest(given.encode(), self.secret):
                return
            if self.provider is not None:
                self._access_token(given)
                return
        raise self._refuse(UnauthorizedException(detail="a valid bearer token is required"),
                           "no valid bearer secret" if self.provider is None else "no valid bearer secret or token")

    def _access_token(self, token: str) -> None:
        try:
            provider, claims = get_state().bearer_authenticator.verify_access_token(token, provider=self.provider)
        except AuthenticationFailed as exc:
            why = f"access token refused ({exc.description})"
            raise self._refuse(UnauthorizedException(detail="a valid bearer token is required"),
                               f"not the bearer secret, and {why}" if self.secret else why,
                               exc.extra.get("provider")) from None
        except IdPUnavailable as exc:
            self._log("the identity provider could not be reached to verify the token",
                      exc.extra.get("provider") or self.provider)
            raise IdPUnreachable from None
        client = token_client(claims)
        if client is None or client not in self.clients:
            raise self._refuse(ForbiddenException(detail="this OAuth client may not provision"),
                               "the access token's client is not in scim.tokenClients", provider, client)
        if self.scope not in token_grants(claims):
            raise self._refuse(ForbiddenException(detail=f"the access token lacks the {self.scope!r} scope or role"),
                               f"the access token has no {self.scope!r} scope or app role", provider, client)

    def _refuse(self, error: SCIMException, why: str, provider: str | None = None,
                client: str | None = None) -> SCIMException:
        self._log(why, provider, client)
        return error

    @staticmethod
    def _log(why: str, provider: str | None = None, client: str | None = None) -> None:
        who = "".join(f", {k} {v!r}" for k, v in (("provider", provider), ("client", client)) if v)
        log.warning("flask-ccsso: SCIM request refused: %s%s (from %s)", why, who, request.remote_addr)


def authentication_schemes(settings: ScimSettings) -> list[AuthenticationScheme]:
    """The ServiceProviderConfig's ``authenticationSchemes``: what is configured, the secret first."""
    schemes = []
    if settings.token:
        schemes.append(AuthenticationScheme(
            type=AuthenticationScheme.Type.oauthbearertoken, name="Bearer token",
            description="The scim.token secret in an Authorization: Bearer header."))
    if settings.token_provider:
        schemes.append(AuthenticationScheme(
            type=AuthenticationScheme.Type.oauthbearertoken, name="OAuth access token",
            description=f"A JWT access token in an Authorization: Bearer header, issued by the "
                        f"{settings.token_provider!r} identity provider to a provisioning client, with the "
                        f"{settings.token_scope!r} scope or app role."))
    return [s.model_copy(update={"primary": i == 0}) for i, s in enumerate(schemes)]


__all__ = ["IdPUnreachable", "ScimAuthenticator", "authentication_schemes", "token_grants"]
