"""Who verifies SAML signatures (``xmlsecBackend``), and the xmlsec1 program's environment.

* ``auto`` (the default): the in-process ``xmlsec`` binding when it loads --
  the SAML suite passes against both verifiers (tests/conftest.py runs every
  SAML module once per verifier) -- else the xmlsec1 program, said once in
  the log at start-up;
* ``binding``: required, a ConfigError naming the key when it cannot load;
* ``xmlsec1``: always the program.

The program never loads a trust store: about three quarters of its CPU went to
reading the system CA bundle, which no verification here uses.
"""

from __future__ import annotations

import logging
import os
import sys

import pytest

from flask_ccsso.exceptions import ConfigError
from flask_ccsso.providers import saml_binding
from flask_ccsso.providers.saml_xmlsec import run
from tests.support.saml import SKILLS, login, post, provider_block
from tests.support.saml_idp import User


@pytest.fixture
def portal(make_app, idp, tmp_path):
    def build(**over):
        meta = idp.write_metadata(str(tmp_path / "idp-metadata.xml"))
        app = make_app({"auth": {"providers": {"google": provider_block(meta, **over)}}, "skills": SKILLS,
                        "session": {"cookieSecure": False}})
        client = app.test_client()
        idp.trust_sp(client.get("/sso/google/metadata").data.decode())
        return app, client

    return build


def backend_of(app) -> str:
    return app.extensions["ccsso"].providers["google"].xmlsec_runner.backend


@pytest.fixture
def binding_missing(monkeypatch):
    """The binding cannot be imported (as on an install without the saml-fast extra)."""
    monkeypatch.setitem(sys.modules, "xmlsec", None)  # ``import xmlsec`` raises ImportError
    monkeypatch.setattr(saml_binding, "_loaded", False)
    monkeypatch.setattr(saml_binding, "_ERROR", None)


@pytest.mark.skipif(saml_binding.available() is not None, reason="the xmlsec binding is not installed")
def test_the_binding_is_the_default_and_signs_people_in(portal, idp, monkeypatch):
    from tests.interop.test_saml_interop import count_xmlsec

    app, client = portal()
    assert backend_of(app) == "binding"
    data = idp.respond(login(client), User())
    calls = count_xmlsec(monkeypatch)
    assert post(client, data).status_code == 303
    assert calls == [["xmlsec-binding", "--verify"]]   # verified in-process: no xmlsec1 process started
    assert client.get("/me").get_json()["email"] == "alice@example.com"


def test_xmlsec1_on_request(portal, idp, monkeypatch):
    from tests.interop.test_saml_interop import count_xmlsec

    app, client = portal(xmlsecBackend="xmlsec1")
    assert backend_of(app) == "xmlsec1"
    data = idp.respond(login(client), User())
    calls = count_xmlsec(monkeypatch)
    assert post(client, data).status_code == 303
    assert [c[1] for c in calls] == ["--verify"] and calls[0][0].endswith("xmlsec1")


def test_auto_falls_back_to_xmlsec1_with_one_log_line(portal, idp, binding_missing, caplog):
    with caplog.at_level(logging.INFO, logger="flask_ccsso"):
        app, client = portal()
    assert backend_of(app) == "xmlsec1"
    lines = [r.getMessage() for r in caplog.records if "xmlsec1 program" in r.getMessage()]
    assert len(lines) == 1 and "not installed" in lines[0] and "saml-fast" in lines[0], lines
    assert post(client, idp.respond(login(client), User())).status_code == 303


def test_binding_required_but_missing_is_a_config_error(portal, binding_missing):
    with pytest.raises(ConfigError) as err:
        portal(xmlsecBackend="binding")
    assert err.value.path.endswith("google.xmlsecBackend")
    assert "not installed" in str(err.value) and "saml-fast" in str(err.value)


def test_an_unknown_backend_is_a_config_error(portal):
    with pytest.raises(ConfigError) as err:
        portal(xmlsecBackend="fast")
    assert err.value.path.endswith("google.xmlsecBackend")
    assert "auto, binding, xmlsec1" in str(err.value)


def test_xmlsec1_runs_without_a_trust_store():
    """The program's environment names no CA bundle to load (and no proxy that answers)."""
    done = run(["/usr/bin/env"])
    env = dict(line.split("=", 1) for line in done.stdout.decode().splitlines())
    assert env["SSL_CERT_FILE"] == os.devnull and env["SSL_CERT_DIR"] == os.devnull
    assert env["http_proxy"].startswith("http://127.0.0.1:1")
