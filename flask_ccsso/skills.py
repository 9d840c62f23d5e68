"""The skill API under its documented module name.

The code lives in the request gate: the policy in :mod:`flask_ccsso.gate.policy`,
the decorators and :func:`enforce` in :mod:`flask_ccsso.gate.decorators`.
"""

from __future__ import annotations

from .gate.decorators import enforce, has_skill, login_required, requires_skill, skill_guard
from .gate.policy import (
    MFA_ACR_VALUES,
    MFA_AMR_VALUES,
    SINGLE_FACTOR_ACR_VALUES,
    Check,
    Decision,
    SkillPolicy,
    Verdict,
    has_mfa,
)

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
