"""The library's own pages are no dead ends, and an app can restyle or replace them.

Sign-in failed, access denied (a browser), signed out and the provider
chooser each offer a way on ("Try again" / "Sign in again") and a way back
("Back to <app>", ``CCSSO_APP_NAME`` / ``CCSSO_HOME_URL``). The app's own
``templates/ccsso/*.html`` win over the library's (Flask's loader searches
the app first), and the documented blocks are there to override.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_ccsso import CCSSO, ConfigError, requires_skill
from flask_ccsso.stores import MemoryStore
from flask_ccsso.testing import CCSSOTestClient, log_out
from tests.support.clock import Clock
from tests.support.local_op import LocalOP
from tests.support.oidc import callback
from tests.support.skills import skills_config

ALICE_NO_GROUPS = {"subject": "alice", "email": "alice@example.com", "groups": [], "scopes": []}


@pytest.fixture
def build(tmp_path: Path, op: LocalOP, clock: Clock) -> Iterator[Callable[..., Flask]]:
    made: list[Flask] = []

    def factory(templates: dict[str, str] | None = None, **flask_config: Any) -> Flask:
        root = tmp_path / f"app{len(made)}"
        for name, text in (templates or {}).items():
            (root / "templates" / "ccsso").mkdir(parents=True, exist_ok=True)
            (root / "templates" / "ccsso" / name).write_text(text, encoding="utf-8")
        root.mkdir(exist_ok=True)
        app = Flask("library_pages_app", root_path=str(root), instance_path=str(tmp_path / "instance"))
        app.config.update(SECRET_KEY="test-secret", TESTING=True, CCSSO=skills_config(op), **flask_config)
        app.test_client_class = CCSSOTestClient
        CCSSO(app, clock=clock, store=MemoryStore(clock))
        made.append(app)

        @app.route("/migrations", methods=["GET", "POST"])
        @requires_skill("database-migration")
        def migrations() -> str:
            return "ok"

        return app

    yield factory
    for app in made:
        state = app.extensions["ccsso"]
        if state.audit is not None:
            state.audit.close(timeout=2)


def links(page: Any) -> dict[str, str]:
    """``{text: href}`` of the page's links."""
    body = page.get_data(as_text=True)
    return {html.unescape(re.sub(r"<[^>]+>", "", text)).strip(): html.unescape(href)
            for href, text in re.findall(r'<a [^>]*href="([^"]*)"[^>]*>(.*?)</a>', body, re.DOTALL)}


def test_access_denied_offers_try_again_and_the_way_home(build: Callable[..., Flask]) -> None:
    app = build(CCSSO_APP_NAME="Deploy Portal", CCSSO_HOME_URL="/dashboard")
    client = app.test_client(identity=ALICE_NO_GROUPS)
    page = client.get("/migrations?tab=2", headers={"Accept": "text/html"})
    assert page.status_code == 403
    assert links(page) == {"Try again": "/migrations?tab=2", "Back to Deploy Portal": "/dashboard"}


def test_failed_sign_in_offers_a_new_sign_in(build: Callable[..., Flask]) -> None:
    app = build()
    page = callback(app.test_client(), {"state": "nobody-started-this", "code": "x"})
    assert page.status_code == 400 and "Sign-in failed" in page.get_data(as_text=True)
    # defaults: the app's name, the site's root
    assert links(page) == {"Try again": "/sso/login", "Back to library_pages_app": "/"}


def test_signed_out_page_and_confirm_page_lead_on(build: Callable[..., Flask]) -> None:
    app = build(CCSSO_APP_NAME="Deploy Portal", CCSSO_HOME_URL="https://intranet.example.com/")
    client = app.test_client(identity=ALICE_NO_GROUPS)
    confirm = client.get("/sso/logout")
    assert links(confirm) == {"Stay signed in": "https://intranet.example.com/"}
    assert log_out(client).status_code == 303  # to the IdP's logout, which comes back to:
    page = client.get("/sso/logged-out")
    assert page.status_code == 200 and "You have been signed out." in page.get_data(as_text=True)
    assert links(page) == {"Sign in again": "/sso/login", "Back to Deploy Portal": "https://intranet.example.com/"}


def test_a_refused_form_post_has_no_repeat_link(build: Callable[..., Flask]) -> None:
    app = build()
    client = app.test_client(identity=ALICE_NO_GROUPS)
    page = client.post("/migrations", headers={"Accept": "text/html"})
    assert page.status_code in (400, 403), page.status_code  # the CSRF check or the skill refuses it
    assert links(page) == {"Back to library_pages_app": "/"}


BASE = """<!doctype html><html><head><title>{% block title %}{% endblock %}</title></head>
<body class="house-style"><nav>Acme intranet</nav>{% block content %}{% endblock %}</body></html>"""

MESSAGE = """{% extends "ccsso/base.html" %}
{% block content %}<h1 id="own">{{ title }}</h1><p>{{ message }}</p>
<p>{% block actions %}<a href="{{ home_url }}">Home of {{ app_name }}</a>{% endblock %}</p>{% endblock %}"""


def test_app_templates_win(build: Callable[..., Flask]) -> None:
    # the layout alone: every page of the library takes the app's house style, its own blocks intact
    app = build(templates={"base.html": BASE})
    client = app.test_client(identity=ALICE_NO_GROUPS)
    page = client.get("/migrations", headers={"Accept": "text/html"})
    body = page.get_data(as_text=True)
    assert page.status_code == 403 and 'class="house-style"' in body and "Acme intranet" in body
    assert links(page) == {"Try again": "/migrations", "Back to library_pages_app": "/"}
    assert "<title>Access denied</title>" in body

    # one page replaced, with the documented context
    app = build(templates={"message.html": MESSAGE})
    client = app.test_client(identity=ALICE_NO_GROUPS)
    page = client.get("/migrations", headers={"Accept": "text/html"})
    assert page.status_code == 403 and '<h1 id="own">Access denied</h1>' in page.get_data(as_text=True)
    assert links(page) == {"Home of library_pages_app": "/"}


@pytest.mark.parametrize("setting", [{"CCSSO_HOME_URL": "//evil.example"}, {"CCSSO_HOME_URL": "javascript:x"},
                                     {"CCSSO_HOME_URL": "dashboard"}, {"CCSSO_APP_NAME": "two\nlines"}])
def test_bad_page_settings_refused_at_start(build: Callable[..., Flask], setting: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as err:
        build(**setting)
    assert err.value.path == next(iter(setting))


def test_documented_csp_override_reaches_the_pages(build: Callable[..., Flask]) -> None:
    """docs/customising.md's ``after_request`` loosens the policy on every library page."""
    from flask_ccsso.responses import is_library_request

    app = build()

    @app.after_request
    def library_pages_may_use_our_css(response: Any) -> Any:
        if is_library_request() or response.headers.get("Content-Security-Policy", "").startswith("default-src 'none'"):
            response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'self'; frame-ancestors 'none'"
        return response

    client = app.test_client(identity=ALICE_NO_GROUPS)
    for page in (client.get("/migrations", headers={"Accept": "text/html"}), client.get("/sso/logged-out")):
        assert page.headers["Content-Security-Policy"] == "default-src 'none'; style-src 'self'; frame-ancestors 'none'"
