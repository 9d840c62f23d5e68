"""Step-up helpers: a SAML app with a skill that asks for MFA, and the IdP URL a step-up goes to.

Shared by tests/security/test_acr_enforcement.py and tests/security/test_stepup_subject.py.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from flask_ccsso import requires_skill
from tests.support.saml import provider_block

#: the SAML authentication contexts: a second factor, and a password only
SAML_MFA = "urn:oasis:names:tc:SAML:2.0:ac:classes:MobileTwoFactorContract"
PPT = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"


def saml_stepup_app(make_app: Any, idp: Any, tmp_path: Any) -> tuple[Flask, Any]:
    """(app, client): one SAML provider ``google`` (pysaml2's IdP trusts it) and ``/mfa-thing``,
    a view behind a skill whose ``acrValues`` ask for :data:`SAML_MFA`."""
    meta = idp.write_metadata(str(tmp_path / "idp-metadata.xml"))
    app = make_app({"auth": {"providers": {"google": provider_block(meta)}}, "session": {"cookieSecure": False},
                    "skills": {"mfa-thing": {"allowedGroups": ["database-admins"], "acrValues": [SAML_MFA]},
                               "database-migration": {"allowedGroups": ["database-admins"]}}})

    @app.get("/mfa-thing")
    @requires_skill("mfa-thing")
    def mfa_thing() -> str:
        return "ok"

    client = app.test_client()
    idp.trust_sp(client.get("/sso/google/metadata").data.decode())
    return app, client


def step_up_location(client: Any, path: str) -> str:
    """The IdP URL of the step-up a stale request for ``path`` asks for."""
    resp = client.get(path)
    assert resp.status_code == 302 and "stepup=" in resp.headers["Location"], resp.get_data(as_text=True)
    resp = client.get(resp.headers["Location"])
    assert resp.status_code == 302
    return str(resp.headers["Location"])
