"""OAuth access tokens instead of the shared secret (``scim.tokenProvider``).

The tokens are real RS256 JWTs minted by the local OP, in the two shapes the IdPs
send: Okta's "OAuth 2" SCIM mode (a custom authorization server's token: the app in
``cid``, the scopes as a list in ``scp``) and Entra ID's OAuth2 client-credentials
provisioning (a v1.0 app token: the application in ``appid``, its app roles in
``roles``, no scope, no person). They are verified by the gate's bearer verification;
this endpoint decides by provider, client and scope / role. The apps are two instances
on the real Redis, so a deactivation by token must end the person's session on the
other one, as it does with the static secret.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from joserfc.jwk import RSAKey
from scim2_client.engines.wsgi import WSGISCIMClient
from scim2_tester import Status, check_server

from flask_ccsso import signals
from flask_ccsso.config import parse_config
from flask_ccsso.exceptions import ConfigError
from flask_ccsso.testing import listen_to
from tests.support.local_op import CLIENT_ID, CLIENT_SECRET
from tests.support.oidc import oidc_config
from tests.support.scim import PATCH_OP, TOKEN, okta_active, okta_user, scim_headers
from tests.support.skills import JSON, access_token, bearer, sign_in

ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
#: the provisioning clients: Okta's app integration and Entra ID's application (client) id
OKTA_CLIENT = "0oa1scimprovisioning7"
ENTRA_CLIENT = "6731de76-14a6-49ae-97bc-6eba6914391e"
CLIENTS = [OKTA_CLIENT, ENTRA_CLIENT]
ENTRA_DISABLE = {"schemas": [PATCH_OP], "Operations": [{"op": "Replace", "path": "active", "value": "False"}]}


def oauth_host(host: Any, **more: Any) -> Any:
    """An app that accepts the local OP's tokens for the two clients, and no static secret."""
    return host(**{"secret": False, "tokenProvider": "op", "tokenClients": CLIENTS, **more})


def okta_token(op: Any, clock: Any, **over: Any) -> str:
    """Okta's token for its SCIM connection: the admin who connected the app in ``sub``."""
    claims = {"sub": "admin@example.com", "client_id": None, "cid": OKTA_CLIENT, "uid": "00uadmin",
              "scp": ["scim", "offline_access"], "email": None, "auth_time": None, **over}
    return access_token(op, clock, scope=None, groups=claims.pop("groups", []), **claims)


def entra_token(op: Any, clock: Any, **over: Any) -> str:
    """Entra ID's client-credentials token: the service principal in ``sub`` / ``oid``."""
    claims = {"sub": "9f2c4bd6-service-principal", "oid": "9f2c4bd6-service-principal", "client_id": None,
              "appid": ENTRA_CLIENT, "appidacr": "1", "idtyp": "app", "roles": ["scim"], "email": None,
              "auth_time": None, **over}
    return access_token(op, clock, scope=None, groups=claims.pop("groups", []), **claims)


def _error(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/scim+json"
    body = resp.get_json()
    assert body["schemas"] == [ERROR] and body["status"] == str(status) and "scimType" not in body
    return body


def _refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "SCIM request refused" in
            r.getMessage()]


@pytest.mark.parametrize(("mint", "deactivate"), [(okta_token, okta_active(False)), (entra_token, ENTRA_DISABLE)],
                         ids=["okta", "entra"])
def test_an_accepted_token_provisions_and_deprovisions_everywhere(host, op, clock, mint, deactivate):
    scim_host, web_host = oauth_host(host), oauth_host(host)
    idp, browser = scim_host.test_client(), web_host.test_client()
    headers = scim_headers(mint(op, clock))
    sign_in(browser, op, clock)
    assert browser.get("/me", headers=JSON).status_code == 200

    found = idp.get('/scim/v2/Users?filter=userName eq "alice@example.com"', headers=headers)
    assert found.status_code == 200 and found.get_json()["totalResults"] == 0
    created = idp.post("/scim/v2/Users", headers=headers, json=okta_user())
    assert created.status_code == 201, created.get_data(as_text=True)
    user = created.get_json()

    with listen_to(signals.user_deprovisioned) as gone:
        resp = idp.patch(f"/scim/v2/Users/{user['id']}", headers=headers, json=deactivate)
        assert resp.status_code == 200 and resp.get_json()["active"] is False
        refused = browser.get("/me", headers=JSON)  # the other host, before anything else happens
        assert refused.status_code == 401 and refused.get_json()["error"] == "revoked"
    assert [(r.kwargs["email"], r.kwargs["count"]) for r in gone] == [("alice@example.com", 1)]
    assert idp.delete(f"/scim/v2/Users/{user['id']}", headers=headers).status_code == 204
    assert idp.get(f"/scim/v2/Users/{user['id']}", headers=headers).status_code == 404


@pytest.mark.parametrize(("mint", "over", "why"), [
    (okta_token, {"cid": "0oa-another-app"}, "not in scim.tokenClients"),
    (okta_token, {"cid": None}, "not in scim.tokenClients"),  # no client claim at all
    (entra_token, {"appid": CLIENT_ID}, "not in scim.tokenClients"),  # the portal's own sign-in client
    (okta_token, {"scp": ["openid", "profile"]}, "no 'scim' scope"),
    (okta_token, {"scp": None, "groups": ["scim"]}, "no 'scim' scope"),  # a group is not a grant
    (entra_token, {"roles": ["User.Read"]}, "no 'scim' scope"),
    (entra_token, {"roles": None}, "no 'scim' scope"),
], ids=["other-client", "no-client", "portal-client", "no-scope", "group-named-scim", "other-role", "no-role"])
def test_a_valid_token_of_the_wrong_client_or_scope_is_403(host, op, clock, caplog, mint, over, why):
    caplog.set_level(logging.DEBUG, "flask_ccsso")
    token = mint(op, clock, **over)
    client = oauth_host(host).test_client()
    body = _error(client.post("/scim/v2/Users", headers=scim_headers(token), json=okta_user()), 403)
    assert "client" in body["detail"] or "scope" in body["detail"]
    assert client.get("/scim/v2/Users", headers=scim_headers(mint(op, clock))).get_json()["totalResults"] == 0
    [logged] = _refusals(caplog)
    assert why in logged and "provider 'op'" in logged and token not in caplog.text


def _other_key(op: Any) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": op.key.kid, "use": "sig", "alg": "RS256"}, private=True)


@pytest.mark.parametrize("spoil", ["expired", "audience", "other-key", "id-token", "opaque", "malformed"])
def test_a_token_that_does_not_verify_is_401(host, op, clock, caplog, spoil):
    caplog.set_level(logging.DEBUG, "flask_ccsso")
    now = int(clock.now)
    token = {
        "expired": lambda: okta_token(op, clock, iat=now - 3600, exp=now - 600),
        "audience": lambda: okta_token(op, clock, aud="api://another-application"),
        "other-key": lambda: access_token(op, clock, scope=None, cid=OKTA_CLIENT, client_id=None, scp=["scim"],
                                          key=_other_key(op)),
        "id-token": lambda: okta_token(op, clock, nonce="n-0S6_WzA2Mj"),
        "opaque": lambda: "00DXq1opaqueAccessToken0123456789abcdef",
        "malformed": lambda: "a.b.c",
    }[spoil]()
    client = oauth_host(host).test_client()
    resp = client.post("/scim/v2/Users", headers=scim_headers(token), json=okta_user())
    _error(resp, 401)
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    [logged] = _refusals(caplog)
    assert "access token refused" in logged and token not in caplog.text
    assert client.get("/scim/v2/Users", headers=scim_headers(okta_token(op, clock))).status_code == 200


def test_a_token_of_another_trusted_provider_is_401(host, op, other_op, clock, caplog):
    """``other`` is trusted for the API (its token opens ``/me``), not for provisioning."""
    caplog.set_level(logging.DEBUG, "flask_ccsso")
    other = {"provider": "oidc", "clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET, "issuer": other_op.issuer,
             "introspection": False}
    app = oauth_host(host, providers={"other": other})
    client = app.test_client()
    token = okta_token(other_op, clock)
    assert client.get("/me", headers=bearer(token)).get_json()["provider"] == "other"
    _error(client.get("/scim/v2/Users", headers=scim_headers(token)), 401)
    [logged] = _refusals(caplog)
    assert "issued by another identity provider" in logged
    assert client.get("/scim/v2/Users", headers=scim_headers(okta_token(op, clock))).status_code == 200


def test_the_static_secret_keeps_working_alongside(host, op, clock):
    client = host(tokenProvider="op", tokenClients=CLIENTS).test_client()
    user = client.post("/scim/v2/Users", headers=scim_headers(), json=okta_user())
    assert user.status_code == 201
    by_token = client.get(f"/scim/v2/Users/{user.get_json()['id']}", headers=scim_headers(entra_token(op, clock)))
    assert by_token.status_code == 200 and by_token.get_json()["userName"] == "alice@example.com"
    _error(client.get("/scim/v2/Users", headers=scim_headers(TOKEN[:-1] + "y")), 401)
    schemes = client.get("/scim/v2/ServiceProviderConfig", headers=scim_headers()).get_json()["authenticationSchemes"]
    assert [(s["name"], s.get("primary")) for s in schemes] == [("Bearer token", True), ("OAuth access token", False)]
    assert all(s["type"] == "oauthbearertoken" for s in schemes) and "'scim'" in schemes[1]["description"]


def test_without_a_secret_the_secret_is_refused(host, op, clock):
    client = oauth_host(host).test_client()
    _error(client.get("/scim/v2/Users", headers=scim_headers()), 401)  # SCIM_TOKEN is set, but not configured
    schemes = client.get("/scim/v2/ServiceProviderConfig",
                         headers=scim_headers(okta_token(op, clock))).get_json()["authenticationSchemes"]
    assert [(s["name"], s.get("primary")) for s in schemes] == [("OAuth access token", True)]


def test_an_unreachable_token_provider_is_503_then_recovers(host, op, clock, caplog):
    caplog.set_level(logging.DEBUG, "flask_ccsso")
    client = oauth_host(host).test_client()
    headers = scim_headers(okta_token(op, clock))
    op.down = True  # the app has not read the JWKS yet
    resp = client.get("/scim/v2/Users", headers=headers)
    assert resp.status_code == 503 and resp.mimetype == "application/scim+json"
    assert "identity provider" in resp.get_json()["detail"]
    [logged] = _refusals(caplog)
    assert "could not be reached" in logged
    op.down = False
    assert client.get("/scim/v2/Users", headers=headers).status_code == 200


def test_the_conformance_checker_passes_with_a_token(host, op, clock):
    client = WSGISCIMClient(oauth_host(host), base_url="http://localhost/scim/v2",
                            headers={"Authorization": f"Bearer {entra_token(op, clock)}"})
    client.discover()
    results = check_server(client)
    failed = [(r.title, r.reason) for r in results if r.status not in (Status.SUCCESS, Status.SKIPPED)]
    assert failed == []
    assert sum(r.status == Status.SUCCESS for r in results) > 100


SAML = {"provider": "saml", "idpMetadata": "idp-metadata.xml", "spEntityId": "https://portal.example.com"}


@pytest.mark.parametrize(("block", "path", "words"), [
    ({"tokenProvider": "corp-saml", "tokenClients": CLIENTS}, "scim.tokenProvider", "saml provider"),
    ({"tokenProvider": "okta", "tokenClients": CLIENTS}, "scim.tokenProvider", "not configured"),
    ({"tokenProvider": "op"}, "scim.tokenClients", "is empty"),
    ({"tokenProvider": "op", "tokenClients": [""]}, "scim.tokenClients", "empty id"),
    ({"tokenClients": CLIENTS, "token": "${SCIM_TOKEN}"}, "scim.tokenClients", "tokenProvider is not"),
    ({"tokenProvider": "op", "tokenClients": CLIENTS, "tokenScope": "scim write"}, "scim.tokenScope", "not one scope"),
    ({"tokenProvider": "op", "tokenClients": "0oa1"}, "scim.tokenClients", ""),
    ({}, "scim.token", "tokenProvider"),
])
def test_bad_oauth_config_fails_at_startup(op, block, path, words):
    cfg = oidc_config(op)
    cfg["auth"]["providers"]["corp-saml"] = SAML
    cfg["scim"] = {"enabled": True, **block}
    with pytest.raises(ConfigError) as err:
        parse_config(cfg, environ={"SCIM_TOKEN": TOKEN})
    assert err.value.path == path and words in str(err.value) + (err.value.fix or "")
    assert err.value.fix


def test_good_oauth_config_parses(op):
    cfg = oidc_config(op)
    cfg["scim"] = {"enabled": True, "tokenProvider": "op", "tokenClients": CLIENTS}
    scim = parse_config(cfg).scim
    assert (scim.token, scim.token_provider, scim.token_clients, scim.token_scope) == (None, "op", tuple(CLIENTS),
                                                                                         "scim")


# --------------------------------------------------------------------------- red-team round 3

def test_a_persons_delegated_entra_token_with_an_assigned_app_role_cannot_provision(host, op, clock):
    """Entra puts a *person's* app-role assignments in ``roles`` of their delegated token
    (an app role with allowedMemberTypes User+Application is common).  A delegated token
    has ``scp`` (and ``idtyp: user`` when the optional claim is on); a client-credentials
    token never has ``scp``.  token_grants() counts ``roles`` from either."""
    token = entra_token(op, clock, sub="alice-pairwise-sub", oid="3e1c-alice-object-id", idtyp="user",
                        scp="user_impersonation", roles=["scim"], upn="alice@example.com", name="Alice")
    client = oauth_host(host).test_client()
    resp = client.post("/scim/v2/Users", headers=scim_headers(token), json=okta_user("mallory@example.com"))
    assert resp.status_code == 403, resp.status_code


def test_conflicting_client_claims_are_refused(host, op, clock):
    """token_client() takes the first of client_id / azp / cid / appid: a token obtained by
    client '0oa-portal-spa' (azp, cid) that also carries a (mapper-added, e.g. Keycloak user
    attribute) ``client_id`` naming the provisioning client passes the tokenClients check."""
    token = okta_token(op, clock, client_id=OKTA_CLIENT, azp="0oa-portal-spa", cid="0oa-portal-spa",
                       sub="alice@example.com")
    client = oauth_host(host).test_client()
    resp = client.post("/scim/v2/Users", headers=scim_headers(token), json=okta_user("mallory@example.com"))
    assert resp.status_code == 403, resp.status_code


def test_token_clients_may_not_name_a_sign_in_client(op):
    """tokenClients accepts the portal's own sign-in clientId: then every person's access
    token for the portal (aud = that client, azp = that client) that carries the scope or
    a role named like it provisions -- including a deprovisioned person re-activating
    themselves (verify_access_token skips the deprovisioned check)."""
    cfg = oidc_config(op)
    cfg["scim"] = {"enabled": True, "tokenProvider": "op", "tokenClients": [CLIENT_ID]}
    with pytest.raises(ConfigError):
        parse_config(cfg)


def test_a_fallback_only_token_provider_is_refused_at_start_up(op):
    """Provisioning is everyday work: a break-glass provider's tokens may not do it."""
    cfg = oidc_config(op)
    cfg["auth"]["providers"]["op"]["fallbackOnly"] = True
    cfg["auth"]["providers"]["corp"] = {"provider": "oidc", "clientId": "corp", "clientSecret": "x" * 32,
                                        "issuer": "https://corp.example.com", "fallback": ["op"]}
    cfg["auth"]["default"] = "corp"
    cfg["scim"] = {"enabled": True, "tokenProvider": "op", "tokenClients": CLIENTS}
    with pytest.raises(ConfigError):
        parse_config(cfg)


def test_a_token_provider_sharing_its_issuer_with_a_sign_in_provider_is_reachable(host, op, clock):
    """One authorization server, two providers: the portal's sign-in client ('op') and the
    SCIM token provider ('okta-scim', audience api://scim). A SCIM token is verified by
    ``tokenProvider`` itself, not routed by issuer to the first provider with it (which would
    refuse its audience, and provisioning -- deprovisioning too -- would silently stop)."""
    scim_prov = {"provider": "oidc", "clientId": "scim-client", "clientSecret": CLIENT_SECRET, "issuer": op.issuer,
                 "audience": ["api://scim"], "introspection": False}
    app = host(secret=False, providers={"okta-scim": scim_prov}, tokenProvider="okta-scim", tokenClients=CLIENTS)
    token = okta_token(op, clock, aud="api://scim")
    resp = app.test_client().post("/scim/v2/Users", headers=scim_headers(token), json=okta_user())
    assert resp.status_code == 201, resp.get_json()
