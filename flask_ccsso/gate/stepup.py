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

A step-up re-authenticates the person *already signed in*: an answer for
another account (another ``sub`` / NameID, provider or tenant) is refused
with ``stepup_subject_mismatch`` and the session stays the original
person's (:func:`subject_mismatch`).

A step-up asked for by a form post (a POST on a stale sign-in) cannot replay
the post after the round trip: the browser comes back to the page the form
was on, and :func:`stepup_notice` tells that page that nothing was carried
out (:func:`remember_resubmit`, :func:`resubmit_notice_after`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from flask import session

from .. import reasons, signals
from .._context import current_flask_app
from ..exceptions import AuthenticationFailed, StepUpRequired
from ..identity import Identity
from ..state import get_state
from .current import resolve_identity
from .freshness import Freshness

#: session key: a form post that asked for step-up (kept until the round trip ends)
RESUBMIT_KEY = "_ccsso_resubmit"
#: session key: the notice for the page the browser comes back to (read once)
NOTICE_KEY = "_ccsso_stepup_notice"
#: what :func:`stepup_notice` says unless the app words it itself
RESUBMIT_MESSAGE = ("You confirmed your sign-in. What you submitted before was not carried out: "
                    "please submit it again.")
#: the page shown when a step-up came back signed in as someone else
SUBJECT_MISMATCH_MESSAGE = (
    "The sign-in confirmation was completed with a different account than the one signed in here, so it was not "
    "accepted. You are still signed in as before, and nothing that needed the confirmation was done. To continue, "
    "confirm with your own account (sign out at the identity provider first if it signed you in as someone else "
    "without asking).")


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


def same_subject(before: Identity, after: Identity) -> bool:
    """Is ``after`` the same account as ``before``? Provider, subject (OIDC
    ``sub`` / SAML NameID) and, where both name one, tenant (Azure AD ``tid``)
    must all match. E-mail addresses and names are not identifiers: they can
    be reassigned, and two accounts may share a display name."""
    if before.provider != after.provider or before.subject != after.subject:
        return False
    return before.tenant is None or after.tenant is None or before.tenant == after.tenant


def subject_mismatch(before: Identity | None, after: Identity) -> AuthenticationFailed | None:
    """The error for a step-up answered by another account (``None`` when it
    is the same one, or nobody is signed in any more).

    A step-up asks the IdP to re-authenticate the person signed in here; the
    IdP answers for whoever completed its sign-in page -- a colleague at the
    same keyboard, a second account of the same person, an IdP session that
    was switched in another tab. Accepting that answer would silently turn
    this browser's session into that account's (with the fresh sign-in the
    sensitive skill asked for). So it is refused: the session stays the
    original person's, unchanged, and what needed the step-up is not done.
    The error's ``extra`` names the session's person (the account whose
    step-up failed), for the audit trail's actor."""
    if before is None or same_subject(before, after):
        return None
    return AuthenticationFailed(SUBJECT_MISMATCH_MESSAGE, reason=reasons.STEPUP_SUBJECT_MISMATCH,
                                subject=before.subject, email=before.email)


# -- a form post that asked for step-up ---------------------------------------------------


@dataclass(frozen=True)
class StepUpNotice:
    """What :func:`stepup_notice` hands the page a step-up came back to.

    ``method`` / ``action``: the request that asked for the step-up and was
    not carried out (``POST`` to ``/deploy``); ``skill``: the skill that
    asked; ``message``: a sentence to show (:data:`RESUBMIT_MESSAGE`)."""

    skill: str
    method: str
    action: str
    message: str = RESUBMIT_MESSAGE


def remember_resubmit(skill: str, method: str, action: str, page: str, now: float) -> None:
    """Note in this browser's session that a ``method`` request to ``action``
    asked for step-up and was dropped; the round trip returns to ``page``.

    Only the facts -- never the form's fields: they may hold secrets and CSRF
    tokens, and replaying a sensitive post after a trip through the IdP
    without the person pressing the button again is exactly what CSRF
    defences exist to prevent."""
    session[RESUBMIT_KEY] = {"skill": skill, "method": method, "action": action, "page": page, "at": now}


def forget_resubmit() -> None:
    """A later step-up that was not a form post: no old notice may ride along."""
    if RESUBMIT_KEY in session:
        session.pop(RESUBMIT_KEY, None)


def take_resubmit() -> dict[str, Any] | None:
    """Remove and return the note :func:`remember_resubmit` left (read before
    the sign-in clears the session)."""
    note = session.pop(RESUBMIT_KEY, None) if RESUBMIT_KEY in session else None
    return note if isinstance(note, dict) else None


def resubmit_notice_after(note: Mapping[str, Any] | None, *, skill: str | None, landing: str, now: float,
                          max_age: float) -> None:
    """After a step-up for ``skill`` that lands on ``landing``: leave the notice
    for that page when ``note`` is the post that asked for this very step-up
    (same skill, same page, at most ``max_age`` seconds old -- the pending
    sign-in's own lifetime)."""
    if not note or not skill or note.get("skill") != skill or note.get("page") != landing:
        return
    at = note.get("at")
    if not isinstance(at, (int, float)) or isinstance(at, bool) or not 0 <= now - at <= max_age:
        return
    session[NOTICE_KEY] = {"skill": skill, "method": str(note.get("method") or "POST"),
                           "action": str(note.get("action") or landing)}


def stepup_notice() -> StepUpNotice | None:
    """The notice for this page, read once (flash-style): a form post asked
    for step-up, the person confirmed their sign-in, and the post was **not**
    carried out -- show ``notice.message`` (or your own words) and let them
    submit again. ``None`` otherwise. Also a template global
    (``ccsso_stepup_notice()``, and ``stepup_notice()`` unless taken)."""
    if NOTICE_KEY not in session:
        return None
    raw = session.pop(NOTICE_KEY, None)
    if not isinstance(raw, dict) or not isinstance(raw.get("skill"), str):
        return None
    return StepUpNotice(skill=raw["skill"], method=str(raw.get("method") or "POST"),
                        action=str(raw.get("action") or ""))


__all__ = ["NOTICE_KEY", "RESUBMIT_KEY", "StepUpNotice", "forget_resubmit", "login_url_for", "remember_resubmit",
           "resubmit_notice_after", "same_subject", "step_up", "stepup_notice", "stepup_url", "subject_mismatch",
           "take_resubmit"]
