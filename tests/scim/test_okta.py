"""Okta provisioning, replayed: the requests Okta's SCIM 2.0 reference documents
(developer.okta.com/docs/api/openapi/okta-scim/guides/scim-20), against two app
instances ("hosts") that share the real Redis.

Deprovisioning must hold everywhere before the response returns: the person's
session on the *other* host is refused on its next request, their bearer token
is refused, a new sign-in is refused (403, ``auth.login_failed`` reason
``deprovisioned``), ``user.deprovisioned`` reaches the audit table -- and
re-activation through SCIM undoes it.
"""

from __future__ import annotations

from flask_ccsso import signals
from flask_ccsso.testing import listen_to
from tests.support.scim import GROUP, PATCH_OP, audit_db, audit_rows, create, okta_active, okta_user, scim_headers
from tests.support.skills import JSON, access_token, bearer, sign_in
from tests.support.waiting import wait_for


def test_okta_deprovisioning_ends_everything_on_every_host(host, op, clock, tmp_path):
    logging, url = audit_db(tmp_path)
    scim_host, web_host = host(logging=logging), host()
    idp, browser, api = scim_host.test_client(), web_host.test_client(), web_host.test_client()
    sign_in(browser, op, clock)
    assert browser.get("/me", headers=JSON).get_json()["email"] == "alice@example.com"
    token = access_token(op, clock, sub="u-alice", email="alice@example.com")
    assert api.get("/me", headers=bearer(token)).status_code == 200  # cached as valid on the web host

    # Okta first asks whether the person exists, then creates them
    found = idp.get('/scim/v2/Users?filter=userName eq "alice@example.com"&startIndex=1&count=100',
                    headers=scim_headers())
    assert found.status_code == 200 and found.get_json()["totalResults"] == 0
    user = create(idp, okta_user())
    assert "password" not in user and user["active"] is True and user["externalId"] == "00ujl29u0le5T6Aj10h7"
    found = idp.get('/scim/v2/Users?filter=userName eq "Alice@Example.com"', headers=scim_headers()).get_json()
    assert [r["id"] for r in found["Resources"]] == [user["id"]]  # userName is case-insensitive

    with listen_to(signals.user_deprovisioned) as gone, listen_to(signals.login_failed) as failed:
        resp = idp.patch(f"/scim/v2/Users/{user['id']}", headers=scim_headers(), json=okta_active(False))
        assert resp.status_code == 200 and resp.get_json()["active"] is False
        # before anything else happens: the other host refuses the session and the token
        refused = browser.get("/me", headers=JSON)
        assert refused.status_code == 401 and refused.get_json()["error"] == "revoked"
        denied = api.get("/me", headers=bearer(token))
        assert denied.status_code == 401 and denied.get_json()["error"] == "deprovisioned"
        page = sign_in(browser, op, clock, expect=403)
        assert "deprovisioned" in page.get_data(as_text=True)
    assert [(r.kwargs["email"], r.kwargs["scim_id"], r.kwargs["count"], r.kwargs["reason"]) for r in gone] == [
        ("alice@example.com", user["id"], 1, "deactivated")]
    assert [f.kwargs["reason"] for f in failed] == ["deprovisioned", "deprovisioned"]
    assert failed[1].kwargs["email"] == "alice@example.com"

    events = wait_for(lambda: audit_rows(url, "user.deprovisioned"), what="user.deprovisioned in the audit table")
    assert events[0]["actor"] == {"subject": "00ujl29u0le5T6Aj10h7", "email": "alice@example.com"}
    assert events[0]["data"] == {"scim_id": user["id"], "count": 1} and events[0]["reason"] == "deactivated"
    assert "1mz050nq" not in str(events) and "Bearer" not in str(events)

    # Okta sends the deactivation again (a retry): still refused, announced once
    with listen_to(signals.user_deprovisioned) as again:
        assert idp.patch(f"/scim/v2/Users/{user['id']}", headers=scim_headers(),
                         json=okta_active(False)).status_code == 200
    assert again == []

    # re-activated by SCIM: sign-in and tokens work again
    assert idp.patch(f"/scim/v2/Users/{user['id']}", headers=scim_headers(),
                     json=okta_active(True)).get_json()["active"] is True
    sign_in(browser, op, clock)
    assert browser.get("/me", headers=JSON).status_code == 200
    assert api.get("/me", headers=bearer(token)).status_code == 200


def test_a_token_without_email_is_refused_by_its_subject(host, op, clock):
    """Okta's org authorization server puts the login in ``sub`` and may leave ``email`` out."""
    idp, api = host().test_client(), host().test_client()
    user = create(idp, okta_user())
    token = access_token(op, clock, sub="alice@example.com", email=None)
    assert api.get("/me", headers=bearer(token)).status_code == 200
    assert idp.patch(f"/scim/v2/Users/{user['id']}", headers=scim_headers(),
                     json=okta_active(False)).status_code == 200
    assert api.get("/me", headers=bearer(token)).get_json()["error"] == "deprovisioned"
    other = access_token(op, clock, sub="u-bob", email="bob@example.com")  # someone else is unaffected
    assert api.get("/me", headers=bearer(other)).status_code == 200


def test_created_inactive_is_deprovisioned_at_once(host, op, clock):
    idp, browser = host().test_client(), host().test_client()
    create(idp, {**okta_user(), "active": False})
    sign_in(browser, op, clock, expect=403)


def test_okta_sample_domain_is_a_clean_400(host):
    """Okta's sample login ``test.user@okta.local`` uses a special-use domain, which
    scim2-models' email validation refuses: a SCIM invalidValue error, never a 500."""
    resp = host().test_client().post("/scim/v2/Users", headers=scim_headers(), json=okta_user("test.user@okta.local"))
    assert resp.status_code == 400 and resp.get_json()["scimType"] == "invalidValue"


def test_okta_group_push_takes_effect_at_the_next_request(host, op, clock):
    scim_host, web_host = host(), host()
    idp, browser = scim_host.test_client(), web_host.test_client()
    alice = create(idp, okta_user())
    bob = create(idp, {**okta_user("bob@example.com"), "externalId": "00ubob"})
    group = create(idp, {"schemas": [GROUP], "displayName": "Test SCIMv2", "members": []}, "Groups")
    sign_in(browser, op, clock, groups=["database-admins"])
    assert browser.get("/s/database-migration", headers=JSON).status_code == 200

    # Okta's documented "add members" PATCH: alice's session ends, so her next request signs in again
    add = {"schemas": [PATCH_OP], "Operations": [{"op": "add", "path": "members", "value": [
        {"value": alice["id"], "display": "alice@example.com"}, {"value": bob["id"], "display": "bob@example.com"}]}]}
    resp = idp.patch(f"/scim/v2/Groups/{group['id']}", headers=scim_headers(), json=add)
    assert resp.status_code == 200
    assert sorted(m["value"] for m in resp.get_json()["members"]) == sorted([alice["id"], bob["id"]])
    assert browser.get("/me", headers=JSON).get_json()["error"] == "revoked"
    sign_in(browser, op, clock, groups=["senior-developers"])  # the IdP's groups now
    assert browser.get("/me", headers=JSON).get_json()["groups"] == ["senior-developers"]

    # a rename without membership change of her (Okta's "replace" of the group's name) ends it too
    rename = {"schemas": [PATCH_OP], "Operations": [
        {"op": "replace", "value": {"id": group["id"], "displayName": "Test SCIMv2 renamed"}}]}
    assert idp.patch(f"/scim/v2/Groups/{group['id']}", headers=scim_headers(),
                     json=rename).get_json()["displayName"] == "Test SCIMv2 renamed"
    assert browser.get("/me", headers=JSON).status_code == 401
    sign_in(browser, op, clock)

    # removing someone else leaves her session alone; removing her ends it
    remove_bob = {"schemas": [PATCH_OP], "Operations": [
        {"op": "remove", "path": f'members[value eq "{bob["id"]}"]'}]}
    assert idp.patch(f"/scim/v2/Groups/{group['id']}", headers=scim_headers(), json=remove_bob).status_code == 200
    assert browser.get("/me", headers=JSON).status_code == 200
    remove_alice = {"schemas": [PATCH_OP], "Operations": [
        {"op": "remove", "path": f'members[value eq "{alice["id"]}"]'}]}
    resp = idp.patch(f"/scim/v2/Groups/{group['id']}", headers=scim_headers(), json=remove_alice)
    assert resp.status_code == 200 and not resp.get_json().get("members")
    assert browser.get("/me", headers=JSON).status_code == 401
    found = idp.get('/scim/v2/Groups?filter=displayName eq "Test SCIMv2 renamed"', headers=scim_headers())
    assert found.get_json()["totalResults"] == 1
