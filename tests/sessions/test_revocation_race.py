"""Review 2: revocation racing with a concurrent save, on every backend.

A request that loaded the session, then saves it (sliding renewal) must not
write the live record back over a tombstone another worker wrote between the
save's read and its write. Redis does this with WATCH; SQL and the embedded
file store need the same guarantee."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from flask import Response, request

import flask_ccsso.sessions.interface as session_mod
from flask_ccsso.extension import get_state
from flask_ccsso.sessions import SESSION_KEY
from tests.support.sessions import COOKIE, login

pytestmark = pytest.mark.redis


@pytest.mark.postgres
@pytest.mark.parametrize("kind", ["redis", "postgresql", "sqlite", "embedded"])
def test_revocation_between_the_saves_read_and_write_wins(store_app: Any, op: Any, clock: Any, kind: str,
                                                          monkeypatch: Any) -> None:
    app = store_app(kind, slidingWriteInterval=0)
    client = app.test_client()
    sid = login(client, op)
    iface = app.session_interface
    real = session_mod.reconcile
    worker: list[threading.Thread] = []

    def revoke_in_between(sess: Any, stored: Any) -> bool:
        ok = real(sess, stored)
        if not worker:  # another worker revokes right after our read
            def revoke() -> None:
                with app.app_context():
                    get_state(app).revoke_sids({sid})
            t = threading.Thread(target=revoke)
            worker.append(t)
            t.start()
            t.join(timeout=1.0)  # blocks while the save holds its lock (if it takes one)
        return ok

    monkeypatch.setattr(session_mod, "reconcile", revoke_in_between)
    with app.test_request_context("/me", headers={"Cookie": f"{COOKIE}={sid}"}):
        s = iface.open_session(app, request)
        s[SESSION_KEY]["last_seen"] = clock.now + 1
        s.modified = True
        iface.save_session(app, s, Response())
    worker[0].join(timeout=10)
    assert not worker[0].is_alive()
    assert iface.read_sid(sid)[SESSION_KEY].get("ended") == "revoked"
    resp = client.get("/me", headers={"Accept": "application/json"})
    assert resp.status_code == 401
