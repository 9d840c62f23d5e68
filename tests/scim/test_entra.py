"""Microsoft Entra ID provisioning, replayed: the requests of "Tutorial: Develop and plan
provisioning for a SCIM endpoint" (learn.microsoft.com/entra/identity/app-provisioning/
use-scim-to-provision-users-and-groups), against two app instances sharing the real Redis.

Entra's own forms are accepted: the enterprise extension, ``"Replace"`` with a string
``"False"``, a ``name`` key on PATCH operations, its own group schema URN, and member
removal as a ``remove`` carrying the member in ``value``.
"""

from __future__ import annotations

from typing import Any

from flask_ccsso import signals
from flask_ccsso.testing import listen_to
from tests.support.scim import audit_db, audit_rows, scim_headers
from tests.support.skills import JSON, access_token, bearer, sign_in
from tests.support.waiting import wait_for

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
EXTERNAL_ID = "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef"


def entra_user(user_name: str = "alice@example.com") -> dict[str, Any]:
    """Entra's documented "Create User" request (its userName and email are the test person's)."""
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User",
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
        "externalId": EXTERNAL_ID, "userName": user_name, "active": True,
        "emails": [{"primary": True, "type": "work", "value": user_name}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "givenName familyName", "familyName": "familyName", "givenName": "givenName"},
        "roles": [],
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "701984",
                                                                       "department": "Tour Operations"},
    }


def entra_group(name: str = "displayName") -> dict[str, Any]:
    """Entra's documented "Create Group" request."""
    return {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group",
                        "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"],
            "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159", "displayName": name, "meta": {"resourceType": "Group"}}


def post(client: Any, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = client.post(f"/scim/v2/{kind}", headers=scim_headers(), json=body)
    assert resp.status_code == 201, resp.get_data(as_text=True)
    return resp.get_json()


def test_entra_disable_string_form_deprovisions(host, op, clock):
    idp, browser, api = host().test_client(), host().test_client(), host().test_client()
    user = post(idp, "Users", entra_user())
    assert user["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["employeeNumber"] == "701984"
    found = idp.get(f'/scim/v2/Users?filter=userName eq "{user["userName"]}"', headers=scim_headers()).get_json()
    assert found["totalResults"] == 1 and found["Resources"][0]["id"] == user["id"]
    by_external = idp.get(f'/scim/v2/Users?filter=externalId eq "{EXTERNAL_ID}"', headers=scim_headers()).get_json()
    assert [r["id"] for r in by_external["Resources"]] == [user["id"]]
    sign_in(browser, op, clock)
    token = access_token(op, clock, sub="u-alice", email="alice@example.com")

    disable = {"schemas": [PATCH_OP], "Operations": [{"op": "Replace", "path": "active", "value": "False"}]}
    with listen_to(signals.user_deprovisioned) as gone:
        resp = idp.patch(f"/scim/v2/Users/{user['id']}", headers=scim_headers(), json=disable)
    assert resp.status_code == 200 and resp.get_json()["active"] is False
    assert [(r.kwargs["subject"], r.kwargs["count"]) for r in gone] == [(EXTERNAL_ID, 1)]
    assert browser.get("/me", headers=JSON).status_code == 401
    assert api.get("/me", headers=bearer(token)).get_json()["error"] == "deprovisioned"
    sign_in(browser, op, clock, expect=403)

    enable = {"schemas": [PATCH_OP], "Operations": [{"op": "Replace", "path": "active", "value": "True"}]}
    assert idp.patch(f"/scim/v2/Users/{user['id']}", headers=scim_headers(), json=enable).get_json()["active"] is True
    sign_in(browser, op, clock)


def test_entra_delete_deprovisions_and_is_audited(host, op, clock, tmp_path):
    logging, url = audit_db(tmp_path)
    idp, browser = host(logging=logging).test_client(), host().test_client()
    user = post(idp, "Users", entra_user())
    group = post(idp, "Groups", entra_group())
    add = {"schemas": [PATCH_OP], "Operations": [
        {"name": "addMember", "op": "add", "path": "members", "value": [{"$ref": None, "value": user["id"]}]}]}
    assert idp.patch(f"/scim/v2/Groups/{group['id']}", headers=scim_headers(), json=add).status_code == 200
    sign_in(browser, op, clock)

    resp = idp.delete(f"/scim/v2/Users/{user['id']}", headers=scim_headers())
    assert resp.status_code == 204
    assert browser.get("/me", headers=JSON).status_code == 401
    sign_in(browser, op, clock, expect=403)
    assert idp.get(f"/scim/v2/Users/{user['id']}", headers=scim_headers()).status_code == 404
    assert "members" not in idp.get(f"/scim/v2/Groups/{group['id']}", headers=scim_headers()).get_json()
    events = wait_for(lambda: audit_rows(url, "user.deprovisioned"), what="the audited deprovisioning")
    assert [(e["reason"], e["data"]["scim_id"], e["actor"]["email"]) for e in events] == [
        ("deleted", user["id"], "alice@example.com")]

    # created again by Entra (re-hired): the old markers go with the new active user
    post(idp, "Users", entra_user())
    sign_in(browser, op, clock)


def test_entra_group_membership_changes(host, op, clock):
    idp, browser = host().test_client(), host().test_client()
    user = post(idp, "Users", entra_user())
    group = post(idp, "Groups", entra_group())
    assert group["schemas"] == ["urn:ietf:params:scim:schemas:core:2.0:Group"]  # Entra's own URN is not kept
    sign_in(browser, op, clock)
    add = {"schemas": [PATCH_OP], "Operations": [
        {"name": "addMember", "op": "add", "path": "members", "value": [{"$ref": None, "value": user["id"]}]}]}
    resp = idp.patch(f"/scim/v2/Groups/{group['id']}", headers=scim_headers(), json=add)
    assert [m["value"] for m in resp.get_json()["members"]] == [user["id"]]
    assert browser.get("/me", headers=JSON).status_code == 401  # takes effect at her next request
    sign_in(browser, op, clock)
    remove = {"schemas": [PATCH_OP], "Operations": [
        {"name": "removeMember", "op": "remove", "path": "members", "value": [{"$ref": None, "value": user["id"]}]}]}
    resp = idp.patch(f"/scim/v2/Groups/{group['id']}", headers=scim_headers(), json=remove)
    assert resp.status_code == 200 and "members" not in resp.get_json()
    assert browser.get("/me", headers=JSON).status_code == 401
    # the same removal again changes nothing, and ends nothing
    sign_in(browser, op, clock)
    assert idp.patch(f"/scim/v2/Groups/{group['id']}", headers=scim_headers(), json=remove).status_code == 200
    assert browser.get("/me", headers=JSON).status_code == 200
    found = idp.get('/scim/v2/Groups?filter=displayName eq "displayName"&excludedAttributes=members',
                    headers=scim_headers()).get_json()
    assert found["totalResults"] == 1 and "members" not in found["Resources"][0]
