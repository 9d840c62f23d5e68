"""Read access to the session store hands out nothing (issue 10, item 16).

On the real Redis, someone who can read (or write) the store -- a replica, a
backup, ``MONITOR``, a shared instance -- must not be able to:

* present anything stored as a session cookie: records live under a keyed
  hash of the session id, and the per-user index, the refresh locks and the
  back-off keys hold that hash, never the id;
* read tokens: the record is sealed (AES-GCM) with a key the store does not
  hold; no access, refresh or ID token, no email appears in the raw value;
* move a record: one session's record copied under another session's key
  does not open (the store key is the associated data), nor does a record
  written by hand (the format of the code before this fix).

Key rotation: the old key in ``SECRET_KEY_FALLBACKS`` keeps existing sessions
working; revocation keeps working with the hashed index.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import redis

from flask_ccsso.cli.sessions import sessions
from flask_ccsso.extension import get_state
from flask_ccsso.sessions import SESSION_KEY
from tests.support.sessions import COOKIE, REDIS_URL, login

pytestmark = pytest.mark.redis

JSON = {"Accept": "application/json"}
ACCESS = "at-Secret-Access-0123456789"
REFRESH = "rt-Secret-Refresh-0123456789"


@pytest.fixture
def raw() -> Any:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


def _keys(raw: Any, prefix: str) -> list[str]:
    return [k.decode() for k in raw.scan_iter(match=prefix + "*", count=500)]


def _session_key(raw: Any, prefix: str, handle: str) -> str:
    key = f"{prefix}session:{handle}"
    assert raw.exists(key), (key, _keys(raw, prefix))
    return key


def _handles(app: Any, user: str = "op:u-alice") -> set[str]:
    return set(get_state(app).store.set_members(f"user:{user}"))


def _signed_in_as(client: Any) -> str | None:
    resp = client.get("/me", headers=JSON)
    return resp.get_json()["subject"] if resp.status_code == 200 else None


def test_nothing_in_the_store_is_a_cookie_or_a_token(redis_app: Callable[..., Any], op: Any, clock: Any,
                                                     raw: Any, prefix: str) -> None:
    app = redis_app(refreshWindow=300, idleTimeout=7200)
    client = app.test_client()
    sid = login(client, op, expires_in=3600, access_token=ACCESS, refresh_token=REFRESH)
    record = app.session_interface.read_sid(sid)[SESSION_KEY]
    id_token = record["tokens"]["id_token"]
    assert record["tokens"]["refresh_token"] == REFRESH  # the app still has its tokens
    # an IdP outage in the refresh window writes the refresh back-off key
    op.down = True
    clock.advance(3400)
    assert client.get("/me").status_code == 200
    keys = _keys(raw, prefix)
    assert any("refresh-backoff:" in k for k in keys), keys
    for key in keys:
        assert sid not in key, key  # no store key names the cookie value
        kind = raw.type(key).decode()
        values = [raw.get(key)] if kind == "string" else list(raw.smembers(key)) if kind == "set" else []
        for value in values:
            text = value.decode("utf-8", "replace")
            for secret in (sid, ACCESS, REFRESH, id_token, id_token.split(".")[1], "alice@example.com"):
                assert secret not in text, (key, secret[:12])
    # the session record itself: one sealed blob
    (handle,) = _handles(app)
    stored = json.loads(raw.get(_session_key(raw, prefix, handle)))
    assert list(stored) == ["sealed"] and stored["sealed"].startswith("v1.")


def test_a_stored_handle_used_as_a_cookie_does_not_sign_in(redis_app: Callable[..., Any], op: Any, raw: Any,
                                                           prefix: str) -> None:
    app = redis_app()
    victim = app.test_client()
    login(victim, op)
    (handle,) = _handles(app)
    attacker = app.test_client()
    for value in (handle, f"session:{handle}", f"{prefix}session:{handle}"):
        attacker.set_cookie(COOKIE, value)
        assert _signed_in_as(attacker) is None, value
    assert _signed_in_as(victim) == "u-alice"


def test_a_record_copied_under_another_sessions_key_does_not_open(redis_app: Callable[..., Any], op: Any,
                                                                  raw: Any, prefix: str) -> None:
    app = redis_app()
    alice, mallory = app.test_client(), app.test_client()
    login(alice, op)
    login(mallory, op, id_claims={"sub": "u-mallory", "email": "mallory@example.com", "groups": []})
    (alice_handle,) = _handles(app)
    (mallory_handle,) = _handles(app, "op:u-mallory")
    assert _signed_in_as(mallory) == "u-mallory"
    # mallory, with write access to Redis, puts alice's record under her own session's key
    alice_key = _session_key(raw, prefix, alice_handle)
    raw.set(_session_key(raw, prefix, mallory_handle), raw.get(alice_key), ex=600)
    assert _signed_in_as(mallory) is None  # not alice: the record is sealed for alice's key only
    assert _signed_in_as(alice) == "u-alice"


def test_a_record_written_by_hand_does_not_sign_in(redis_app: Callable[..., Any], op: Any, clock: Any, raw: Any,
                                                   prefix: str) -> None:
    app = redis_app()
    mallory = app.test_client()
    sid = login(mallory, op, id_claims={"sub": "u-mallory", "email": "mallory@example.com", "groups": []})
    (handle,) = _handles(app, "op:u-mallory")
    forged = {SESSION_KEY: {"v": 1, "rev": 0, "created": clock.now, "last_seen": clock.now, "tokens": None,
                            "identity": {"subject": "u-admin", "provider": "op", "email": "admin@example.com",
                                         "groups": ["database-admins"], "scopes": ["migration:write"]}}}
    # whatever key the store uses for mallory's cookie (the old code: prefix + session id)
    for key in (_session_key(raw, prefix, handle), f"{prefix}session:{sid}"):
        raw.set(key, json.dumps(forged), ex=600)
    assert _signed_in_as(mallory) is None
    assert mallory.get("/migrations").status_code != 200


def test_rotating_the_secret_key_keeps_sessions(redis_app: Callable[..., Any], op: Any, clock: Any, prefix: str,
                                                 closers: list[Any]) -> None:
    from flask_ccsso.stores import RedisStore
    from tests.support.sessions import session_config

    old = redis_app(slidingWriteInterval=60)
    client = old.test_client()
    sid = login(client, op)

    def app_with(**flask_config: Any) -> Any:
        """The same deployment (same Redis, same prefix) with other keys."""
        from flask import Flask

        from flask_ccsso import CCSSO, current_identity, login_required

        store = RedisStore.from_url(REDIS_URL, prefix=prefix)
        app = Flask(f"rotated_{len(closers)}")
        app.config.update(TESTING=True, **flask_config, CCSSO=session_config(
            op, {"type": "redis", "url": REDIS_URL, "keyPrefix": prefix}, slidingWriteInterval=60))
        CCSSO(app, clock=clock, store=store)
        app.add_url_rule("/me", "me", login_required(lambda: {"subject": current_identity.subject}))
        closers.extend([app.session_interface.close, store.close])
        return app

    wrong = app_with(SECRET_KEY="another-secret-entirely")
    other = wrong.test_client()
    other.set_cookie(COOKIE, sid)
    assert _signed_in_as(other) is None  # the store alone (without the key) opens nothing

    rotated = app_with(SECRET_KEY="the-new-secret", SECRET_KEY_FALLBACKS=["test-secret"])
    browser = rotated.test_client()
    browser.set_cookie(COOKIE, sid)
    assert _signed_in_as(browser) == "u-alice"
    clock.advance(61)  # a sliding write: re-sealed with the new key, where the session lives
    assert _signed_in_as(browser) == "u-alice"
    assert _signed_in_as(browser) == "u-alice"
    # revocation through the index still reaches it
    assert get_state(rotated).revoke_user("alice@example.com") == 1
    assert _signed_in_as(browser) is None


def test_revocation_and_the_cli_work_with_hashed_ids(redis_app: Callable[..., Any], op: Any) -> None:
    app = redis_app()
    c1, c2 = app.test_client(), app.test_client()
    sid1, sid2 = login(c1, op), login(c2, op)
    assert _handles(app) == {app.session_interface.handle_of(sid1), app.session_interface.handle_of(sid2)}
    out = app.test_cli_runner().invoke(sessions, ["list", "--user", "alice@example.com"])
    assert out.exit_code == 0 and out.output.count("alice@example.com") == 2
    assert sid1 not in out.output and sid2 not in out.output
    out = app.test_cli_runner().invoke(sessions, ["revoke", "--user", "alice@example.com"])
    assert "Revoked 2 sessions" in out.output
    assert c1.get("/me", headers=JSON).get_json()["error"] == "revoked"
    assert c2.get("/me", headers=JSON).get_json()["error"] == "revoked"
