"""The console's skills section: which groups and scopes grant which skill, and why one person has one or not.

The table is the ``skills`` block as the app parsed it. ``explain`` answers
for one signed-in person the way ``flask ccsso explain --user`` does: it
takes the identity of their most recently active live session
(:func:`~flask_ccsso.cli.skills.latest_session`) and asks the policy the gate
itself asks (:meth:`~flask_ccsso.gate.policy.SkillPolicy.decide`, with the
operator-facing details on). ``allowedNetworks`` is checked against the
address that session signed in from, the best the store knows. A GET: it
reads, and changes nothing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Blueprint, request

from ..cli.skills import latest_session
from ..state import get_state
from . import page
from .sessions import person_arg

if TYPE_CHECKING:
    from ..config import SkillSettings
    from ..gate.policy import Decision
    from ..identity import Identity


@dataclass(frozen=True)
class Explained:
    """An explain answer: whose session, from where, and the policy's decisions."""

    identity: Identity
    address: str | None
    decisions: tuple[Decision, ...]


def grants(skills: dict[str, SkillSettings]) -> list[tuple[str, str, list[str]]]:
    """``(kind, name, skills)``: each group and scope the config names, and the
    skills that list it (a skill may need more than one of them)."""
    by: dict[tuple[str, str], list[str]] = defaultdict(list)
    for name, skill in skills.items():
        for group in skill.allowed_groups:
            by[("group", group)].append(name)
        for scope in skill.required_scopes:
            by[("scope", scope)].append(name)
    return [(kind, value, sorted(names)) for (kind, value), names in sorted(by.items())]


def explain(user: str, skill: str | None = None) -> Explained | None:
    """The policy's decisions on ``skill`` (every skill when ``None``) for
    ``user``'s most recent live session; ``None`` when they have none."""
    state = get_state()
    found = latest_session(state, user)
    if found is None:
        return None
    identity, live = found
    address = (live.record.client or {}).get("ip")
    names = (skill,) if skill else tuple(state.config.skills)
    verdict = state.policy.decide(names, identity, remote_addr=address, explain=True)
    return Explained(identity, address, verdict.decisions)  # one decision per skill, in order


def register(bp: Blueprint) -> None:
    """Add this section's routes to the console blueprint."""

    @bp.get("/skills", endpoint="skills")
    def skills_page() -> str:
        skills = dict(get_state().config.skills)
        user = person_arg(request.args)
        skill = request.args.get("skill") or None
        problem = result = None
        if skill is not None and skill not in skills:
            problem, skill = "That skill is not configured.", None
        elif user:
            result = explain(user, skill)
            if result is None:
                problem = (f"No live session of {user}: explain works on a signed-in person's last sign-in. "
                           "Check the email (or use provider:subject); the Sessions page shows who is signed in.")
        elif "user" in request.args:
            problem = "Give an email or provider:subject to explain for."
        return page("skills.html", title="Skills", skills=skills, grants=grants(skills), user=user, skill=skill,
                    result=result, problem=problem)
