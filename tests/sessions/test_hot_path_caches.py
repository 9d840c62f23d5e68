"""Issue #12's caches on the protected request never outlive what they stand
for: the opened-record cache (sealed text -> plaintext) and the per-identity
skill verdicts. Each test warms them with requests first, then changes the
session the way an attacker would hope is missed: revoked, deleted,
re-sealed with other groups, or past a deadline."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flask_ccsso.extension import get_state
from flask_ccsso.sessions import SESSION_KEY
from tests.support.sessions import login
from tests.support.skills import PATHS, add_skill_routes, skills_config

pytestmark = pytest.mark.redis

JSON = {"Accept": "application/json"}


def _warm(client: Any, path: str = "/migrations") -> None:
    for _ in range(3):
        assert client.get(path, headers=JSON).status_code == 200


def test_a_revoked_session_is_refused_with_the_caches_warm(redis_app: Any, op: Any) -> None:
    app = redis_app()
    client = app.test_client()
    sid = login(client, op)
    _warm(client)
    with app.app_context():
        assert get_state(app).revoke_sids({sid}) == 1
    resp = client.get("/migrations", headers=JSON)
    assert resp.status_code == 401 and resp.get_json()["error"] == "revoked"


def test_a_deleted_session_is_refused_with_the_caches_warm(redis_app: Any, op: Any) -> None:
    app = redis_app()
    client = app.test_client()
    sid = login(client, op)
    _warm(client)
    app.session_interface.delete_sid(sid)
    assert client.get("/migrations", headers=JSON).status_code == 401


def test_a_record_rewritten_without_the_group_loses_the_skill_at_once(redis_app: Any, op: Any) -> None:
    """What a refresh does when the IdP dropped a group: the stored identity
    changes, so the memoised "allowed" verdict must not be used."""
    app = redis_app()
    client = app.test_client()
    sid = login(client, op)
    _warm(client)
    iface = app.session_interface
    stored = iface.read_sid(sid)
    assert stored is not None
    stored[SESSION_KEY]["identity"]["groups"] = ["staff"]
    key = iface.store_key(sid)
    iface.store.set(key, iface.encode(stored, key), 600)
    resp = client.get("/migrations", headers=JSON)
    assert resp.status_code == 403 and resp.get_json()["error"] == "missing_group"
    assert client.get("/me", headers=JSON).get_json()["groups"] == ["staff"]


def test_a_record_sealed_for_another_session_does_not_open_from_the_cache(redis_app: Any, op: Any) -> None:
    """Alice's sealed record (its text in the cache) copied under Bob's key
    is not Alice for Bob's cookie: the store key is part of what is cached."""
    app = redis_app()
    alice, bob = app.test_client(), app.test_client()
    alice_sid = login(alice, op)
    bob_sid = login(bob, op, id_claims={"sub": "u-bob", "email": "bob@example.com", "groups": ["staff"]})
    _warm(alice)
    iface = app.session_interface
    raw = iface.store.get(iface.store_key(alice_sid))
    assert raw is not None and json.loads(raw)["sealed"]
    iface.store.set(iface.store_key(bob_sid), raw, 600)
    assert bob.get("/me", headers=JSON).status_code == 401  # not opened: signed out, never Alice
    assert alice.get("/me", headers=JSON).get_json()["subject"] == "u-alice"


def test_the_deadlines_are_checked_on_every_request_with_the_caches_warm(redis_app: Any, op: Any, clock: Any) -> None:
    app = redis_app(idleTimeout=600, absoluteTimeout=3600)
    client = app.test_client()
    login(client, op)
    _warm(client)
    clock.advance(601)  # the same stored text as the warm requests; only the clock moved
    resp = client.get("/migrations", headers=JSON)
    assert resp.status_code == 401 and resp.get_json()["error"] == "idle_timeout"


def test_verdicts_that_depend_on_the_clock_or_the_address_are_never_kept(make_app: Any, op: Any,
                                                                          clock: Any) -> None:
    """Only verdicts on the identity alone are memoised: a skill checked for
    age asks again once the sign-in went stale, and one limited to networks
    looks at each request's address."""
    app = add_skill_routes(make_app(skills_config(op)))
    client = app.test_client()
    login(client, op, id_claims={"groups": ["devops-engineers"]})
    office = {"REMOTE_ADDR": "10.1.2.3"}
    for _ in range(3):
        assert client.get(PATHS["quick"], headers=JSON).status_code == 200
        assert client.get(PATHS["office-only"], headers=JSON, environ_base=office).status_code == 200
    clock.advance(61)  # past the skill's maxAuthAge of 60 s
    resp = client.get(PATHS["quick"], headers=JSON)
    assert resp.status_code == 401 and resp.get_json()["error"] == "stale_authentication"
    outside = client.get(PATHS["office-only"], headers=JSON, environ_base={"REMOTE_ADDR": "192.0.2.9"})
    assert outside.status_code == 403
    assert client.get(PATHS["office-only"], headers=JSON, environ_base=office).status_code == 200
