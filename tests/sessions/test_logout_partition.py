"""Issue 13, item 4: a sign-out that meets a store partition says so and changes nothing.

The app talks to a Redis of its own through :class:`~tests.sessions.partition.Partition`,
cut while the sign-out runs. The sign-out must answer 503 (JSON for API
clients), must not be audited as ``auth.logout`` (a refused sign-out,
``auth.logout_failed`` with reason ``store_unavailable``, instead), and the
session must stay what it was: signed in after the partition heals, listed by
``flask ccsso sessions list`` and ended by ``sessions revoke``. Then signing
out again works.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from flask_ccsso import signals
from flask_ccsso.cli import cli
from flask_ccsso.sessions.index import user_key
from flask_ccsso.testing import csrf_token_in, listen_to
from tests.sessions.partition import Partition
from tests.support.sessions import login
from tests.support.store_partition import cut_mid_request, partitioned_redis, until_store_answers

pytestmark = pytest.mark.redis

JSON = {"Accept": "application/json"}


@pytest.fixture
def net() -> Iterator[Partition]:
    with partitioned_redis() as proxy:
        yield proxy


def _run(app: Any, *args: str) -> Any:
    return app.test_cli_runner().invoke(cli, list(args))


def _signed_in(redis_app: Any, op: Any, net: Partition, mode: Any) -> tuple[Any, Any, str]:
    """Signed in, with the partition armed to fall on the next sign-out post
    after its session was read (mid-request, as the issue saw it)."""
    app = redis_app(url=net.url)
    cut_mid_request(app, net, lambda request: request.path == "/sso/logout" and request.method == "POST", mode)
    client = app.test_client()
    login(client, op)
    assert client.get("/me", headers=JSON).status_code == 200
    token = csrf_token_in(client.get("/sso/logout"))
    assert token
    return app, client, token


@pytest.mark.parametrize("mode", ["reset", "drop"])
def test_logout_during_a_partition_fails_and_leaves_the_session_revocable(redis_app: Any, op: Any,
                                                                           net: Partition, mode: Any) -> None:
    app, client, token = _signed_in(redis_app, op, net, mode)
    with listen_to(signals.user_logged_out) as out, listen_to(signals.logout_failed) as failed:
        resp = client.post("/sso/logout", headers={**JSON, "X-CSRF-Token": token})
    assert resp.status_code == 503, resp.data
    assert resp.get_json()["error"] == "store_unavailable" and resp.headers["Retry-After"]
    assert not any(h.startswith("ccsso_session=;") for h in resp.headers.getlist("Set-Cookie"))
    assert out == []  # never audited as a completed sign-out
    assert len(failed) == 1
    kw = failed[0].kwargs
    assert kw["reason"] == "store_unavailable" and kw["identity"].subject == "u-alice" and kw["provider"] == "op"
    assert "still signed in" in kw["detail"]

    net.heal()
    resp = until_store_answers(client)
    assert resp.status_code == 200 and resp.get_json()["subject"] == "u-alice"  # nothing changed

    listed = _run(app, "sessions", "list", "--user", "alice@example.com", "--json")
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.output.splitlines()]
    assert [r["user"] for r in rows] == ["op:u-alice"]  # findable

    with listen_to(signals.session_revoked) as revoked:
        done = _run(app, "sessions", "revoke", "--user", "alice@example.com")
    assert done.exit_code == 0 and "Revoked 1 session" in done.output  # revocable
    assert revoked[0].kwargs["count"] == 1
    resp = client.get("/me", headers=JSON)
    assert resp.status_code == 401 and resp.get_json()["error"] == "revoked"


def test_logout_after_the_partition_heals_ends_the_session(redis_app: Any, op: Any, net: Partition) -> None:
    app, client, token = _signed_in(redis_app, op, net, "reset")
    resp = client.post("/sso/logout", data={"csrf_token": token})  # a browser's form
    assert resp.status_code == 503 and resp.mimetype == "text/html"
    assert 'href="/sso/logout"' in resp.get_data(as_text=True)  # "Try again" signs out again
    net.heal()
    assert until_store_answers(client).status_code == 200

    with listen_to(signals.user_logged_out) as out, listen_to(signals.logout_failed) as failed:
        resp = client.post("/sso/logout", data={"csrf_token": token})
    assert resp.status_code == 303 and len(out) == 1 and failed == []
    assert client.get("/me", headers=JSON).status_code == 401
    state = app.extensions["ccsso"]
    assert state.sessions.store.set_members(user_key("op:u-alice")) == set()  # out of the index too
    assert _run(app, "sessions", "list", "--json").output == ""
