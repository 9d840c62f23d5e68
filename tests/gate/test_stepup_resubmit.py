"""A form post on a stale sign-in keeps the person's intent through the step-up (issue 14, item 11).

The post itself cannot survive the round trip (it ends in a GET, and
replaying a sensitive post nobody pressed again is what CSRF defences
forbid). Before, the browser came back to the Referer's path (from any
site) or ``/``, with nothing saying that the post was dropped. Now it comes
back to the page the form was on -- the same-origin ``Referer``, else the
route itself when it answers GET, else ``/`` -- and that page reads, once,
:func:`flask_ccsso.stepup_notice`: what was not carried out, and why.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask, render_template_string

from flask_ccsso import StepUpNotice, requires_skill, signals, stepup_notice
from flask_ccsso.testing import listen_to
from tests.support.skills import add_skill_routes, sign_in, skills_config

DEVOPS = ["devops-engineers"]


@pytest.fixture
def app(make_app: Any, op: Any) -> Flask:
    app = add_skill_routes(make_app(skills_config(op)))

    @app.get("/form")
    def form() -> dict[str, Any]:
        notice = stepup_notice()
        return {"notice": None if notice is None else notice.__dict__}

    @app.get("/page")
    def page() -> str:
        return render_template_string("{% set n = ccsso_stepup_notice() %}{{ n.message if n else 'none' }}")

    @app.post("/post-only")
    @requires_skill("quick")
    def post_only() -> str:
        return "done"

    return app


def _stale_post(client: Any, clock: Any, op: Any, path: str, **headers: str) -> str:
    """Sign in, let the sign-in age past ``quick``'s 60 s, post: the ``next`` of the step-up."""
    sign_in(client, op, clock, groups=DEVOPS)
    clock.advance(90)
    with listen_to(signals.skill_invoked) as ran:
        resp = client.post(path, data={"environment": "production"}, headers=headers)
    assert ran == [], "the stale post must not run"
    assert resp.status_code == 302 and "stepup=quick" in resp.location, resp.get_data(as_text=True)
    return resp.location


def _next_of(location: str) -> str:
    return parse_qs(urlsplit(location).query)["next"][0]


def _complete(client: Any, op: Any, clock: Any, location: str) -> str:
    """Finish the step-up as the same person; the landing path (and query)."""
    url = client.get(location).location
    landing = sign_in(client, op, clock, url=url, groups=DEVOPS).location
    parts = urlsplit(landing)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def test_post_comes_back_to_the_form_page_with_a_notice(app: Flask, op: Any, clock: Any) -> None:
    client = app.test_client()
    location = _stale_post(client, clock, op, "/s/quick", Referer="http://localhost/form?tab=deploy")
    assert _next_of(location) == "/form?tab=deploy"
    assert _complete(client, op, clock, location) == "/form?tab=deploy"
    notice = client.get("/form").get_json()["notice"]
    assert notice["method"] == "POST" and notice["action"] == "/s/quick" and notice["skill"] == "quick"
    assert "not carried out" in notice["message"] and "submit it again" in notice["message"]
    assert client.get("/form").get_json()["notice"] is None  # read once
    assert client.post("/s/quick").status_code == 200  # the post again: fresh enough now


def test_notice_is_a_template_global(app: Flask, op: Any, clock: Any) -> None:
    client = app.test_client()
    location = _stale_post(client, clock, op, "/s/quick", Referer="http://localhost/page")
    assert _complete(client, op, clock, location) == "/page"
    assert "submit it again" in client.get("/page").get_data(as_text=True)
    assert client.get("/page").get_data(as_text=True) == "none"


@pytest.mark.parametrize("referer", [None, "https://evil.example/phish", "http://localhost.evil.example/form",
                                     "//evil.example/form"])
def test_without_a_same_origin_referer_the_route_itself(app: Flask, op: Any, clock: Any,
                                                        referer: str | None) -> None:
    client = app.test_client()
    headers = {"Referer": referer} if referer else {}
    location = _stale_post(client, clock, op, "/s/quick", **headers)
    assert _next_of(location) == "/s/quick"  # the route answers GET: the form's own page
    assert _complete(client, op, clock, location) == "/s/quick"
    assert client.get("/form").get_json()["notice"]["action"] == "/s/quick"


def test_post_only_route_without_referer_comes_back_home(app: Flask, op: Any, clock: Any) -> None:
    client = app.test_client()
    location = _stale_post(client, clock, op, "/post-only")
    assert _next_of(location) == "/"
    assert _complete(client, op, clock, location) == "/"
    assert client.get("/form").get_json()["notice"]["action"] == "/post-only"


def test_get_step_up_carries_no_notice_even_after_an_abandoned_post(app: Flask, op: Any, clock: Any) -> None:
    client = app.test_client()
    _stale_post(client, clock, op, "/s/quick", Referer="http://localhost/s/quick")  # abandoned at the IdP
    resp = client.get("/s/quick")  # later: a plain GET asks for the same step-up, back to the same page
    assert resp.status_code == 302 and _next_of(resp.location) == "/s/quick"
    assert _complete(client, op, clock, resp.location) == "/s/quick"
    assert client.get("/form").get_json()["notice"] is None


def test_stale_note_is_not_shown(app: Flask, op: Any, clock: Any) -> None:
    """A note older than the pending sign-in's lifetime (``loginStateTtl``, 600 s) belongs to no round
    trip: a step-up started later from a link (``stepup_url``) to the same page shows nothing."""
    client = app.test_client()
    _stale_post(client, clock, op, "/s/quick", Referer="http://localhost/form")  # abandoned at the IdP
    clock.advance(601)
    url = client.get("/sso/op/login?next=/form&stepup=quick").location
    now = int(clock.now)
    sign_in(client, op, clock, url=url, groups=DEVOPS, auth_time=now)
    assert client.get("/form").get_json()["notice"] is None


def test_notice_type_is_public() -> None:
    n = StepUpNotice(skill="s", method="POST", action="/x")
    assert n.message and "again" in n.message
