"""Review 2: signing in while already signed in (as someone else, or again
for step-up) starts a new session: new id, old record gone, nothing of the
old session carried over; and the absolute deadline counts from the newest
sign-in (a step-up is a full re-authentication at the IdP)."""

from __future__ import annotations

from typing import Any

from flask import session

from flask_ccsso.sessions import SESSION_KEY
from tests.support.oidc import oidc_config
from tests.support.sessions import COOKIE, login


def test_sign_in_as_someone_else_leaves_nothing_of_the_first_person(make_app: Any, op: Any, clock: Any) -> None:
    app = make_app(oidc_config(op))

    @app.get("/cart")
    def cart() -> str:
        session["cart"] = "alice's cart"
        return "ok"

    @app.get("/peek")
    def peek() -> str:
        return str(session.get("cart"))

    client = app.test_client()
    sid_alice = login(client, op)
    assert client.get("/cart").status_code == 200
    sid_bob = login(client, op, id_claims={"sub": "u-bob", "email": "bob@example.com"})
    assert sid_bob != sid_alice
    assert app.session_interface.read_sid(sid_alice) is None
    assert client.get("/me").get_json()["subject"] == "u-bob"
    assert client.get("/peek").get_data(as_text=True) == "None"
    # Alice's old cookie is worthless now
    thief = app.test_client()
    thief.set_cookie(COOKIE, sid_alice)
    assert thief.get("/me", headers={"Accept": "application/json"}).status_code == 401


def test_absolute_deadline_counts_from_the_newest_sign_in(make_app: Any, op: Any, clock: Any) -> None:
    cfg = oidc_config(op)
    cfg["session"].update(absoluteTimeout=3600, idleTimeout=3600)
    app = make_app(cfg)
    client = app.test_client()
    login(client, op)
    clock.advance(3000)
    now = int(clock.now)
    sid = login(client, op, id_claims={"iat": now, "exp": now + 300, "auth_time": now})  # signed in again (e.g. a step-up round trip)
    assert app.session_interface.read_sid(sid)[SESSION_KEY]["created"] == clock.now
    clock.advance(1000)  # 4000 s after the first sign-in, 1000 s after the second
    assert client.get("/me").status_code == 200
    clock.advance(2601)
    assert client.get("/me", headers={"Accept": "application/json"}).status_code == 401
