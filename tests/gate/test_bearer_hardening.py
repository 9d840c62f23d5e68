"""Review: tokens that are not access tokens, and hostile claim values, on the bearer path."""

from __future__ import annotations

import pytest

from flask_ccsso import reasons, signals
from flask_ccsso.testing import listen_to
from tests.support.skills import access_token, add_skill_routes, bearer, skills_config


def _invalid(resp):
    assert resp.status_code == 401, resp.get_data(as_text=True)
    assert resp.get_json()["error"] == reasons.INVALID_TOKEN


@pytest.mark.parametrize("extra", [
    {"at_hash": "abc"},                      # an ID token issued with an access token (refresh grant: no nonce)
    {"c_hash": "abc"},
    {"typ": "ID"},                           # Keycloak's ID token marker claim
    {"typ": "Refresh"},
    {"events": {"http://schemas.openid.net/event/backchannel-logout": {}}},  # a logout token without typ
])
def test_id_and_logout_tokens_are_not_access_tokens(client, op, clock, extra):
    tok = access_token(op, clock, **extra)
    with listen_to(signals.login_failed) as failed:
        _invalid(client.get("/s/database-migration", headers=bearer(tok)))
    assert failed and failed[0].kwargs["reason"] == reasons.INVALID_TOKEN


def test_plain_access_token_still_works(client, op, clock):
    assert client.get("/s/database-migration", headers=bearer(access_token(op, clock))).status_code == 200


def test_nan_auth_time_in_a_bearer_token_is_malformed(client, op, clock):
    """A NaN auth_time compares false with every bound (fresh forever); RFC 8259
    JSON has no NaN, so the token is malformed and never opens a sensitive skill."""
    tok = access_token(op, clock, groups=["devops-engineers"], auth_time=float("nan"))
    resp = client.get("/s/prod-deploy", headers=bearer(tok))
    assert resp.status_code == 401, resp.get_data(as_text=True)
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]


def test_unexpected_error_while_verifying_is_401_not_500(app, client, op, clock, monkeypatch):
    prov = app.extensions["ccsso"].providers["op"]

    def boom(*a, **k):
        raise KeyError("surprise")

    monkeypatch.setattr(prov, "decode_jwt", boom)
    with listen_to(signals.login_failed) as failed:
        _invalid(client.get("/s/database-migration", headers=bearer(access_token(op, clock))))
    assert failed


def test_introspection_exp_nan_is_refused(app, op, clock):
    from flask_ccsso.exceptions import AuthenticationFailed

    prov = app.extensions["ccsso"].providers["op"]
    with app.app_context(), pytest.raises(AuthenticationFailed):
        # with an accepted aud (issue 10 #3), so that the NaN exp is what is refused
        prov.validate_introspection({"active": True, "sub": "u-1", "aud": "portal", "exp": float("nan")},
                                    now=clock.now)


@pytest.mark.parametrize("claim", ["client_id", "azp", "cid", "appid"])
def test_allowed_clients_reads_each_vendors_client_claim(make_app, op, clock, claim):
    cfg = skills_config(op)
    cfg["auth"]["providers"]["op"]["allowedClients"] = ["portal"]
    client = add_skill_routes(make_app(cfg)).test_client()
    ok = access_token(op, clock, **{"client_id": None, claim: "portal"})
    other = access_token(op, clock, **{"client_id": None, claim: "intruder"})
    assert client.get("/s/database-migration", headers=bearer(ok)).status_code == 200
    assert client.get("/s/database-migration", headers=bearer(other)).status_code == 401
