"""Client authentication at the token endpoint: client_secret_basic / _post and
RFC 7523 private_key_jwt (Okta keys, Entra ID certificate credentials), against
the LocalOP checking each method strictly."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from joserfc.jwk import ECKey, RSAKey

from flask_ccsso.exceptions import ConfigError
from flask_ccsso.providers.client_auth import ASSERTION_LIFETIME, KEY_RECHECK_SECONDS
from flask_ccsso.state import get_state
from tests.support.cli import make, oidc, run
from tests.support.local_op import ASSERTION_TYPE, CLIENT_ID, CLIENT_SECRET, LocalOP
from tests.support.oidc import callback, oidc_config, start_login


@pytest.fixture
def strict_op(op: LocalOP) -> Iterator[LocalOP]:
    """The LocalOP checking client authentication strictly; lenient again afterwards."""
    op.reset_client_auth()
    yield op
    op.reset_client_auth()


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: Any) -> bytes:
    return bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))


def _public(key: Any, kid: str | None = None) -> Any:
    cls = RSAKey if isinstance(key, rsa.RSAPrivateKey) else ECKey
    return cls.import_key(key.public_key(), parameters={"kid": kid} if kid else None)


def _cert(key: rsa.RSAPrivateKey, days: int = 365) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "portal")])
    now = dt.datetime.now(dt.timezone.utc)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=days)).sign(key, hashes.SHA256()))


def _write(path: Any, data: bytes) -> str:
    """Replace the file atomically, as an operator's deployment tool would."""
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, 0o600)  # a private key, as an operator keeps it
    os.replace(tmp, path)
    return str(path)


def _sign_in(app: Any) -> Any:
    client = app.test_client()
    url = start_login(client)
    return callback(client, app.extensions["ccsso_test_op"].issue_code(url))


def _app(make_app: Any, op: LocalOP, **over: Any) -> Any:
    cfg = oidc_config(op, **over)
    if over.get("clientSecret", CLIENT_SECRET) is None:
        cfg["auth"]["providers"]["op"].pop("clientSecret")
    app = make_app(cfg)
    app.extensions["ccsso_test_op"] = op
    return app


def _pkjwt(make_app: Any, op: LocalOP, key_file: str, **over: Any) -> Any:
    return _app(make_app, op, clientSecret=None, tokenEndpointAuthMethod="private_key_jwt",
                clientAssertionKey=key_file, **over)


def _last(op: LocalOP) -> dict[str, Any]:
    return op.client_auth_log[-1]


# --------------------------------------------------------------------------- each method signs in


def test_client_secret_basic_signs_in(make_app: Any, strict_op: LocalOP) -> None:
    strict_op.client_auth_method = "client_secret_basic"
    resp = _sign_in(_app(make_app, strict_op))
    assert resp.status_code == 302 and resp.headers["Location"] == "/me"
    entry = _last(strict_op)
    assert entry["problem"] is None and entry["basic"] and not entry["form_secret"]


def test_client_secret_post_signs_in(make_app: Any, strict_op: LocalOP) -> None:
    strict_op.client_auth_method = "client_secret_post"
    resp = _sign_in(_app(make_app, strict_op, tokenEndpointAuthMethod="client_secret_post"))
    assert resp.status_code == 302, resp.data
    entry = _last(strict_op)
    assert entry["problem"] is None and entry["form_secret"] and not entry["basic"]


def test_client_secret_post_refused_where_basic_is_registered(make_app: Any, strict_op: LocalOP) -> None:
    strict_op.client_auth_method = "client_secret_basic"
    resp = _sign_in(_app(make_app, strict_op, tokenEndpointAuthMethod="client_secret_post"))
    assert resp.status_code in (400, 401, 403)
    assert CLIENT_SECRET.encode() not in resp.data


def test_private_key_jwt_signs_in_with_a_well_formed_assertion(make_app: Any, strict_op: LocalOP,
                                                               tmp_path: Any) -> None:
    key = _rsa()
    strict_op.client_auth_method = "private_key_jwt"
    strict_op.client_keys = [_public(key, "portal-key-1")]
    app = _pkjwt(make_app, strict_op, _write(tmp_path / "key.pem", _pem(key)), clientAssertionKeyId="portal-key-1")
    resp = _sign_in(app)
    assert resp.status_code == 302, repr(_last(strict_op).get("problem"))
    entry = _last(strict_op)
    assert entry["problem"] is None and not entry["basic"] and not entry["form_secret"]
    header, claims = entry["header"], entry["claims"]
    assert header["alg"] == "RS256" and header["kid"] == "portal-key-1" and header["typ"] == "JWT"
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert claims["aud"] == f"{strict_op.issuer}/token"
    assert claims["exp"] - claims["iat"] == ASSERTION_LIFETIME <= 300
    assert abs(claims["iat"] - time.time()) < 30 and len(claims["jti"]) >= 32
    # a second sign-in sends a new assertion (jti), never the first again
    assert _sign_in(app).status_code == 302
    assert _last(strict_op)["claims"]["jti"] != claims["jti"]


def test_private_key_jwt_with_an_ec_jwk_from_the_environment(make_app: Any, strict_op: LocalOP,
                                                             monkeypatch: Any) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = ECKey.import_key(key, parameters={"kid": "ec-1"}).as_dict(private=True)
    monkeypatch.setenv("PORTAL_ASSERTION_KEY", json.dumps(jwk))
    strict_op.client_auth_method = "private_key_jwt"
    strict_op.client_keys = [_public(key, "ec-1")]
    resp = _sign_in(_pkjwt(make_app, strict_op, "${PORTAL_ASSERTION_KEY}"))
    assert resp.status_code == 302, resp.data
    assert _last(strict_op)["header"]["alg"] == "ES256" and _last(strict_op)["header"]["kid"] == "ec-1"


def test_refresh_authenticates_with_the_key_too(make_app: Any, strict_op: LocalOP, tmp_path: Any) -> None:
    key = _rsa()
    strict_op.client_auth_method = "private_key_jwt"
    strict_op.client_keys = [_public(key)]
    app = _pkjwt(make_app, strict_op, _write(tmp_path / "key.pem", _pem(key)))
    strict_op.refresh_handler = lambda form: {"access_token": "at-new", "token_type": "Bearer", "expires_in": 60,
                                              "refresh_token": "rt-2"}
    prov = get_state(app).providers["op"]
    tokens, _ = prov.refresh({"refresh_token": "rt-1", "id_token": None})  # type: ignore[attr-defined]
    assert tokens["access_token"] == "at-new"
    entry = _last(strict_op)
    assert entry["problem"] is None and entry["claims"]["aud"] == f"{strict_op.issuer}/token"


def test_entra_certificate_credentials_send_the_thumbprints(make_app: Any, strict_op: LocalOP,
                                                            tmp_path: Any) -> None:
    key = _rsa()
    cert = _cert(key)
    der = cert.public_bytes(serialization.Encoding.DER)
    s256 = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
    sha1 = base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode()
    strict_op.client_auth_method = "private_key_jwt"
    strict_op.client_keys = [_public(key)]
    strict_op.client_thumbprints = {s256}
    # key and certificate in one PEM file, as Entra ID / Key Vault export them
    pem = _pem(key) + cert.public_bytes(serialization.Encoding.PEM)
    app = _pkjwt(make_app, strict_op, _write(tmp_path / "portal.pem", pem), clientAssertionAlgorithm="PS256")
    assert _sign_in(app).status_code == 302, repr(_last(strict_op).get("problem"))
    header = _last(strict_op)["header"]
    assert header["alg"] == "PS256" and header["x5t#S256"] == s256 and header["x5t"] == sha1


def test_azure_ad_needs_the_certificate_and_defaults_to_ps256(make_app: Any, strict_op: LocalOP,
                                                             tmp_path: Any) -> None:
    from tests.providers.oidc.test_azure import azure_config

    key = _rsa()
    key_file = _write(tmp_path / "key.pem", _pem(key))
    cfg = azure_config(strict_op, clientAssertionKey=key_file, tokenEndpointAuthMethod="private_key_jwt")
    cfg["auth"]["providers"]["azure"].pop("clientSecret")
    with pytest.raises(ConfigError) as err:
        make_app(cfg)
    assert err.value.path == "auth.providers.azure.clientAssertionCertificate"
    cert_file = _write(tmp_path / "cert.pem", _cert(key).public_bytes(serialization.Encoding.PEM))
    cfg["auth"]["providers"]["azure"]["clientAssertionCertificate"] = cert_file
    prov = get_state(make_app(cfg)).providers["azure"]
    signing = prov.client_auth.keys.current()  # type: ignore[attr-defined]
    assert signing.alg == "PS256" and "x5t#S256" in signing.header


# --------------------------------------------------------------------------- refused assertions fail cleanly


def _refused(resp: Any, op: LocalOP, problem: str, caplog: Any, key_file: str | None = None) -> None:
    assert 400 <= resp.status_code < 500, resp.status_code
    assert _last(op)["problem"] == problem
    shown = resp.get_data(as_text=True) + caplog.text
    assert "invalid_client" in shown or "refused" in shown
    for secret in (CLIENT_SECRET, "client_assertion=", "eyJ"):
        assert secret not in shown
    if key_file:
        with open(key_file) as fh:
            body = fh.read().splitlines()[1]
        assert body not in shown


def test_wrong_key_is_refused_cleanly(make_app: Any, strict_op: LocalOP, tmp_path: Any, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    strict_op.client_auth_method = "private_key_jwt"
    strict_op.client_keys = [_public(_rsa())]  # the IdP knows another key
    key_file = _write(tmp_path / "key.pem", _pem(_rsa()))
    _refused(_sign_in(_pkjwt(make_app, strict_op, key_file)), strict_op, "bad signature", caplog, key_file)


def test_expired_assertion_is_refused_cleanly(make_app: Any, strict_op: LocalOP, tmp_path: Any, caplog: Any) -> None:
    key = _rsa()
    strict_op.client_auth_method = "private_key_jwt"
    strict_op.client_keys = [_public(key)]
    app = _pkjwt(make_app, strict_op, _write(tmp_path / "key.pem", _pem(key)))
    # the IdP's clock is ten minutes ahead of ours: our assertion has expired by its time
    strict_op.clock = lambda: time.time() + 600
    _refused(_sign_in(app), strict_op, "expired", caplog)


def test_replayed_assertion_is_refused(make_app: Any, strict_op: LocalOP, tmp_path: Any, caplog: Any) -> None:
    key = _rsa()
    strict_op.client_auth_method = "private_key_jwt"
    strict_op.client_keys = [_public(key)]
    app = _pkjwt(make_app, strict_op, _write(tmp_path / "key.pem", _pem(key)))
    prov = get_state(app).providers["op"]
    token_endpoint = f"{strict_op.issuer}/token"
    headers, body = prov.client_auth.prepare(  # type: ignore[attr-defined]
        token_endpoint, {"grant_type": "refresh_token", "refresh_token": "rt-x"}, token_endpoint=token_endpoint)
    assert f"client_assertion_type={requests.utils.quote(ASSERTION_TYPE, safe='')}" in body
    first = requests.post(token_endpoint, data=body, headers=headers, timeout=5)
    assert first.status_code == 400  # authenticated; the grant itself is refused (no refresh handler)
    again = requests.post(token_endpoint, data=body, headers=headers, timeout=5)
    assert again.status_code == 401 and again.json()["error_description"] == "jti replayed"

    class EverySeen(set):  # an IdP that has seen every jti: the sign-in's own assertion counts as a replay
        def __contains__(self, item: object) -> bool:
            return True

    strict_op.seen_jtis = EverySeen()
    _refused(_sign_in(app), strict_op, "jti replayed", caplog)


def test_wrong_audience_is_refused_cleanly(make_app: Any, strict_op: LocalOP, tmp_path: Any, caplog: Any) -> None:
    key = _rsa()
    strict_op.client_auth_method = "private_key_jwt"
    strict_op.client_keys = [_public(key)]
    # discovery names another token endpoint URL: the assertion is addressed to it, the OP expects its own
    strict_op.extra_metadata = {"token_endpoint": f"{strict_op.issuer}/token?tenant=other"}
    app = _pkjwt(make_app, strict_op, _write(tmp_path / "key.pem", _pem(key)))
    _refused(_sign_in(app), strict_op, "wrong aud", caplog)


# --------------------------------------------------------------------------- rotation without restart


def test_a_rotated_key_file_is_used_without_restart(make_app: Any, strict_op: LocalOP, tmp_path: Any,
                                                    clock: Any, caplog: Any) -> None:
    old, new = _rsa(), _rsa()
    strict_op.client_auth_method = "private_key_jwt"
    strict_op.clock = clock  # the OP and the app agree on the time as it moves
    strict_op.client_keys = [_public(old)]
    key_file = _write(tmp_path / "key.pem", _pem(old))
    app = _pkjwt(make_app, strict_op, key_file)
    assert _sign_in(app).status_code == 302
    # rotation at the IdP: only the new key is registered now; the file still has the old one
    strict_op.client_keys = [_public(new)]
    assert _sign_in(app).status_code in (400, 401, 403)
    _write(key_file, _pem(new))
    clock.advance(KEY_RECHECK_SECONDS + 1)
    caplog.set_level(logging.INFO, logger="flask_ccsso")
    assert _sign_in(app).status_code == 302, _last(strict_op)
    assert "clientAssertionKey reloaded" in caplog.text


def test_a_broken_key_file_keeps_the_previous_key(make_app: Any, strict_op: LocalOP, tmp_path: Any,
                                                  clock: Any, caplog: Any) -> None:
    key = _rsa()
    strict_op.client_auth_method = "private_key_jwt"
    strict_op.clock = clock
    strict_op.client_keys = [_public(key)]
    key_file = _write(tmp_path / "key.pem", _pem(key))
    app = _pkjwt(make_app, strict_op, key_file)
    _write(key_file, b"-----BEGIN PRIVATE KEY-----\nhalf a key")
    clock.advance(KEY_RECHECK_SECONDS + 1)
    caplog.set_level(logging.WARNING, logger="flask_ccsso")
    assert _sign_in(app).status_code == 302
    assert "auth.providers.op.clientAssertionKey changed" in caplog.text and "previous key stays" in caplog.text
    clock.advance(KEY_RECHECK_SECONDS + 1)
    assert _sign_in(app).status_code == 302
    assert caplog.text.count("clientAssertionKey changed") == 1  # logged once per change


# --------------------------------------------------------------------------- config errors name the key


@pytest.mark.parametrize("over, key, words", [
    ({"tokenEndpointAuthMethod": "private_key_jtw"}, "tokenEndpointAuthMethod", "did you mean 'private_key_jwt'"),
    ({"tokenEndpointAuthMethod": "private_key_jwt"}, "clientSecret", "not used with"),
    ({"tokenEndpointAuthMethod": "private_key_jwt", "clientSecret": None}, "clientAssertionKey", "is required"),
    ({"tokenEndpointAuthMethod": "client_secret_post", "clientSecret": None}, "clientSecret", "is required"),
    ({"clientAssertionKey": "key.pem"}, "tokenEndpointAuthMethod", "both clientSecret and clientAssertionKey"),
    ({"clientAssertionKeyId": "k1"}, "clientAssertionKeyId", "private_key_jwt only"),
    ({"clientSecret": None, "clientAssertionKey": "key.pem", "clientAssertionAlgorithm": "HS256"},
     "clientAssertionAlgorithm", "not an assertion signing algorithm"),
])
def test_config_errors_name_the_key(make_app: Any, op: LocalOP, over: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        _app(make_app, op, **over)
    assert err.value.path == f"auth.providers.op.{key}"
    assert words in str(err.value)


def test_key_file_problems_fail_at_start_up(make_app: Any, op: LocalOP, tmp_path: Any) -> None:
    def error(**over: Any) -> ConfigError:
        with pytest.raises(ConfigError) as err:
            _pkjwt(make_app, op, **over)
        return err.value

    missing = error(key_file=str(tmp_path / "nowhere.pem"))
    assert missing.path == "auth.providers.op.clientAssertionKey" and "cannot read" in str(missing)
    ec_key = _write(tmp_path / "ec.pem", _pem(ec.generate_private_key(ec.SECP256R1())))
    wrong_alg = error(key_file=ec_key, clientAssertionAlgorithm="RS256")
    assert wrong_alg.path == "auth.providers.op.clientAssertionAlgorithm"
    cert_file = _write(tmp_path / "other.crt", _cert(_rsa()).public_bytes(serialization.Encoding.PEM))
    mismatch = error(key_file=_write(tmp_path / "k.pem", _pem(_rsa())), clientAssertionCertificate=cert_file)
    assert mismatch.path == "auth.providers.op.clientAssertionCertificate" and "another key" in str(mismatch)
    public = _write(tmp_path / "pub.json", json.dumps(RSAKey.import_key(_rsa().public_key()).as_dict()).encode())
    assert "without its private part" in str(error(key_file=public))


# --------------------------------------------------------------------------- check-config


def test_check_config_warns_about_a_secret_where_a_key_could_be(tmp_path: Any, strict_op: LocalOP) -> None:
    strict_op.extra_metadata = {"token_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt"]}
    result = run(make(tmp_path, oidc(strict_op)), "check-config")
    assert result.exit_code == 1, result.output
    assert "authenticates with a client secret, but the IdP supports private_key_jwt" in result.output
    assert CLIENT_SECRET not in result.output


def test_check_config_warns_when_the_method_is_not_announced(tmp_path: Any, strict_op: LocalOP) -> None:
    strict_op.extra_metadata = {"token_endpoint_auth_methods_supported": ["client_secret_basic"]}
    result = run(make(tmp_path, oidc(strict_op, tokenEndpointAuthMethod="client_secret_post")), "check-config")
    assert result.exit_code == 1, result.output
    assert "client_secret_post is not in the IdP's token_endpoint_auth_methods_supported" in result.output


def test_check_config_shows_the_key_and_its_certificate(tmp_path: Any, strict_op: LocalOP) -> None:
    key = _rsa()
    strict_op.extra_metadata = {"token_endpoint_auth_methods_supported": ["private_key_jwt"]}
    pem = _pem(key) + _cert(key, days=5).public_bytes(serialization.Encoding.PEM)
    cfg = oidc(strict_op, clientAssertionKey=_write(tmp_path / "portal.pem", pem))
    cfg["auth"]["providers"]["op"].pop("clientSecret")
    result = run(make(tmp_path, cfg), "check-config")
    assert "client authentication private_key_jwt (announced by the IdP)" in result.output
    assert "client assertion key loaded (RS256" in result.output and "x5t#S256" in result.output
    assert "client assertion: certificate expires in" in result.output and result.exit_code == 1
    assert "BEGIN" not in result.output  # the key is masked in the resolved config


# --------------------------------------------------------------------------- introspection authenticates the same way


@pytest.mark.parametrize("method", ["client_secret_post", "private_key_jwt"])
def test_introspection_authenticates_as_the_token_endpoint_does(make_app: Any, strict_op: LocalOP, tmp_path: Any,
                                                                method: str) -> None:
    """An opaque bearer token is introspected with the client's own method: a
    key-only client introspects (it has no secret), a post client sends its secret
    in the form, never by Basic; a wrong assertion makes the token not accepted."""
    from tests.support.skills import add_skill_routes, bearer, skills_config

    strict_op.client_auth_method = method
    over: dict[str, Any] = {"tokenEndpointAuthMethod": method}
    if method == "private_key_jwt":
        key = _rsa()
        strict_op.client_keys = [_public(key)]
        over.update(clientSecret=None, clientAssertionKey=_write(tmp_path / "key.pem", _pem(key)))
    strict_op.extra_metadata["introspection_endpoint"] = f"{strict_op.issuer}/introspect"
    strict_op.introspection_answers["opaque-1"] = {
        "active": True, "sub": "u-svc", "iss": strict_op.issuer, "aud": CLIENT_ID, "scope": "migration:write",
        "exp": int(time.time()) + 3600, "groups": ["database-admins"], "token_type": "Bearer"}
    try:
        cfg = skills_config(strict_op, **over)
        if over.get("clientSecret", CLIENT_SECRET) is None:
            cfg["auth"]["providers"]["op"].pop("clientSecret")
        client = add_skill_routes(make_app(cfg)).test_client()
        resp = client.get("/s/database-migration", headers=bearer("opaque-1"))
        assert resp.status_code == 200, (resp.get_data(as_text=True), _last(strict_op).get("problem"))
        entry = _last(strict_op)
        assert entry["problem"] is None and not entry["basic"]
        assert entry["assertion"] is (method == "private_key_jwt")
        assert entry["form_secret"] is (method == "client_secret_post")
        if method == "private_key_jwt":
            strict_op.client_keys = [_public(_rsa())]  # the IdP no longer knows the portal's key
            resp = client.get("/s/database-migration", headers=bearer("opaque-2"))
            assert resp.status_code in (401, 503) and _last(strict_op)["problem"] == "bad signature"
    finally:
        strict_op.extra_metadata.pop("introspection_endpoint", None)
        strict_op.introspection_answers.clear()


def test_a_key_file_others_can_read_is_warned_about(make_app: Any, strict_op: LocalOP, tmp_path: Any,
                                                     caplog: Any) -> None:
    """Other accounts on the host could sign as the portal: a warning naming the
    key and the fix (never the key), and none for a 0600 file."""
    key = _rsa()
    strict_op.client_auth_method = "private_key_jwt"
    strict_op.client_keys = [_public(key)]
    path = _write(tmp_path / "key.pem", _pem(key))
    with caplog.at_level(logging.WARNING, logger="flask_ccsso"):
        _pkjwt(make_app, strict_op, path)
    assert "readable by other users" not in caplog.text
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, logger="flask_ccsso"):
        _pkjwt(make_app, strict_op, path)
    assert "clientAssertionKey: the key file is readable by other users (mode 0o644)" in caplog.text
    assert "chmod 600" in caplog.text and "PRIVATE KEY" not in caplog.text


def test_an_unreachable_introspection_endpoint_is_a_503_naming_the_provider(make_app: Any, strict_op: LocalOP) -> None:
    """The introspection POST goes through the client's authentication; when it cannot
    reach the IdP the 503's audit signal still says which provider failed."""
    from flask_ccsso import reasons, signals
    from flask_ccsso.testing import listen_to
    from tests.support.sessions import free_port
    from tests.support.skills import add_skill_routes, bearer, skills_config

    strict_op.extra_metadata["introspection_endpoint"] = f"http://127.0.0.1:{free_port()}/introspect"
    try:
        client = add_skill_routes(make_app(skills_config(strict_op))).test_client()
        with listen_to(signals.login_failed) as failed:
            resp = client.get("/s/database-migration", headers=bearer("opaque-1"))
    finally:
        strict_op.extra_metadata.pop("introspection_endpoint", None)
    assert resp.status_code == 503
    assert [(f.kwargs["provider"], f.kwargs["reason"]) for f in failed] == [("op", reasons.IDP_UNAVAILABLE)]
