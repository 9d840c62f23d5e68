"""Single-flight token refresh inside ``refreshWindow`` -- threads, processes, failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from flask_ccsso import signals
from flask_ccsso.sessions import SESSION_KEY
from flask_ccsso.testing import listen_to
from tests.support.sessions import COOKIE, REDIS_URL, login

pytestmark = pytest.mark.redis

JSON = {"Accept": "application/json"}
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class RotatingOP:
    """Answers refresh_token grants like a rotating IdP: each refresh token
    works once, and a reused one is ``invalid_grant`` (which would log the
    person out if two workers both refreshed)."""

    def __init__(self, op: Any, clock: Any, *, delay: float = 0.0, groups: list[str] | None = None) -> None:
        self.op = op
        self.clock = clock
        self.delay = delay
        self.groups = groups
        self.valid = "rt-1"
        self.n = 0
        self.seen: list[str] = []
        self.lock = threading.Lock()
        op.refresh_handler = self

    def __call__(self, form: dict[str, Any]) -> dict[str, Any]:
        time.sleep(self.delay)
        with self.lock:
            self.seen.append(form.get("refresh_token", ""))
            if form.get("refresh_token") != self.valid:
                return {"error": "invalid_grant", "error_description": "refresh token reused"}
            self.n += 1
            self.valid = f"rt-{self.n + 1}"
            now = int(self.clock.now)
            over: dict[str, Any] = {"iat": now, "exp": now + 300}
            if self.groups is not None:
                over["groups"] = self.groups
            claims = self.op.id_claims(None, **over)
            claims.pop("auth_time", None)  # OIDC Core 12.2: may be left out; the original is kept
            # expires_at too: Authlib would compute it from the wall clock, not the test Clock
            return {"access_token": f"at-r{self.n}", "token_type": "Bearer", "expires_in": 3600,
                    "expires_at": now + 3600,
                    "refresh_token": self.valid, "id_token": self.op.sign(claims),
                    "scope": "openid profile email migration:write"}


def _record(app: Any, sid: str) -> dict[str, Any]:
    return app.session_interface.read_sid(sid)[SESSION_KEY]


def test_outside_the_window_nothing_happens(redis_app: Any, op: Any, clock: Any) -> None:
    app = redis_app(refreshWindow=300)
    client = app.test_client()
    login(client, op, expires_in=3600)
    RotatingOP(op, clock)
    hits = op.token_hits
    clock.advance(3600 - 301)
    assert client.get("/me").status_code == 200
    assert op.token_hits == hits


def test_inside_the_window_refreshes_once_and_updates_the_identity(redis_app: Any, op: Any, clock: Any) -> None:
    app = redis_app(refreshWindow=300, idleTimeout=7200, absoluteTimeout=28800)
    client = app.test_client()
    sid = login(client, op, expires_in=3600)
    login_auth_time = _record(app, sid)["identity"]["auth_time"]
    assert client.get("/migrations").status_code == 200
    RotatingOP(op, clock, groups=["readers"])  # removed from database-admins at the IdP
    hits = op.token_hits
    clock.advance(3600 - 299)
    with listen_to(signals.token_refreshed) as heard:
        resp = client.get("/migrations")
    assert resp.status_code == 403  # the skill is gone at the first refresh
    assert op.token_hits == hits + 1
    assert heard[0].kwargs["expires_at"] == pytest.approx(clock.now + 3600)
    assert heard[0].kwargs["identity"].groups == frozenset({"readers"})
    rec = _record(app, sid)
    assert rec["tokens"]["refresh_token"] == "rt-2" and rec["tokens"]["access_token"] == "at-r1"
    assert rec["rev"] == 1 and rec["identity"]["groups"] == ["readers"]
    assert rec["identity"]["auth_time"] == login_auth_time and rec["identity"]["session_index"] == "op-sid-1"
    assert client.get("/me").status_code == 200 and op.token_hits == hits + 1  # fresh token: no more refreshes
    clock.advance(3600 - 299)  # the next window: the rotated token works
    assert client.get("/me").status_code == 200
    assert op.token_hits == hits + 2 and _record(app, sid)["tokens"]["refresh_token"] == "rt-3"


def test_refused_refresh_ends_the_session(redis_app: Any, op: Any, clock: Any) -> None:
    app = redis_app(refreshWindow=300, idleTimeout=7200)
    client = app.test_client()
    other = app.test_client()
    sid = login(client, op, expires_in=3600)
    other.set_cookie(COOKIE, sid)  # the same session seen from another client
    op.refresh_handler = None  # the LocalOP answers invalid_grant (user disabled / token revoked)
    clock.advance(3400)
    with listen_to(signals.session_expired) as heard:
        resp = client.get("/me", headers=JSON)
    assert resp.status_code == 401 and resp.get_json()["error"] == "refresh_failed"
    assert heard[0].kwargs["reason"] == "refresh_failed" and heard[0].kwargs["identity"].subject == "u-alice"
    # the request behaved as signed out: a browser goes to sign in
    assert client.get("/me").status_code == 302
    assert other.get("/me", headers=JSON).status_code == 401  # ended everywhere, not just in this response


def test_idp_unreachable_keeps_a_valid_token_then_fails_closed(redis_app: Any, op: Any, clock: Any) -> None:
    app = redis_app(refreshWindow=300, idleTimeout=7200, outageGrace=0)  # the grace: test_refresh_outage.py
    client = app.test_client()
    sid = login(client, op, expires_in=3600)
    RotatingOP(op, clock)
    op.down = True
    clock.advance(3400)  # in the window, token valid for 200 s more
    assert client.get("/me").status_code == 200
    assert _record(app, sid)["tokens"]["refresh_token"] == "rt-1"
    hits = op.token_hits
    assert client.get("/me").status_code == 200 and op.token_hits == hits  # backing off, not hammering
    clock.advance(201)  # now expired
    resp = client.get("/me", headers=JSON)
    assert resp.status_code == 503 and resp.get_json()["error"] == "idp_unavailable"
    op.down = False
    assert client.get("/me").status_code == 200  # the session survived the outage
    assert _record(app, sid)["tokens"]["refresh_token"] == "rt-2"


def test_concurrent_refresh_with_threads_reaches_the_idp_once(redis_app: Any, op: Any, clock: Any) -> None:
    app = redis_app(refreshWindow=300, idleTimeout=7200)
    first = app.test_client()
    sid = login(first, op, expires_in=3600)
    idp = RotatingOP(op, clock, delay=0.3)
    hits = op.token_hits
    clock.advance(3400)
    n = 8
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def worker(i: int) -> None:
        c = app.test_client()
        c.set_cookie(COOKIE, sid)
        barrier.wait()
        resp = c.get("/me", headers=JSON)
        results[i] = (resp.status_code, resp.get_json())

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [r[0] for r in results] == [200] * n, results
    assert op.token_hits == hits + 1 and idp.seen == ["rt-1"]
    assert _record(app, sid)["tokens"]["refresh_token"] == "rt-2"
    clock.advance(3400)  # nobody was logged out by the rotation: the next window works too
    assert first.get("/me").status_code == 200 and idp.seen == ["rt-1", "rt-2"]


WORKER = r"""
import json, sys, time
from flask import Flask
from flask_ccsso import CCSSO, current_identity, login_required
from flask_ccsso.stores import RedisStore

cfg, now, sid, start, prefix, url = json.loads(sys.argv[1]), float(sys.argv[2]), sys.argv[3], float(sys.argv[4]), sys.argv[5], sys.argv[6]
app = Flask("worker")
app.config.update(SECRET_KEY="test-secret", CCSSO=cfg)
store = RedisStore.from_url(url, prefix=prefix)
CCSSO(app, clock=lambda: now, store=store)

@app.get("/me")
@login_required
def me():
    return {"subject": current_identity.subject, "groups": sorted(current_identity.groups)}

client = app.test_client()
client.set_cookie("ccsso_session", sid)
while time.time() < start:
    time.sleep(0.002)
resp = client.get("/me", headers={"Accept": "application/json"})
print(json.dumps({"status": resp.status_code, "body": resp.get_json()}))
app.session_interface.close()
store.close()
"""


def test_concurrent_refresh_with_two_processes_reaches_the_idp_once(redis_app: Any, op: Any, clock: Any,
                                                                    prefix: str) -> None:
    app = redis_app(refreshWindow=300, idleTimeout=7200)
    client = app.test_client()
    sid = login(client, op, expires_in=3600)
    idp = RotatingOP(op, clock, delay=0.5, groups=["database-admins", "auditors"])
    hits = op.token_hits
    clock.advance(3400)
    cfg = app.config["CCSSO"]
    start = time.time() + 2.5  # both processes imported and waiting by then
    env = dict(os.environ, PYTHONPATH=ROOT)
    procs = [subprocess.Popen([sys.executable, "-W", "error::DeprecationWarning:flask_ccsso", "-c", WORKER,
                               json.dumps(cfg), repr(clock.now), sid, repr(start), prefix, REDIS_URL],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    results = []
    for out, err in outs:
        assert out.strip(), err.decode()[-2000:]
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    assert [r["status"] for r in results] == [200, 200], results
    assert all(r["body"]["groups"] == ["auditors", "database-admins"] for r in results)
    assert op.token_hits == hits + 1 and idp.seen == ["rt-1"]
    assert _record(app, sid)["tokens"]["refresh_token"] == "rt-2"
    assert client.get("/me").status_code == 200  # this worker's view of the session is current too
