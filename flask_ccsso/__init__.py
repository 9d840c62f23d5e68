"""flask-ccsso: enterprise single sign-on for Flask portals.

OIDC (Okta, Azure AD / Entra ID, any discovery-capable provider) and SAML 2.0
(Google Workspace, ADFS, any IdP metadata) sign-in, server-side sessions with
timeouts, skills-based authorization with step-up, and an audit trail.
"""

from __future__ import annotations

from .exceptions import (
                         AuthenticationFailed,
                         CCSSOError,
                         ConfigError,
                         IdPUnavailable,
                         LoginRequired,
                         SessionExpired,
                         SkillRequired,
                         StepUpRequired,
                         StoreUnavailable,
)
from .extension import CCSSO, get_state
from .identity import AnonymousIdentity, Identity, current_identity
from .skills import has_skill, login_required, requires_skill, skill_guard

__version__ = "0.1.0"

__all__ = [
                         "CCSSO",
                         "AnonymousIdentity",
                         "AuthenticationFailed",
                         "CCSSOError",
                         "ConfigError",
                         "IdPUnavailable",
                         "Identity",
                         "LoginRequired",
                         "SessionExpired",
                         "SkillRequired",
                         "StepUpRequired",
                         "StoreUnavailable",
                         "current_identity",
                         "get_state",
                         "has_skill",
                         "login_required",
                         "requires_skill",
                         "skill_guard",
]
