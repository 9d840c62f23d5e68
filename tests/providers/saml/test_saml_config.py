"""SAML provider from config: the seed file, key pairs, SP metadata (XSD-valid)."""

from __future__ import annotations

import json
import os
import shutil
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask

from flask_ccsso import CCSSO
from flask_ccsso.config import parse_config
from flask_ccsso.exceptions import ConfigError
from flask_ccsso.stores import MemoryStore
from tests.support import DATA
from tests.support.saml_idp import SAMLIdP, make_keypair

SEED = DATA / "seed_configs" / "google-saml.json"
GOOGLE_METADATA = DATA / "saml" / "google-idp-metadata.xml"


def saml(**over):
    block = {"provider": "saml", "idpMetadata": str(GOOGLE_METADATA), "spEntityId": "https://portal.example.test"}
    block.update(over)
    return {"auth": {"providers": {"google": block}}, "session": {"cookieSecure": False}}


def make(tmp_path, config, clock=None, **flask_config):
    app = Flask(f"saml_cfg_{len(os.listdir(tmp_path))}", root_path=str(tmp_path), instance_path=str(tmp_path / "inst"))
    app.config.update(SECRET_KEY="t", TESTING=True, **flask_config)
    if config is not None:
        app.config["CCSSO"] = config
    CCSSO(app, store=MemoryStore(clock or (lambda: 1.9e9)))
    return app


def test_seed_config_loads_unchanged(tmp_path):
    """google-saml.json as shipped: idpMetadata ./idp-metadata.xml from the app root."""
    shutil.copy(SEED, tmp_path / "ccsso.json")
    shutil.copy(GOOGLE_METADATA, tmp_path / "idp-metadata.xml")
    import time

    app = make(tmp_path, None, clock=time.time, CCSSO_CONFIG_FILE="ccsso.json")
    prov = app.extensions["ccsso"].providers["saml"]
    assert prov.type == "saml" and prov.protocol == "saml"
    assert prov.settings.attribute_mapping["groups"] == "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups"
    client = app.test_client()
    resp = client.get("/sso/saml/login?next=/x")
    assert resp.status_code == 302
    loc = urlsplit(resp.headers["Location"])
    assert loc.netloc == "accounts.google.com" and loc.path == "/o/saml2/idp"
    q = parse_qs(loc.query)
    assert q["idpid"] == ["C0test123"] and "SAMLRequest" in q and "Signature" not in q
    assert "/x" not in q["RelayState"][0]
    md = client.get("/sso/saml/metadata")
    assert md.status_code == 200 and md.mimetype == "application/samlmetadata+xml"
    assert b'entityID="https://claude.yourcompany.com"' in md.data
    # Google publishes no SLO endpoint: logout stays local
    assert prov.logout_url({"name_id": "a@b.c", "session_index": "s"}, "http://localhost/sso/logged-out") is None


def _validate_xsd(xml: str) -> None:
    from saml2.xml.schema import validate

    validate(xml)  # raises saml2.xml.schema.XMLSchemaError


def test_sp_metadata_validates_against_the_saml_metadata_xsd(tmp_path):
    sp = make_keypair(str(tmp_path / "k"), "sp")
    app = make(tmp_path, saml(spCertificate=sp.cert_path, spPrivateKey=sp.key_path, signAuthnRequests=True))
    xml = app.test_client().get("/sso/google/metadata").data.decode()
    _validate_xsd(xml)
    assert 'AuthnRequestsSigned="true"' in xml and 'WantAssertionsSigned="true"' in xml
    assert "http://localhost/sso/google/acs" in xml and "http://localhost/sso/google/slo" in xml
    assert sp.cert_b64[:40] in xml.replace("\n", "")
    # without keys too
    xml = make(tmp_path, saml()).test_client().get("/sso/google/metadata").data.decode()
    _validate_xsd(xml)


def test_sp_metadata_xsd_check_catches_a_broken_document():
    from saml2.xml.schema import XMLSchemaError

    with pytest.raises(XMLSchemaError):
        _validate_xsd('<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata"/>')


def test_acs_url_from_config_is_used(tmp_path):
    app = make(tmp_path, saml(acsUrl="https://portal.example.test/saml/acs"))
    xml = app.test_client().get("/sso/google/metadata").data.decode()
    assert 'Location="https://portal.example.test/saml/acs"' in xml


def test_key_pair_as_pem_text_from_env(tmp_path, monkeypatch):
    sp = make_keypair(str(tmp_path / "k"), "sp")
    monkeypatch.setenv("SP_KEY", sp.key_pem)
    monkeypatch.setenv("SP_CERT", sp.cert_pem)
    app = make(tmp_path, saml(spCertificate="${SP_CERT}", spPrivateKey="${SP_KEY}", signAuthnRequests=True))
    loc = app.test_client().get("/sso/google/login").headers["Location"]
    assert "Signature=" in loc and "SigAlg=" in loc
    key_file, _ = app.extensions["ccsso"].providers["google"].keys()
    assert oct(os.stat(key_file).st_mode & 0o777) == "0o600"


def test_literal_private_key_in_a_config_file_is_refused(tmp_path):
    sp = make_keypair(str(tmp_path / "k"), "sp")
    (tmp_path / "c.json").write_text(json.dumps(saml(spCertificate=sp.cert_path, spPrivateKey=sp.key_pem)))
    with pytest.raises(ConfigError) as e:
        make(tmp_path, None, CCSSO_CONFIG_FILE="c.json")
    assert e.value.path == "auth.providers.google.spPrivateKey"


@pytest.mark.parametrize("over, path", [
    ({"signAuthnRequests": True}, "signAuthnRequests"),
    ({"spCertificate": "/x.crt"}, "spPrivateKey"),
    ({"wantAssertionsSigned": False}, "wantAssertionsSigned"),
    ({"attributeMapping": {"mail": "x"}}, "attributeMapping.mail"),
    ({"idpMetadata": "http://idp.example.com/md"}, "idpMetadata"),
])
def test_config_errors_name_the_key(over, path):
    with pytest.raises(ConfigError) as e:
        parse_config(saml(**over))
    assert e.value.path == f"auth.providers.google.{path}"


def test_mismatched_key_pair_is_refused_at_startup(tmp_path):
    a = make_keypair(str(tmp_path / "a"), "a")
    b = make_keypair(str(tmp_path / "b"), "b")
    with pytest.raises(ConfigError) as e:
        make(tmp_path, saml(spCertificate=a.cert_path, spPrivateKey=b.key_path))
    assert e.value.path == "auth.providers.google.spCertificate"


def test_expired_or_foreign_metadata_file_is_refused_at_startup(tmp_path):
    bad = tmp_path / "md.xml"
    bad.write_text(GOOGLE_METADATA.read_text().replace("2030-12-31", "2020-12-31"))
    with pytest.raises(ConfigError, match="expired"):
        make(tmp_path, saml(idpMetadata=str(bad)))
    with pytest.raises(ConfigError, match="no identity provider"):
        make(tmp_path, saml(idpEntityId="https://someone-else.example"))
    bad.write_text(GOOGLE_METADATA.read_text().replace('<?xml version="1.0" encoding="UTF-8" standalone="no"?>',
                                                       '<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'))
    with pytest.raises(ConfigError, match="DOCTYPE"):
        make(tmp_path, saml(idpMetadata=str(bad)))


def test_missing_relative_metadata_fails_at_start_up(tmp_path):
    """Relative paths resolve against the app root at init_app, so a missing
    file is a ConfigError naming the key, not a broken first sign-in."""
    with pytest.raises(ConfigError) as exc:
        make(tmp_path, saml(idpMetadata="./nowhere.xml"))
    assert exc.value.path.endswith("idpMetadata")


def test_relative_metadata_resolves_against_app_root(tmp_path):
    idp = SAMLIdP(str(tmp_path / "idp2"))
    idp.write_metadata(str(tmp_path / "idp-metadata.xml"))
    app = make(tmp_path, saml(idpMetadata="./idp-metadata.xml"))
    assert app.extensions["ccsso"].providers["google"]


def test_scopes_from_groups_and_pysaml2_flags(tmp_path):
    idp = SAMLIdP(str(tmp_path / "idp"))
    meta = idp.write_metadata(str(tmp_path / "m.xml"))
    app = make(tmp_path, saml(idpMetadata=meta, wantResponseSigned=True, scopesFromGroups={"a": ["x:y"]}))
    prov = app.extensions["ccsso"].providers["google"]
    assert prov.settings.scopes_from_groups == {"a": ("x:y",)}
    with app.test_request_context():
        client = prov._client("http://localhost/sso/google/acs")
    assert client.want_assertions_signed is True and client.want_response_signed is True
    assert client.allow_unsolicited is False
