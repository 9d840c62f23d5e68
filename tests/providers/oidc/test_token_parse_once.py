"""The token is split and parsed once (``oidc._extract``), and the nesting bound still holds.

``decode_jwt`` verifies the signature over the object the peek extracted, so
the claims it returns are the bytes the signature covers; the JSON depth walk
is skipped only when the claims' text cannot nest past the limit (fewer
opening brackets than the limit).
"""

from __future__ import annotations

import base64
import json

import pytest

from flask_ccsso.exceptions import AuthenticationFailed
from flask_ccsso.providers import oidc


def _part(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _token(claims_json: bytes) -> str:
    return f"{_part(json.dumps({'alg': 'RS256', 'kid': 'k1'}).encode())}.{_part(claims_json)}.c2ln"


def _nested(depth: int) -> bytes:
    """Claims whose ``x`` nests lists until the whole object is ``depth`` levels deep
    (the innermost list holds a value: an empty container adds no level)."""
    return b'{"x": ' + b"[" * (depth - 1) + b"0" + b"]" * (depth - 1) + b"}"


def test_claims_at_the_limit_are_read():
    header, claims = oidc.peek_jwt(_token(_nested(oidc.MAX_JSON_DEPTH)))
    assert header["kid"] == "k1" and "x" in claims


@pytest.mark.parametrize("depth", [oidc.MAX_JSON_DEPTH + 1, oidc.MAX_JSON_DEPTH + 50])
def test_claims_past_the_limit_are_malformed(depth):
    with pytest.raises(AuthenticationFailed) as err:
        oidc.peek_jwt(_token(_nested(depth)))
    assert err.value.reason == "invalid_token"


def test_brackets_inside_strings_do_not_hide_nesting():
    """Many brackets in a string value make the walk run; it finds the real depth (shallow)."""
    claims = json.dumps({"sub": "[" * 500, "groups": ["a", "b"]}).encode()
    _header, got = oidc.peek_jwt(_token(claims))
    assert got["sub"] == "[" * 500


def test_a_nested_header_is_checked_even_when_the_claims_are_flat():
    deep_header = b'{"alg": "RS256", "x": ' + b"[" * 40 + b"]" * 40 + b"}"
    with pytest.raises(AuthenticationFailed):
        oidc.peek_jwt(f"{_part(deep_header)}.{_part(b'{}')}.c2ln")


def test_the_verified_claims_are_those_of_the_signed_token(make_app, op):
    """A valid token decodes to its own claims; one payload byte changed, the signature fails."""
    from tests.support.oidc import oidc_config

    app = make_app(oidc_config(op))
    provider = app.extensions["ccsso"].providers["op"]
    token = op.sign(op.id_claims("n-1"))
    with app.app_context():
        header, claims = provider.decode_jwt(token)
        assert header["kid"] == op.key.kid and claims["nonce"] == "n-1"
        head, payload, sig = token.split(".")
        forged = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        forged["sub"] = "u-mallory"
        with pytest.raises(AuthenticationFailed) as err:
            provider.decode_jwt(f"{head}.{_part(json.dumps(forged).encode())}.{sig}")
        assert err.value.reason == "invalid_token"
