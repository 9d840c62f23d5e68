"""``flask ccsso check-config`` and ``flask ccsso sp-metadata``, through click's CliRunner."""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
import time
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.cli import ScriptInfo

from flask_ccsso import ConfigError
from flask_ccsso.cli import cli
from flask_ccsso.cli._common import mask_url
from flask_ccsso.cli.check import check_config
from tests.support.cli import make, oidc, run
from tests.support.local_op import CLIENT_SECRET


def test_commands_are_in_the_group() -> None:
    assert {"check-config", "sp-metadata"} <= set(cli.commands)


def test_all_good_exits_0_and_masks_secrets(tmp_path: Any, op: Any) -> None:
    result = run(make(tmp_path, oidc(op)), "check-config")
    assert result.exit_code == 0, result.output
    assert CLIENT_SECRET not in result.output and '"clientSecret": "***"' in result.output
    assert "discovery document OK" in result.output and "signing keys reachable" in result.output
    assert "clock within" in result.output and "0 error(s), 0 warning(s)" in result.output


def test_insecure_cookie_is_a_warning_exit_1(tmp_path: Any, op: Any) -> None:
    result = run(make(tmp_path, oidc(op, secure=False)), "check-config")
    assert result.exit_code == 1, result.output
    assert "not Secure" in result.output


def test_config_error_exits_2_with_the_message() -> None:
    def factory() -> Flask:
        raise ConfigError("auth.providers.okta.clientId", "is required.", "copy it from the IdP.")

    result = CliRunner().invoke(check_config, [], obj=ScriptInfo(create_app=factory))
    assert result.exit_code == 2
    assert "auth.providers.okta.clientId: is required. Fix: copy it from the IdP." in result.output


def test_app_without_the_extension_exits_2(tmp_path: Any) -> None:
    app = Flask("bare")
    result = CliRunner().invoke(check_config, [], obj=ScriptInfo(create_app=lambda: app))
    assert result.exit_code == 2 and "not initialised" in result.output


def test_unreachable_idp_exits_2(tmp_path: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = {"auth": {"provider": "oidc", "clientId": "c", "issuer": f"http://127.0.0.1:{port}",
                    "redirectUri": "https://portal.example.com/callback", "timeout": 1},
           "session": {"cookieSecure": True}}
    result = run(make(tmp_path, cfg), "check-config")
    assert result.exit_code == 2, result.output
    assert "cannot reach the discovery document" in result.output


def test_offline_skips_the_network(tmp_path: Any) -> None:
    cfg = {"auth": {"provider": "oidc", "clientId": "c", "issuer": "http://127.0.0.1:9",
                    "redirectUri": "https://portal.example.com/callback"}}
    result = run(make(tmp_path, cfg), "check-config", "--offline")
    assert result.exit_code == 0, result.output
    assert "not contacted (--offline)" in result.output


def test_clock_skew_beyond_the_accepted_leeway_exits_2(tmp_path: Any, op: Any, monkeypatch: Any) -> None:
    from flask_ccsso.cli import check

    class Ahead:
        @staticmethod
        def time() -> float:
            return time.time() + 300

        @staticmethod
        def time_ns() -> int:
            return time.time_ns()

    monkeypatch.setattr(check, "time", Ahead)
    result = run(make(tmp_path, oidc(op)), "check-config")
    assert result.exit_code == 2, result.output
    assert re.search(r"clock is \+(299|300|301) s off", result.output)


def test_small_clock_skew_is_a_warning(tmp_path: Any, op: Any, monkeypatch: Any) -> None:
    from flask_ccsso.cli import check

    class Behind:
        @staticmethod
        def time() -> float:
            return time.time() - 30

        @staticmethod
        def time_ns() -> int:
            return time.time_ns()

    monkeypatch.setattr(check, "time", Behind)
    result = run(make(tmp_path, oidc(op)), "check-config")
    assert result.exit_code == 1, result.output
    assert re.search(r"clock is -(29|30|31) s off", result.output)


def test_http_redirect_on_a_public_host_is_an_error(tmp_path: Any, op: Any) -> None:
    app = make(tmp_path, oidc(op, redirectUri=None), SERVER_NAME="portal.example.com")
    result = run(app, "check-config", "--offline")
    assert result.exit_code == 2, result.output
    assert "http://portal.example.com/sso/op/callback (built from SERVER_NAME) is not https" in result.output


def test_proxy_without_trusted_proxies_warns(tmp_path: Any, op: Any) -> None:
    app = make(tmp_path, oidc(op, redirectUri=None), SERVER_NAME="portal.example.com", PREFERRED_URL_SCHEME="https")
    result = run(app, "check-config", "--offline")
    assert result.exit_code == 1, result.output
    assert "CCSSO_TRUSTED_PROXIES is 0" in result.output
    app = make(tmp_path, oidc(op, redirectUri=None), SERVER_NAME="portal.example.com",
               PREFERRED_URL_SCHEME="https", CCSSO_TRUSTED_PROXIES=1)
    result = run(app, "check-config", "--offline")
    assert result.exit_code == 0, result.output


def test_json_output_is_the_masked_config(tmp_path: Any, op: Any) -> None:
    cfg = oidc(op)
    cfg["session"]["store"] = {"type": "redis", "url": "redis://:hunter2@127.0.0.1:6379/0"}
    result = run(make(tmp_path, cfg), "check-config", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["auth"]["providers"]["op"]["clientSecret"] == "***"
    assert data["session"]["store"]["url"] == "redis://:***@127.0.0.1:6379/0"
    assert data["skills"]["database-migration"]["allowedGroups"] == ["database-admins", "senior-developers"]
    assert "hunter2" not in result.output


def test_mask_url() -> None:
    assert mask_url("postgresql+psycopg://audit:s3cret@db/audit") == "postgresql+psycopg://audit:***@db/audit"
    assert mask_url("https://idp.example.com/x") == "https://idp.example.com/x"


# --------------------------------------------------------------------------- SAML

def _cert(days: int) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp.example.com")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=days)).sign(key, hashes.SHA256()))
    der = cert.public_bytes(serialization.Encoding.DER)
    import base64

    return base64.b64encode(der).decode(), cert.not_valid_after_utc.strftime("%Y-%m-%d")


def _idp_metadata(tmp_path: Any, days: int) -> str:
    b64, _ = _cert(days)
    xml = f"""<?xml version="1.0"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#"
    entityID="https://accounts.google.com/o/saml2?idpid=C0test">
  <md:IDPSSODescriptor WantAuthnRequestsSigned="false" protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{b64}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    <md:NameIDFormat>urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress</md:NameIDFormat>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://accounts.google.com/o/saml2/idp?idpid=C0test"/>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="https://accounts.google.com/o/saml2/idp?idpid=C0test"/>
  </md:IDPSSODescriptor>
</md:EntityDescriptor>
"""
    path = tmp_path / "idp-metadata.xml"
    path.write_text(xml)
    return str(path)


def saml_app(tmp_path: Any, days: int = 365, **config: Any) -> Flask:
    pytest.importorskip("saml2")
    cfg = {"auth": {"providers": {"google": {
        "provider": "saml", "idpMetadata": _idp_metadata(tmp_path, days), "spEntityId": "https://portal.example.com",
        "attributeMapping": {"email": "email", "groups": "groups"}}}},
        "session": {"cookieSecure": True}}
    try:
        return make(tmp_path, cfg, **config)
    except (ImportError, KeyError, AttributeError) as exc:  # the SAML provider is still being built
        pytest.xfail(f"SAML provider not available yet: {exc!r}")


def test_sp_metadata_with_base_url(tmp_path: Any) -> None:
    app = saml_app(tmp_path)
    result = run(app, "sp-metadata", "google", "--base-url", "https://portal.example.com")
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith("<?xml") and 'entityID="https://portal.example.com"' in out
    assert 'Location="https://portal.example.com/sso/google/acs"' in out
    assert "https://portal.example.com/sso/google/slo" in out


def test_sp_metadata_from_server_name(tmp_path: Any) -> None:
    app = saml_app(tmp_path, SERVER_NAME="sso.example.org", PREFERRED_URL_SCHEME="https")
    result = run(app, "sp-metadata", "google")
    assert result.exit_code == 0, result.output
    assert 'Location="https://sso.example.org/sso/google/acs"' in result.output


def test_sp_metadata_needs_a_base_url(tmp_path: Any) -> None:
    result = run(saml_app(tmp_path), "sp-metadata", "google")
    assert result.exit_code == 2 and "--base-url" in result.output


def test_sp_metadata_refuses_oidc_and_unknown(tmp_path: Any, op: Any) -> None:
    app = make(tmp_path, oidc(op))
    result = run(app, "sp-metadata", "op", "--base-url", "https://portal.example.com")
    assert result.exit_code == 2 and "not SAML" in result.output
    result = run(app, "sp-metadata", "nope", "--base-url", "https://portal.example.com")
    assert result.exit_code == 2 and "no provider 'nope'" in result.output


def test_check_config_reads_saml_metadata_and_certificates(tmp_path: Any) -> None:
    result = run(saml_app(tmp_path, days=365), "check-config")
    assert "IdP metadata OK (entity https://accounts.google.com/o/saml2?idpid=C0test)" in result.output, result.output
    assert "IdP signing cert #1: certificate valid until" in result.output
    assert result.exit_code == 0, result.output


def test_check_config_warns_about_a_certificate_close_to_expiry(tmp_path: Any) -> None:
    result = run(saml_app(tmp_path, days=5), "check-config")
    assert result.exit_code == 1, result.output
    assert "IdP signing cert #1: certificate expires in" in result.output


def test_allowed_networks_without_trusted_proxies_warns(tmp_path):
    from flask import Flask

    from flask_ccsso import CCSSO
    from flask_ccsso.stores import MemoryStore

    app = Flask("netcheck", instance_path=str(tmp_path / "i"))
    app.config.update(SECRET_KEY="k" * 32, CCSSO={
        "auth": {"provider": "oidc", "clientId": "c", "issuer": "https://idp.example.com"},
        "skills": {"ops": {"allowedNetworks": ["10.0.0.0/8"]}},
        "logging": {"level": "off"}})
    CCSSO(app, store=MemoryStore())
    from flask_ccsso.cli import cli

    result = app.test_cli_runner().invoke(cli, ["check-config", "--offline"])
    assert "allowedNetworks" in result.output and "CCSSO_TRUSTED_PROXIES" in result.output
    assert result.exit_code == 1


def test_a_spool_directory_others_can_write_is_an_error(tmp_path: Any, op: Any) -> None:
    """Found now, not during the first sink outage (when the spool is first needed)."""
    shared = tmp_path / "shared-spool"
    shared.mkdir()
    shared.chmod(0o777)
    cfg = oidc(op)
    cfg["logging"] = {"level": "audit", "spoolDir": str(shared), "destinations": [{"type": "logging"}]}
    result = run(make(tmp_path, cfg), "check-config")
    assert result.exit_code == 2, result.output
    assert "spool directory" in result.output and "writable by other users" in result.output
    shared.chmod(0o700)
    result = run(make(tmp_path, cfg), "check-config")
    assert "spool directory" in result.output and "is private" in result.output
