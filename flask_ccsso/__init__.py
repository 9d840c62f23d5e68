"""flask-ccsso: enterprise single sign-on for Flask portals.

OIDC (Okta, Azure AD / Entra ID, any discovery-capable provider) and SAML 2.0
(Google Workspace, ADFS, any IdP metadata) sign-in, server-side sessions with
timeouts, skills-based authorization with step-up, and an audit trail.
"""

from __future__ import annotations

from .csrf import csrf_protect, csrf_token
from .exceptions import (
                         AuthenticationFailed,
                         CCSSOError,
                         ConfigError,
                         CSRFError,
                         IdPUnavailable,
                         LoginRateLimited,
                         LoginRequired,
                         SessionExpired,
                         SkillRequired,
                         StepUpRequired,
                         StoreUnavailable,
)
from .extension import CCSSO
from .gate.current import current_identity, current_outage_grace
from .gate.decorators import has_skill, login_required, requires_skill, skill_guard
from .gate.refresh import OutageGrace
from .gate.stepup import StepUpNotice, stepup_notice
from .identity import AnonymousIdentity, Identity
from .state import get_state


def __getattr__(name: str) -> str:
    """``__version__``, read from the installed distribution's metadata (as Flask
    reads its own), so ``pyproject.toml`` is the one place the version is written."""
    if name == "__version__":
        from importlib.metadata import version

        return version("flask-ccsso")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
                         "CCSSO",
                         "AnonymousIdentity",
                         "AuthenticationFailed",
                         "CCSSOError",
                         "CSRFError",
                         "ConfigError",
                         "IdPUnavailable",
                         "Identity",
                         "LoginRateLimited",
                         "LoginRequired",
                         "OutageGrace",
                         "SessionExpired",
                         "SkillRequired",
                         "StepUpNotice",
                         "StepUpRequired",
                         "StoreUnavailable",
                         "csrf_protect",
                         "csrf_token",
                         "current_identity",
                         "current_outage_grace",
                         "get_state",
                         "has_skill",
                         "login_required",
                         "requires_skill",
                         "skill_guard",
                         "stepup_notice",
]
