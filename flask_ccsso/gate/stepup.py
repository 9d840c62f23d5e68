"""Step-up: send a stale (or too weak) sign-in back to its IdP.

A skill that fails its freshness checks (:mod:`flask_ccsso.gate.freshness`)
raises :class:`~flask_ccsso.exceptions.StepUpRequired`; the error renderer
then sends a browser back to its IdP (``/sso/<provider>/login?stepup=<skill>``
→ OIDC ``prompt=login`` + ``max_age`` (+ ``acr_values``), SAML ``ForceAuthn``
(+ ``RequestedAuthnContext``)) or answers an API client ``401`` with an
RFC 9470 challenge::

    WWW-Authenticate: Bearer error="insufficient_user_authentication",
        error_description="...", max_age="900", acr_values="..."

(``max_age`` only when the skill is age-checked.) After the round trip the
provider verifies the new ``auth_time`` and ``acr``: a return that did not
re-authenticate, or came back with an ``acr`` outside ``acrValues``, is
refused with ``stepup_not_satisfied`` (one rule for both protocols:
``providers.base.check_reauthenticated``, which ``OIDCProvider.check_freshness``
and ``SAMLProvider._check_step_up`` call).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from .. import reasons, signals
from .._context import current_flask_app
from ..exceptions import StepUpRequired
from ..state import get_state
from .current import resolve_identity
from .freshness import Freshness


def step_up(identity: Any, skill: str, freshness: Freshness) -> StepUpRequired:
    """Announce the step-up (``stepup_required``) and return the error to raise."""
    app = current_flask_app()
    signals.stepup_required.send(app, identity=identity, skill=skill, max_age=freshness.max_age,
                                 acr_values=freshness.acr_values, via=getattr(identity, "via", None))
    if freshness.failed == "acrValues":
        return StepUpRequired(f"The '{skill}' skill needs a stronger sign-in (for example with a second factor). "
                              "Please sign in again.", skill=skill, max_age=freshness.max_age,
                              acr_values=freshness.acr_values, reason=reasons.INSUFFICIENT_ACR)
    return StepUpRequired(f"The '{skill}' skill needs a recent sign-in. Please sign in again.", skill=skill,
                          max_age=freshness.max_age, acr_values=freshness.acr_values,
                          reason=reasons.STALE_AUTHENTICATION)


def login_url_for(provider: str, next_url: str, prefix: str, step_up_skill: str | None = None) -> str:
    """The library's sign-in URL for ``provider`` (with ``stepup=`` for a step-up)."""
    url = f"{prefix}/{provider}/login?next={quote(next_url, safe='/')}"
    if step_up_skill:
        url += f"&stepup={quote(step_up_skill, safe='')}"
    return url


def stepup_url(skill: str, next_url: str = "/") -> str | None:
    """Where to send the current person to re-authenticate for ``skill``
    (``None`` when nobody is signed in). Handy as a link on pages."""
    ident = resolve_identity()
    if not ident or ident.provider is None or getattr(ident, "via", None) == "bearer":
        return None
    return login_url_for(ident.provider, next_url, get_state().url_prefix, skill)


__all__ = ["login_url_for", "step_up", "stepup_url"]
