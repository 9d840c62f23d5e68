"""Azure AD preset: tenant check, groups/roles, group overage via Graph."""

from __future__ import annotations

import pytest

from flask_ccsso import signals
from tests.support.local_op import CLIENT_ID, CLIENT_SECRET
from tests.support.oidc import authorize_params, callback, start_login

TENANT = "11111111-2222-3333-4444-555555555555"


def azure_config(op, **over):
    prov = {"provider": "azure-ad", "tenantId": TENANT, "clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET,
            "issuer": op.issuer, "graphUrl": op.issuer + "/graph", "audience": "api://portal",
            "scopes": ["openid", "profile", "email", "User.Read"]}
    prov.update(over)
    return {"auth": {"providers": {"azure": prov}}, "session": {"cookieSecure": False},
            "skills": {"database-migration": {"allowedGroups": ["database-admins"]}}}


def _sign_in(make_app, op, claims_over, **cfg):
    app = make_app(azure_config(op, **cfg))
    client = app.test_client()
    url = start_login(client, provider="azure")
    claims = op.id_claims(authorize_params(url)["nonce"], **{"tid": TENANT, **claims_over})
    claims = {k: v for k, v in claims.items() if v is not None}
    resp = callback(client, op.issue_code(url, id_token=op.sign(claims)), provider="azure")
    return app, client, resp


def test_tenant_and_roles(make_app, op):
    _, client, resp = _sign_in(make_app, op, {"roles": ["Portal.Admin"], "groups": ["g-1"]})
    assert resp.status_code == 302
    me = client.get("/me").get_json()
    assert me["groups"] == ["g-1"]


def test_other_tenant_refused(make_app, op):
    failures = []
    signals.login_failed.connect(lambda s, **kw: failures.append(kw), weak=False)
    try:
        _, _client, resp = _sign_in(make_app, op, {"tid": "99999999-2222-3333-4444-555555555555"})
    finally:
        signals.login_failed.receivers.clear()
    assert resp.status_code == 400 and failures[-1]["reason"] == "tenant_mismatch"


def test_missing_tid_refused(make_app, op):
    app = make_app(azure_config(op))
    client = app.test_client()
    url = start_login(client, provider="azure")
    claims = op.id_claims(authorize_params(url)["nonce"])
    resp = callback(client, op.issue_code(url, id_token=op.sign(claims)), provider="azure")
    assert resp.status_code == 400


G1, G2, G3 = ("0f0e0d0c-aaaa-bbbb-cccc-000000000001", "0f0e0d0c-aaaa-bbbb-cccc-000000000002",
              "0f0e0d0c-aaaa-bbbb-cccc-000000000003")


def test_group_overage_resolved_through_graph_pages(make_app, op):
    """Every page is read; only object ids are kept (a display name grants nothing,
    see tests/security/test_azure_overage.py)."""
    op.graph_pages = [
        {"value": [{"id": G1, "displayName": "database-admins"}, {"id": G2, "displayName": "x"}]},
        {"value": [{"id": G3, "displayName": "security-team"}]},
    ]
    _app, client, resp = _sign_in(make_app, op, {"groups": None, "_claim_names": {"groups": "src1"},
                                               "_claim_sources": {"src1": {"endpoint": "https://graph..."}}})
    assert resp.status_code == 302
    me = client.get("/me").get_json()
    assert set(me["groups"]) == {G1, G2, G3}
    assert client.get("/migrations").status_code == 403


def test_group_overage_graph_failure_is_not_no_groups(make_app, op):
    op.graph_fail = True
    app, client, resp = _sign_in(make_app, op, {"groups": None, "hasgroups": True})
    assert resp.status_code == 302
    state = app.extensions["ccsso"]
    sid = client.get_cookie("ccsso_session").value
    data = state.session_interface.read_sid(sid)
    assert data["_ccsso"]["identity"]["groups_complete"] is False
    assert client.get("/migrations").status_code == 403


def test_graph_next_link_to_another_host_is_not_followed(make_app, op):
    from flask_ccsso.providers.azure import AzureADProvider

    app = make_app(azure_config(op))
    prov = app.extensions["ccsso"].providers["azure"]
    assert isinstance(prov, AzureADProvider)
    op.graph_pages = [{"value": [{"id": "g-1"}]}, {"value": [{"id": "g-2"}]}]
    real = op.issuer
    # a nextLink pointing elsewhere must not receive the person's token
    orig = op._graph

    def evil(req):
        resp = orig(req)
        import json as _j
        data = _j.loads(resp.get_data())
        if "@odata.nextLink" in data:
            data["@odata.nextLink"] = "http://127.0.0.2:1/steal"
        from werkzeug.wrappers import Response
        return Response(_j.dumps(data), mimetype="application/json")

    op._graph = evil
    try:
        groups, complete = prov.resolve_groups({"hasgroups": True}, {"access_token": "at"})
    finally:
        op._graph = orig
    assert complete is False and groups == frozenset()
    assert real


@pytest.mark.parametrize("tenant", ["common", "organizations", "consumers"])
def test_multi_tenant_endpoints_refused(make_app, op, tenant):
    from flask_ccsso import ConfigError

    with pytest.raises(ConfigError):
        make_app(azure_config(op, tenantId=tenant))
