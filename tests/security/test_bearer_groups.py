"""Issue 10 #18: bearer callers whose token carries no group claim.

Opaque tokens, introspection answers without groups and JWTs without the
provider's ``groupsClaim`` say nothing about groups -- that is not "no
groups". The class: when a skill needs groups, they come from the provider's
userinfo endpoint with that token (as oauth2-proxy does; ``sub`` must match,
cached per token hash until the token expires, bounded); when userinfo has
none either (or cannot be read), the groups are *incomplete* and the 403 says
that the API needs a token with group claims. Never a 500/503 for it.
"""

from __future__ import annotations

from typing import Any

import pytest

from flask_ccsso import reasons
from tests.security.idp_endpoints import bearer
from tests.support.local_op import CLIENT_ID
from tests.support.skills import access_token, add_skill_routes, skills_config, token_claims


def _answer(clock: Any, **over: Any) -> dict[str, Any]:
    """An introspection answer without any group claim (Okta's and most IdPs')."""
    base = {"active": True, "sub": "u-bob", "aud": CLIENT_ID, "token_type": "Bearer", "scope": "migration:write",
            "exp": int(clock.now) + 600}
    base.update(over)
    return base


def test_opaque_token_groups_come_from_userinfo(client, clock, scripted_idp):
    scripted_idp.answers["opaque"] = _answer(clock)
    scripted_idp.userinfo["opaque"] = {"sub": "u-bob", "groups": ["database-admins"]}
    resp = client.get("/s/database-migration", headers=bearer("opaque"))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert scripted_idp.userinfo_calls == ["opaque"]
    # cached per token until it expires, beyond the 60 s introspection cache
    clock.advance(120)
    assert client.get("/s/database-migration", headers=bearer("opaque")).status_code == 200
    assert len(scripted_idp.calls) == 2 and scripted_idp.userinfo_calls == ["opaque"]
    # and only what userinfo says counts
    assert client.get("/s/security-audit", headers=bearer("opaque")).get_json()["error"] == reasons.MISSING_GROUP


def test_jwt_without_the_groups_claim_uses_userinfo_with_that_token(client, op, clock, scripted_idp):
    claims = token_claims(op, clock, scp="migration:write")
    claims.pop("groups", None)
    token = str(op.sign(claims, header={"typ": "at+jwt"}))  # really signed by the OP's key
    scripted_idp.userinfo[token] = {"sub": claims["sub"], "groups": ["senior-developers"]}
    assert client.get("/s/database-migration", headers=bearer(token)).status_code == 200
    assert scripted_idp.userinfo_calls == [token]


def test_token_with_a_groups_claim_needs_no_userinfo(client, op, clock, scripted_idp):
    assert client.get("/s/database-migration", headers=bearer(access_token(op, clock))).status_code == 200
    scripted_idp.answers["with-groups"] = _answer(clock, groups=["database-admins"])
    assert client.get("/s/database-migration", headers=bearer("with-groups")).status_code == 200
    assert scripted_idp.userinfo_calls == []


@pytest.mark.parametrize("userinfo", [
    {"sub": "u-bob"},                                          # no groups there either
    {"sub": "u-someone-else", "groups": ["database-admins"]},  # OIDC Core 5.3.2: about someone else
    None,                                                      # userinfo refuses the token (401)
    503,                                                       # userinfo is down
])
def test_no_groups_anywhere_is_incomplete_and_says_what_the_api_needs(client, clock, scripted_idp, userinfo):
    scripted_idp.answers["opaque"] = _answer(clock)
    if isinstance(userinfo, int):
        scripted_idp.userinfo_status = userinfo
    elif userinfo is not None:
        scripted_idp.userinfo["opaque"] = userinfo
    resp = client.get("/s/database-migration", headers=bearer("opaque"))
    assert resp.status_code == 403, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["error"] == reasons.GROUPS_INCOMPLETE
    assert "group claims" in body["error_description"]
    assert len(scripted_idp.userinfo_calls) == 1
    # a skill that needs no group still works
    assert client.get("/s/anyone", headers=bearer("opaque")).status_code == 200


def test_userinfo_answers_are_bounded_and_keyed_by_token_hash(make_app, op, clock, scripted_idp):
    app = add_skill_routes(make_app(skills_config(op), CCSSO_BEARER_CACHE_SIZE=4))
    client = app.test_client()
    for i in range(10):
        scripted_idp.answers[f"opaque-{i}"] = _answer(clock)
        scripted_idp.userinfo[f"opaque-{i}"] = {"sub": "u-bob", "groups": ["database-admins"]}
        assert client.get("/s/database-migration", headers=bearer(f"opaque-{i}")).status_code == 200
    cache = app.extensions["ccsso"].bearer_authenticator.userinfo_groups
    assert len(cache) == 4
    assert all(isinstance(k, bytes) and len(k) == 32 for k in cache._data)
