"""Review 2: a back-channel logout that fails with a store outage after its
``jti`` was recorded must still work when the IdP retries it."""

from __future__ import annotations

from typing import Any

import pytest

from flask_ccsso.exceptions import StoreUnavailable
from flask_ccsso.extension import get_state
from tests.test_backchannel import JSON, logout_claims, post, signed_in  # noqa: F401
from tests.test_session_helpers import closers, prefix, redis_app  # noqa: F401

pytestmark = pytest.mark.redis


def test_retry_after_a_store_outage_is_not_refused_as_a_replay(signed_in: Any, op: Any, clock: Any,
                                                               monkeypatch: Any) -> None:
    app, client, sid = signed_in
    state = get_state(app)
    real = state.revoke_sids
    calls = {"n": 0}

    def flaky(sids: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise StoreUnavailable()
        return real(sids)

    monkeypatch.setattr(state, "revoke_sids", flaky)
    token = op.sign(logout_claims(op, clock), header={"typ": "logout+jwt"})
    assert post(app.test_client(), token).status_code == 503
    resp = post(app.test_client(), token)  # the IdP retries the same token
    assert resp.status_code == 200, resp.get_json()
    assert client.get("/me", headers=JSON).status_code == 401
    # and a real replay after success is still refused
    assert post(app.test_client(), token).status_code == 400
