"""Operator console test helpers: a config with the console on, and its operators."""

from __future__ import annotations

import copy
from typing import Any

from tests.support.oidc import oidc_config

#: the console skill of the tests: sensitive (step-up), granted by one group
OPERATOR_SKILL = "sso-operator"
OPERATOR_GROUP = "sso-operators"
#: an identity holding the console skill (sign in with ``client.sign_in(OPERATOR)``)
OPERATOR: dict[str, Any] = {"subject": "olivia", "email": "olivia@example.com", "groups": [OPERATOR_GROUP]}
#: a signed-in person without it
PERSON: dict[str, Any] = {"subject": "bob", "email": "bob@example.com", "groups": ["developers"]}


def console_config(op: Any, *, store: dict[str, Any] | None = None, audit_url: str | None = None,
                   **console: Any) -> dict[str, Any]:
    """``oidc_config(op)`` with the operator skill and ``console.enabled`` (plus ``console`` overrides);
    with ``audit_url`` every event goes to that SQL audit table."""
    cfg = copy.deepcopy(oidc_config(op))
    cfg["skills"][OPERATOR_SKILL] = {"allowedGroups": [OPERATOR_GROUP], "sensitive": True, "maxAuthAge": 600,
                                     "description": "Operate single sign-on: sessions, audit, providers."}
    cfg["console"] = {"enabled": True, "skill": OPERATOR_SKILL, **console}
    if store is not None:
        cfg["session"]["store"] = store
    if audit_url is not None:
        cfg["logging"] = {"level": "audit", "flushInterval": 0.05,
                          "destinations": [{"type": "sqlalchemy", "name": "audit-db", "url": audit_url}]}
    return cfg
