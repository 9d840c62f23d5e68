"""The identity a session stores is rebuilt once per stored text and then shared by every
request of that session, in every worker thread (``identity_from_stored``). So nothing of it may
be editable by the app: ``claims`` (and what it holds) is read-only, and an attempt to change it
raises ``TypeError`` -- it never leaks into a later request. Reading stays as it was: item access,
equality with plain JSON values, ``jsonify``, ``json`` and ``msgspec``."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from flask import jsonify

from flask_ccsso import current_identity, login_required
from flask_ccsso._context import unproxied
from flask_ccsso.identity import Identity, identity_from_stored
from tests.support.oidc import oidc_config
from tests.support.sessions import login, store_block

pytestmark = pytest.mark.redis

CLAIMS = {"department": "ops", "teams": ["blue", "red"], "address": {"city": "Oslo", "lines": ["Kirkegata 1"]}}


def _attempts() -> dict[str, str]:
    """Every way a view might edit the shared claims; what each one raised."""
    claims: Any = _me().claims
    tries = {
        "set": lambda: claims.__setitem__("department", "hacked"),
        "delete": lambda: claims.__delitem__("department"),
        "update": lambda: claims.update(department="hacked"),
        "setdefault": lambda: claims.setdefault("added", 1),
        "pop": lambda: claims.pop("department"),
        "clear": lambda: claims.clear(),
        "list-append": lambda: claims["teams"].append("green"),
        "list-set": lambda: claims["teams"].__setitem__(0, "green"),
        "list-sort": lambda: claims["teams"].sort(reverse=True),
        "nested-set": lambda: claims["address"].__setitem__("city", "Bergen"),
        "nested-list": lambda: claims["address"]["lines"].append("2nd floor"),
    }
    raised = {}
    for name, attempt in tries.items():
        try:
            attempt()
        except Exception as exc:  # noqa: BLE001 - what it raised is the finding
            raised[name] = type(exc).__name__
        else:
            raised[name] = "nothing"
    return raised


def _me() -> Any:
    """The identity object behind ``current_identity`` (the one the session layer shares)."""
    return unproxied(current_identity)


def _app(make_app: Any, op: Any, tmp_path: Any, prefix: str, closers: list[Any]) -> Any:
    cfg = oidc_config(op, keepClaims=sorted(CLAIMS))
    cfg["session"]["store"] = store_block("redis", tmp_path, prefix)
    app = make_app(cfg)
    closers.append(app.session_interface.close)

    @app.get("/claims/edit")
    @login_required
    def edit() -> Any:
        return {"raised": _attempts(), "identity": id(_me())}

    @app.get("/claims")
    @login_required
    def show() -> Any:
        return jsonify(claims=_me().claims, identity=id(_me()))

    return app


def test_a_view_cannot_change_the_shared_claims(make_app: Any, op: Any, tmp_path: Any, prefix: str,
                                                closers: list[Any]) -> None:
    app = _app(make_app, op, tmp_path, prefix, closers)
    client = app.test_client()
    login(client, op, id_claims=CLAIMS)
    first = client.get("/claims").get_json()
    assert first["claims"] == CLAIMS

    edited = client.get("/claims/edit").get_json()
    assert set(edited["raised"].values()) == {"TypeError"}, edited["raised"]
    # the same object served both requests: shared, not copied per request
    assert edited["identity"] == first["identity"]

    later = client.get("/claims").get_json()
    assert later["claims"] == CLAIMS and later["identity"] == first["identity"]


def test_stored_claims_read_and_serialise_as_plain_json() -> None:
    stored = {"subject": "u-1", "provider": "op", "groups": ["b", "a"], "amr": ["pwd"], "claims": CLAIMS}
    ident = identity_from_stored(stored)
    assert ident is identity_from_stored(json.loads(json.dumps(stored)))  # one instance per stored text
    assert ident.claims == CLAIMS and ident.claims["teams"] == ["blue", "red"]
    assert isinstance(ident.claims, dict) and isinstance(ident.claims["address"], dict)
    assert json.loads(json.dumps(ident.claims)) == CLAIMS
    assert msgspec.json.decode(msgspec.json.encode(ident.claims)) == CLAIMS
    assert isinstance(ident.groups, frozenset) and isinstance(ident.amr, tuple)
    # a copy is the app's own to change
    mine = ident.claims.copy()
    mine["department"] = "dev"
    mine["teams"] = [*ident.claims["teams"], "green"]
    assert ident.claims["department"] == "ops" and ident.claims["teams"] == ["blue", "red"]
    # the stored form is plain JSON again, and builds an equal identity
    data = ident.to_dict()
    assert type(data["claims"]) is dict and type(data["claims"]["teams"]) is list
    assert type(data["claims"]["address"]) is dict and type(data["claims"]["address"]["lines"]) is list
    assert Identity.from_dict(json.loads(json.dumps(data))) == ident
    # what the caller passed in stays the caller's: later edits to it do not reach the identity
    claims: dict[str, Any] = {"teams": ["blue"]}
    built = Identity(subject="u-2", provider="op", claims=claims)
    claims["teams"].append("red")
    claims["added"] = 1
    assert built.claims == {"teams": ["blue"]}
