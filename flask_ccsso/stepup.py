"""Step-up: is the sign-in recent (and strong) enough for a skill?

Which skills are checked for freshness -- exactly:

* a skill with its own ``maxAuthAge`` is always checked, against that age;
* a skill with ``"sensitive": true`` is checked against ``session.maxAuthAge``
  (default 900 s) *when* ``session.requireReauthenticationForSensitive`` is
  true (the default); with that switch off, ``sensitive`` alone asks for
  nothing;
* every other skill is never checked.

A checked skill is *stale* when the identity has no ``auth_time`` (the IdP did
not say when the person authenticated: never read as "just now"), when
``auth_time`` is in the future beyond the clock skew, or when
``now - auth_time > max_age`` (``now`` from ``state.clock``). A checked skill
with ``acrValues`` is also stale when the identity's ``acr`` is not one of
them. Stale raises :class:`~flask_ccsso.exceptions.StepUpRequired`; the
extension's error handler then sends a browser back to its IdP
(``/sso/<provider>/login?stepup=<skill>`` → OIDC ``prompt=login`` +
``max_age`` (+ ``acr_values``), SAML ``ForceAuthn``) or answers an API client
``401`` with an RFC 9470 challenge::

    WWW-Authenticate: Bearer error="insufficient_user_authentication",
        error_description="...", max_age="900", acr_values="..."

After the round trip the provider verifies the new ``auth_time`` (and
``acr``): a return that did not re-authenticate is refused with
``stepup_not_satisfied`` (see ``OIDCProvider.check_freshness``).
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
    """The outcome of a freshness check for one skill."""

    #: the skill asks for freshness at all
    applies: bool
    #: fresh (and strong) enough; ``True`` when the check does not apply
    fresh: bool
    max_age: int | None = None
    acr_values: tuple[str, ...] = ()
    #: seconds since ``auth_time`` (``None`` when unknown)
    age: float | None = None
    #: short operator-facing explanation
    detail: str = ""


#: the answer for a skill that asks for no freshness (frozen, so one instance serves every request)
_NOT_REQUIRED = Freshness(applies=False, fresh=True, detail="not required for this skill")


def freshness_applies(skill: SkillSettings, session: SessionSettings) -> bool:
    """See the module docstring: explicit ``maxAuthAge``, or ``sensitive`` with
    ``session.requireReauthenticationForSensitive``."""
    return skill.max_auth_age is not None or (skill.sensitive and session.require_reauthentication_for_sensitive)


def check_freshness(identity: Identity | AnonymousIdentity, skill: SkillSettings, state: CCSSOState,
                    *, now: float | None = None) -> Freshness:
    """Is ``identity``'s authentication fresh enough for ``skill``?"""
    if not freshness_applies(skill, state.config.session):
        return _NOT_REQUIRED
    max_age = int(state.max_auth_age(skill))
    acr_values = tuple(skill.acr_values)
    now = state.clock() if now is None else now
    auth_time = getattr(identity, "auth_time", None)
    if not isinstance(auth_time, (int, float)) or isinstance(auth_time, bool):
        return Freshness(True, False, max_age, acr_values, None,
                         f"the sign-in time is unknown; re-authentication within {max_age}s is required")
    age = now - float(auth_time)
    if age < -FUTURE_LEEWAY:
        return Freshness(True, False, max_age, acr_values, age, "the sign-in time is in the future")
    if age > max_age:
        return Freshness(True, False, max_age, acr_values, age,
                         f"signed in {int(age)}s ago; this skill needs a sign-in within {max_age}s")
    if acr_values and getattr(identity, "acr", None) not in acr_values:
        return Freshness(True, False, max_age, acr_values, age,
                         f"the sign-in's acr is not one of {', '.join(acr_values)}")
    return Freshness(True, True, max_age, acr_values, age,
                     f"signed in {max(0, int(age))}s ago (limit {max_age}s)")


def step_up(identity: Any, skill: str, freshness: Freshness) -> StepUpRequired:
    """Announce the step-up (``stepup_required``) and return the error to raise."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    signals.stepup_required.send(app, identity=identity, skill=skill, max_age=freshness.max_age,
                                 acr_values=freshness.acr_values, via=getattr(identity, "via", None))
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


__all__ = ["Freshness", "check_freshness", "freshness_applies", "step_up", "stepup_url"]
