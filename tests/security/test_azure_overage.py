"""Azure AD group overage: Graph display names must never grant a skill (issue 10, item 4).

When Entra leaves ``groups`` out of the ID token (overage), the groups come
from Microsoft Graph ``/me/transitiveMemberOf``. A group's ``displayName`` is
chosen by whoever created the group -- by default any member of the tenant --
so a user who names a new group ``database-admins``, or after the admins
group's object id, must not get the skill that group name or id guards.
Only Graph's object ids are matched. The LocalOP serves the Graph pages over
real HTTP (``tests/local_op.py`` ``graph_pages``); sign-in runs the whole
OIDC code flow through the ``azure-ad`` preset.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from flask_ccsso import requires_skill
from tests.support.local_op import CLIENT_ID, CLIENT_SECRET
from tests.support.oidc import authorize_params, callback, start_login

TENANT = "11111111-2222-3333-4444-555555555555"
#: the real admins group (its object id guards the "admin-console" skill)
ADMINS_ID = "7a1b2c3d-0000-4000-8000-00000000ad01"
#: a group the attacker created (any member of the tenant may)
OWN_GROUP_ID = "7a1b2c3d-0000-4000-8000-0000000000e1"
OTHER_OWN_GROUP_ID = "7a1b2c3d-0000-4000-8000-0000000000e2"

OVERAGE = {"groups": None, "_claim_names": {"groups": "src1"},
           "_claim_sources": {"src1": {"endpoint": "https://graph.microsoft.com/v1.0/me/getMemberObjects"}}}


def _config(op: Any) -> dict[str, Any]:
    prov = {"provider": "azure-ad", "tenantId": TENANT, "clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET,
            "issuer": op.issuer, "graphUrl": op.issuer + "/graph", "audience": "api://portal",
            "scopes": ["openid", "profile", "email", "User.Read"]}
    return {"auth": {"providers": {"azure": prov}}, "session": {"cookieSecure": False},
            "skills": {"database-migration": {"allowedGroups": ["database-admins"]},
                       "admin-console": {"allowedGroups": [ADMINS_ID]},
                       "admin-console-upper": {"allowedGroups": [ADMINS_ID.upper()]}}}


def _app(make_app: Any, op: Any) -> Flask:
    app = make_app(_config(op))

    @app.get("/admin")
    @requires_skill("admin-console")
    def admin() -> str:
        return "admin ok"

    @app.get("/admin-upper")
    @requires_skill("admin-console-upper")
    def admin_upper() -> str:
        return "admin ok"

    return app


def _sign_in_with_overage(app: Flask, op: Any) -> Any:
    client = app.test_client()
    url = start_login(client, provider="azure")
    claims = op.id_claims(authorize_params(url)["nonce"], tid=TENANT, **OVERAGE)
    claims = {k: v for k, v in claims.items() if v is not None}
    resp = callback(client, op.issue_code(url, id_token=op.sign(claims)), provider="azure")
    assert resp.status_code == 302, resp.get_data(as_text=True)
    return client


@pytest.mark.parametrize("display_name", [
    "database-admins",                  # the name a skill lists
    ADMINS_ID,                          # the admins group's object id, as a name
    ADMINS_ID.upper(),                  # ... in the case GUID matching folds
    f" {ADMINS_ID}",                    # ... with a leading space
])
def test_graph_display_name_grants_nothing(make_app: Any, op: Any, display_name: str) -> None:
    op.graph_pages = [
        {"value": [{"id": OWN_GROUP_ID, "displayName": display_name}]},
        {"value": [{"id": OTHER_OWN_GROUP_ID, "displayName": "database-admins"}]},
    ]
    client = _sign_in_with_overage(_app(make_app, op), op)
    me = client.get("/me").get_json()
    assert set(me["groups"]) == {OWN_GROUP_ID, OTHER_OWN_GROUP_ID}
    for path in ("/migrations", "/admin", "/admin-upper"):
        resp = client.get(path, headers={"Accept": "application/json"})
        assert resp.status_code == 403, (path, resp.get_data(as_text=True))
        assert resp.get_json()["error"] == "missing_group"


def test_real_object_id_still_grants(make_app: Any, op: Any) -> None:
    op.graph_pages = [
        {"value": [{"id": OWN_GROUP_ID, "displayName": "whatever"}]},
        {"value": [{"id": ADMINS_ID, "displayName": "Portal admins"}]},
    ]
    client = _sign_in_with_overage(_app(make_app, op), op)
    assert client.get("/admin").status_code == 200
    assert client.get("/admin-upper").status_code == 200  # GUIDs compare case-insensitively
    assert client.get("/migrations").status_code == 403


@pytest.mark.parametrize("entry", [
    {"displayName": ADMINS_ID},                      # no id at all: a name must not stand in
    {"id": "database-admins"},                       # an "id" that is not an object id
    {"id": ["7a1b2c3d-0000-4000-8000-00000000ad01"]},
])
def test_graph_entry_without_an_object_id_makes_the_list_incomplete(make_app: Any, op: Any,
                                                                     entry: dict[str, Any]) -> None:
    """An answer that is not a list of object ids is not read in part: the
    groups are incomplete (``groups_incomplete``), never "these groups"."""
    op.graph_pages = [{"value": [{"id": OWN_GROUP_ID}, entry]}]
    app = _app(make_app, op)
    client = _sign_in_with_overage(app, op)
    for path in ("/migrations", "/admin"):
        resp = client.get(path, headers={"Accept": "application/json"})
        assert resp.status_code == 403 and resp.get_json()["error"] == "groups_incomplete"


def test_graph_is_asked_for_ids_only(make_app: Any, op: Any) -> None:
    """The request itself selects ``id`` only, so names never reach the process."""
    seen: list[str] = []
    orig = op._graph

    def record(req: Any) -> Any:
        seen.append(req.args.get("$select", ""))
        return orig(req)

    op._graph = record
    op.graph_pages = [{"value": [{"id": ADMINS_ID}]}]
    try:
        client = _sign_in_with_overage(_app(make_app, op), op)
    finally:
        op._graph = orig
    assert seen == ["id"]
    assert client.get("/admin").status_code == 200
