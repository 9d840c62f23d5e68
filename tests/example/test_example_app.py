"""The example portal, through Flask's test client, signing in through the mounted dev IdP.

The browser side runs in the test client; the portal's back channel
(discovery, token, JWKS) reaches the dev IdP over real HTTP, served from the
same app by a threaded server on 127.0.0.1 -- exactly as ``flask run`` does.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from flask_ccsso import signals
from flask_ccsso.testing import csrf_token_in, listen_to
from tests.support.example import Portal, bearer_token, follow_sign_in, sign_in


def test_home_page_anonymous(example_portal: Portal) -> None:
    resp = example_portal.client().get("/")
    assert resp.status_code == 200
    body = resp.get_data(as_text=True)
    assert "Sign in" in body and "Development IdP" in body


def test_protected_page_sends_anonymous_to_sign_in(example_portal: Portal) -> None:
    client = example_portal.client()
    resp = client.get("/migrations")
    assert resp.status_code == 302
    landing = follow_sign_in(client, resp, "alice")
    assert urlsplit(landing.location).path == "/migrations"
    assert client.get("/migrations").status_code == 200


def test_alice_migrations_yes_security_audit_no(example_portal: Portal) -> None:
    client = sign_in(example_portal, "alice")
    home = client.get("/").get_data(as_text=True)
    assert "Welcome, " in home and 'href="/migrations"' in home and 'href="/security/audit"' not in home
    page = client.get("/migrations")
    assert page.status_code == 200 and "2026_11_18_split_accounts_table" in page.get_data(as_text=True)
    with listen_to(signals.permission_denied) as denied:
        forbidden = client.get("/security/audit")
    assert forbidden.status_code == 403
    assert "security-audit" in forbidden.get_data(as_text=True)
    assert denied and denied[0].kwargs["skill"] == "security-audit"
    assert client.get("/deploy").status_code == 403
    access = client.get("/access").get_data(as_text=True)
    assert re.search(r'data-skill="database-migration">.*?class="yes"', access, re.DOTALL)
    assert re.search(r'data-skill="security-audit">.*?class="no"', access, re.DOTALL)


def test_bob_reads_the_audit_trail(example_portal: Portal) -> None:
    client = sign_in(example_portal, "bob")
    assert client.get("/migrations").status_code == 403
    page = client.get("/security/audit")
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert "auth.login" in body and "bob@example.com" in body
    assert "permission.denied" in body  # his refused /migrations just now


def test_carol_deploys_after_step_up(example_portal: Portal) -> None:
    client = sign_in(example_portal, "carol")
    assert client.get("/deploy").status_code == 200  # a fresh sign-in is recent enough
    example_portal.clock.advance(1000)  # older than session.maxAuthAge (900 s)
    with listen_to(signals.stepup_satisfied) as satisfied:
        stale = client.get("/deploy")
        assert stale.status_code == 302, "a stale sign-in must be sent back to the IdP"
        assert "stepup=infrastructure-deploy" in stale.location
        login = client.get(stale.location)
        assert "prompt=login" in login.location and "max_age=" in login.location
        # the IdP shows its sign-in page again, although its own session is alive
        landing = follow_sign_in(client, login, "carol")
    assert urlsplit(landing.location).path == "/deploy"
    assert satisfied and satisfied[0].kwargs["skill"] == "infrastructure-deploy"
    token = csrf_token_in(client.get("/deploy"))
    done = client.post("/deploy", data={"environment": "staging", "csrf_token": token})
    assert done.status_code == 200 and "Deployment to staging started" in done.get_data(as_text=True)


def test_dave_sees_nothing(example_portal: Portal) -> None:
    client = sign_in(example_portal, "dave")
    for path in ("/migrations", "/security/audit", "/deploy"):
        assert client.get(path).status_code == 403, path
    access = client.get("/access").get_data(as_text=True)
    assert 'class="yes"' not in access
    home = client.get("/").get_data(as_text=True)
    assert 'href="/migrations"' not in home and 'href="/deploy"' not in home


def test_sign_out_ends_both_sessions(example_portal: Portal) -> None:
    client = sign_in(example_portal, "alice")
    token = csrf_token_in(client.get("/"))  # the header's Sign out form
    with listen_to(signals.user_logged_out) as out:
        resp = client.post("/sso/logout", data={"csrf_token": token})
    assert resp.status_code == 303 and "/devidp/end_session" in resp.location
    assert out and out[0].kwargs["idp_logout"] is True
    back = client.get(resp.location)
    assert back.status_code == 302 and back.location.endswith("/sso/logged-out")
    assert client.get("/migrations").status_code == 302
    # the IdP forgot alice too: the next sign-in shows its page again
    resp = client.get("/sso/dev/login?next=/")
    assert client.get(resp.location).status_code == 200


# --------------------------------------------------------------------------- the API, with bearer tokens

def test_api_with_bearer_token(example_portal: Portal) -> None:
    token = bearer_token(example_portal, "alice")
    resp = example_portal.client().get("/api/migrations", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    data = resp.get_json()
    assert data["caller"] == "alice@example.com" and data["via"] == "bearer"
    assert len(data["migrations"]) == 3


def test_api_refuses_without_the_skill_or_token(example_portal: Portal) -> None:
    client = example_portal.client()
    assert client.get("/api/migrations").status_code == 302  # a browser is sent to sign in
    anon = client.get("/api/migrations", headers={"Accept": "application/json"})
    assert anon.status_code == 401 and anon.headers["WWW-Authenticate"].startswith("Bearer")
    bad = client.get("/api/migrations", headers={"Authorization": "Bearer not-a-token"})
    assert bad.status_code == 401
    token = bearer_token(example_portal, "dave", scope="openid profile email")
    denied = client.get("/api/migrations", headers={"Authorization": f"Bearer {token}"})
    assert denied.status_code == 403
    assert denied.get_json()["skill"] == "database-migration"


def test_flask_run_port_becomes_the_base_url() -> None:
    """``flask --app example_app run --port 5001`` needs no CCSSO_EXAMPLE_BASE_URL."""
    import click

    from example_app import _flask_run_address

    assert _flask_run_address() is None
    with click.Context(click.Command("run"), info_name="run") as ctx:
        ctx.params.update(host="127.0.0.1", port=5001)
        assert _flask_run_address() == "http://127.0.0.1:5001"
    with click.Context(click.Command("check-config"), info_name="check-config"):
        assert _flask_run_address() is None
