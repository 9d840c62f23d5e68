"""Review 2: session records of another shape (an older or newer schema
version, a hand-edited store) sign the browser out; they never give a 500."""

from __future__ import annotations

from typing import Any

import pytest

from flask_ccsso.sessions import SESSION_KEY
from flask_ccsso.testing import CCSSOTestClient
from tests.support.oidc import oidc_config

ALICE = {"subject": "u-alice", "groups": ["database-admins"], "scopes": ["migration:write"]}


@pytest.mark.parametrize("bad", [
    {"created": "yesterday"}, {"created": None}, {"last_seen": "x"}, {"last_seen": [1]}, {"rev": "2"},
    {"rev": None}, {"identity": "u-alice"}, {"tokens": "secret"}, {"v": 2}, {"v": "1"},
])
def test_unexpected_record_shape_is_signed_out_not_500(make_app: Any, op: Any, clock: Any, bad: dict[str, Any]) -> None:
    app = make_app(oidc_config(op))
    app.test_client_class = CCSSOTestClient
    client = app.test_client(identity=ALICE)
    sid = client.get_cookie("ccsso_session").value
    iface = app.session_interface
    with app.test_request_context():
        rec = iface.read_sid(sid)
        rec[SESSION_KEY].update(bad)
        key = iface.store_key(sid)
        iface.store.set(key, iface.encode(rec, key), 600)  # as another version left it
    resp = client.get("/me", headers={"Accept": "application/json"})
    assert resp.status_code == 401
    assert client.get("/").status_code == 200
    # and signing in again works
    client.sign_in(ALICE)
    assert client.get("/me").status_code == 200


def test_a_peer_writing_a_record_of_another_shape_does_not_break_the_save(make_app: Any, op: Any, clock: Any) -> None:
    app = make_app(oidc_config(op), )
    app.test_client_class = CCSSOTestClient
    client = app.test_client(identity=ALICE)
    assert client.get_cookie("ccsso_session") is not None
    iface = app.session_interface
    clock.advance(120)  # the next request records activity (a guarded write)
    real = iface.decode

    def peer_wrote(raw: Any, key: str) -> Any:
        rec = real(raw, key)
        if rec is not None and isinstance(rec.get(SESSION_KEY), dict):
            rec[SESSION_KEY]["rev"] = "seven"
        return rec

    first = True

    def decode(raw: Any, key: str) -> Any:
        nonlocal first
        if first:  # open_session reads the good record
            first = False
            return real(raw, key)
        return peer_wrote(raw, key)

    iface.decode = decode  # type: ignore[method-assign]
    assert client.get("/me").status_code == 200
