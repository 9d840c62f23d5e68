"""Step-up: is the sign-in recent (and strong) enough for a skill?

Two requirements, each of which a new sign-in at the IdP can satisfy:

**How recent** -- which skills are checked for age, exactly:

* a skill with its own ``maxAuthAge`` is always checked, against that age;
* a skill with ``"sensitive": true`` is checked against ``session.maxAuthAge``
  (default 900 s) *when* ``session.requireReauthenticationForSensitive`` is
  true (the default); with that switch off, ``sensitive`` alone asks for
  nothing;
* every other skill is never checked for age.

A checked skill is *stale* when the identity has no ``auth_time`` (the IdP did
not say when the person authenticated: never read as "just now"), when
``auth_time`` is in the future beyond the clock skew, or when
``now - auth_time > max_age`` (``now`` from ``state.clock``).

**How strong** -- a skill with ``acrValues`` is checked on *every* request,
whatever its age settings: the identity's ``acr`` (OIDC ``acr`` claim, SAML
``AuthnContextClassRef``) must be one of them. An identity without ``acr``
fails. (Before, ``acrValues`` were compared only for age-checked skills, so a
password-only session passed a skill whose config asked for MFA.)

Either failure raises :class:`~flask_ccsso.exceptions.StepUpRequired`; the
extension's error handler then sends a browser back to its IdP
(``/sso/<provider>/login?stepup=<skill>`` → OIDC ``prompt=login`` +
``max_age`` (+ ``acr_values``), SAML ``ForceAuthn`` (+
``RequestedAuthnContext``)) or answers an API client ``401`` with an RFC 9470
challenge::

    WWW-Authenticate: Bearer error="insufficient_user_authentication",
        error_description="...", max_age="900", acr_values="..."

(``max_age`` only when the skill is age-checked.) After the round trip the
provider verifies the new ``auth_time`` and ``acr``: a return that did not
re-authenticate, or came back with an ``acr`` outside ``acrValues``, is
refused with ``stepup_not_satisfied`` (see ``OIDCProvider.check_freshness``
and ``SAMLProvider._check_step_up``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import current_app

from . import reasons, signals
from .exceptions import StepUpRequired

if TYPE_CHECKING:
    from .config import SessionSettings, SkillSettings
    from .extension import CCSSOState
    from .identity import AnonymousIdentity, Identity

#: leeway for an ``auth_time`` slightly in the future (clocks drift)
FUTURE_LEEWAY = 60.0


@dataclass(frozen=True)
class Freshness:
    """The outcome of the step-up checks (age and ``acr``) for one skill."""

    #: the skill asks for freshness or an ``acr`` at all
    applies: bool
    #: recent (and strong) enough; ``True`` when nothing applies
    fresh: bool
    #: the age limit, ``None`` when the skill is not checked for age
    max_age: int | None = None
    acr_values: tuple[str, ...] = ()
    #: seconds since ``auth_time`` (``None`` when unknown or not checked)
    age: float | None = None
    #: short operator-facing explanation (of the failure, if any)
    detail: str = ""
    #: which requirement failed: ``"maxAuthAge"`` or ``"acrValues"`` (``None``: none)
    failed: str | None = None
    #: the ``acr`` check alone: ``None`` when the skill has no ``acrValues``
    acr_ok: bool | None = None


#: the answer for a skill that asks for nothing (frozen, so one instance serves every request)
_NOT_REQUIRED = Freshness(applies=False, fresh=True, detail="not required for this skill")


def freshness_applies(skill: SkillSettings, session: SessionSettings) -> bool:
    """Is the skill checked for *age*? See the module docstring: explicit
    ``maxAuthAge``, or ``sensitive`` with ``session.requireReauthenticationForSensitive``.
    (``acrValues`` are checked regardless; see :func:`check_freshness`.)"""
    return skill.max_auth_age is not None or (skill.sensitive and session.require_reauthentication_for_sensitive)


def acr_satisfied(identity: Any, skill: SkillSettings) -> bool | None:
    """``None`` when the skill has no ``acrValues``; else whether the
    identity's ``acr`` is one of them (no ``acr`` is not)."""
    if not skill.acr_values:
        return None
    acr = getattr(identity, "acr", None)
    return isinstance(acr, str) and acr in skill.acr_values


def check_freshness(identity: Identity | AnonymousIdentity, skill: SkillSettings, state: CCSSOState,
                    *, now: float | None = None, age: bool = True) -> Freshness:
    """Is ``identity``'s authentication recent and strong enough for ``skill``?

    ``age=False`` leaves the age out (``has_skill``'s default) but never the
    ``acr``: a sign-in that is too weak is too weak however it is asked.
    """
    acr_values = tuple(skill.acr_values)
    age_applies = age and freshness_applies(skill, state.config.session)
    if not age_applies and not acr_values:
        return _NOT_REQUIRED
    acr_ok = acr_satisfied(identity, skill)
    max_age: int | None = None
    seconds: float | None = None
    if age_applies:
        max_age = int(state.max_auth_age(skill))
        now = state.clock() if now is None else now
        auth_time = getattr(identity, "auth_time", None)
        if not isinstance(auth_time, (int, float)) or isinstance(auth_time, bool):
            return Freshness(True, False, max_age, acr_values, None,
                             f"the sign-in time is unknown; re-authentication within {max_age}s is required",
                             "maxAuthAge", acr_ok)
        seconds = now - float(auth_time)
        if seconds < -FUTURE_LEEWAY:
            return Freshness(True, False, max_age, acr_values, seconds, "the sign-in time is in the future",
                             "maxAuthAge", acr_ok)
        if seconds > max_age:
            return Freshness(True, False, max_age, acr_values, seconds,
                             f"signed in {int(seconds)}s ago; this skill needs a sign-in within {max_age}s",
                             "maxAuthAge", acr_ok)
    if acr_ok is False:
        return Freshness(True, False, max_age, acr_values, seconds, _acr_detail(identity, acr_values, False),
                         "acrValues", False)
    if max_age is None:
        return Freshness(True, True, None, acr_values, None, _acr_detail(identity, acr_values, True), None, acr_ok)
    return Freshness(True, True, max_age, acr_values, seconds,
                     f"signed in {max(0, int(seconds or 0))}s ago (limit {max_age}s)", None, acr_ok)


def _acr_detail(identity: Any, acr_values: tuple[str, ...], ok: bool) -> str:
    acr = getattr(identity, "acr", None)
    if ok:
        return f"acr {acr!r} is one of {', '.join(acr_values)}"
    return f"the sign-in's acr {acr!r} is not one of {', '.join(acr_values)}"


def step_up(identity: Any, skill: str, freshness: Freshness) -> StepUpRequired:
    """Announce the step-up (``stepup_required``) and return the error to raise."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    signals.stepup_required.send(app, identity=identity, skill=skill, max_age=freshness.max_age,
                                 acr_values=freshness.acr_values, via=getattr(identity, "via", None))
    if freshness.failed == "acrValues":
        return StepUpRequired(f"The '{skill}' skill needs a stronger sign-in (for example with a second factor). "
                              "Please sign in again.", skill=skill, max_age=freshness.max_age,
                              acr_values=freshness.acr_values, reason=reasons.INSUFFICIENT_ACR)
    return StepUpRequired(f"The '{skill}' skill needs a recent sign-in. Please sign in again.", skill=skill,
                          max_age=freshness.max_age, acr_values=freshness.acr_values,
                          reason=reasons.STALE_AUTHENTICATION)


def stepup_url(skill: str, next_url: str = "/") -> str | None:
    """Where to send the current person to re-authenticate for ``skill``
    (``None`` when nobody is signed in). Handy as a link on pages."""
    from .extension import get_state
    from .identity import current_identity
    from .responses import login_url_for

    ident = current_identity._get_current_object()  # type: ignore[union-attr]
    if not ident or getattr(ident, "via", None) == "bearer":
        return None
    return login_url_for(ident.provider, next_url, get_state().url_prefix, skill)


__all__ = ["Freshness", "acr_satisfied", "check_freshness", "freshness_applies", "step_up", "stepup_url"]
