"""Skills: the access policy and ``@requires_skill``.

One check underlies everything (like Django's ``user_passes_test``):
:func:`enforce` resolves the caller, asks the policy, sends the decision's
signal and raises one of three separate outcomes:

* nobody signed in (or a bad bearer token) → :class:`LoginRequired` (browser:
  sign-in redirect; API: ``401``);
* signed in, but not recently / strongly enough → :class:`StepUpRequired`
  (browser: back to the IdP; API: RFC 9470 ``401``);
* signed in without the skill → :class:`SkillRequired` (``403`` naming the
  skill and the failed condition, never the person's groups).

:func:`requires_skill` (views, bare or called, and blueprints),
:func:`skill_guard` (``bp.before_request``), :func:`login_required` and
:func:`has_skill` (code and Jinja) are thin wrappers around it.

Deny by default: a skill name that is not configured is a start-up
:class:`~flask_ccsso.exceptions.ConfigError` -- at decoration time when an app
with flask-ccsso is current, otherwise when the view (or guard) meets such an
app (at ``init_app`` for what was registered before, at ``add_url_rule`` /
``register_blueprint`` for what comes after). Should a name still reach a
request unchecked, the request is refused, never let through.

Decision order for one skill (the first failure decides):

1. ``providers`` -- the identity came from one of them;
2. ``allowedNetworks`` -- ``request.remote_addr`` in one of the CIDR ranges;
3. ``allowedGroups`` -- ``identity.effective_groups`` (groups + app roles)
   meets the list; a truncated group list that does not already match is
   ``groups_incomplete``, never "no groups";
4. ``requiredScopes`` -- all of them in the identity's scopes;
5. freshness (``sensitive`` / ``maxAuthAge``, see :mod:`flask_ccsso.stepup`)
   -- stale → step-up, not 403: re-authenticating can fix it, and asking for
   it only after 1-4 pass means nobody re-authenticates for a skill they can
   never have;
6. ``acrValues`` -- whenever set, the identity's ``acr`` must be one of them;
   too weak → step-up (with ``acr_values`` / ``RequestedAuthnContext``), never
   a silent pass;
7. ``requireMfa`` -- an MFA ``amr`` value, or an ``acr`` from the skill's
   ``acrValues`` (unless it names a single-factor class, see
   :data:`SINGLE_FACTOR_ACR_VALUES`) or :data:`MFA_ACR_VALUES`. Checked after
   the step-up conditions so that the step-up gets the chance to satisfy it.
"""

from __future__ import annotations

import functools
import inspect
import ipaddress
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, overload

from flask import Blueprint, Flask, current_app, has_app_context, has_request_context, request
from werkzeug.wrappers import Response

from . import reasons, signals
from .exceptions import ConfigError, LoginRequired, SkillRequired
from .extension import get_state, identity_required
from .stepup import Freshness, check_freshness, step_up

if TYPE_CHECKING:
    from .config import SkillSettings
    from .extension import CCSSOState
    from .identity import AnonymousIdentity, Identity

log = logging.getLogger("flask_ccsso")

F = TypeVar("F", bound=Callable[..., Any])

#: reason code for a skill restricted to other providers (``providers`` key)
PROVIDER_NOT_ALLOWED = "provider_not_allowed"
#: reason code for a name that is not configured (should never reach a request)
SKILL_NOT_CONFIGURED = "skill_not_configured"

#: RFC 8176 ``amr`` values that show a second factor (or several) was used
MFA_AMR_VALUES: frozenset[str] = frozenset({
    "mfa", "mca", "otp", "hwk", "sc", "sms", "tel", "fpt", "face", "iris", "retina", "vbm",
})
#: ``acr`` values (OIDC) / AuthnContextClassRef values (SAML) that mean MFA
MFA_ACR_VALUES: frozenset[str] = frozenset({
    "http://schemas.openid.net/pape/policies/2007/06/multi-factor",
    "http://schemas.openid.net/pape/policies/2007/06/multi-factor-physical",
    "https://refeds.org/profile/mfa",
    "urn:okta:loa:2fa:any",
    "phr", "phrh",
    "http://schemas.microsoft.com/claims/multipleauthn",
    "urn:oasis:names:tc:SAML:2.0:ac:classes:MobileTwoFactorContract",
    "urn:oasis:names:tc:SAML:2.0:ac:classes:MobileTwoFactorUnregistered",
    "urn:oasis:names:tc:SAML:2.0:ac:classes:TimeSyncToken",
})

#: ``acr`` / AuthnContextClassRef values that name a single-factor (or no)
#: authentication. Listed in a skill's ``acrValues`` they still never count as
#: MFA for ``requireMfa`` (``flask ccsso check-config`` flags the contradiction).
SINGLE_FACTOR_ACR_VALUES: frozenset[str] = frozenset({
    "0", "1", "pwd", "urn:ccsso:loa1",
    "urn:okta:loa:1fa:any", "urn:okta:loa:1fa:pwd",
    "urn:oasis:names:tc:SAML:2.0:ac:classes:unspecified",
    "urn:oasis:names:tc:SAML:2.0:ac:classes:Password",
    "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport",
    "urn:oasis:names:tc:SAML:2.0:ac:classes:InternetProtocol",
    "urn:oasis:names:tc:SAML:2.0:ac:classes:InternetProtocolPassword",
    "urn:oasis:names:tc:SAML:2.0:ac:classes:PreviousSession",
    "urn:oasis:names:tc:SAML:2.0:ac:classes:Kerberos",
    "urn:federation:authentication:windows",
    "http://schemas.microsoft.com/ws/2008/06/identity/authenticationmethod/password",
    "http://schemas.microsoft.com/ws/2008/06/identity/authenticationmethod/windows",
})

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

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


# --------------------------------------------------------------------------- the policy

@dataclass(frozen=True)
class Check:
    """One condition of one skill, as evaluated."""

    #: the config key: ``providers``, ``allowedNetworks``, ``allowedGroups``,
    #: ``requiredScopes``, ``maxAuthAge``, ``acrValues``, ``requireMfa``
    condition: str
    passed: bool
    #: reason code when it failed
    reason: str | None = None
    #: operator-facing detail (``flask ccsso explain``); may name *matched*
    #: allowed groups and missing scopes, never goes into HTTP responses
    detail: str = ""


@dataclass(frozen=True)
class Decision:
    """The policy's answer for one skill."""

    skill: str
    #: ``"allowed"``, ``"step_up"`` or ``"denied"``
    outcome: str
    checks: tuple[Check, ...] = ()
    reason: str | None = None
    condition: str | None = None
    freshness: Freshness | None = None

    @property
    def allowed(self) -> bool:
        return self.outcome == "allowed"


@dataclass(frozen=True)
class Verdict:
    """The answer for a set of skills (``any_of`` / ``all_of``)."""

    outcome: str
    #: the decision that settles it (the granting one, or the one reported)
    decision: Decision | None
    decisions: tuple[Decision, ...] = field(default_factory=tuple)

    @property
    def allowed(self) -> bool:
        return self.outcome == "allowed"


def _norm_group(value: str) -> str:
    # Entra ID object ids are GUIDs: compare them case-insensitively
    return value.lower() if _GUID.match(value) else value


@functools.lru_cache(maxsize=4096)
def _normalized_groups(groups: frozenset[str]) -> frozenset[str]:
    """An identity's groups as ``allowedGroups`` compares them. Cached: the
    same person's groups come back request after request (a frozenset keeps
    its hash, so a hit costs one lookup instead of a regex per group)."""
    return frozenset(_norm_group(x) for x in groups)


@functools.lru_cache(maxsize=1024)
def _normalized_allowed(allowed: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """A skill's ``allowedGroups`` as ``(as configured, normalized)`` pairs."""
    return tuple((gr, _norm_group(gr)) for gr in allowed)


def _ip(value: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not value:
        return None
    try:
        addr = ipaddress.ip_address(value.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def has_mfa(identity: Any, skill: SkillSettings | None = None) -> bool:
    """An MFA ``amr`` value, or an ``acr`` in :data:`MFA_ACR_VALUES` or in the
    skill's ``acrValues`` (but not in :data:`SINGLE_FACTOR_ACR_VALUES`)."""
    if any(a in MFA_AMR_VALUES for a in getattr(identity, "amr", ()) or ()):
        return True
    acr = getattr(identity, "acr", None)
    if not isinstance(acr, str) or not acr:
        return False
    if acr in MFA_ACR_VALUES:
        return True
    # a skill's own acrValues count as MFA -- but a known single-factor class
    # listed there is still single-factor (it would turn requireMfa off)
    return skill is not None and acr in skill.acr_values and acr not in SINGLE_FACTOR_ACR_VALUES


#: conditions a new sign-in at the IdP can satisfy: failing one is a step-up, not a 403
_STEP_UP_CONDITIONS = ("maxAuthAge", "acrValues")


def _step_up_checks(identity: Any, skill: SkillSettings, fresh: Freshness) -> list[Check]:
    """The ``maxAuthAge`` and ``acrValues`` rows of an explained decision."""
    out = []
    if fresh.max_age is not None:  # checked for age
        ok = fresh.failed != "maxAuthAge"
        detail = fresh.detail if not ok else (
            f"signed in {max(0, int(fresh.age or 0))}s ago (limit {fresh.max_age}s)")
        out.append(Check("maxAuthAge", ok, None if ok else reasons.STALE_AUTHENTICATION, detail))
    if fresh.acr_ok is not None:
        acr = getattr(identity, "acr", None)
        out.append(Check("acrValues", fresh.acr_ok, None if fresh.acr_ok else reasons.INSUFFICIENT_ACR,
                         f"acr {acr!r} {'is' if fresh.acr_ok else 'is not'} one of {', '.join(skill.acr_values)}"))
    return out


class SkillPolicy:
    """Evaluates skills for one app (``state.policy``)."""

    def __init__(self, state: CCSSOState) -> None:
        self.state = state

    @property
    def skills(self) -> Any:
        return self.state.config.skills

    def effective_scopes(self, identity: Any) -> frozenset[str]:
        """The identity's scopes, plus -- for a SAML provider with
        ``scopesFromGroups`` -- the scopes its groups map to."""
        scopes = frozenset(getattr(identity, "scopes", ()) or ())
        prov = self.state.providers.get(getattr(identity, "provider", None) or "")
        mapping = getattr(getattr(prov, "settings", None), "scopes_from_groups", None)
        if mapping:
            extra: set[str] = set()
            groups: frozenset[str] = getattr(identity, "effective_groups", frozenset())
            for grp, mapped in mapping.items():
                if grp in groups:
                    extra.update(mapped)
            scopes = scopes | extra
        return scopes

    def evaluate(self, skill: SkillSettings, identity: Identity | AnonymousIdentity, *,
                 remote_addr: str | None, now: float | None = None, freshness: bool = True,
                 explain: bool = True) -> Decision:
        """Every condition of ``skill`` for ``identity``; the outcome follows
        the decision order in the module docstring.

        ``explain=False`` (the request path) gives the same outcome, reason
        and condition, but stops at the first failing condition and builds no
        :class:`Check` list (``checks`` is empty, and ``freshness`` is only
        computed when the conditions before it pass)."""
        if not explain:
            return self._quick(skill, identity, remote_addr, now, freshness)
        checks: list[Check] = []
        if skill.providers:
            ok = getattr(identity, "provider", None) in skill.providers
            checks.append(Check("providers", ok, None if ok else PROVIDER_NOT_ALLOWED,
                                f"signed in with {getattr(identity, 'provider', None)!r}; "
                                f"accepted: {', '.join(skill.providers)}"))
        if skill.allowed_networks:
            addr = _ip(remote_addr)
            ok = addr is not None and any(addr.version == n.version and addr in n for n in skill.allowed_networks)
            checks.append(Check("allowedNetworks", ok, None if ok else reasons.NETWORK_NOT_ALLOWED,
                                f"address {remote_addr or 'unknown'} "
                                f"{'is in' if ok else 'is not in'} {', '.join(map(str, skill.allowed_networks))}"))
        if skill.allowed_groups:
            have = _normalized_groups(frozenset(getattr(identity, "effective_groups", frozenset())))
            matched = sorted(gr for gr, norm in _normalized_allowed(skill.allowed_groups) if norm in have)
            if matched:
                checks.append(Check("allowedGroups", True, None, f"member of {', '.join(matched)}"))
            elif not getattr(identity, "groups_complete", True):
                checks.append(Check("allowedGroups", False, reasons.GROUPS_INCOMPLETE,
                                    "the identity provider sent an incomplete group list and none of the "
                                    "known groups is allowed; membership cannot be decided"))
            else:
                checks.append(Check("allowedGroups", False, reasons.MISSING_GROUP,
                                    f"in none of {', '.join(skill.allowed_groups)}"))
        if skill.required_scopes:
            scopes = self.effective_scopes(identity)
            missing = [s for s in skill.required_scopes if s not in scopes]
            checks.append(Check("requiredScopes", not missing, reasons.MISSING_SCOPE if missing else None,
                                f"missing {', '.join(missing)}" if missing
                                else f"has {', '.join(skill.required_scopes)}"))
        # age only when asked (``freshness``); the acr whenever the skill lists acrValues
        fresh = check_freshness(identity, skill, self.state, now=now, age=freshness)
        if fresh.applies:
            checks.extend(_step_up_checks(identity, skill, fresh))
        if skill.require_mfa:
            ok = has_mfa(identity, skill)
            checks.append(Check("requireMfa", ok, None if ok else reasons.MFA_REQUIRED,
                                f"amr={list(getattr(identity, 'amr', ()) or ())} "
                                f"acr={getattr(identity, 'acr', None)!r}"))
        failed = next((c for c in checks if not c.passed), None)
        if failed is None:
            return Decision(skill.name, "allowed", tuple(checks), freshness=fresh)
        outcome = "step_up" if failed.condition in _STEP_UP_CONDITIONS else "denied"
        return Decision(skill.name, outcome, tuple(checks), failed.reason, failed.condition, fresh)

    def _quick(self, skill: SkillSettings, identity: Identity | AnonymousIdentity, remote_addr: str | None,
               now: float | None, freshness: bool) -> Decision:
        """``evaluate(explain=False)``: the same decision order, no details."""
        name = skill.name
        if skill.providers and getattr(identity, "provider", None) not in skill.providers:
            return Decision(name, "denied", (), PROVIDER_NOT_ALLOWED, "providers")
        if skill.allowed_networks:
            addr = _ip(remote_addr)
            if addr is None or not any(addr.version == n.version and addr in n for n in skill.allowed_networks):
                return Decision(name, "denied", (), reasons.NETWORK_NOT_ALLOWED, "allowedNetworks")
        if skill.allowed_groups:
            have = _normalized_groups(frozenset(getattr(identity, "effective_groups", frozenset())))
            if not any(norm in have for _, norm in _normalized_allowed(skill.allowed_groups)):
                reason = reasons.MISSING_GROUP if getattr(identity, "groups_complete", True) \
                    else reasons.GROUPS_INCOMPLETE
                return Decision(name, "denied", (), reason, "allowedGroups")
        if skill.required_scopes:
            scopes = self.effective_scopes(identity)
            if any(sc not in scopes for sc in skill.required_scopes):
                return Decision(name, "denied", (), reasons.MISSING_SCOPE, "requiredScopes")
        fresh = check_freshness(identity, skill, self.state, now=now, age=freshness)
        if fresh.applies and not fresh.fresh:
            reason = reasons.INSUFFICIENT_ACR if fresh.failed == "acrValues" else reasons.STALE_AUTHENTICATION
            return Decision(name, "step_up", (), reason, fresh.failed or "maxAuthAge", fresh)
        if skill.require_mfa and not has_mfa(identity, skill):
            return Decision(name, "denied", (), reasons.MFA_REQUIRED, "requireMfa", fresh)
        return Decision(name, "allowed", (), freshness=fresh)

    def decide(self, names: Iterable[str], identity: Identity | AnonymousIdentity, *, all_of: bool = False,
               remote_addr: str | None = None, now: float | None = None, freshness: bool = True,
               explain: bool = True) -> Verdict:
        """``any_of`` (default): allowed when one skill allows; otherwise a
        step-up when some skill only lacks freshness, else the first denial.
        ``all_of``: a denial wins over a step-up (re-authenticating would not
        help), a step-up asks for the strictest ``max_age`` involved."""
        decisions = []
        for name in names:
            skill = self.skills.get(name)
            if skill is None:
                log.error("flask-ccsso: skill %r is not configured; refusing", name)
                decisions.append(Decision(name, "denied", (), SKILL_NOT_CONFIGURED, None))
                continue
            decisions.append(self.evaluate(skill, identity, remote_addr=remote_addr, now=now, freshness=freshness,
                                           explain=explain))
        ds = tuple(decisions)
        allowed = [d for d in ds if d.allowed]
        stale = [d for d in ds if d.outcome == "step_up"]
        denied = [d for d in ds if d.outcome == "denied"]
        if not ds:
            return Verdict("allowed", None, ds)
        if all_of:
            if denied:
                return Verdict("denied", denied[0], ds)
            if stale:
                return Verdict("step_up", min(stale, key=lambda d: d.freshness.max_age or 0), ds)  # type: ignore[union-attr]
            return Verdict("allowed", ds[0], ds)
        if allowed:
            return Verdict("allowed", allowed[0], ds)
        if stale:
            return Verdict("step_up", stale[0], ds)
        return Verdict("denied", denied[0], ds)


def _policy(state: CCSSOState | None = None) -> SkillPolicy:
    state = state or get_state()
    pol = state.policy
    if not isinstance(pol, SkillPolicy):
        pol = state.policy = SkillPolicy(state)
    return pol


# --------------------------------------------------------------------------- the one check

def _send_denied(identity: Any, names: tuple[str, ...], reason: str, condition: str | None, via: str | None) -> None:
    signals.permission_denied.send(current_app._get_current_object(),  # type: ignore[attr-defined]
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
    """
    try:
        identity = identity_required()
    except LoginRequired as exc:
        _send_denied(None, names, exc.reason, None, _caller_via())
        raise
    if not names:
        if signals.skill_invoked.receivers:  # no listener: build no kwargs
            signals.skill_invoked.send(current_app._get_current_object(),  # type: ignore[attr-defined]
                                       identity=identity, skill=None, skills=[], via=identity.via,
                                       endpoint=request.endpoint)
        return identity
    req = request._get_current_object()  # type: ignore[attr-defined]
    verdict = _policy().decide(names, identity, all_of=all_of, remote_addr=req.remote_addr, explain=False)
    d = verdict.decision
    assert d is not None
    if verdict.outcome == "allowed":
        if signals.skill_invoked.receivers:
            signals.skill_invoked.send(current_app._get_current_object(),  # type: ignore[attr-defined]
                                       identity=identity, skill=d.skill, skills=list(names), via=identity.via,
                                       endpoint=req.endpoint)
        return identity
    if verdict.outcome == "step_up":
        assert d.freshness is not None
        raise step_up(identity, d.skill, d.freshness)
    reason = d.reason or reasons.MISSING_GROUP
    _send_denied(identity, names, reason, d.condition, identity.via)
    why = _CONDITION_TEXT.get(d.condition or "", "it is not configured" if reason == SKILL_NOT_CONFIGURED else "")
    if reason == reasons.GROUPS_INCOMPLETE:
        why = ("your identity provider sent an incomplete group list, so membership could not be checked; "
               "ask an administrator")
        if identity.via == "bearer":  # bearer.py: no group claim in the token, none from userinfo
            why = ("the access token carries no (complete) group claim and the identity provider's userinfo "
                   "gave none, so membership could not be checked; this API needs an access token with group "
                   "claims (add a groups claim to the access tokens at the identity provider)")
    raise SkillRequired(f"You need the '{d.skill}' skill: {why}." if why else f"You need the '{d.skill}' skill.",
                        skill=d.skill, condition=d.condition, reason=reason)


# --------------------------------------------------------------------------- start-up checks

def _validate_names(names: Iterable[str], state: CCSSOState, where: str) -> None:
    configured = state.config.skills
    for name in names:
        if name not in configured:
            listed = ", ".join(sorted(configured)) or "(none configured)"
            raise ConfigError(f"skills.{name}", f"is required by {where} but is not configured.",
                              f"add it to the 'skills' block, or use one of: {listed}.")


def _skills_of(func: Any) -> tuple[str, ...] | None:
    seen = 0
    while func is not None and seen < 20:
        names = getattr(func, SKILLS_ATTR, None)
        if names is not None:
            return names  # type: ignore[no-any-return]
        func = getattr(func, "__wrapped__", None)
        seen += 1
    return None


def _describe(func: Any, endpoint: str | None = None) -> str:
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
    mod = getattr(func, "__module__", "")
    return f"view {endpoint!r} ({mod}.{name})" if endpoint else f"{mod}.{name}"


def _validate_app(app: Flask, state: CCSSOState) -> None:
    for endpoint, view in list(app.view_functions.items()):
        names = _skills_of(view)
        if names:
            _validate_names(names, state, _describe(view, endpoint))
    for scope, funcs in list(app.before_request_funcs.items()):
        for fn in funcs:
            names = _skills_of(fn)
            if names:
                _validate_names(names, state, f"skill_guard on {scope or 'the app'!s}")


def _check_now(names: tuple[str, ...], where: str) -> None:
    """At decoration time, when an app with flask-ccsso is current."""
    if names and has_app_context() and "ccsso" in current_app.extensions:
        _validate_names(names, get_state(), where)


def _hook_app(app: Flask, state: CCSSOState) -> None:
    """Check views and guards that reach the app after ``init_app``."""
    original_add = app.add_url_rule
    original_register = app.register_blueprint

    @functools.wraps(original_add)
    def add_url_rule(rule: str, endpoint: str | None = None, view_func: Any = None, **options: Any) -> None:
        names = _skills_of(view_func) if view_func is not None else None
        if names:
            _validate_names(names, state, _describe(view_func, endpoint or getattr(view_func, "__name__", None)))
        original_add(rule, endpoint, view_func, **options)

    @functools.wraps(original_register)
    def register_blueprint(blueprint: Blueprint, **options: Any) -> None:
        original_register(blueprint, **options)
        _validate_app(app, state)

    app.add_url_rule = add_url_rule  # type: ignore[method-assign, assignment]
    app.register_blueprint = register_blueprint  # type: ignore[method-assign, assignment]


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
    return wrapper  # type: ignore[return-value]


def login_required(view: F) -> F:
    """Signed in (by session or bearer token), nothing more."""
    return _protect(view, identity_required, None)


def skill_guard(*names: str, all_of: bool = False) -> Callable[[], None]:
    """A ``before_request`` function protecting a whole blueprint::

        admin = Blueprint("admin", __name__)
        admin.before_request(skill_guard("security-audit"))

    ``OPTIONS`` passes. Names are checked when the blueprint is registered on
    an app with flask-ccsso (start-up), like :func:`requires_skill`'s.
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
    from .identity import current_identity

    try:
        ident = current_identity._get_current_object()  # type: ignore[union-attr]
    except LoginRequired:  # e.g. a bad bearer token
        return False
    if not ident:
        return False
    verdict = _policy().decide(names, ident, all_of=all_of, remote_addr=request.remote_addr, freshness=fresh,
                               explain=False)
    return verdict.allowed


def _handle_skill_required(exc: SkillRequired) -> Response:
    """403 naming the skill and the failed condition (JSON: ``skill``,
    ``condition``); never the person's groups."""
    from .responses import error_response

    return error_response(exc, extra={"skill": exc.skill, "condition": exc.condition})


def init_state(app: Flask, state: CCSSOState) -> None:
    """Called by ``init_app``: the policy, the template global, the 403
    handler, and start-up checks of every skill name in use."""
    state.policy = SkillPolicy(state)
    app.add_template_global(has_skill, "has_skill")
    app.register_error_handler(SkillRequired, _handle_skill_required)
    _validate_app(app, state)
    _hook_app(app, state)


__all__ = [
    "MFA_ACR_VALUES",
    "MFA_AMR_VALUES",
    "SINGLE_FACTOR_ACR_VALUES",
    "Check",
    "Decision",
    "SkillPolicy",
    "Verdict",
    "enforce",
    "has_mfa",
    "has_skill",
    "login_required",
    "requires_skill",
    "skill_guard",
]
