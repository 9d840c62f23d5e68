"""OIDC sign-in helpers over the LocalOP: the config block and the two legs of the flow."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from tests.support.local_op import CLIENT_ID, CLIENT_SECRET, LocalOP

SKILLS = {
    "database-migration": {"allowedGroups": ["database-admins", "senior-developers"], "requiredScopes": ["migration:write"]},
    "security-audit": {"allowedGroups": ["security-team"], "requiredScopes": ["security:read"]},
    "infrastructure-deploy": {"allowedGroups": ["devops-engineers"], "requiredScopes": ["infra:deploy"]},
}


def oidc_config(op: LocalOP, **over: Any) -> dict[str, Any]:
    prov = {"provider": "oidc", "clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET, "issuer": op.issuer,
            "scopes": ["openid", "profile", "email", "migration:write"]}
    prov.update(over)
    return {"auth": {"providers": {"op": prov}}, "skills": SKILLS,
            "session": {"cookieSecure": False}}


def start_login(client: Any, provider: str = "op", next_url: str = "/me", **params: str) -> str:
    q = {"next": next_url, **params}
    resp = client.get(f"/sso/{provider}/login?{urlencode(q)}")
    assert resp.status_code == 302, resp.data
    return resp.headers["Location"]


def callback(client: Any, params: dict[str, str], provider: str = "op", **kw: Any) -> Any:
    return client.get(f"/sso/{provider}/callback?{urlencode(params)}", **kw)


def authorize_params(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
