"""``session.outageGrace``: an IdP outage does not sign everybody out within one
access-token lifetime.

Real parts: the local OIDC provider (its token endpoint answers 503 while
``op.down``), the real Redis (a wire counter proves that a degraded request
writes nothing) and the memory store on the test clock (so the refresh
back-off lapses when the test moves time, without waiting for it).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest
from flask import Flask

from flask_ccsso import ConfigError, get_state, login_required, signals
from flask_ccsso.config import parse_config
from flask_ccsso.gate.current import current_outage_grace
from flask_ccsso.gate.refresh import BACKOFF
from flask_ccsso.testing import listen_to
from tests.gate.test_refresh import RotatingOP, _record
from tests.support.oidc import oidc_config
from tests.support.sessions import login, session_config
from tests.support.wire import count_round_trips

JSON = {"Accept": "application/json"}
#: the throttled record of the degraded state
DEGRADED = "cannot renew expired access tokens"


def _grace_route(app: Flask) -> Flask:
    """``/grace``: what a view can tell about its session while the IdP is down."""

    @app.get("/grace")
    @login_required
    def grace() -> dict[str, Any]:
        state = get_state(app)
        record = state.gate.record()
        assert record is not None
        tokens = record.tokens or {}
        outage = current_outage_grace()
        return {"grace": None if outage is None else dataclasses.asdict(outage),
                "access_token": tokens.get("access_token"),
                "stale": tokens.get("expires_at", 0) <= state.clock()}

    return app


def _memory_app(make_app: Any, op: Any, **session: Any) -> Flask:
    """Sessions in the embedded store, shared state (locks, the back-off marker) in the memory store on the test clock."""
    session.setdefault("refreshWindow", 300)
    session.setdefault("idleTimeout", 7200)
    return _grace_route(make_app(session_config(op, **session)))


def _expired_for(clock: Any, app: Flask, sid: str, seconds: float) -> float:
    """Move the clock to ``seconds`` after the session's access token expired; returns its ``expires_at``."""
    expires_at = float(_record(app, sid)["tokens"]["expires_at"])
    clock.now = expires_at + seconds
    return expires_at


def _degraded_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if DEGRADED in r.getMessage()]


@pytest.mark.redis
def test_within_the_grace_the_session_stays_signed_in_and_nothing_is_written(redis_app: Any, op: Any,
                                                                            clock: Any) -> None:
    app = _grace_route(redis_app(refreshWindow=300, idleTimeout=7200))
    client = app.test_client()
    sid = login(client, op, expires_in=3600)
    RotatingOP(op, clock)
    op.down = True
    expires_at = _expired_for(clock, app, sid, 100)  # expired 100 s ago; the default grace is an hour
    first = client.get("/grace", headers=JSON)
    assert first.status_code == 200, first.data
    body = first.get_json()
    assert body["stale"] is True and body["access_token"] == _record(app, sid)["tokens"]["access_token"]
    assert body["grace"] == {"provider": "op", "token_expired_at": expires_at, "grace_ends_at": expires_at + 3600}

    state_wire = count_round_trips(app.extensions["ccsso"].store)
    session_wire = count_round_trips(app.session_interface.store)
    for _ in range(10):
        clock.advance(5)  # within slidingWriteInterval: no activity write either
        resp = client.get("/grace", headers=JSON)
        assert resp.status_code == 200 and resp.get_json()["grace"] is not None
    # no lock, no back-off marker, no session write: the back-off marker (read) keeps the IdP from being asked
    assert state_wire.writes() == [] and session_wire.writes() == [], (state_wire.sends, session_wire.sends)
    assert state_wire.commands(), "the back-off marker was not even read"
    assert _record(app, sid)["tokens"]["refresh_token"] == "rt-1"


def test_past_the_grace_the_request_fails_closed_with_retry_after(make_app: Any, op: Any, clock: Any) -> None:
    app = _memory_app(make_app, op, outageGrace=600)
    client = app.test_client()
    sid = login(client, op, expires_in=3600)
    RotatingOP(op, clock)
    op.down = True
    _expired_for(clock, app, sid, 599)
    resp = client.get("/grace", headers=JSON)
    assert resp.status_code == 200 and resp.get_json()["grace"]["grace_ends_at"] == pytest.approx(clock.now + 1)
    clock.advance(1)  # the grace is over
    resp = client.get("/me", headers=JSON)
    assert resp.status_code == 503 and resp.get_json()["error"] == "idp_unavailable"
    assert int(resp.headers["Retry-After"]) > 0
    assert client.get("/", headers=JSON).status_code == 200  # a public page does not need the session
    # not signed out: the session is still there and refreshes once the IdP is back
    op.down = False
    resp = client.get("/grace", headers=JSON)
    assert resp.status_code == 200 and resp.get_json() == {"grace": None, "access_token": "at-r1", "stale": False}
    assert _record(app, sid)["tokens"]["refresh_token"] == "rt-2"


def test_the_session_deadlines_still_apply_during_the_grace(make_app: Any, op: Any, clock: Any) -> None:
    app = _memory_app(make_app, op, idleTimeout=3900, absoluteTimeout=3900)
    client = app.test_client()
    login(client, op, expires_in=3600)
    RotatingOP(op, clock)
    op.down = True
    clock.advance(3700)
    assert client.get("/me", headers=JSON).status_code == 200
    clock.advance(201)  # past absoluteTimeout, well inside the grace
    resp = client.get("/me", headers=JSON)
    assert resp.status_code == 401 and resp.get_json()["error"] == "absolute_timeout"


def test_a_refusal_during_the_grace_ends_the_session(make_app: Any, op: Any, clock: Any) -> None:
    app = _memory_app(make_app, op)
    client = app.test_client()
    sid = login(client, op, expires_in=3600)
    op.down = True
    _expired_for(clock, app, sid, 100)
    assert client.get("/me", headers=JSON).status_code == 200
    op.down = False  # back, and it refuses the refresh token (revoked, user disabled): invalid_grant
    assert op.refresh_handler is None
    clock.advance(BACKOFF + 1)  # the back-off marker lapses: the IdP is asked again
    with listen_to(signals.session_expired) as heard:
        resp = client.get("/me", headers=JSON)
    assert resp.status_code == 401 and resp.get_json()["error"] == "refresh_failed"
    assert heard[0].kwargs["reason"] == "refresh_failed"
    assert client.get("/me", headers=JSON).status_code == 401  # ended, grace or not


def test_the_idp_back_refreshes_at_the_next_try_and_the_session_carries_the_new_token(make_app: Any, op: Any,
                                                                                     clock: Any) -> None:
    app = _memory_app(make_app, op)
    client = app.test_client()
    sid = login(client, op, expires_in=3600)
    RotatingOP(op, clock)
    op.down = True
    _expired_for(clock, app, sid, 100)
    assert client.get("/grace", headers=JSON).get_json()["grace"] is not None
    op.down = False
    hits = op.token_hits
    # within the back-off the IdP is not asked yet (at most one try per BACKOFF seconds, across workers)
    assert client.get("/grace", headers=JSON).get_json()["grace"] is not None and op.token_hits == hits
    clock.advance(BACKOFF + 1)
    with listen_to(signals.token_refreshed) as heard:
        resp = client.get("/grace", headers=JSON)
    assert resp.status_code == 200 and resp.get_json() == {"grace": None, "access_token": "at-r1", "stale": False}
    assert op.token_hits == hits + 1 and len(heard) == 1
    rec = _record(app, sid)
    assert rec["tokens"]["access_token"] == "at-r1" and rec["tokens"]["refresh_token"] == "rt-2" and rec["rev"] == 1
    assert client.get("/grace", headers=JSON).get_json()["grace"] is None and op.token_hits == hits + 1


def test_zero_grace_keeps_failing_closed_once_the_token_has_expired(make_app: Any, op: Any, clock: Any) -> None:
    app = _memory_app(make_app, op, outageGrace=0)
    client = app.test_client()
    sid = login(client, op, expires_in=3600)
    RotatingOP(op, clock)
    op.down = True
    _expired_for(clock, app, sid, -1)  # still valid: kept (and no grace involved)
    resp = client.get("/grace", headers=JSON)
    assert resp.status_code == 200 and resp.get_json()["grace"] is None
    clock.advance(1)
    resp = client.get("/me", headers=JSON)
    assert resp.status_code == 503 and resp.get_json()["error"] == "idp_unavailable" and "Retry-After" in resp.headers


def test_the_degraded_state_is_logged_once_for_many_requests(make_app: Any, op: Any, clock: Any,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    app = _memory_app(make_app, op)
    clients = [app.test_client() for _ in range(3)]
    sids = [login(c, op, expires_in=3600) for c in clients]
    op.down = True
    _expired_for(clock, app, sids[0], 100)
    with caplog.at_level(logging.WARNING, logger="flask_ccsso"):
        for _ in range(4):
            for c in clients:
                for _ in range(5):
                    assert c.get("/grace", headers=JSON).get_json()["grace"] is not None
            clock.advance(BACKOFF + 1)  # each session tries the IdP again, and fails again
    (record,) = _degraded_records(caplog)
    assert record.levelno == logging.WARNING and "'op'" in record.getMessage()
    for sid in sids:
        tokens = _record(app, sid)["tokens"]
        assert tokens["access_token"] not in caplog.text and tokens["refresh_token"] not in caplog.text
        assert sid not in caplog.text


def test_nobody_signed_in_is_never_in_the_grace(make_app: Any, op: Any) -> None:
    app = _memory_app(make_app, op)

    @app.get("/open")
    def open_page() -> dict[str, Any]:
        return {"grace": current_outage_grace() is not None}

    assert app.test_client().get("/open").get_json() == {"grace": False}


def test_outage_grace_is_validated(op: Any) -> None:
    cfg = oidc_config(op)
    assert parse_config(cfg).session.outage_grace == 3600
    cfg["session"]["outageGrace"] = 0
    assert parse_config(cfg).session.outage_grace == 0
    cfg["session"]["outageGrace"] = -1
    with pytest.raises(ConfigError, match="session.outageGrace"):
        parse_config(cfg)
