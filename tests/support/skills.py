"""Skills, bearer and step-up helpers: the skill set, routes per skill, sign-in and access tokens.

The ``app`` / ``client`` fixtures built on these live in tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask

from flask_ccsso import current_identity, requires_skill, skill_guard
from tests.support.local_op import CLIENT_ID, LocalOP
from tests.support.oidc import SKILLS, authorize_params, callback, oidc_config, start_login

MORE_SKILLS: dict[str, Any] = {
    **SKILLS,
    "office-only": {"allowedNetworks": ["10.0.0.0/8", "2001:db8::/32"]},
    "mfa-needed": {"requireMfa": True},
    "mfa-acr": {"requireMfa": True, "acrValues": ["urn:ccsso:loa2"]},
    "prod-deploy": {"allowedGroups": ["devops-engineers"], "sensitive": True},
    "prod-deploy-acr": {"allowedGroups": ["devops-engineers"], "sensitive": True, "acrValues": ["urn:ccsso:loa2"]},
    "quick": {"allowedGroups": ["devops-engineers"], "maxAuthAge": 60},
    "approver": {"allowedGroups": ["Approver"]},
    "guid-group": {"allowedGroups": ["0F0E0D0C-AAAA-BBBB-CCCC-000000000001"]},
    "op-only": {"providers": ["op"]},
    "anyone": {},
}

PATHS = {name: f"/s/{name}" for name in MORE_SKILLS}


def skills_config(op: LocalOP, skills: dict[str, Any] | None = None, session: dict[str, Any] | None = None,
                  **prov: Any) -> dict[str, Any]:
    cfg = oidc_config(op, **prov)
    cfg["skills"] = MORE_SKILLS if skills is None else skills
    cfg["session"] = {"cookieSecure": False, **(session or {})}
    return cfg


def _view(name: str) -> Callable[[], dict[str, Any]]:
    def view() -> dict[str, Any]:
        return {"ok": name, "via": current_identity.via}

    view.__name__ = f"view_{name.replace('-', '_')}"
    return view


def add_skill_routes(app: Flask) -> Flask:
    """One route per configured skill, plus any-of / all-of / blueprint / async."""
    for name in app.extensions["ccsso"].config.skills:
        app.add_url_rule(f"/s/{name}", f"s_{name}", requires_skill(name)(_view(name)),
                         methods=["GET", "POST", "OPTIONS"])

    @app.get("/any")
    @requires_skill("security-audit", "database-migration")
    def any_of() -> str:
        return "any ok"

    @app.get("/all")
    @requires_skill("security-audit", "database-migration", all_of=True)
    def all_of() -> str:
        return "all ok"

    @app.get("/bare")
    @requires_skill
    def bare() -> str:
        return "bare ok"

    @app.get("/async")
    @requires_skill("database-migration")
    async def async_view() -> str:
        return "async ok"

    admin = Blueprint("admin", __name__, url_prefix="/admin")
    admin.before_request(skill_guard("security-audit"))

    @admin.get("/panel")
    def panel() -> str:
        return "panel ok"

    app.register_blueprint(admin)

    ops = requires_skill("infrastructure-deploy")(Blueprint("ops", __name__, url_prefix="/ops"))

    @ops.get("/deploy")
    def deploy() -> str:
        return "deploy ok"

    app.register_blueprint(ops)
    return app


def sign_in(client: Any, op: LocalOP, clock: Any, *, groups: tuple[str, ...] | list[str] = ("database-admins",),
            scope: str | None = "openid profile email migration:write", next_url: str = "/me",
            auth_time: float | None = None, expect: int = 302, url: str | None = None, **claims: Any) -> Any:
    """Sign in through the LocalOP; claims anchored at the test clock."""
    url = url or start_login(client, next_url=next_url)
    q = authorize_params(url)
    now = int(clock.now)
    c = op.id_claims(q.get("nonce"), iat=now, exp=now + 300, auth_time=int(now if auth_time is None else auth_time),
                     groups=list(groups), **claims)
    resp = callback(client, op.issue_code(url, claims=c, scope=scope))
    assert resp.status_code == expect, resp.get_data(as_text=True)
    return resp


def access_token(op: LocalOP, clock: Any, *, scope: str | list[str] | None = "migration:write",
                 groups: list[str] | None = None, header: dict[str, Any] | None = None, key: Any = None,
                 alg: str = "RS256", **over: Any) -> str:
    """A real RS256 access token (RFC 9068 shape) signed by the LocalOP."""
    now = int(clock.now)
    claims: dict[str, Any] = {"iss": op.issuer, "sub": "u-bob", "aud": CLIENT_ID, "exp": now + 600, "iat": now,
                              "scp": scope, "groups": ["database-admins"] if groups is None else groups,
                              "email": "bob@example.com", "auth_time": now, "client_id": "cli"}
    claims.update(over)
    claims = {k: v for k, v in claims.items() if v is not None}
    return op.sign(claims, key=key, alg=alg, header={"typ": "at+jwt", **(header or {})})


def token_claims(op: LocalOP, clock: Any, **over: Any) -> dict[str, Any]:
    """Claims of a valid access token for u-eve (both skill groups), to sign or to spoil."""
    now = int(clock.now)
    c = {"iss": op.issuer, "sub": "u-eve", "aud": CLIENT_ID, "exp": now + 600, "iat": now,
         "scp": "migration:write security:read", "groups": ["database-admins", "security-team"]}
    c.update(over)
    return c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


JSON = {"Accept": "application/json"}
