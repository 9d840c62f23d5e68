"""Skills: ``@requires_skill`` and the policy behind it.

(Foundation version: groups and scopes. The skills work extends this module
with conditions, step-up and bearer callers.)
"""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

from flask import current_app, request

from . import reasons, signals
from .exceptions import SkillRequired
from .extension import get_state, identity_required

F = TypeVar("F", bound=Callable[..., Any])


def login_required(view: F) -> F:
    """Signed in (by session or bearer token), nothing more."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if request.method != "OPTIONS":
            identity_required()
        return current_app.ensure_sync(view)(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def requires_skill(*names: str, all_of: bool = False) -> Callable[[F], F]:
    """Allow the view only to callers holding the skill(s)."""

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if request.method != "OPTIONS":
                identity = identity_required()
                state = get_state()
                app = current_app._get_current_object()  # type: ignore[attr-defined]
                for name in names:
                    skill = state.config.skills[name]
                    if skill.allowed_groups and not identity.effective_groups & set(skill.allowed_groups):
                        signals.permission_denied.send(app, identity=identity, skill=name, skills=list(names),
                                                       reason=reasons.MISSING_GROUP, condition="allowedGroups",
                                                       via=identity.via, endpoint=request.endpoint)
                        raise SkillRequired(f"You need the '{name}' skill.", skill=name, condition="allowedGroups",
                                            reason=reasons.MISSING_GROUP)
                signals.skill_invoked.send(app, identity=identity, skill=names[0], skills=list(names),
                                           via=identity.via, endpoint=request.endpoint)
            return current_app.ensure_sync(view)(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator
