"""Refusals are SCIM Error objects with their status, never a 500, and never show the secret;
the ``scim`` block is checked at start-up; disabled, nothing is mounted or read."""

from __future__ import annotations

import logging
from typing import ClassVar

import pytest

from flask_ccsso.config import parse_config
from flask_ccsso.exceptions import ConfigError
from flask_ccsso.gate.bearer import deprovisioned_email_key, deprovisioned_id_key
from tests.support.oidc import oidc_config
from tests.support.scim import TOKEN, scim_headers
from tests.support.skills import access_token, bearer

ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
USER = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "alice@example.com"}


def _error(resp, status: int, scim_type: str | None = None) -> dict:
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/scim+json"
    body = resp.get_json()
    assert body["schemas"] == [ERROR] and body["status"] == str(status)
    assert body.get("scimType") == scim_type
    return body


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer "}, {"Authorization": "Basic " + TOKEN}, scim_headers(TOKEN[:-1] + "y"),
    scim_headers(TOKEN + "x"), {"Authorization": "Bearer"},
])
def test_a_wrong_secret_is_401_and_never_echoed(host, headers, caplog):
    caplog.set_level(logging.DEBUG, "flask_ccsso")
    client = host().test_client()
    for method, path in (("get", "/scim/v2/Users"), ("post", "/scim/v2/Users"), ("delete", "/scim/v2/Users/x"),
                         ("get", "/scim/v2/ServiceProviderConfig"), ("get", "/scim/v2/nothing")):
        resp = getattr(client, method)(path, headers=headers, json=USER if method == "post" else None)
        _error(resp, 401)
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert TOKEN not in resp.get_data(as_text=True)
    assert TOKEN not in caplog.text and TOKEN[:-1] not in caplog.text
    assert host().extensions["ccsso"].config.scim.token == TOKEN
    assert TOKEN not in repr(host().extensions["ccsso"].config)


def test_bad_requests_are_scim_errors(host):
    client = host().test_client()
    assert client.post("/scim/v2/Users", headers=scim_headers(), json=USER).status_code == 201
    _error(client.post("/scim/v2/Users", headers=scim_headers(), json={**USER, "userName": "ALICE@example.com"}),
           409, "uniqueness")
    _error(client.post("/scim/v2/Users", headers=scim_headers(), data="{not json"), 400, "invalidSyntax")
    _error(client.post("/scim/v2/Users", headers=scim_headers(), data="[1, 2]"), 400, "invalidSyntax")
    _error(client.post("/scim/v2/Users", headers=scim_headers(), data="[" * 100_000), 400, "invalidSyntax")
    _error(client.post("/scim/v2/Users", headers=scim_headers(), json={"schemas": USER["schemas"]}), 400,
           "invalidValue")
    _error(client.post("/scim/v2/Users", headers=scim_headers(), json={**USER, "userName": "x", "active": "maybe"}),
           400, "invalidValue")
    _error(client.post("/scim/v2/Users", headers=scim_headers(), data=b"{" + b" " * (300 * 1024) + b"}"), 413)
    for bad in ('userName eq', 'userName zz "x"', '(userName eq "x"', 'emails[type eq "work"'):
        _error(client.get("/scim/v2/Users", headers=scim_headers(), query_string={"filter": bad}), 400,
               "invalidFilter")
    _error(client.get("/scim/v2/Users", headers=scim_headers(), query_string={"count": "many"}), 400, "invalidValue")
    _error(client.get("/scim/v2/Users/nobody", headers=scim_headers()), 404)
    _error(client.delete("/scim/v2/Users/nobody", headers=scim_headers()), 404)
    _error(client.patch("/scim/v2/Users/nobody", headers=scim_headers(), json={
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace",
                                                                                     "value": {"active": False}}]}),
        404)
    uid = client.get('/scim/v2/Users?filter=userName eq "alice@example.com"',
                     headers=scim_headers()).get_json()["Resources"][0]["id"]
    _error(client.patch(f"/scim/v2/Users/{uid}", headers=scim_headers(), json={"Operations": "nope"}), 400,
           "invalidValue")
    _error(client.patch(f"/scim/v2/Users/{uid}", headers=scim_headers(), json={
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "explode"}]}),
        400, "invalidValue")
    _error(client.get("/scim/v2/Users", headers=scim_headers(), query_string={"filter": "a" * 2000}), 400,
           "invalidFilter")
    _error(client.patch(f"/scim/v2/Users/{uid}", headers=scim_headers(), json={
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "userName", "value": ""}]}), 400, "invalidValue")
    assert client.get(f"/scim/v2/Users/{uid}", headers=scim_headers()).get_json()["userName"] == "alice@example.com"
    _error(client.put("/scim/v2/ServiceProviderConfig", headers=scim_headers(), json={}), 405)
    _error(client.get("/scim/v2/Nothing/here", headers=scim_headers()), 404)


def test_a_renamed_user_keeps_usernames_unique(host):
    client = host().test_client()
    a = client.post("/scim/v2/Users", headers=scim_headers(), json=USER).get_json()
    client.post("/scim/v2/Users", headers=scim_headers(), json={**USER, "userName": "bob@example.com"})
    _error(client.put(f"/scim/v2/Users/{a['id']}", headers=scim_headers(),
                      json={**USER, "userName": "Bob@example.com"}), 409, "uniqueness")
    moved = client.put(f"/scim/v2/Users/{a['id']}", headers=scim_headers(), json={**USER, "userName": "carol@example.com"})
    assert moved.status_code == 200 and moved.get_json()["userName"] == "carol@example.com"
    assert client.post("/scim/v2/Users", headers=scim_headers(), json=USER).status_code == 201  # the old name is free


@pytest.mark.parametrize(("block", "path", "words"), [
    ({"enabled": True}, "scim.token", "is not set"),
    ({"enabled": True, "token": "${SHORT}"}, "scim.token", "shorter than 32"),
    ({"enabled": True, "token": "${SCIM_TOKEN}", "urlPrefix": "scim"}, "scim.urlPrefix", "not a URL path"),
    ({"enabled": True, "token": "${SCIM_TOKEN}", "tokn": 1}, "scim", "tokn"),
    ("yes", "scim", "must be an object"),
])
def test_bad_config_fails_at_startup(op, block, path, words):
    cfg = {**oidc_config(op), "scim": block}
    with pytest.raises(ConfigError) as err:
        parse_config(cfg, environ={"SHORT": "abc", "SCIM_TOKEN": TOKEN})
    assert err.value.path.startswith(path) and words in str(err.value) + (err.value.fix or "")
    assert TOKEN not in str(err.value) and "abc" not in (err.value.problem or "")
    assert "token" in str(err.value.fix) or path != "scim.token"


def test_a_literal_token_in_a_file_is_refused(op, tmp_path):
    from flask_ccsso.config import load_file

    path = tmp_path / "ccsso.json"
    path.write_text('{"scim": {"enabled": true, "token": "' + TOKEN + '"}}')
    with pytest.raises(ConfigError) as err:
        load_file(str(path))
    assert err.value.path == "scim.token" and TOKEN not in str(err.value)


def test_disabled_by_default_mounts_nothing_and_reads_nothing(make_app, op, clock):
    from flask_ccsso.stores import MemoryStore

    class CountingStore(MemoryStore):
        reads: ClassVar[list[str]] = []

        def get(self, key: str) -> str | None:
            self.reads.append(key)
            return super().get(key)

    store = CountingStore(clock)
    app = make_app(oidc_config(op), store=store)
    state = app.extensions["ccsso"]
    assert state.config.scim.enabled is False and state.deprovisioned is None
    assert state.bearer_authenticator.deprovisioned is None
    client = app.test_client()
    resp = client.get("/scim/v2/Users", headers=scim_headers())
    assert resp.status_code == 404 and resp.mimetype != "application/scim+json"
    store.set(deprovisioned_email_key("bob@example.com"), "x", 60)  # a marker left over: SCIM off, not read
    store.reads.clear()
    assert client.get("/me", headers=bearer(access_token(op, clock))).status_code == 200
    assert not [k for k in store.reads if k.startswith("scim:")]


def test_enabled_the_bearer_path_reads_one_marker(host, op, clock, prefix):
    import redis

    app = host()
    token = access_token(op, clock)
    client = app.test_client()
    store = app.extensions["ccsso"].store
    seen: list[list[str]] = []
    original = store.get_many

    def counting_get_many(keys: list[str]) -> list[str | None]:
        seen.append(list(keys))
        return original(keys)

    store.get_many = counting_get_many  # type: ignore[method-assign]
    assert client.get("/me", headers=bearer(token)).status_code == 200
    assert client.get("/me", headers=bearer(token)).status_code == 200  # the token cached, the marker not
    # the email's marker and the subject's (a token may carry an email SCIM never listed), never cached,
    # read together (one round trip: tests/scim/test_marker_read.py)
    marks = [deprovisioned_email_key("bob@example.com"), deprovisioned_id_key("op:u-bob")]
    assert [k for k in seen if k and k[0].startswith("scim:")] == [marks, marks]
    raw = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    raw.set(prefix + deprovisioned_email_key("bob@example.com"), "someone")  # another host deprovisions bob
    raw.close()
    assert client.get("/me", headers=bearer(token)).status_code == 401
