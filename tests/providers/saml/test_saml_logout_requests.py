"""Review: SAML logout endpoint and local logout against odd and cross-site requests."""

from __future__ import annotations

import pytest

from flask_ccsso.testing import csrf_token_in, log_out
from tests.support.saml import login, post
from tests.support.saml_idp import User


def test_percent_encoded_parameter_name_is_400_not_500(saml_portal, idp):
    """werkzeug decodes ``SAML%52equest`` to ``SAMLRequest``; the raw query the
    signature covers does not have that name. A 400, never a 500."""
    app, client = saml_portal()
    post(client, idp.respond(login(client), User(), session_index="sess-9"))
    url = idp.logout_request("http://localhost/sso/google/slo", "alice@example.com", "sess-9")
    path = url[len("http://localhost"):].replace("SAMLRequest=", "SAML%52equest=")
    resp = app.test_client().get(path)
    assert resp.status_code == 400, resp.get_data(as_text=True)
    assert client.get("/me").status_code == 200


def test_cross_site_get_logout_asks_first(saml_portal, idp):
    """SameSite=Lax cookies ride along on a top-level GET from another site:
    ``<a href=https://portal/sso/logout>`` must not sign people out silently."""
    _app, client = saml_portal(idpLogout=False)
    post(client, idp.respond(login(client), User()))
    resp = client.get("/sso/logout", headers={"Sec-Fetch-Site": "cross-site"})
    assert resp.status_code == 200 and b"Sign out" in resp.data
    assert client.get("/me").status_code == 200
    # a POST from another origin (SameSite=None deployments) is asked too
    resp = client.post("/sso/logout", headers={"Origin": "https://evil.example"})
    assert resp.status_code == 400 and b"Sign out" in resp.data
    assert client.get("/me").status_code == 200
    # the form on that page (a POST with the CSRF token) signs out
    resp = client.post("/sso/logout", data={"csrf_token": csrf_token_in(resp)},
                       headers={"Sec-Fetch-Site": "same-origin"})
    assert resp.status_code == 303
    assert client.get("/me", headers={"Accept": "application/json"}).status_code == 401


@pytest.mark.parametrize("headers", [{}, {"Sec-Fetch-Site": "none"}, {"Origin": "http://localhost"}])
def test_same_origin_or_typed_logout_still_works(saml_portal, idp, headers):
    _app, client = saml_portal(idpLogout=False)
    post(client, idp.respond(login(client), User()))
    assert log_out(client, headers=headers).status_code == 303  # the confirm page, then its form
    assert client.get("/me", headers={"Accept": "application/json"}).status_code == 401
