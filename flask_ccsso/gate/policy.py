"""Skills: the access policy -- the one evaluator.

:class:`SkillPolicy` decides; :mod:`flask_ccsso.gate.decorators` (``enforce``
and the decorators) turns the decision into one of three outcomes. The fast
path, ``enforce`` and ``flask ccsso explain`` all walk the same ordered
conditions below.

Deny by default: a skill name that is not configured is a start-up
:class:`~flask_ccsso.exceptions.ConfigError` -- at decoration time when an app
with flask-ccsso is current, otherwise at ``init_app`` for what was registered
before and before the app's first request for what came after
(:func:`~flask_ccsso.gate.decorators.check_skill_names`). Should a name still
reach a request unchecked, the request is refused, never let through.

Decision order for one skill (the first failure decides):

1. ``providers`` -- the identity came from one of them;
2. ``allowedNetworks`` -- ``request.remote_addr`` in one of the CIDR ranges;
3. ``allowedGroups`` -- ``identity.effective_groups`` (groups + app roles)
   meets the list; a truncated group list that does not already match is
   ``groups_incomplete``, never "no groups";
4. ``requiredScopes`` -- all of them in the identity's scopes;
5. freshness (``sensitive`` / ``maxAuthAge``, see :mod:`flask_ccsso.gate.freshness`)
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
import ipaddress
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import reasons
from ..identity import DEFAULT_CLOCK_SKEW
from .freshness import Freshness, check_freshness, freshness_applies

if TYPE_CHECKING:
    from ..config import CCSSOConfig, SkillSettings
    from ..identity import AnonymousIdentity, Identity
    from ..providers.base import Provider

log = logging.getLogger("flask_ccsso")

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
    #: the skill's ``requiredScopes`` the sign-in lacks: the skill's own
    #: configuration, not the person's, so the 403 may name them (on the
    #: request path too, where ``detail`` is not built)
    missing_scopes: tuple[str, ...] = ()


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
    #: the failed check's :attr:`Check.missing_scopes`
    missing_scopes: tuple[str, ...] = ()

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


#: verdicts kept per identity (see :meth:`SkillPolicy.decide`) before the memo starts over
MEMO_SIZE = 4096

#: conditions a new sign-in at the IdP can satisfy: failing one is a step-up, not a 403
STEP_UP_CONDITIONS = ("maxAuthAge", "acrValues")


class SkillPolicy:
    """Evaluates skills for one app (``state.policy``): the one evaluator
    behind the decorators, ``has_skill`` and ``flask ccsso explain``."""

    def __init__(self, config: CCSSOConfig, providers: Mapping[str, Provider], clock: Callable[[], float]) -> None:
        self.config = config
        self.providers = providers
        self.clock = clock
        #: (identity id, names, all_of, freshness) -> (identity, verdict); see :meth:`decide`
        self._memo: dict[tuple[int, tuple[str, ...], bool, bool], tuple[Any, Verdict]] = {}
        self._pure: dict[tuple[tuple[str, ...], bool], bool] = {}
        self._memo_config = config

    @property
    def skills(self) -> Mapping[str, SkillSettings]:
        return self.config.skills

    def effective_scopes(self, identity: Any) -> frozenset[str]:
        """The identity's scopes, plus -- for a SAML provider with
        ``scopesFromGroups`` -- the scopes its groups map to."""
        scopes = frozenset(getattr(identity, "scopes", ()) or ())
        prov = self.providers.get(getattr(identity, "provider", None) or "")
        mapping = getattr(getattr(prov, "settings", None), "scopes_from_groups", None)
        if mapping:
            extra: set[str] = set()
            groups: frozenset[str] = getattr(identity, "effective_groups", frozenset())
            for grp, mapped in mapping.items():
                if grp in groups:
                    extra.update(mapped)
            scopes = scopes | extra
        return scopes

    def _skew(self, identity: Any) -> float:
        prov = self.providers.get(getattr(identity, "provider", None) or "")
        skew = getattr(getattr(prov, "settings", None), "clock_skew", None)
        return float(skew) if isinstance(skew, (int, float)) else DEFAULT_CLOCK_SKEW

    def freshness(self, identity: Any, skill: SkillSettings, *, now: float | None = None,
                  age: bool = True) -> Freshness:
        """The step-up checks (age, ``acr``) of ``skill`` for ``identity``."""
        return check_freshness(identity, skill, session=self.config.session,
                               now=self.clock() if now is None else now, skew=self._skew(identity), age=age)

    def _conditions(self, skill: SkillSettings, identity: Any, remote_addr: str | None, now: float | None,
                    age: bool, explain: bool, out: list[Freshness]) -> Iterator[Check]:
        """The skill's conditions, in the decision order of the module
        docstring: the one place that order is written. Lazy: a caller that
        stops at the first failure computes nothing after it. ``explain``
        adds the operator-facing details (they cost string formatting)."""
        if skill.providers:
            prov = getattr(identity, "provider", None)
            ok = prov in skill.providers
            yield Check("providers", ok, None if ok else PROVIDER_NOT_ALLOWED,
                        f"signed in with {prov!r}; accepted: {', '.join(skill.providers)}" if explain else "")
        if skill.allowed_networks:
            addr = _ip(remote_addr)
            ok = addr is not None and any(addr.version == n.version and addr in n for n in skill.allowed_networks)
            yield Check("allowedNetworks", ok, None if ok else reasons.NETWORK_NOT_ALLOWED,
                        f"address {remote_addr or 'unknown'} {'is in' if ok else 'is not in'} "
                        f"{', '.join(map(str, skill.allowed_networks))}" if explain else "")
        if skill.allowed_groups:
            yield self._groups_check(skill, identity, explain)
        if skill.required_scopes:
            scopes = self.effective_scopes(identity)
            missing = [s for s in skill.required_scopes if s not in scopes]
            yield Check("requiredScopes", not missing, reasons.MISSING_SCOPE if missing else None,
                        (f"missing {', '.join(missing)}" if missing else f"has {', '.join(skill.required_scopes)}")
                        if explain else "", tuple(missing))
        # age only when asked; the acr whenever the skill lists acrValues
        fresh = self.freshness(identity, skill, now=now, age=age)
        out.append(fresh)
        if fresh.applies:
            yield from _step_up_checks(identity, skill, fresh, explain)
        if skill.require_mfa:
            ok = has_mfa(identity, skill)
            yield Check("requireMfa", ok, None if ok else reasons.MFA_REQUIRED,
                        f"amr={list(getattr(identity, 'amr', ()) or ())} acr={getattr(identity, 'acr', None)!r}"
                        if explain else "")

    @staticmethod
    def _groups_check(skill: SkillSettings, identity: Any, explain: bool) -> Check:
        have = _normalized_groups(frozenset(getattr(identity, "effective_groups", frozenset())))
        matched = [gr for gr, norm in _normalized_allowed(skill.allowed_groups) if norm in have]
        if matched:
            return Check("allowedGroups", True, None, f"member of {', '.join(sorted(matched))}" if explain else "")
        if not getattr(identity, "groups_complete", True):
            return Check("allowedGroups", False, reasons.GROUPS_INCOMPLETE,
                         "the identity provider sent an incomplete group list and none of the known groups is "
                         "allowed; membership cannot be decided" if explain else "")
        return Check("allowedGroups", False, reasons.MISSING_GROUP,
                     f"in none of {', '.join(skill.allowed_groups)}" if explain else "")

    def evaluate(self, skill: SkillSettings, identity: Identity | AnonymousIdentity, *,
                 remote_addr: str | None, now: float | None = None, freshness: bool = True,
                 explain: bool = True) -> Decision:
        """Every condition of ``skill`` for ``identity``; the outcome follows
        the decision order in the module docstring.

        ``explain=False`` (the request path) gives the same outcome, reason
        and condition, but stops at the first failing condition and keeps no
        :class:`Check` list (``checks`` is empty, and ``freshness`` is only
        computed when the conditions before it pass)."""
        fresh: list[Freshness] = []
        checks: list[Check] = []
        failed: Check | None = None
        for check in self._conditions(skill, identity, remote_addr, now, freshness, explain, fresh):
            if explain:
                checks.append(check)
            if not check.passed and failed is None:
                failed = check
                if not explain:
                    break
        settled = fresh[0] if fresh else None
        if failed is None:
            return Decision(skill.name, "allowed", tuple(checks), freshness=settled)
        outcome = "step_up" if failed.condition in STEP_UP_CONDITIONS else "denied"
        return Decision(skill.name, outcome, tuple(checks), failed.reason, failed.condition, settled,
                        failed.missing_scopes)

    def _identity_only(self, names: tuple[str, ...], freshness: bool) -> bool:
        """Does the verdict on ``names`` depend on nothing but the identity --
        no ``allowedNetworks`` (the address), no age check (the clock), every
        name configured? Asked once per set of names (the config is frozen)."""
        key = (names, freshness)
        known = self._pure.get(key)
        if known is None:
            skills = [self.skills.get(n) for n in names]
            known = all(sk is not None and not sk.allowed_networks
                        and not (freshness and freshness_applies(sk, self.config.session)) for sk in skills)
            self._pure[key] = known
        return known

    def decide(self, names: Iterable[str], identity: Identity | AnonymousIdentity, *, all_of: bool = False,
               remote_addr: str | None = None, now: float | None = None, freshness: bool = True,
               explain: bool = True) -> Verdict:
        """``any_of`` (default): allowed when one skill allows; otherwise a
        step-up when some skill only lacks freshness, else the first denial.
        ``all_of``: a denial wins over a step-up (re-authenticating would not
        help), a step-up asks for the strictest ``max_age`` involved.

        On the request path (``explain=False``, the policy's own clock) the
        verdict on skills that depend on the identity alone (see
        :meth:`_identity_only`) is kept per identity *object*: a session's
        :class:`Identity` is rebuilt only when its stored data changes (a
        refresh, a new sign-in, see
        :func:`~flask_ccsso.identity.identity_from_stored`), and then it is a
        new object and is evaluated afresh. The verdict is frozen, so one
        instance serves every request. Bounded: the memo starts over when full."""
        if explain or now is not None or not identity:
            return self._decide(names, identity, all_of, remote_addr, now, freshness, explain)
        names = names if type(names) is tuple else tuple(names)
        if self._memo_config is not self.config:  # replaced config: nothing kept holds
            self._memo.clear()
            self._pure.clear()
            self._memo_config = self.config
        if not self._identity_only(names, freshness):
            return self._decide(names, identity, all_of, remote_addr, now, freshness, explain)
        key = (id(identity), names, all_of, freshness)
        hit = self._memo.get(key)
        if hit is not None and hit[0] is identity:
            return hit[1]
        verdict = self._decide(names, identity, all_of, remote_addr, now, freshness, explain)
        if len(self._memo) >= MEMO_SIZE:
            self._memo.clear()
        self._memo[key] = (identity, verdict)  # the identity is kept: its id() is not reused meanwhile
        return verdict

    def _decide(self, names: Iterable[str], identity: Identity | AnonymousIdentity, all_of: bool,
                remote_addr: str | None, now: float | None, freshness: bool, explain: bool) -> Verdict:
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
                return Verdict("step_up", min(stale, key=_strictness), ds)
            return Verdict("allowed", ds[0], ds)
        if allowed:
            return Verdict("allowed", allowed[0], ds)
        if stale:
            return Verdict("step_up", stale[0], ds)
        return Verdict("denied", denied[0], ds)


def _strictness(decision: Decision) -> int:
    return (decision.freshness.max_age or 0) if decision.freshness is not None else 0


def _step_up_checks(identity: Any, skill: SkillSettings, fresh: Freshness, explain: bool) -> Iterator[Check]:
    """The ``maxAuthAge`` and ``acrValues`` rows of a decision."""
    if fresh.max_age is not None:  # checked for age
        ok = fresh.failed != "maxAuthAge"
        detail = ""
        if explain:
            detail = fresh.detail if not ok else (
                f"signed in {max(0, int(fresh.age or 0))}s ago (limit {fresh.max_age}s)")
        yield Check("maxAuthAge", ok, None if ok else reasons.STALE_AUTHENTICATION, detail)
    if fresh.acr_ok is not None:
        acr = getattr(identity, "acr", None)
        yield Check("acrValues", fresh.acr_ok, None if fresh.acr_ok else reasons.INSUFFICIENT_ACR,
                    f"acr {acr!r} {'is' if fresh.acr_ok else 'is not'} one of {', '.join(skill.acr_values)}"
                    if explain else "")


__all__ = [
    "MFA_ACR_VALUES",
    "MFA_AMR_VALUES",
    "SINGLE_FACTOR_ACR_VALUES",
    "Check",
    "Decision",
    "SkillPolicy",
    "Verdict",
    "has_mfa",
]
