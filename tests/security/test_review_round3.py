"""Security review, round 3: SCIM deprovisioning, client authentication, shared failure counts."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from flask_ccsso.exceptions import ConfigError
from flask_ccsso.providers.client_auth import AssertionKeySource, ClientAuthenticator
from flask_ccsso.stores.sql import SQLStore
from tests.scim.conftest import TOKEN, host, scim_headers
from tests.scim.test_okta import create, okta_active, okta_user
from tests.support.sessions import PG_URL, session_config
from tests.support.skills import access_token, add_skill_routes, bearer

__all__ = ["host"]  # the SCIM fixture, used here


def test_bearer_token_is_refused_by_its_subject_even_when_it_carries_another_email(host, op, clock):
    """The bearer check reads the same markers as a sign-in: a token whose ``sub`` is the
    person's externalId but whose email is one SCIM never listed (an alias, a UPN) must
    not outlive the deprovisioning."""
    idp, api = host().test_client(), host().test_client()
    user = create(idp, okta_user())
    token = access_token(op, clock, sub=user["externalId"], email="alice.alias@example.com")
    assert api.get("/me", headers=bearer(token)).status_code == 200
    assert idp.patch(f"/scim/v2/Users/{user['id']}", headers=scim_headers(),
                     json=okta_active(False)).status_code == 200
    denied = api.get("/me", headers=bearer(token))
    assert denied.status_code == 401
    assert denied.get_json()["error"] == "deprovisioned"


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


def _ec_pem(curve: Any) -> str:
    key = ec.generate_private_key(curve)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _source(key: str, algorithm: str | None = None, root: str | None = "/srv/app") -> AssertionKeySource:
    return AssertionKeySource(key=key, certificate=None, key_id=None, algorithm=algorithm,
                              path="providers.okta", clock=time.time, root=root)


def test_key_text_that_is_not_pem_is_never_echoed_in_the_config_error():
    """A base64 DER key from ``${VAR}`` is taken for a path; the error must not print it."""
    der = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    text = base64.b64encode(der).decode()
    with pytest.raises(ConfigError) as caught:
        _source(text)
    assert "clientAssertionKey" in str(caught.value)
    assert text[:24] not in str(caught.value)
    with pytest.raises(ConfigError) as missing:  # a real path is still named
        _source("keys/okta-client.pem")
    assert "/srv/app/keys/okta-client.pem" in str(missing.value)


@pytest.mark.parametrize(("curve", "algorithm"), [(ec.SECP384R1(), "ES256"), (ec.SECP256R1(), "ES512"),
                                                  (ec.SECP256K1(), None)])
def test_an_ec_key_whose_curve_the_algorithm_cannot_sign_with_is_refused_at_start_up(curve, algorithm):
    """Otherwise every token request would fail while signing the assertion (a 500 per sign-in)."""
    with pytest.raises(ConfigError, match="clientAssertion"):
        _source(_ec_pem(curve), algorithm)
    ok = _source(_ec_pem(ec.SECP384R1()))  # the curve's own algorithm is chosen
    auth = ClientAuthenticator(method="private_key_jwt", client_id="c", client_secret=None, keys=ok, clock=time.time)
    _, body = auth.prepare("https://idp.example/token", {}, token_endpoint="https://idp.example/token")
    assert "client_assertion=" in body and ok.current_key.alg == "ES384"


def test_a_token_whose_subject_is_the_login_in_another_case_is_refused(host, op, clock):
    """Okta's org server puts the login in ``sub`` and logins are case-insensitive: a token
    without an email, whose ``sub`` differs from the SCIM userName only in case, is the same person."""
    idp, api = host().test_client(), host().test_client()
    user = create(idp, okta_user("Alice@Example.com"))
    token = access_token(op, clock, sub="alice@example.com", email=None)
    assert api.get("/me", headers=bearer(token)).status_code == 200
    assert idp.patch(f"/scim/v2/Users/{user['id']}", headers=scim_headers(),
                     json=okta_active(False)).status_code == 200
    denied = api.get("/me", headers=bearer(token))
    assert denied.status_code == 401
    assert denied.get_json()["error"] == "deprovisioned"


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
