"""Issue 10 #8: sender-constrained tokens accepted on the Bearer scheme.

A DPoP-bound (RFC 9449, ``cnf.jkt``) or certificate-bound (RFC 8705,
``cnf.x5t#S256``) access token is only as good as the proof of possession
that must come with it; sent as ``Authorization: Bearer`` nobody proves
anything, so a stolen bound token would work like a bearer token. RFC 9449
7.2 / RFC 8705 3: refuse them. The class: any ``cnf`` in a JWT, and any
introspection answer with ``token_type`` DPoP or a ``cnf`` member, until this
library verifies DPoP / mTLS proofs.
"""

from __future__ import annotations

from typing import Any

import pytest

from flask_ccsso import reasons, signals
from flask_ccsso.testing import listen_to
from tests.security.idp_endpoints import bearer
from tests.support.local_op import CLIENT_ID
from tests.support.skills import access_token

JKT = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"


def _refused_as_bound(resp: Any) -> None:
    assert resp.status_code == 401, resp.get_data(as_text=True)
    challenge = resp.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ") and 'error="invalid_token"' in challenge
    assert "DPoP" in challenge and "mutual TLS" in challenge  # error_description says why
    assert resp.get_json()["error"] == reasons.INVALID_TOKEN


@pytest.mark.parametrize("cnf", [
    {"jkt": JKT},                                   # RFC 9449 DPoP
    {"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"},  # RFC 8705 mTLS
    {"jwk": {"kty": "EC", "crv": "P-256", "x": "a", "y": "b"}},   # RFC 7800
    {"kid": "some-key"},
    {},
])
def test_jwt_with_cnf_is_refused_on_the_bearer_scheme(client, op, clock, cnf):
    token = access_token(op, clock, cnf=cnf)  # really signed by the OP's key
    with listen_to(signals.login_failed) as failed:
        _refused_as_bound(client.get("/s/database-migration", headers=bearer(token)))
    assert [f.kwargs["reason"] for f in failed] == [reasons.INVALID_TOKEN]


def test_the_same_token_without_cnf_is_accepted(client, op, clock):
    assert client.get("/s/database-migration", headers=bearer(access_token(op, clock))).status_code == 200


def _answer(clock: Any, **over: Any) -> dict[str, Any]:
    base = {"active": True, "sub": "u-bob", "aud": CLIENT_ID, "scope": "migration:write",
            "exp": int(clock.now) + 600, "groups": ["database-admins"], "token_type": "Bearer"}
    base.update(over)
    return base


@pytest.mark.parametrize("over", [
    {"token_type": "DPoP", "cnf": {"jkt": JKT}},    # RFC 9449 9: the usual answer
    {"token_type": "DPoP"},
    {"token_type": "dpop"},
    {"cnf": {"jkt": JKT}},                          # a Bearer type but bound anyway
    {"cnf": {"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}},
])
def test_introspected_bound_token_is_refused(client, clock, scripted_idp, over):
    scripted_idp.answers["bound"] = _answer(clock, **over)
    _refused_as_bound(client.get("/s/database-migration", headers=bearer("bound")))


def test_introspected_plain_token_is_accepted(client, clock, scripted_idp):
    scripted_idp.answers["plain"] = _answer(clock)
    assert client.get("/s/database-migration", headers=bearer("plain")).status_code == 200
