"""Fixtures of the security tests only (shared ones, e.g. ``idp`` and ``saml_portal``, are in tests/conftest.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from typing import Any

import pytest

from tests.security.idp_endpoints import ScriptedIdP
from tests.security.saml_encryption import SKILLS, Recorder, provider_block
from tests.support.local_op import LocalOP
from tests.support.saml_idp import KeyPair, SAMLIdP, make_keypair


@pytest.fixture
def sp_keys(tmp_path: Any) -> KeyPair:
    """The SP's own key pair (the IdP encrypts assertions to its certificate)."""
    return make_keypair(str(tmp_path / "sp"), "sp")


@pytest.fixture
def encrypted_portal(make_app: Any, idp: SAMLIdP, tmp_path: Any, sp_keys: KeyPair) -> Callable[..., Any]:
    """(app, client): one SAML provider ``google`` with the SP key pair configured."""

    def build(**over: Any):
        meta = idp.write_metadata(str(tmp_path / "idp-metadata.xml"))
        block = provider_block(meta, spCertificate=sp_keys.cert_path, spPrivateKey=sp_keys.key_path, **over)
        app = make_app({"auth": {"providers": {"google": block}}, "skills": SKILLS,
                        "session": {"cookieSecure": False}})
        client = app.test_client()
        idp.trust_sp(client.get("/sso/google/metadata").data.decode())
        return app, client

    return build


@pytest.fixture
def canary() -> Iterator[Any]:
    """A real HTTP server on 127.0.0.1: ``.url`` and ``.hits`` (paths requested)."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    srv.hits = []  # type: ignore[attr-defined]
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"  # type: ignore[attr-defined]
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture(scope="module")
def scripted_idp_server() -> Iterator[ScriptedIdP]:
    """One scripted IdP server per module (introspection / userinfo answers the test sets)."""
    idp = ScriptedIdP()
    yield idp
    idp.close()


@pytest.fixture
def scripted_idp(op: LocalOP, scripted_idp_server: ScriptedIdP) -> ScriptedIdP:
    """The module's scripted IdP, reset and serving for ``op`` (its introspection and userinfo endpoints)."""
    scripted_idp_server.reset()
    scripted_idp_server.serve_for(op)
    return scripted_idp_server
