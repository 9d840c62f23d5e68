"""``@requires_skill`` and friends: thin wrappers around :func:`enforce`.

:func:`enforce` resolves the caller, asks the policy
(:class:`~flask_ccsso.gate.policy.SkillPolicy`), sends the decision's
signal and raises one of three separate outcomes:

* nobody signed in (or a bad bearer token) → :class:`LoginRequired` (browser:
  sign-in redirect; API: ``401``);
* signed in, but not recently / strongly enough → :class:`StepUpRequired`
  (browser: back to the IdP; API: RFC 9470 ``401``);
* signed in without the skill → :class:`SkillRequired` (``403`` naming the
  skill, the failed condition and any required scopes missing -- the
  skill's configuration -- never the person's groups).

:func:`requires_skill` (views, bare or called, and blueprints),
:func:`skill_guard` (``bp.before_request``), :func:`login_required` and
:func:`has_skill` (code and Jinja) are thin wrappers around it.

Deny by default: a skill name that is not configured is a
:class:`~flask_ccsso.exceptions.ConfigError` -- at decoration time when an app
with flask-ccsso is current, at ``init_app`` for what was registered before,
and before the app serves its first request for what came after (see
:func:`check_skill_names`; ``flask ccsso check-config`` runs it too). Should
a name still reach a request unchecked, the request is refused, never let
through.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

from flask import Blueprint, Flask, current_app, has_app_context, has_request_context, request

from .. import reasons, signals
from .._context import current_flask_app, unproxied
from ..exceptions import ConfigError, LoginRequired, SkillRequired
from ..state import get_state
from .current import identity_required, resolve_identity, signed_in
from .policy import SKILL_NOT_CONFIGURED
from .stepup import step_up

if TYPE_CHECKING:
    from ..identity import Identity

F = TypeVar("F", bound=Callable[..., Any])

#: attribute carrying the skill names on decorated views and guards
SKILLS_ATTR = "__ccsso_skills__"

_CONDITION_TEXT = {
    "providers": "you signed in with a provider this skill does not accept",
    "allowedNetworks": "this skill is not available from your network",
    "allowedGroups": "you are not in one of its allowed groups",
    "requiredScopes": "your sign-in does not carry its required scopes",
    "requireMfa": "it needs a multi-factor sign-in",
    "acrValues": "it needs a stronger sign-in",
}


# --------------------------------------------------------------------------- the one check

def _send_denied(identity: Any, names: tuple[str, ...], reason: str, condition: str | None, via: str | None) -> None:
    signals.permission_denied.send(current_flask_app(),
                                   identity=identity, skill=names[0] if names else None, skills=list(names),
                                   reason=reason, condition=condition, via=via, endpoint=request.endpoint)


def _caller_via() -> str:
    return "bearer" if request.headers.get("Authorization", "")[:7].lower() == "bearer " else "session"


def enforce(*names: str, all_of: bool = False) -> Identity:
    """The one check behind every decorator and guard.

    Returns the identity when allowed (sending ``skill_invoked``); raises
    :class:`LoginRequired` / :class:`SessionExpired`, :class:`StepUpRequired`
    or :class:`SkillRequired` otherwise (sending ``permission_denied`` or
    ``stepup_required``). With no names: signed in is enough.

    Every protected request runs this: the app, its state and the request
    are looked up once, and ``skill_invoked`` is only built when someone
    listens.
    """
    app = current_flask_app()
    state = get_state(app)
    try:
        identity = signed_in(app, state)
    except LoginRequired as exc:
        _send_denied(None, names, exc.reason, None, _caller_via())
        raise
    req = unproxied(request)
    if not names:
        if signals.skill_invoked.receivers:  # no listener: build no kwargs
            signals.skill_invoked.send(app, identity=identity, skill=None, skills=[], via=identity.via,
                                       endpoint=req.endpoint)
        return identity
    verdict = state.policy.decide(names, identity, all_of=all_of, remote_addr=req.remote_addr, explain=False)
    d = verdict.decision
    assert d is not None
    if verdict.outcome == "allowed":
        if signals.skill_invoked.receivers:
            signals.skill_invoked.send(app, identity=identity, skill=d.skill, skills=list(names), via=identity.via,
                                       endpoint=req.endpoint)
        return identity
    if verdict.outcome == "step_up":
        assert d.freshness is not None
        raise step_up(identity, d.skill, d.freshness)
    reason = d.reason or reasons.MISSING_GROUP
    _send_denied(identity, names, reason, d.condition, identity.via)
    why = _CONDITION_TEXT.get(d.condition or "", "it is not configured" if reason == SKILL_NOT_CONFIGURED else "")
    if d.missing_scopes:  # the skill's own requiredScopes: safe to name, and what the caller must ask for
        why = f"{why} (missing {', '.join(d.missing_scopes)})"
    if reason == reasons.GROUPS_INCOMPLETE:
        why = ("your identity provider sent an incomplete group list, so membership could not be checked; "
               "ask an administrator")
        if identity.via == "bearer":  # bearer.py: no group claim in the token, none from userinfo
            why = ("the access token carries no (complete) group claim and the identity provider's userinfo "
                   "gave none, so membership could not be checked; this API needs an access token with group "
                   "claims (add a groups claim to the access tokens at the identity provider)")
    raise SkillRequired(f"You need the '{d.skill}' skill: {why}." if why else f"You need the '{d.skill}' skill.",
                        skill=d.skill, condition=d.condition, reason=reason, missing_scopes=d.missing_scopes)


# --------------------------------------------------------------------------- start-up checks

def _validate_names(names: Iterable[str], configured: Mapping[str, Any], where: str) -> None:
    for name in names:
        if name not in configured:
            listed = ", ".join(sorted(configured)) or "(none configured)"
            raise ConfigError(f"skills.{name}", f"is required by {where} but is not configured.",
                              f"add it to the 'skills' block, or use one of: {listed}.")


def _skills_of(func: Any) -> tuple[str, ...] | None:
    seen = 0
    while func is not None and seen < 20:
        names = getattr(func, SKILLS_ATTR, None)
        if isinstance(names, tuple):
            return names
        func = getattr(func, "__wrapped__", None)
        seen += 1
    return None


def _describe(func: Any, endpoint: str | None = None) -> str:
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
    mod = getattr(func, "__module__", "")
    return f"view {endpoint!r} ({mod}.{name})" if endpoint else f"{mod}.{name}"


def check_skill_names(app: Flask, skills: Mapping[str, Any] | None = None) -> None:
    """Every skill name a view or guard of ``app`` requires is configured, or
    :class:`ConfigError`. Run by ``init_app``, again before the app's first
    request (for views and blueprints added after ``init_app``: Flask allows
    no new routes once it served one), and by ``flask ccsso check-config``."""
    configured = skills if skills is not None else get_state(app).config.skills
    for endpoint, view in list(app.view_functions.items()):
        names = _skills_of(view)
        if names:
            _validate_names(names, configured, _describe(view, endpoint))
    for scope, funcs in list(app.before_request_funcs.items()):
        for fn in funcs:
            names = _skills_of(fn)
            if names:
                _validate_names(names, configured, f"skill_guard on {scope or 'the app'!s}")


def _check_now(names: tuple[str, ...], where: str) -> None:
    """At decoration time, when an app with flask-ccsso is current."""
    if names and has_app_context() and "ccsso" in current_app.extensions:
        _validate_names(names, get_state().config.skills, where)


# --------------------------------------------------------------------------- thin wrappers

def _answers_preflight(view: Any) -> bool:
    """The view (or a decorator on it, like ``flask_cors.cross_origin``)
    declared that it answers ``OPTIONS`` itself."""
    return getattr(view, "provide_automatic_options", None) is False


def _preflight(view: Any) -> Any:
    """``OPTIONS`` passes the skill check (a CORS preflight carries no
    credentials), but it must not run a protected view's body: a view that
    merely lists ``OPTIONS`` in ``methods`` gets Flask's default ``OPTIONS``
    answer (``Allow``; CORS extensions add their headers in ``after_request``).
    ``None``: the view answers preflights itself -- call it."""
    if _answers_preflight(view):
        return None
    return current_app.make_default_options_response()


def _protect(view: F, check: Callable[[], Any], names: tuple[str, ...] | None) -> F:
    """Run ``check`` before ``view`` (``OPTIONS`` passes, see :func:`_preflight`);
    async views work (they go through ``app.ensure_sync``; a plain view is
    called as is)."""
    is_async = inspect.iscoroutinefunction(view)

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if request.method == "OPTIONS":
            answer = _preflight(view)
            if answer is not None:
                return answer
        else:
            check()
        if is_async:
            return current_app.ensure_sync(view)(*args, **kwargs)
        return view(*args, **kwargs)

    if names is not None:
        setattr(wrapper, SKILLS_ATTR, names)
    return cast(F, wrapper)


def login_required(view: F) -> F:
    """Signed in (by session or bearer token), nothing more."""
    return _protect(view, identity_required, None)


def skill_guard(*names: str, all_of: bool = False) -> Callable[[], None]:
    """A ``before_request`` function protecting a whole blueprint::

        admin = Blueprint("admin", __name__)
        admin.before_request(skill_guard("security-audit"))

    ``OPTIONS`` passes. Names are checked like :func:`requires_skill`'s: at
    ``init_app`` for a blueprint registered before it, before the app's first
    request for one registered after (see :func:`check_skill_names`).
    """
    _check_names_type(names)
    _check_now(names, f"skill_guard{names!r}")

    def guard() -> Any:
        if request.method != "OPTIONS":
            enforce(*names, all_of=all_of)
            return None
        if request.endpoint is None:  # 404 / 405: Flask answers
            return None
        return _preflight(current_app.view_functions.get(request.endpoint))

    setattr(guard, SKILLS_ATTR, names)
    guard.__qualname__ = f"skill_guard{names!r}"
    return guard


def _check_names_type(names: tuple[Any, ...]) -> None:
    for n in names:
        if not isinstance(n, str) or not n:
            raise TypeError(f"skill names are non-empty strings, got {n!r}")


@overload
def requires_skill(view: F, /) -> F: ...
@overload
def requires_skill(*names: str, all_of: bool = False) -> Callable[[F], F]: ...


def requires_skill(*names: Any, all_of: bool = False) -> Any:
    """Allow the view only to callers holding the skill(s).

    ``@requires_skill("a")``; ``@requires_skill("a", "b")`` -- any of them;
    ``@requires_skill("a", "b", all_of=True)`` -- all of them. Bare
    ``@requires_skill`` (or ``()``) requires a signed-in caller and no skill.
    Applied to a :class:`~flask.Blueprint` (``requires_skill("a")(bp)``) it
    registers a :func:`skill_guard` for the whole blueprint and returns it.
    """
    if len(names) == 1 and callable(names[0]) and not isinstance(names[0], str):
        return requires_skill()(names[0])
    _check_names_type(names)
    skill_names: tuple[str, ...] = tuple(names)
    _check_now(skill_names, f"requires_skill{skill_names!r}")

    def decorator(target: Any) -> Any:
        if isinstance(target, Blueprint):
            target.before_request(skill_guard(*skill_names, all_of=all_of))
            return target
        def check() -> Identity:
            return enforce(*skill_names, all_of=all_of)

        return _protect(target, check, skill_names)

    return decorator


def has_skill(*names: str, all_of: bool = False, fresh: bool = False) -> bool:
    """Does the current caller hold the skill(s)? For code and templates
    (``{% if has_skill("security-audit") %}``).

    Sends no signal and raises nothing. By default freshness is left out --
    a stale sign-in still "has" a sensitive skill, so the page can offer the
    link, and the view asks for step-up when it is followed; ``fresh=True``
    counts a stale sign-in as not having it. Unknown names are ``False``
    (and logged).
    """
    if not has_request_context() or not names:
        return False
    try:
        ident = resolve_identity()
    except LoginRequired:  # e.g. a bad bearer token
        return False
    if not ident:
        return False
    verdict = get_state().policy.decide(names, ident, all_of=all_of, remote_addr=request.remote_addr, freshness=fresh,
                               explain=False)
    return verdict.allowed


__all__ = ["SKILLS_ATTR", "check_skill_names", "enforce", "has_skill", "login_required", "requires_skill",
           "skill_guard"]
