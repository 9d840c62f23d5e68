"""Issue #13 item 9 (first half): a 503 for a session store that failed is
JSON to clients that asked for JSON and the library's page to browsers --
also when the store fails while the session is being saved, after the view
already answered (the save turns that answer into the 503)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import session

from flask_ccsso.sessions import SESSION_KEY
from tests.support.sessions import SpareRedis, login

pytestmark = pytest.mark.redis


@pytest.fixture
def spare() -> Iterator[SpareRedis]:
    server = SpareRedis()
    server.start()
    yield server
    server.stop()


def _app_that_loses_its_store_mid_request(redis_app: Any, spare: SpareRedis) -> Any:
    app = redis_app(url=spare.url)

    @app.route("/save", methods=["GET", "POST"])
    def save() -> Any:
        _ = session.get(SESSION_KEY)
        session["cart"] = ["book"]  # this request must write its session
        spare.stop()  # the store dies after the view ran, before the save
        return {"saved": True}, 201, {"Location": "/cart", "X-App": "kept"}

    return app


@pytest.mark.parametrize("headers", [{"Accept": "application/json"},
                                     {"Accept": "application/json, text/plain;q=0.5"},
                                     {"Authorization": "Bearer not-a-token", "Accept": "*/*"}],
                         ids=["accept-json", "accept-json-preferred", "bearer"])
def test_store_failing_while_saving_answers_json_to_api_clients(redis_app: Any, op: Any, spare: SpareRedis,
                                                                 headers: dict[str, str]) -> None:
    app = _app_that_loses_its_store_mid_request(redis_app, spare)
    client = app.test_client()
    login(client, op)
    resp = client.get("/save", headers=headers)
    assert resp.status_code == 503
    assert resp.mimetype == "application/json"
    body = resp.get_json()
    assert body["error"] == "store_unavailable" and body["error_description"]
    assert "saved" not in resp.get_data(as_text=True)  # nothing of the view's answer claims success
    assert "Location" not in resp.headers and "Set-Cookie" not in resp.headers
    assert resp.headers["Retry-After"] and resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["X-App"] == "kept"


def test_store_failing_while_saving_answers_html_to_browsers(redis_app: Any, op: Any, spare: SpareRedis) -> None:
    app = _app_that_loses_its_store_mid_request(redis_app, spare)
    client = app.test_client()
    login(client, op)
    resp = client.get("/save", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert resp.status_code == 503
    assert resp.mimetype == "text/html"
    page = resp.get_data(as_text=True)
    assert "session store is not reachable" in page and "saved" not in page
    assert "Location" not in resp.headers and "Set-Cookie" not in resp.headers
    assert resp.headers["Retry-After"] and resp.headers["Content-Security-Policy"]


def test_store_down_before_the_view_answers_json_and_html_alike(redis_app: Any, op: Any, spare: SpareRedis) -> None:
    app = redis_app(url=spare.url)
    client = app.test_client()
    login(client, op)
    spare.stop()
    api = client.get("/migrations", headers={"Accept": "application/json"})
    assert api.status_code == 503 and api.mimetype == "application/json"
    assert api.get_json()["error"] == "store_unavailable"
    page = client.get("/migrations", headers={"Accept": "text/html"})
    assert page.status_code == 503 and page.mimetype == "text/html"
    assert "session store is not reachable" in page.get_data(as_text=True)
