"""Skills for browser sessions signed in through the LocalOP (real ID tokens)."""

from __future__ import annotations

import pytest
from flask import render_template_string

from flask_ccsso import reasons, signals
from flask_ccsso.testing import listen_to, log_out
from tests.support.skills import JSON, add_skill_routes, sign_in, skills_config


def test_not_signed_in_browser_redirects_to_sign_in(client):
    with listen_to(signals.permission_denied) as denied:
        resp = client.get("/s/security-audit")
    assert resp.status_code == 302 and "/sso/login" in resp.headers["Location"]
    assert denied[0].kwargs["identity"] is None and denied[0].kwargs["reason"] == reasons.NOT_AUTHENTICATED
    assert denied[0].kwargs["skill"] == "security-audit" and denied[0].kwargs["via"] == "session"


def test_not_signed_in_api_gets_401(client):
    resp = client.get("/s/security-audit", headers=JSON)
    assert resp.status_code == 401 and resp.get_json()["error"] == "not_authenticated"
    assert resp.headers["WWW-Authenticate"] == "Bearer"


def test_groups_and_scopes_allowed(client, op, clock, app):
    sign_in(client, op, clock, groups=["senior-developers", "staff"])
    with listen_to(signals.skill_invoked) as invoked:
        resp = client.get("/s/database-migration")
    assert resp.status_code == 200 and resp.get_json() == {"ok": "database-migration", "via": "session"}
    ev = invoked[0].kwargs
    assert invoked[0].sender is app and ev["skill"] == "database-migration" and ev["via"] == "session"
    assert ev["identity"].email == "alice@example.com" and ev["endpoint"] == "s_database-migration"


def test_missing_group_is_403_naming_skill_not_groups(client, op, clock):
    sign_in(client, op, clock, groups=["secret-project-x"], scope="openid security:read")
    with listen_to(signals.permission_denied) as denied:
        resp = client.get("/s/security-audit", headers=JSON)
    assert resp.status_code == 403
    body = resp.get_json()
    assert body["error"] == reasons.MISSING_GROUP and body["skill"] == "security-audit"
    assert body["condition"] == "allowedGroups"
    assert "secret-project-x" not in resp.get_data(as_text=True)
    assert denied[0].kwargs["reason"] == reasons.MISSING_GROUP and denied[0].kwargs["condition"] == "allowedGroups"
    html = client.get("/s/security-audit")
    assert html.status_code == 403 and html.mimetype == "text/html"
    text = html.get_data(as_text=True)
    assert "security-audit" in text and "secret-project-x" not in text


def test_missing_scope_is_403(client, op, clock):
    sign_in(client, op, clock, groups=["database-admins"], scope="openid profile email")
    resp = client.get("/s/database-migration", headers=JSON)
    assert resp.status_code == 403
    assert resp.get_json()["error"] == reasons.MISSING_SCOPE and resp.get_json()["condition"] == "requiredScopes"
    assert "WWW-Authenticate" not in resp.headers  # a session, not a bearer token: no RFC 6750 challenge


def test_several_users_several_skills(make_app, op, clock):
    app = add_skill_routes(make_app(skills_config(op)))
    people = {
        "dba": (["database-admins"], "openid migration:write", {"database-migration"}),
        "sec": (["security-team"], "openid security:read", {"security-audit"}),
        "ops": (["devops-engineers"], "openid infra:deploy migration:write", {"infrastructure-deploy"}),
        "both": (["security-team", "senior-developers"], "openid security:read migration:write",
                 {"security-audit", "database-migration"}),
    }
    for who, (groups, scope, expected) in people.items():
        c = app.test_client()
        sign_in(c, op, clock, groups=groups, scope=scope, sub=f"u-{who}", email=f"{who}@example.com")
        for skill in ("database-migration", "security-audit", "infrastructure-deploy"):
            code = c.get(f"/s/{skill}").status_code
            assert code == (200 if skill in expected else 403), (who, skill, code)


def test_any_of_and_all_of(make_app, op, clock):
    app = add_skill_routes(make_app(skills_config(op)))
    one = app.test_client()
    sign_in(one, op, clock, groups=["database-admins"], scope="openid migration:write")
    assert one.get("/any").status_code == 200
    assert one.get("/all").status_code == 403
    both = app.test_client()
    sign_in(both, op, clock, groups=["database-admins", "security-team"], scope="openid migration:write security:read")
    assert both.get("/any").status_code == 200 and both.get("/all").status_code == 200
    none = app.test_client()
    sign_in(none, op, clock, groups=["staff"], scope="openid")
    resp = none.get("/any", headers=JSON)
    assert resp.status_code == 403 and resp.get_json()["skill"] == "security-audit"


def test_blueprint_guard_and_decorated_blueprint(client, op, clock):
    assert client.get("/admin/panel").status_code == 302
    sign_in(client, op, clock, groups=["security-team"], scope="openid security:read")
    assert client.get("/admin/panel").status_code == 200
    assert client.get("/ops/deploy").status_code == 403


def test_bare_decorator_needs_sign_in_only(client, op, clock):
    assert client.get("/bare").status_code == 302
    sign_in(client, op, clock, groups=[])
    assert client.get("/bare").get_data(as_text=True) == "bare ok"


def test_async_view(app, client, op, clock):
    """The view goes through current_app.ensure_sync (asgiref need not be installed)."""
    import asyncio

    app.async_to_sync = lambda func: (lambda *a, **k: asyncio.run(func(*a, **k)))  # type: ignore[method-assign]
    sign_in(client, op, clock)
    assert client.get("/async").get_data(as_text=True) == "async ok"


def test_options_passes(client):
    assert client.options("/s/security-audit").status_code == 200
    assert client.options("/admin/panel").status_code == 200
    assert client.options("/ops/deploy").status_code == 200


def test_azure_style_app_roles_and_guid_groups(client, op, clock):
    sign_in(client, op, clock, groups=["0f0e0d0c-aaaa-bbbb-cccc-000000000001"], scope="openid")
    assert client.get("/s/guid-group").status_code == 200
    assert client.get("/s/approver").status_code == 403


def test_group_removed_loses_skill_at_next_sign_in(make_app, op, clock):
    app = add_skill_routes(make_app(skills_config(op)))
    client = app.test_client()
    sign_in(client, op, clock, groups=["security-team"], scope="openid security:read")
    assert client.get("/s/security-audit").status_code == 200
    assert log_out(client).status_code == 303
    assert client.get("/s/security-audit").status_code == 302
    sign_in(client, op, clock, groups=["staff"], scope="openid security:read")
    assert client.get("/s/security-audit").status_code == 403


def test_allowed_networks(make_app, op, clock):
    app = add_skill_routes(make_app(skills_config(op)))
    client = app.test_client()
    sign_in(client, op, clock)
    inside = client.get("/s/office-only", environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert inside.status_code == 200
    outside = client.get("/s/office-only", environ_base={"REMOTE_ADDR": "192.0.2.7"}, headers=JSON)
    assert outside.status_code == 403 and outside.get_json()["condition"] == "allowedNetworks"
    assert outside.get_json()["error"] == reasons.NETWORK_NOT_ALLOWED
    v6 = client.get("/s/office-only", environ_base={"REMOTE_ADDR": "2001:db8::5"})
    assert v6.status_code == 200
    mapped = client.get("/s/office-only", environ_base={"REMOTE_ADDR": "::ffff:10.9.9.9"})
    assert mapped.status_code == 200
    # without CCSSO_TRUSTED_PROXIES a forwarded-for header is not believed
    spoof = client.get("/s/office-only", environ_base={"REMOTE_ADDR": "192.0.2.7"},
                       headers={"X-Forwarded-For": "10.0.0.1"})
    assert spoof.status_code == 403


def test_allowed_networks_behind_trusted_proxy(make_app, op, clock):
    app = add_skill_routes(make_app(skills_config(op), CCSSO_TRUSTED_PROXIES=1))
    client = app.test_client()
    sign_in(client, op, clock)
    ok = client.get("/s/office-only", environ_base={"REMOTE_ADDR": "127.0.0.1"},
                    headers={"X-Forwarded-For": "10.0.0.1"})
    assert ok.status_code == 200
    # only the last hop (the one the proxy added) counts
    spoof = client.get("/s/office-only", environ_base={"REMOTE_ADDR": "127.0.0.1"},
                       headers={"X-Forwarded-For": "10.0.0.1, 192.0.2.7"})
    assert spoof.status_code == 403


@pytest.mark.parametrize("claims, allowed", [
    ({"amr": ["pwd"]}, False),
    ({"amr": ["pwd", "mfa"]}, True),
    ({"amr": ["pwd", "otp"]}, True),
    ({"amr": ["hwk"]}, True),
    ({"amr": ["pwd"], "acr": "http://schemas.openid.net/pape/policies/2007/06/multi-factor"}, True),
])
def test_require_mfa(make_app, op, clock, claims, allowed):
    app = add_skill_routes(make_app(skills_config(op)))
    client = app.test_client()
    sign_in(client, op, clock, **claims)
    resp = client.get("/s/mfa-needed", headers=JSON)
    assert resp.status_code == (200 if allowed else 403)
    if not allowed:
        assert resp.get_json()["condition"] == "requireMfa" and resp.get_json()["error"] == reasons.MFA_REQUIRED


def test_require_mfa_with_skill_acr(make_app, op, clock):
    app = add_skill_routes(make_app(skills_config(op)))
    weak, strong = app.test_client(), app.test_client()
    sign_in(weak, op, clock, amr=["pwd"], acr="urn:ccsso:loa1")
    sign_in(strong, op, clock, amr=["pwd"], acr="urn:ccsso:loa2")
    # acrValues are enforced whenever set: a weak acr is a step-up (the IdP can fix it), not a 403
    assert weak.get("/s/mfa-acr").status_code == 302
    assert weak.get("/s/mfa-acr", headers=JSON).get_json()["error"] == reasons.INSUFFICIENT_ACR
    assert strong.get("/s/mfa-acr").status_code == 200
    # the skill's acr counts only for that skill
    assert strong.get("/s/mfa-needed").status_code == 403


def test_truncated_groups_are_not_no_groups(make_app, op, clock):
    """Azure group overage that could not be resolved: groups_complete False."""
    from flask_ccsso.identity import Identity
    from flask_ccsso.skills import SkillPolicy

    app = make_app(skills_config(op))
    state = app.extensions["ccsso"]
    pol = SkillPolicy(state.config, state.providers, state.clock)
    skill = state.config.skills["security-audit"]
    partial = Identity(subject="s", provider="op", groups=frozenset({"staff"}), scopes=frozenset({"security:read"}),
                       groups_complete=False)
    d = pol.evaluate(skill, partial, remote_addr="127.0.0.1")
    assert d.outcome == "denied" and d.reason == reasons.GROUPS_INCOMPLETE and d.condition == "allowedGroups"
    # already matched: an incomplete list that contains an allowed group is enough
    matched = Identity(subject="s", provider="op", groups=frozenset({"security-team"}),
                       scopes=frozenset({"security:read"}), groups_complete=False)
    assert pol.evaluate(skill, matched, remote_addr=None).allowed
    # a skill without allowedGroups does not care
    assert pol.evaluate(state.config.skills["anyone"], partial, remote_addr=None).allowed


def test_truncated_groups_over_http(make_app, op, clock):
    app = add_skill_routes(make_app(skills_config(op)))
    client = app.test_client()
    sign_in(client, op, clock, groups=["staff"], scope="openid security:read")
    with client.session_transaction() as sess:
        data = sess["_ccsso"]
        data["identity"]["groups_complete"] = False
        sess["_ccsso"] = data
        sess.modified = True
    resp = client.get("/s/security-audit", headers=JSON)
    assert resp.status_code == 403 and resp.get_json()["error"] == reasons.GROUPS_INCOMPLETE
    assert "staff" not in resp.get_data(as_text=True)


def test_providers_restriction(make_app, op):
    from flask_ccsso.identity import Identity
    from flask_ccsso.skills import SkillPolicy

    app = make_app(skills_config(op))
    state = app.extensions["ccsso"]
    skill = state.config.skills["op-only"]
    pol = SkillPolicy(state.config, state.providers, state.clock)
    assert pol.evaluate(skill, Identity(subject="s", provider="op"), remote_addr=None).allowed
    d = pol.evaluate(skill, Identity(subject="s", provider="elsewhere"), remote_addr=None)
    assert not d.allowed and d.condition == "providers"


def test_saml_scopes_from_groups_mapping(make_app, op):
    from types import SimpleNamespace

    from flask_ccsso.identity import Identity
    from flask_ccsso.skills import SkillPolicy

    app = make_app(skills_config(op))
    state = app.extensions["ccsso"]
    state.providers["google"] = SimpleNamespace(settings=SimpleNamespace(
        scopes_from_groups={"security-team": ("security:read",)}))
    try:
        pol = SkillPolicy(state.config, state.providers, state.clock)
        ident = Identity(subject="s", provider="google", groups=frozenset({"security-team"}))
        assert pol.evaluate(state.config.skills["security-audit"], ident, remote_addr=None).allowed
        other = Identity(subject="s", provider="google", groups=frozenset({"database-admins"}))
        d = pol.evaluate(state.config.skills["database-migration"], other, remote_addr=None)
        assert d.reason == reasons.MISSING_SCOPE
    finally:
        del state.providers["google"]


def test_has_skill_in_code_and_templates(app, client, op, clock):
    @app.get("/nav")
    def nav() -> str:
        return render_template_string(
            "{% if has_skill('security-audit') %}A{% endif %}{% if has_skill('database-migration') %}D{% endif %}"
            "{% if has_skill('security-audit', 'database-migration') %}E{% endif %}"
            "{% if has_skill('security-audit', 'database-migration', all_of=True) %}F{% endif %}")

    assert client.get("/nav").get_data(as_text=True) == ""
    sign_in(client, op, clock, groups=["database-admins"], scope="openid migration:write")
    with listen_to(signals.skill_invoked) as invoked, listen_to(signals.permission_denied) as denied:
        assert client.get("/nav").get_data(as_text=True) == "DE"
    assert invoked == [] and denied == []


def test_has_skill_freshness_opt_in(app, client, op, clock):
    from flask_ccsso import has_skill

    @app.get("/fresh")
    def fresh() -> str:
        return f"{has_skill('prod-deploy')}/{has_skill('prod-deploy', fresh=True)}/{has_skill('nope')}"

    sign_in(client, op, clock, groups=["devops-engineers"])
    assert client.get("/fresh").get_data(as_text=True) == "True/True/False"
    clock.advance(1000)
    assert client.get("/fresh").get_data(as_text=True) == "True/False/False"
