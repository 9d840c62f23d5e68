"""Security review, round 3: SCIM deprovisioning."""

from __future__ import annotations

from typing import Any

from flask_ccsso.stores.sql import SQLStore
from tests.support.scim import TOKEN, create, okta_active, okta_user, scim_headers
from tests.support.sessions import PG_URL, session_config
from tests.support.skills import access_token, add_skill_routes, bearer


def _refused_once_deactivated(idp: Any, api: Any, user: dict[str, Any], token: str) -> None:
    """The token works, SCIM deactivates the user, and the token is refused as deprovisioned."""
    assert api.get("/me", headers=bearer(token)).status_code == 200
    assert idp.patch(f"/scim/v2/Users/{user['id']}", headers=scim_headers(),
                     json=okta_active(False)).status_code == 200
    denied = api.get("/me", headers=bearer(token))
    assert denied.status_code == 401
    assert denied.get_json()["error"] == "deprovisioned"


def test_bearer_token_is_refused_by_its_subject_even_when_it_carries_another_email(host, op, clock):
    """The bearer check reads the same markers as a sign-in: a token whose ``sub`` is the
    person's externalId but whose email is one SCIM never listed (an alias, a UPN) must
    not outlive the deprovisioning."""
    idp, api = host().test_client(), host().test_client()
    user = create(idp, okta_user())
    token = access_token(op, clock, sub=user["externalId"], email="alice.alias@example.com")
    _refused_once_deactivated(idp, api, user, token)


def test_a_lone_surrogate_in_a_scim_body_is_a_400_not_a_500(host):
    """``"\\ud800"`` is valid JSON but cannot be encoded for the store: a client error, not a crash."""
    idp = host().test_client()
    body = '{"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "\\ud800@example.com"}'
    resp = idp.post("/scim/v2/Users", headers=scim_headers(), data=body)
    assert resp.status_code == 400
    assert resp.get_json()["scimType"] == "invalidSyntax"


def test_creating_someone_who_shares_an_email_does_not_reactivate_a_deactivated_user(host, op, clock):
    """Re-activation clears the markers a *deleted* user left on a shared address; a user
    who still exists and is still deactivated keeps every other marker of theirs."""
    idp, api = host().test_client(), host().test_client()
    alice = create(idp, {**okta_user(), "emails": [{"value": "alice@example.com", "primary": True},
                                                   {"value": "team@example.com"}]})
    assert idp.patch(f"/scim/v2/Users/{alice['id']}", headers=scim_headers(),
                     json=okta_active(False)).status_code == 200
    create(idp, {**okta_user("carol@example.com"), "externalId": "00u-carol",
                 "emails": [{"value": "carol@example.com", "primary": True}, {"value": "team@example.com"}]})
    token = access_token(op, clock, sub="u-alice", email="alice@example.com")
    denied = api.get("/me", headers=bearer(token))
    assert denied.status_code == 401
    assert denied.get_json()["error"] == "deprovisioned"


def test_a_token_whose_subject_is_the_login_in_another_case_is_refused(host, op, clock):
    """Okta's org server puts the login in ``sub`` and logins are case-insensitive: a token
    without an email, whose ``sub`` differs from the SCIM userName only in case, is the same person."""
    idp, api = host().test_client(), host().test_client()
    user = create(idp, okta_user("Alice@Example.com"))
    token = access_token(op, clock, sub="alice@example.com", email=None)
    _refused_once_deactivated(idp, api, user, token)


def test_a_long_user_name_is_provisioned_and_deprovisioned_on_a_sql_store(make_app, op, clock, prefix, closers,
                                                                          monkeypatch):
    """The SQL store's keys are at most 255 characters: a long userName (an email may have
    254) must neither crash the create nor, worse, leave the person's deprovisioning unwritten."""
    monkeypatch.setenv("SCIM_TOKEN", TOKEN)
    store = SQLStore.from_url(PG_URL, clock=clock, key_prefix=prefix)
    closers.append(store.close)
    cfg = session_config(op)
    cfg["scim"] = {"enabled": True, "token": "${SCIM_TOKEN}"}
    app = add_skill_routes(make_app(cfg, store=store))
    idp, api = app.test_client(), app.test_client()
    login = "a" * 64 + "." + "b" * 150 + "@example.com"
    user = create(idp, {**okta_user(login), "externalId": "x" * 240})
    token = access_token(op, clock, sub="u-long", email=login)
    assert api.get("/me", headers=bearer(token)).status_code == 200
    assert idp.patch(f"/scim/v2/Users/{user['id']}", headers=scim_headers(),
                     json=okta_active(False)).status_code == 200
    assert api.get("/me", headers=bearer(token)).get_json()["error"] == "deprovisioned"
    found = idp.get("/scim/v2/Users", headers=scim_headers(), query_string={"filter": f'userName eq "{login}"'})
    assert found.get_json()["totalResults"] == 1


def test_a_sign_in_racing_the_deprovisioning_is_refused(host, op, clock):
    """The race the first marker check leaves: SCIM deactivates the person after the
    sign-in checked the markers but before it stored its session (so the revocation
    finds nothing to end). The sign-in checks again once stored: 403, its session
    ended, nothing left in the index for that person."""
    from flask_ccsso import signals
    from flask_ccsso.state import get_state
    from flask_ccsso.testing import listen_to
    from tests.support.skills import sign_in

    scim_host, web_host = host(), host()
    idp, browser = scim_host.test_client(), web_host.test_client()
    user = create(idp, okta_user())
    gate = get_state(web_host).gate
    establish = gate.establish

    def deprovisioned_meanwhile(*args: Any, **kwargs: Any) -> None:
        # the IdP's deactivation lands here: after the sign-in's first check, before its store write
        assert idp.patch(f"/scim/v2/Users/{user['id']}", headers=scim_headers(),
                         json=okta_active(False)).status_code == 200
        establish(*args, **kwargs)

    gate.establish = deprovisioned_meanwhile  # type: ignore[method-assign]
    with listen_to(signals.login_failed) as failed, listen_to(signals.user_logged_in) as logged_in:
        page = sign_in(browser, op, clock, expect=403)
    assert "deprovisioned" in page.get_data(as_text=True)
    assert [f.kwargs["reason"] for f in failed] == ["deprovisioned"] and not logged_in
    assert browser.get("/me", headers={"Accept": "application/json"}).status_code == 401
    assert get_state(web_host).sessions.sessions_of("alice@example.com") == []


def test_a_user_name_left_by_a_half_failed_create_is_taken_over(host):
    """A store failure between a create's two writes left a userName entry naming
    no user: the next create of that person succeeds (no 409 forever), and the
    filter finds them; a userName a stored user has is still a 409."""
    from flask_ccsso.scim.directory import USERNAME_PREFIX
    from flask_ccsso.state import get_state

    app = host()
    idp = app.test_client()
    get_state(app).store.add(USERNAME_PREFIX + "alice@example.com", "0" * 32, 3600)  # the orphan
    user = create(idp, okta_user())
    found = idp.get("/scim/v2/Users", headers=scim_headers(),
                    query_string={"filter": 'userName eq "alice@example.com"'}).get_json()
    assert [r["id"] for r in found["Resources"]] == [user["id"]]
    again = idp.post("/scim/v2/Users", headers=scim_headers(), json=okta_user())
    assert again.status_code == 409
    listed = idp.get("/scim/v2/Users", headers=scim_headers()).get_json()
    assert [r["id"] for r in listed["Resources"]] == [user["id"]]  # the refused create left no record


def test_a_group_name_left_by_a_half_failed_create_is_taken_over(host):
    """Groups keep the same rule as users: a displayName entry naming no group is
    taken over by the next create; a name a stored group has is still a 409, and
    the refused create leaves no record."""
    from flask_ccsso.scim.directory import GROUPNAME_PREFIX
    from flask_ccsso.state import get_state
    from tests.support.scim import GROUP

    app = host()
    idp = app.test_client()
    get_state(app).store.add(GROUPNAME_PREFIX + "db admins", "0" * 32, 3600)  # the orphan
    body = {"schemas": [GROUP], "displayName": "DB Admins", "members": []}
    group = create(idp, body, "Groups")
    found = idp.get("/scim/v2/Groups", headers=scim_headers(),
                    query_string={"filter": 'displayName eq "db admins"'}).get_json()
    assert [r["id"] for r in found["Resources"]] == [group["id"]]
    assert idp.post("/scim/v2/Groups", headers=scim_headers(), json=body).status_code == 409
    listed = idp.get("/scim/v2/Groups", headers=scim_headers()).get_json()
    assert [r["id"] for r in listed["Resources"]] == [group["id"]]


def test_a_create_whose_user_name_claim_fails_leaves_no_user_record(host):
    """The record is written before the userName is claimed: a store failure in the
    claim must not leave a user no index entry names (listed, unreachable by the
    client, a duplicate of the retried create's user)."""
    from flask_ccsso.exceptions import StoreUnavailable
    from flask_ccsso.state import get_state

    app = host()
    idp = app.test_client()
    store = get_state(app).store
    real_add = store.add

    def add_fails_once(*args: Any, **kwargs: Any) -> Any:
        store.add = real_add  # type: ignore[method-assign]
        raise StoreUnavailable("the store went away")

    store.add = add_fails_once  # type: ignore[method-assign]
    assert idp.post("/scim/v2/Users", headers=scim_headers(), json=okta_user()).status_code == 503
    user = create(idp, okta_user())
    listed = idp.get("/scim/v2/Users", headers=scim_headers()).get_json()
    assert [r["id"] for r in listed["Resources"]] == [user["id"]]


def test_a_failed_second_marker_check_signs_no_one_in(host, op, clock):
    """The re-check after the session is stored cannot reach the store: the 503 must
    not carry the stored session's cookie (a sign-in never announced, and no one
    knows whether the person was deprovisioned meanwhile)."""
    from flask_ccsso.exceptions import StoreUnavailable
    from flask_ccsso.state import get_state
    from tests.support.skills import sign_in

    web_host = host()
    browser = web_host.test_client()
    state = get_state(web_host)
    assert state.deprovisioned is not None
    markers, establish = state.deprovisioned.store, state.gate.establish

    class Unreachable:
        def get_many(self, keys: Any) -> Any:
            raise StoreUnavailable("the store went away")

    def then_the_store_goes(*args: Any, **kwargs: Any) -> None:
        establish(*args, **kwargs)
        state.deprovisioned.store = Unreachable()  # type: ignore[union-attr]

    state.gate.establish = then_the_store_goes  # type: ignore[method-assign]
    try:
        sign_in(browser, op, clock, expect=503)
    finally:
        state.deprovisioned.store = markers
    assert browser.get("/me", headers={"Accept": "application/json"}).status_code == 401
