"""SAML sign-in helpers over the in-repo IdP (tests/support/saml_idp.py): the provider block and the two legs.

The ``idp`` and ``saml_portal`` fixtures built on these live in tests/conftest.py.
"""

from __future__ import annotations

from typing import Any

from tests.support.saml_idp import GROUPS_URI

ACS = "http://localhost/sso/google/acs"
SP_ENTITY = "https://portal.example.test"
MAPPING = {
    "email": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
    "name": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
    "groups": GROUPS_URI,
}
SKILLS = {
    "database-migration": {"allowedGroups": ["database-admins"], "requiredScopes": ["migration:write"]},
    "mfa-thing": {"allowedGroups": ["database-admins"],
                  "acrValues": ["urn:oasis:names:tc:SAML:2.0:ac:classes:MobileTwoFactorContract"]},
}


def provider_block(meta: str, **over: Any) -> dict[str, Any]:
    block = {"provider": "saml", "idpMetadata": meta, "spEntityId": SP_ENTITY, "attributeMapping": dict(MAPPING),
             "scopesFromGroups": {"database-admins": ["migration:write"]},
             "groupsTruncatedAttribute": "groupsTruncated"}
    block.update(over)
    return block


def login(client, next_url="/me", provider="google", **params):
    q = "&".join(f"{k}={v}" for k, v in {"next": next_url, **params}.items())
    resp = client.get(f"/sso/{provider}/login?{q}")
    assert resp.status_code == 302, resp.data
    return resp.headers["Location"]


def post(client, data, provider="google", **kw):
    return client.post(f"/sso/{provider}/acs", data=data, **kw)


def refused(resp, failures, reason):
    assert resp.status_code == 400, resp.data
    assert failures and failures[-1]["reason"] == reason, failures
    return True
