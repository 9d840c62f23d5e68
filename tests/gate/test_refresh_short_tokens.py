"""Review 2: token refresh against IdPs whose access tokens live shorter than
``refreshWindow`` (Keycloak's default is 300 s, the default window too)."""

from __future__ import annotations

from typing import Any

from flask_ccsso.sessions import SESSION_KEY
from tests.support.oidc import oidc_config
from tests.support.sessions import login


class ShortLivedOP:
    """A non-rotating IdP issuing 300 s access tokens and no ID token."""

    def __init__(self, op: Any, lifetime: int = 300) -> None:
        self.lifetime = lifetime
        self.n = 0
        op.refresh_handler = self

    def __call__(self, form: dict[str, Any]) -> dict[str, Any]:
        self.n += 1
        return {"access_token": f"at-{self.n}", "token_type": "Bearer", "expires_in": self.lifetime}


def test_token_lifetime_at_or_below_the_window_does_not_refresh_on_every_request(make_app: Any, op: Any,
                                                                                  clock: Any) -> None:
    app = make_app(oidc_config(op))
    client = app.test_client()
    login(client, op, expires_in=300, refresh_token="rt-1")
    idp = ShortLivedOP(op)
    for _ in range(5):
        assert client.get("/me").status_code == 200
    assert idp.n == 0, "a fresh 300 s token was refreshed straight away"
    clock.advance(30)
    assert client.get("/me").status_code == 200
    assert idp.n == 0
    clock.advance(31)  # a token is used for at least a minute, then refreshed once
    for _ in range(5):
        assert client.get("/me").status_code == 200
    assert idp.n == 1, f"refreshed {idp.n} times for one expiring token"
    clock.advance(61)
    for _ in range(5):
        assert client.get("/me").status_code == 200
    assert idp.n == 2


def test_non_rotating_idp_keeps_the_refresh_token_and_the_session(make_app: Any, op: Any, clock: Any) -> None:
    app = make_app(oidc_config(op))
    client = app.test_client()
    sid = login(client, op, expires_in=3600, refresh_token="rt-1")
    idp = ShortLivedOP(op, lifetime=3600)
    for _ in range(3):
        clock.advance(3500)
        assert client.get("/me").status_code == 200
    assert idp.n == 3
    rec = app.session_interface.read_sid(sid)[SESSION_KEY]
    assert rec["tokens"]["refresh_token"] == "rt-1"
    assert rec["tokens"]["access_token"] == "at-3"
