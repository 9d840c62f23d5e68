"""The console asks its operators for a recent sign-in, or the app does not start.

The console ends other people's sessions, so a forgotten laptop signed in
three days ago must not be enough to use it: the console skill must make the
gate ask for a recent sign-in (step-up). Whether it does is decided by the
gate's one freshness rule, :func:`~flask_ccsso.gate.freshness.freshness_applies`
-- not by the ``sensitive`` flag alone, which asks for nothing when
``session.requireReauthenticationForSensitive`` is off.

This lives here, not in :mod:`flask_ccsso.config`, because the config sits
below the gate in the package's layers; ``init_app`` calls it right after
parsing the config, before anything is built.
``console.requireSensitiveSkill: false`` is the explicit opt-out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..exceptions import ConfigError
from ..gate.freshness import freshness_applies, max_auth_age

if TYPE_CHECKING:
    from ..config import CCSSOConfig

#: the oldest sign-in (seconds) the console skill may accept: an hour
MAX_CONSOLE_AUTH_AGE = 3600.0


def require_recent_sign_in(cfg: CCSSOConfig) -> None:
    """Raise :class:`ConfigError` when the enabled console's skill never asks
    for a recent sign-in (and ``console.requireSensitiveSkill`` is not false),
    naming the key that switched it off and how to switch it on."""
    console = cfg.console
    if not console.enabled or not console.require_sensitive_skill or not console.skill:
        return
    skill = cfg.skills.get(console.skill)
    if skill is None:
        return  # an unknown skill is the config's own refusal
    why = "the console ends other people's sessions, so it asks operators to have signed in recently"
    opt_out = "(or, knowingly, console.requireSensitiveSkill: false)"
    if freshness_applies(skill, cfg.session):
        limit = max_auth_age(skill, cfg.session)
        if limit > MAX_CONSOLE_AUTH_AGE:  # "recent" that outlives a working day asks for nothing
            key = (f"skills.{console.skill}.maxAuthAge" if skill.max_auth_age is not None else "session.maxAuthAge")
            raise ConfigError(key, f"is {limit:g} seconds, so the console skill asks for a sign-in that recent "
                              f"only -- more than {MAX_CONSOLE_AUTH_AGE:g} s: {why}.",
                              f"set skills.{console.skill}.maxAuthAge to at most {MAX_CONSOLE_AUTH_AGE:g} "
                              f"(e.g. 900) {opt_out}.")
        return
    if skill.sensitive:  # sensitive, but the session switch makes "sensitive" ask for nothing
        raise ConfigError("session.requireReauthenticationForSensitive",
                          f"is false and skills.{console.skill} (the console skill) has no maxAuthAge, so the "
                          f"console never asks for a recent sign-in: {why}.",
                          f"set skills.{console.skill}.maxAuthAge (e.g. 900 seconds), or set "
                          f"session.requireReauthenticationForSensitive to true {opt_out}.")
    raise ConfigError("console.skill", f"names {console.skill!r}, which is not sensitive and has no maxAuthAge, so "
                      f"the console never asks for a recent sign-in: {why}.",
                      f'set "sensitive": true (or a maxAuthAge) on skills.{console.skill} {opt_out}.')


__all__ = ["MAX_CONSOLE_AUTH_AGE", "require_recent_sign_in"]
