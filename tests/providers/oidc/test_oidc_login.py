from __future__ import annotations

from tests.support.oidc import authorize_params, callback, oidc_config, start_login


def test_full_login(make_app, op):
    app = make_app(oidc_config(op))
    client = app.test_client()
    url = start_login(client)
    q = authorize_params(url)
    assert q["code_challenge_method"] == "S256" and q["nonce"] and q["state"]
    resp = callback(client, op.issue_code(url))
    assert resp.status_code == 302 and resp.headers["Location"] == "/me"
    me = client.get("/me").get_json()
    assert me["email"] == "alice@example.com"
    assert "database-admins" in me["groups"]
