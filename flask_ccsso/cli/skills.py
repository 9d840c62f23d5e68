"""``flask ccsso explain``: why would this person get (or not get) a skill?

Reads the person's most recent stored session (the store's ``email:<email>``
→ ``user:<provider:subject>`` → session ids index) or takes claims as JSON,
and prints each condition of the skill with ✓ / ✗. Exit code 0: allowed,
1: denied (or a step-up would be asked for), 2: error (unknown skill, no
stored session, bad JSON).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from typing import Any, NoReturn

import click

from ..exceptions import CCSSOError
from ..identity import Identity
from ..providers.oidc import token_scopes
from ..sessions.index import LiveSession
from ..state import CCSSOState
from ._common import current_state, error_text, fail, with_app

__all__ = ["explain", "latest_session"]


def _fail(message: str) -> NoReturn:
    fail(f"explain: {message}")


def latest_session(state: CCSSOState, user: str) -> tuple[Identity, LiveSession] | None:
    """The identity of ``user``'s (email or ``provider:subject``) most
    recently active live session, and that session; ``None`` when they have
    none (the CLI's ``explain --user`` and the operator console's explain)."""
    best: tuple[float, Identity, LiveSession] | None = None
    for live in state.sessions.sessions_of(user):
        try:
            ident = live.record.person()
        except (KeyError, TypeError, ValueError):
            continue
        if best is None or live.record.active_at > best[0]:
            best = (live.record.active_at, ident, live)
    return (best[1], best[2]) if best is not None else None


def _identity_from_store(state: CCSSOState, email: str) -> Identity:
    """The identity of ``email``'s most recently active live session."""
    found = latest_session(state, email)
    if found is None:
        _fail(f"no stored session for {email} (they need to be signed in, or use --claims).")
    return found[0]


def _unknown_skill(name: str, configured: Iterable[str]) -> str:
    """The message for a skill name that is not configured: the closest
    configured name first (a typo is the usual cause), then all of them."""
    names = sorted(configured)
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"skill {name!r} is not configured.{hint} Configured: {', '.join(names) or 'none'}."


def _strings(value: Any) -> list[str]:
    """A claim that is one string or a list of them (anything else dropped)."""
    if isinstance(value, str):
        return [value]
    return [x for x in value or () if isinstance(x, str)] if isinstance(value, (list, tuple)) else []


def _identity_from_claims(state: CCSSOState, raw: str, provider: str | None) -> Identity:
    try:
        claims = json.loads(raw)
    except json.JSONDecodeError as exc:
        _fail(f"--claims is not valid JSON ({exc.msg}).")
    if not isinstance(claims, dict):
        _fail("--claims must be a JSON object.")
    name = provider or claims.get("provider") or state.config.default_provider or next(iter(state.providers))
    if name not in state.providers:
        _fail(f"provider {name!r} is not configured (configured: {', '.join(state.providers)}).")
    if "subject" in claims:  # an Identity.to_dict() as stored in sessions
        return Identity.from_dict({**claims, "provider": name})
    scopes = claims.get("scopes")
    if scopes is None:
        scopes = token_scopes(claims)
    auth_time = claims.get("auth_time")
    return Identity(
        subject=str(claims.get("sub") or "cli"), provider=name,
        email=claims.get("email") if isinstance(claims.get("email"), str) else None,
        groups=frozenset(_strings(claims.get("groups"))), roles=frozenset(_strings(claims.get("roles"))),
        scopes=frozenset(_strings(scopes)),
        auth_time=float(auth_time) if isinstance(auth_time, (int, float)) and not isinstance(auth_time, bool) else None,
        amr=tuple(_strings(claims.get("amr"))), acr=claims.get("acr") if isinstance(claims.get("acr"), str) else None,
        groups_complete=bool(claims.get("groups_complete", True)), via=str(claims.get("via", "session")),
    )


@click.command("explain")
@click.option("--user", "email", metavar="EMAIL", help="Explain for this person's most recent stored session.")
@click.option("--claims", metavar="JSON", help="Explain for these claims instead (groups, scp/scope, amr, acr, auth_time...).")
@click.option("--skill", "skill_name", required=True, metavar="NAME", help="The skill to explain.")
@click.option("--provider", metavar="NAME", help="With --claims: the provider they came from.")
@click.option("--ip", metavar="ADDR", help="Client address to test allowedNetworks with.")
@with_app
def explain(email: str | None, claims: str | None, skill_name: str, provider: str | None, ip: str | None) -> None:
    """Show whether a person has a skill, and why (each condition ✓/✗).

    Exit status: 0 allowed, 1 denied, 2 error.
    """
    if bool(email) == bool(claims):
        _fail("give exactly one of --user EMAIL or --claims JSON.")
    try:
        state = current_state()
        skill = state.config.skills.get(skill_name)
        if skill is None:
            _fail(_unknown_skill(skill_name, state.config.skills))
        identity = _identity_from_store(state, email) if email else _identity_from_claims(state, claims or "", provider)
        decision = state.policy.evaluate(skill, identity, remote_addr=ip)
    except CCSSOError as exc:
        _fail(error_text(exc))
    click.echo(f"skill:    {skill_name}" + (f" -- {skill.description}" if skill.description else ""))
    click.echo(f"identity: {identity.id}" + (f" <{identity.email}>" if identity.email else "") + f" via {identity.via}")
    if not decision.checks:
        click.echo("  ✓ no conditions: any signed-in person")
    for c in decision.checks:
        mark = "✓" if c.passed else "✗"
        click.echo(f"  {mark} {c.condition}: {c.detail}" + (f"  [{c.reason}]" if c.reason else ""))
    if skill.allowed_networks and not ip:
        click.echo("  (no --ip given: allowedNetworks was checked against an unknown address)")
    if decision.outcome == "allowed":
        click.echo("decision: ALLOWED")
        click.get_current_context().exit(0)
    if decision.outcome == "step_up":
        click.echo(f"decision: STEP-UP -- they would be asked to sign in again ({decision.reason})")
    else:
        click.echo(f"decision: DENIED ({decision.reason}, condition {decision.condition})")
    click.get_current_context().exit(1)
