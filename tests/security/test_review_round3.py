"""Security review, round 3: client authentication (the SCIM findings are in tests/scim/test_review_round3.py)."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from flask_ccsso.exceptions import ConfigError
from flask_ccsso.providers.client_auth import AssertionKeySource, ClientAuthenticator


def _ec_pem(curve: Any) -> str:
    key = ec.generate_private_key(curve)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _source(key: str, algorithm: str | None = None, root: str | None = "/srv/app") -> AssertionKeySource:
    return AssertionKeySource(key=key, certificate=None, key_id=None, algorithm=algorithm,
                              path="providers.okta", clock=time.time, root=root)


def test_key_text_that_is_not_pem_is_never_echoed_in_the_config_error():
    """A base64 DER key from ``${VAR}`` is taken for a path; the error must not print it."""
    der = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    text = base64.b64encode(der).decode()
    with pytest.raises(ConfigError) as caught:
        _source(text)
    assert "clientAssertionKey" in str(caught.value)
    assert text[:24] not in str(caught.value)
    with pytest.raises(ConfigError) as missing:  # a real path is still named
        _source("keys/okta-client.pem")
    assert "/srv/app/keys/okta-client.pem" in str(missing.value)


@pytest.mark.parametrize(("curve", "algorithm"), [(ec.SECP384R1(), "ES256"), (ec.SECP256R1(), "ES512"),
                                                  (ec.SECP256K1(), None)])
def test_an_ec_key_whose_curve_the_algorithm_cannot_sign_with_is_refused_at_start_up(curve, algorithm):
    """Otherwise every token request would fail while signing the assertion (a 500 per sign-in)."""
    with pytest.raises(ConfigError, match="clientAssertion"):
        _source(_ec_pem(curve), algorithm)
    ok = _source(_ec_pem(ec.SECP384R1()))  # the curve's own algorithm is chosen
    auth = ClientAuthenticator(method="private_key_jwt", client_id="c", client_secret=None, keys=ok, clock=time.time)
    _, body = auth.prepare("https://idp.example/token", {}, token_endpoint="https://idp.example/token")
    assert "client_assertion=" in body and ok.current_key.alg == "ES384"
