"""Bearer tokens with several providers: issuer routing, Entra ID v1/v2 issuers and tid, introspection."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from flask_ccsso import reasons, signals
from flask_ccsso.testing import listen_to
from tests.support.local_op import CLIENT_ID, CLIENT_SECRET
from tests.support.skills import MORE_SKILLS, access_token, add_skill_routes, bearer

TENANT = "11111111-2222-3333-4444-555555555555"


def azure_config(op: Any) -> dict[str, Any]:
    return {
        "auth": {"providers": {
            "entra": {"provider": "azure-ad", "clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET, "tenantId": TENANT,
                      "issuer": op.issuer, "audience": ["api://portal", CLIENT_ID]},
        }},
        "skills": {**MORE_SKILLS, "op-only": {"providers": ["entra"]}}, "session": {"cookieSecure": False},
    }


def test_azure_v1_and_v2_issuers_and_app_roles(make_app, op, clock):
    app = add_skill_routes(make_app(azure_config(op)))
    client = app.test_client()
    v2 = access_token(op, clock, tid=TENANT, aud="api://portal", scope="migration:write", groups=[],
                      roles=["Approver"])
    assert client.get("/s/approver", headers=bearer(v2)).status_code == 200
    v1 = access_token(op, clock, iss=f"https://sts.windows.net/{TENANT}/", tid=TENANT, groups=[], roles=["Approver"])
    with listen_to(signals.skill_invoked) as invoked:
        assert client.get("/s/approver", headers=bearer(v1)).status_code == 200
    assert invoked[0].kwargs["identity"].provider == "entra" and invoked[0].kwargs["identity"].via == "bearer"
    # GUID groups compare case-insensitively
    guid = access_token(op, clock, tid=TENANT, groups=["0f0e0d0c-aaaa-bbbb-cccc-000000000001"])
    assert client.get("/s/guid-group", headers=bearer(guid)).status_code == 200


def test_azure_other_tenant_refused(make_app, op, clock):
    app = add_skill_routes(make_app(azure_config(op)))
    other = "99999999-2222-3333-4444-555555555555"
    tok = access_token(op, clock, tid=other, roles=["Approver"])
    resp = app.test_client().get("/s/approver", headers=bearer(tok))
    assert resp.status_code == 401 and 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
    v1_other = access_token(op, clock, iss=f"https://sts.windows.net/{other}/", tid=other, roles=["Approver"])
    assert app.test_client().get("/s/approver", headers=bearer(v1_other)).status_code == 401


def test_azure_group_overage_is_incomplete_not_empty(make_app, op, clock):
    app = add_skill_routes(make_app(azure_config(op)))
    from tests.support.skills import token_claims

    claims = token_claims(op, clock, tid=TENANT, _claim_names={"groups": "src1"})
    claims.pop("groups")
    tok = op.sign(claims)
    resp = app.test_client().get("/s/security-audit", headers={**bearer(tok), "Accept": "application/json"})
    assert resp.status_code == 403 and resp.get_json()["error"] == reasons.GROUPS_INCOMPLETE


def test_two_providers_routed_by_issuer(make_app, op, clock):
    cfg = azure_config(op)
    cfg["auth"]["providers"]["okta"] = {"provider": "okta", "clientId": "okta-app", "issuer": op.issuer + "/okta",
                                        "discoveryUrl": op.issuer + "/.well-known/openid-configuration"}
    # the okta discovery names op.issuer, not op.issuer/okta: that provider is unusable and must not break entra
    app = add_skill_routes(make_app(cfg))
    tok = access_token(op, clock, tid=TENANT)
    assert app.test_client().get("/s/database-migration", headers=bearer(tok)).status_code == 200


# --------------------------------------------------------------------------- RFC 7662

class Introspector:
    def __init__(self) -> None:
        self.answers: dict[str, dict[str, Any]] = {}
        self.calls: list[dict[str, Any]] = []
        self.status = 200
        self.server = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/introspect"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _wsgi(self, environ: Any, start_response: Any) -> Any:
        req = Request(environ)
        self.calls.append({"form": dict(req.form), "auth": req.authorization})
        if self.status != 200:
            resp = Response("nope", status=self.status)
        elif req.authorization is None or req.authorization.username != CLIENT_ID \
                or req.authorization.password != CLIENT_SECRET:
            resp = Response(json.dumps({"error": "invalid_client"}), status=401, mimetype="application/json")
        else:
            body = self.answers.get(req.form.get("token", ""), {"active": False})
            resp = Response(json.dumps(body), mimetype="application/json")
        return resp(environ, start_response)


@pytest.fixture(scope="module")
def _introspection_server() -> Iterator[Introspector]:
    intro = Introspector()
    yield intro
    intro.server.shutdown()


@pytest.fixture
def introspector(op, _introspection_server) -> Introspector:
    intro = _introspection_server
    intro.answers, intro.calls, intro.status = {}, [], 200
    op.extra_metadata["introspection_endpoint"] = intro.url
    return intro


def _opaque_app(make_app, op, **over):
    from tests.support.skills import skills_config

    return add_skill_routes(make_app(skills_config(op, **over)))


def test_opaque_token_introspected_and_cached(make_app, op, clock, introspector):
    app = _opaque_app(make_app, op)
    client = app.test_client()
    now = int(clock.now)
    introspector.answers["opaque-1"] = {"active": True, "sub": "u-svc", "iss": op.issuer, "aud": CLIENT_ID,
                                        "scope": "migration:write", "exp": now + 3600, "groups": ["database-admins"],
                                        "token_type": "Bearer"}
    for _ in range(3):
        resp = client.get("/s/database-migration", headers=bearer("opaque-1"))
        assert resp.status_code == 200 and resp.get_json()["via"] == "bearer"
    assert len(introspector.calls) == 1
    assert introspector.calls[0]["form"] == {"token": "opaque-1", "token_type_hint": "access_token"}
    clock.advance(61)  # at most 60 s in the cache
    assert client.get("/s/database-migration", headers=bearer("opaque-1")).status_code == 200
    assert len(introspector.calls) == 2


def test_opaque_token_cached_no_longer_than_exp(make_app, op, clock, introspector):
    app = _opaque_app(make_app, op)
    client = app.test_client()
    # an introspection answer must name our audience (issue 10 #3; audience-less answers are refused)
    introspector.answers["short"] = {"active": True, "sub": "u-svc", "scope": "migration:write", "aud": CLIENT_ID,
                                     "exp": int(clock.now) + 10, "groups": ["database-admins"]}
    assert client.get("/s/database-migration", headers=bearer("short")).status_code == 200
    clock.advance(11)
    introspector.answers["short"] = {"active": False}
    assert client.get("/s/database-migration", headers=bearer("short")).status_code == 401
    assert len(introspector.calls) == 2


@pytest.mark.parametrize("answer", [
    {"active": False},
    {"active": "true", "sub": "u"},
    {"active": True, "sub": "u", "aud": "other-api"},
    {"active": True, "sub": "u", "iss": "https://evil.example.com"},
    {"active": True, "sub": "u", "token_type": "refresh_token"},
    {"active": True},
])
def test_opaque_token_refused(make_app, op, clock, introspector, answer):
    app = _opaque_app(make_app, op)
    introspector.answers["tok"] = answer
    with listen_to(signals.login_failed) as failed:
        resp = app.test_client().get("/s/database-migration", headers=bearer("tok"))
    assert resp.status_code == 401 and 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
    assert failed[0].kwargs["reason"] == reasons.INVALID_TOKEN


def test_opaque_expired_answer_refused(make_app, op, clock, introspector):
    app = _opaque_app(make_app, op)
    introspector.answers["old"] = {"active": True, "sub": "u", "exp": int(clock.now) - 5}
    assert app.test_client().get("/me", headers=bearer("old")).status_code == 401


def test_introspection_switched_off(make_app, op, clock, introspector):
    app = _opaque_app(make_app, op, introspection=False)
    introspector.answers["opaque-1"] = {"active": True, "sub": "u"}
    assert app.test_client().get("/me", headers=bearer("opaque-1")).status_code == 401
    assert introspector.calls == []


def test_no_introspection_endpoint(make_app, op, clock):
    app = _opaque_app(make_app, op)
    assert app.test_client().get("/me", headers=bearer("opaque-1")).status_code == 401


def test_introspection_endpoint_failing_is_503(make_app, op, clock, introspector):
    app = _opaque_app(make_app, op)
    introspector.status = 500
    assert app.test_client().get("/me", headers=bearer("opaque-1")).status_code == 503
