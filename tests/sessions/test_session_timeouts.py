"""Deadlines, sliding renewal, store TTLs, revocation -- on the real Redis, time moved by the Clock."""

from __future__ import annotations

from typing import Any

import pytest

from flask_ccsso import signals
from flask_ccsso.cli.sessions import fingerprint, sessions
from flask_ccsso.extension import get_state
from flask_ccsso.gate.freshness import auth_age, is_fresh
from flask_ccsso.identity import ANONYMOUS, Identity
from flask_ccsso.sessions import SESSION_KEY, CCSSOSession
from flask_ccsso.sessions.interface import reconcile
from flask_ccsso.testing import listen_to
from tests.support.sessions import COOKIE, count_writes, login

pytestmark = pytest.mark.redis

JSON = {"Accept": "application/json"}


def _pttl(app: Any, sid: str) -> float:
    store = app.session_interface.store
    return store.client.pttl(store.prefix + app.session_interface.store_key(sid)) / 1000.0


def test_absolute_timeout_from_sign_in(redis_app: Any, op: Any, clock: Any) -> None:
    app = redis_app(absoluteTimeout=1000, idleTimeout=600, slidingWriteInterval=0)
    client = app.test_client()
    login(client, op)
    for _ in range(3):
        clock.advance(300)
        assert client.get("/me").status_code == 200  # activity keeps the idle deadline moving
    clock.advance(101)  # 1001 s after sign-in
    with listen_to(signals.session_expired) as heard:
        resp = client.get("/me", headers=JSON)
    assert resp.status_code == 401 and resp.get_json()["error"] == "absolute_timeout"
    assert heard[0].kwargs["reason"] == "absolute_timeout" and heard[0].kwargs["identity"].subject == "u-alice"
    # the session is gone: the next request is simply signed out, and the browser is sent to sign in
    resp = client.get("/me")
    assert resp.status_code == 302 and "/sso/login?next=/me" in resp.headers["Location"]


def test_idle_timeout_with_sliding(redis_app: Any, op: Any, clock: Any) -> None:
    app = redis_app(idleTimeout=600, slidingWriteInterval=60)
    client = app.test_client()
    login(client, op)
    clock.advance(500)
    assert client.get("/me").status_code == 200
    clock.advance(500)  # 500 s since the last activity, 1000 since sign-in
    assert client.get("/me").status_code == 200
    clock.advance(601)
    with listen_to(signals.session_expired) as heard:
        resp = client.get("/me")
    assert resp.status_code == 302 and resp.headers["Location"].startswith("/sso/login?next=/me")
    assert heard[0].kwargs["reason"] == "idle_timeout"


def test_sliding_off_the_idle_deadline_does_not_move(redis_app: Any, op: Any, clock: Any) -> None:
    app = redis_app(idleTimeout=600, enableSlidingExpiration=False)
    client = app.test_client()
    sid = login(client, op)
    writes = count_writes(app)
    clock.advance(300)
    assert client.get("/me").status_code == 200
    clock.advance(299)
    assert client.get("/me").status_code == 200
    assert writes.writes() == []  # nothing to renew, nothing written
    assert 595 < _pttl(app, sid) <= 605  # the store TTL was set at sign-in and never moved
    clock.advance(1)
    resp = client.get("/me", headers=JSON)
    assert resp.status_code == 401 and resp.get_json()["error"] == "idle_timeout"


def test_sliding_writes_are_coalesced(redis_app: Any, op: Any, clock: Any) -> None:
    app = redis_app(idleTimeout=600, slidingWriteInterval=60)
    client = app.test_client()
    sid = login(client, op)
    writes = count_writes(app)
    for _ in range(5):
        clock.advance(10)
        assert client.get("/me").status_code == 200
    assert writes.writes() == []  # 50 s of activity: no write
    clock.advance(10)  # 60 s since the recorded activity
    assert client.get("/me").status_code == 200
    assert len(writes.writes()) == 1
    # the store TTL follows the new idle deadline: last_seen + 600 + 5 s slack
    assert 600 < _pttl(app, sid) <= 605
    record = app.session_interface.read_sid(sid)[SESSION_KEY]
    assert record["last_seen"] == pytest.approx(clock.now)
    # the bound: activity at +59 s is not recorded, so the session ends 600 s after
    # the *recorded* activity -- up to slidingWriteInterval early
    clock.advance(59)
    assert client.get("/me").status_code == 200
    clock.advance(541)
    assert client.get("/me", headers=JSON).get_json()["error"] == "idle_timeout"


def test_no_store_write_on_a_plain_protected_get(redis_app: Any, op: Any, clock: Any) -> None:
    app = redis_app()
    client = app.test_client()
    login(client, op)
    writes = count_writes(app)
    for _ in range(20):
        resp = client.get("/me")
        assert resp.status_code == 200
        assert COOKIE not in resp.headers.get("Set-Cookie", "")  # no cookie rewrite either
    assert writes.writes() == []
    assert writes.commands == ["GET"] * 20  # one round trip per request
    assert client.get("/migrations").status_code == 200
    assert writes.writes() == []


def test_store_ttl_follows_the_absolute_deadline_when_nearer(redis_app: Any, op: Any, clock: Any) -> None:
    app = redis_app(absoluteTimeout=900, idleTimeout=600, slidingWriteInterval=0)
    client = app.test_client()
    sid = login(client, op)
    assert 600 < _pttl(app, sid) <= 605  # idle deadline nearer
    clock.advance(500)
    client.get("/me")
    assert 400 < _pttl(app, sid) <= 405  # absolute deadline (900 - 500) nearer now


def test_revocation_is_seen_by_another_app_instance(redis_app: Any, op: Any, clock: Any) -> None:
    app1 = redis_app()
    app2 = redis_app()  # another worker / host: same Redis, same prefix
    c1, c2 = app1.test_client(), app2.test_client()
    sid = login(c1, op)
    c2.set_cookie(COOKIE, sid)
    assert c2.get("/me").status_code == 200
    with listen_to(signals.session_revoked) as revoked, app2.app_context():
        assert get_state(app2).revoke_user("Alice@Example.com") == 1
    assert revoked[0].kwargs["reason"] == "operator" and revoked[0].kwargs["subject"] == "u-alice"
    with listen_to(signals.session_expired) as heard:
        resp = c1.get("/me", headers=JSON)
    assert resp.status_code == 401 and resp.get_json()["error"] == "revoked"
    assert heard[0].kwargs["reason"] == "revoked" and heard[0].kwargs["identity"].email == "alice@example.com"
    assert c2.get("/me").status_code == 302  # and on the other instance too


def test_an_in_flight_request_cannot_resurrect_a_revoked_session(redis_app: Any, op: Any, clock: Any) -> None:
    app = redis_app(slidingWriteInterval=0)
    client = app.test_client()
    sid = login(client, op)
    iface = app.session_interface
    with app.test_request_context("/me", headers={"Cookie": f"{COOKIE}={sid}"}):
        s = iface.open_session(app, __import__("flask").request)
        assert s[SESSION_KEY]["identity"]["subject"] == "u-alice"
        get_state(app).revoke_sids({sid})  # another worker revokes meanwhile
        s[SESSION_KEY]["last_seen"] = clock.now + 1  # our sliding renewal
        s.modified = True
        from flask import Response

        iface.save_session(app, s, Response())
    stored = iface.read_sid(sid)[SESSION_KEY]
    assert stored["ended"] == "revoked"


def test_reconcile_adopts_newer_tokens() -> None:
    mine = CCSSOSession({SESSION_KEY: {"identity": {"subject": "a"}, "tokens": {"refresh_token": "rt-1"},
                                            "rev": 0, "last_seen": 50}}, sid="x")
    theirs = {SESSION_KEY: {"identity": {"subject": "a", "groups": ["g"]}, "tokens": {"refresh_token": "rt-2"},
                            "rev": 1, "last_seen": 40}}
    assert reconcile(mine, theirs)
    assert mine[SESSION_KEY]["tokens"]["refresh_token"] == "rt-2" and mine[SESSION_KEY]["last_seen"] == 50
    assert not reconcile(mine, None)
    assert not reconcile(mine, {SESSION_KEY: {"ended": "revoked", "identity": {}}})


def test_cli_list_and_revoke(redis_app: Any, op: Any, clock: Any) -> None:
    app = redis_app()
    c1, c2 = app.test_client(), app.test_client()
    sid1 = login(c1, op)
    sid2 = login(c2, op)
    runner = app.test_cli_runner()
    out = runner.invoke(sessions, ["list", "--user", "alice@example.com"])
    assert out.exit_code == 0, out.output
    # the index holds store handles (never cookie values); SESSION is a fingerprint of the handle
    handle_of = app.session_interface.handle_of
    assert fingerprint(handle_of(sid1)) in out.output and fingerprint(handle_of(sid2)) in out.output
    assert sid1 not in out.output  # ids are credentials: never printed
    out = runner.invoke(sessions, ["list"])
    assert "alice@example.com" in out.output
    out = runner.invoke(sessions, ["revoke", "--user", "alice@example.com"])
    assert out.exit_code == 0 and "Revoked 2 sessions" in out.output
    assert c1.get("/me").status_code == 302 and c2.get("/me").status_code == 302
    out = runner.invoke(sessions, ["list", "--user", "alice@example.com"])
    assert "No live sessions" in out.output


def test_auth_age_helper(redis_app: Any, op: Any, clock: Any) -> None:
    app = redis_app()
    ident = Identity(subject="s", provider="op", auth_time=clock.now - 100)
    assert auth_age(ident, clock) == pytest.approx(100)
    assert is_fresh(ident, 120, clock) and not is_fresh(ident, 60, clock)
    assert auth_age(ANONYMOUS, clock) is None and auth_age(Identity(subject="s", provider="op"), clock) is None
    assert not is_fresh(Identity(subject="s", provider="op"), 10**9, clock)  # unknown auth_time is stale
    with app.app_context():
        clock.advance(50)
        assert auth_age(ident) == pytest.approx(150)  # the app's clock by default
