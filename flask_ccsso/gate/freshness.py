"""Is a sign-in recent (and strong) enough for a skill?

Two requirements, each of which a new sign-in at the IdP can satisfy:

**How recent** -- which skills are checked for age, exactly:

* a skill with its own ``maxAuthAge`` is always checked, against that age;
* a skill with ``"sensitive": true`` is checked against ``session.maxAuthAge``
  (default 900 s) *when* ``session.requireReauthenticationForSensitive`` is
  true (the default); with that switch off, ``sensitive`` alone asks for
  nothing;
* every other skill is never checked for age.

A checked skill is *stale* by :func:`flask_ccsso.identity.auth_time_problem`,
the one rule every part of the package asks: no ``auth_time`` (the IdP did
not say when the person authenticated: never read as "just now"), an
``auth_time`` in the future beyond the provider's ``clockSkew``, or
``now - auth_time > max_age`` (``now`` from the extension's clock).

**How strong** -- a skill with ``acrValues`` is checked on *every* request,
whatever its age settings: the identity's ``acr`` (OIDC ``acr`` claim, SAML
``AuthnContextClassRef``) must be one of them. An identity without ``acr``
fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import current_app, has_app_context

from ..identity import DEFAULT_CLOCK_SKEW, FUTURE, auth_time_problem, finite_time
from ..state import EXTENSION_KEY, get_state

if TYPE_CHECKING:
    from ..config import SessionSettings, SkillSettings
    from ..identity import AnonymousIdentity, Identity


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
NOT_REQUIRED = Freshness(applies=False, fresh=True, detail="not required for this skill")


def max_auth_age(skill: SkillSettings, session: SessionSettings) -> float:
    """The skill's ``maxAuthAge``, else ``session.maxAuthAge``."""
    return skill.max_auth_age if skill.max_auth_age is not None else session.max_auth_age


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


def _clock_and_skew(identity: Any, clock: Callable[[], float] | None) -> tuple[Callable[[], float], float]:
    """The app's clock and the identity's provider's ``clockSkew`` when an
    app with flask-ccsso is current; else the wall clock and the default."""
    if has_app_context() and EXTENSION_KEY in current_app.extensions:
        state = get_state()
        prov = state.providers.get(getattr(identity, "provider", None) or "")
        skew = getattr(getattr(prov, "settings", None), "clock_skew", DEFAULT_CLOCK_SKEW)
        return clock or state.clock, float(skew)
    return clock or time.time, DEFAULT_CLOCK_SKEW


def auth_age(identity: Any, clock: Callable[[], float] | None = None) -> float | None:
    """Seconds since the person last *authenticated* at the IdP (``auth_time``
    / SAML ``AuthnInstant``), per ``clock`` (default: the app's clock).

    ``None`` when nobody is signed in, the IdP did not say, or the time lies
    in the future beyond the provider's ``clockSkew`` (not believable): callers
    that need freshness must treat ``None`` as stale. A refresh never makes a
    session fresher: OIDC Core 12.2 keeps ``auth_time`` at the original
    authentication.
    """
    t = finite_time(getattr(identity, "auth_time", None)) if identity else None
    if t is None:
        return None
    tick, skew = _clock_and_skew(identity, clock)
    now = tick()
    if auth_time_problem(t, now=now, max_age=None, skew=skew) is not None:
        return None
    return max(0.0, now - t)


def is_fresh(identity: Any, max_age: float, clock: Callable[[], float] | None = None) -> bool:
    """``True`` when ``identity`` authenticated at most ``max_age`` seconds ago
    (by :func:`~flask_ccsso.identity.auth_time_problem`, with the provider's
    ``clockSkew``): the same answer the skill policy gives."""
    if not identity:
        return False
    tick, skew = _clock_and_skew(identity, clock)
    return auth_time_problem(getattr(identity, "auth_time", None), now=tick(), max_age=max_age, skew=skew) is None


def check_freshness(identity: Identity | AnonymousIdentity, skill: SkillSettings, *, session: SessionSettings,
                    now: float, skew: float = DEFAULT_CLOCK_SKEW, age: bool = True) -> Freshness:
    """Is ``identity``'s authentication recent and strong enough for ``skill``?

    ``skew`` is the identity's provider's ``clockSkew``. ``age=False`` leaves
    the age out (``has_skill``'s default) but never the ``acr``: a sign-in
    that is too weak is too weak however it is asked.
    """
    acr_values = tuple(skill.acr_values)
    age_applies = age and freshness_applies(skill, session)
    if not age_applies and not acr_values:
        return NOT_REQUIRED
    acr_ok = acr_satisfied(identity, skill)
    limit: int | None = None
    seconds: float | None = None
    if age_applies:
        limit = int(max_auth_age(skill, session))
        auth_time = finite_time(getattr(identity, "auth_time", None))
        if auth_time is None:
            return Freshness(True, False, limit, acr_values, None,
                             f"the sign-in time is unknown; re-authentication within {limit}s is required",
                             "maxAuthAge", acr_ok)
        seconds = now - auth_time
        problem = auth_time_problem(auth_time, now=now, max_age=limit, skew=skew)
        if problem == FUTURE:
            return Freshness(True, False, limit, acr_values, seconds, "the sign-in time is in the future",
                             "maxAuthAge", acr_ok)
        if problem is not None:
            return Freshness(True, False, limit, acr_values, seconds,
                             f"signed in {int(seconds)}s ago; this skill needs a sign-in within {limit}s",
                             "maxAuthAge", acr_ok)
    if acr_ok is False:
        return Freshness(True, False, limit, acr_values, seconds, _acr_detail(identity, acr_values, False),
                         "acrValues", False)
    if limit is None:
        return Freshness(True, True, None, acr_values, None, _acr_detail(identity, acr_values, True), None, acr_ok)
    return Freshness(True, True, limit, acr_values, seconds,
                     f"signed in {max(0, int(seconds or 0))}s ago (limit {limit}s)", None, acr_ok)


def _acr_detail(identity: Any, acr_values: tuple[str, ...], ok: bool) -> str:
    acr = getattr(identity, "acr", None)
    if ok:
        return f"acr {acr!r} is one of {', '.join(acr_values)}"
    return f"the sign-in's acr {acr!r} is not one of {', '.join(acr_values)}"


__all__ = ["NOT_REQUIRED", "Freshness", "acr_satisfied", "auth_age", "check_freshness", "freshness_applies",
           "is_fresh", "max_auth_age"]
