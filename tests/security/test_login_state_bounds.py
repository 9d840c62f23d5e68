"""Issue 10, item 13: what an unauthenticated ``GET /sso/<p>/login`` may cost the shared store.

Anyone can start a sign-in without being anyone, and each start stores a
pending entry (OIDC state/nonce/PKCE verifier) plus the browser's pre-login
session. Against the real Redis: a flood from one address stores a bounded,
exact number of keys (then 429, audited once), one browser keeps a bounded
number of pending sign-ins, an entry holds no padding (a huge ``next`` is not
stored), and a person with several tabs still signs in.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from flask_ccsso import signals, views
from flask_ccsso.testing import listen_to
from tests.support.oidc import callback, start_login
from tests.support.sessions import REDIS_URL

pytestmark = pytest.mark.redis

FLOOD = 2000
#: the defaults (read with getattr so that the attacks themselves, not an import, fail on the old code)
LOGIN_RATE_LIMIT: tuple[int, float] = getattr(views, "LOGIN_RATE_LIMIT", (600, 60.0))
MAX_PENDING_LOGINS: int = getattr(views, "MAX_PENDING_LOGINS", 8)
MAX_NEXT_LENGTH: int = getattr(views, "MAX_NEXT_LENGTH", 1024)


def keys_by_kind(prefix: str) -> dict[str, list[bytes]]:
    """This test's Redis keys, grouped by their first part (``login``, ``session`` ...)."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        out: dict[str, list[bytes]] = {}
        for key in client.scan_iter(match=prefix + "*", count=1000):
            kind = key[len(prefix):].split(b":", 1)[0].decode()
            out.setdefault(kind, []).append(key)
        return out
    finally:
        client.close()


def stored_bytes(keys: list[bytes]) -> int:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        return sum(client.strlen(k) for k in keys)
    finally:
        client.close()


def test_flood_from_one_address_stores_a_bounded_amount_and_gets_429(redis_app: Any, prefix: str,
                                                                      failures: list[dict[str, Any]]) -> None:
    """2000 sign-in starts from one address, each without cookies and with the
    longest ``next`` an attacker likes: the default limit lets the first
    ``count`` through, then 429 -- and the store holds exactly one pending
    entry and one pre-login session per admitted request, plus one counter."""
    app = redis_app()
    count_max, window = LOGIN_RATE_LIMIT
    padding = "/x?" + "a" * 5000
    statuses: dict[int, int] = {}
    last: Any = None
    for _ in range(FLOOD):
        last = app.test_client().get("/sso/op/login", query_string={"next": padding})
        statuses[last.status_code] = statuses.get(last.status_code, 0) + 1
    assert statuses == {302: count_max, 429: FLOOD - count_max}
    assert last.headers["Retry-After"] == str(int(window))
    assert "Too many" in last.get_data(as_text=True)

    kinds = keys_by_kind(prefix)
    # the refused starts are failed sign-ins from one address: the shared failure counter
    # keeps one fixed-size key per window for it (and an alert marker once), never one per request
    assert len(kinds.pop("audit", ())) <= 2
    assert {k: len(v) for k, v in kinds.items()} == {"login": count_max, "session": count_max, "login-rate": 1}
    # each pending entry is small: no 5 KB next, no null/false padding
    assert stored_bytes(kinds["login"]) <= count_max * 400
    assert stored_bytes(kinds["session"]) <= count_max * 320  # the binding and the one pending key, sealed

    # refused starts are audited -- once per address and window, not 1880 times
    refused = [f for f in failures if f["reason"] == "rate_limited"]
    assert len(refused) == 1 and refused[0]["provider"] == "op"

    # an API client is told in JSON; nothing more was stored
    resp = app.test_client().get("/sso/op/login", headers={"Accept": "application/json"})
    assert resp.status_code == 429 and resp.get_json()["error"] == "rate_limited"
    assert {k: len(v) for k, v in keys_by_kind(prefix).items() if k != "audit"} == {
        "login": count_max, "session": count_max, "login-rate": 1}
    assert len(keys_by_kind(prefix).get("audit", ())) <= 2


def test_limit_is_per_address_and_ipv6_counts_by_64(redis_app: Any, prefix: str) -> None:
    app = redis_app()
    app.config["CCSSO_LOGIN_RATE_LIMIT"] = (3, 600)

    def start(addr: str) -> int:
        return int(app.test_client().get("/sso/op/login", environ_base={"REMOTE_ADDR": addr}).status_code)

    # rotating through one /64 does not buy more sign-ins
    assert [start(f"2001:db8:1:2::{i:x}") for i in range(1, 6)] == [302, 302, 302, 429, 429]
    assert start("2001:db8:1:3::1") == 302  # another /64
    assert [start("198.51.100.7") for _ in range(4)] == [302, 302, 302, 429]
    assert start("198.51.100.8") == 302


def test_one_browser_keeps_a_bounded_number_of_pending_sign_ins(redis_app: Any, prefix: str,
                                                                 op: Any, failures: list[dict[str, Any]]) -> None:
    """A script that keeps its cookie and starts sign-in after sign-in holds
    only the newest few; the newest still finish, the dropped ones do not."""
    app = redis_app()
    client = app.test_client()
    urls = [start_login(client, next_url=f"/n{i}") for i in range(MAX_PENDING_LOGINS + 12)]
    kinds = keys_by_kind(prefix)
    assert len(kinds["login"]) == MAX_PENDING_LOGINS and len(kinds["session"]) == 1

    resp = callback(client, op.issue_code(urls[0]))
    assert resp.status_code == 400 and failures[-1]["reason"] == "state_missing"
    resp = callback(client, op.issue_code(urls[-1]))
    assert resp.status_code == 302 and resp.headers["Location"] == f"/n{len(urls) - 1}"


def test_several_tabs_still_sign_in_on_redis(redis_app: Any, op: Any,
                                             failures: list[dict[str, Any]]) -> None:
    app = redis_app()
    client = app.test_client()
    urls = [start_login(client, next_url=f"/tab{i}") for i in range(4)]
    for i in (2, 0, 3, 1):  # out of order; each sign-in rotates the session
        resp = callback(client, op.issue_code(urls[i]))
        assert resp.status_code == 302 and resp.headers["Location"] == f"/tab{i}"
    assert failures == []


def test_pending_entry_holds_only_what_the_callback_needs(redis_app: Any, prefix: str) -> None:
    app = redis_app()
    too_long = "/" + "b" * MAX_NEXT_LENGTH
    with listen_to(signals.login_failed) as failed:
        app.test_client().get("/sso/op/login", query_string={"next": too_long})
    assert not failed
    (key,) = keys_by_kind(prefix)["login"]
    client = redis.Redis.from_url(REDIS_URL)
    try:
        entry = json.loads(client.get(key))
        ttl = client.pttl(key) / 1000
    finally:
        client.close()
    assert "next" not in entry  # too long: the sign-in lands on "/" instead of storing it
    assert not [k for k, v in entry.items() if v in (None, False, [], "")]
    assert set(entry) == {"nonce", "verifier", "bind", "redirect_uri", "provider", "created"}
    assert 0 < ttl <= 600


def test_limit_holds_across_workers_racing(redis_app: Any, prefix: str) -> None:
    """Two apps (workers) on the same Redis, eight threads at once: the count is
    one atomic counter, so exactly ``count`` starts get through."""
    from concurrent.futures import ThreadPoolExecutor

    workers = [redis_app(), redis_app()]
    for app in workers:
        app.config["CCSSO_LOGIN_RATE_LIMIT"] = (50, 600)

    def start(i: int) -> int:
        return int(workers[i % 2].test_client().get("/sso/op/login").status_code)

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(start, range(200)))
    assert codes.count(302) == 50 and codes.count(429) == 150
    assert len(keys_by_kind(prefix)["login"]) == 50
