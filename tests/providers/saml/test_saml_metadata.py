"""URL metadata: cached in memory, refreshed per cacheDuration / validUntil,
last good copy kept while the IdP is down, key rollover without a restart.
A local HTTP server on 127.0.0.1 serves metadata the tests change."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from flask_ccsso.providers.saml_metadata import MetadataError, parse_duration, parse_idp_metadata
from tests.support.saml_idp import SAMLIdP, User, make_keypair

SKILLS = {"database-migration": {"allowedGroups": ["database-admins"]}}


class MetadataServer:
    def __init__(self) -> None:
        self.body = b""
        self.status = 200
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/samlmetadata+xml")
                self.end_headers()
                self.wfile.write(outer.body if outer.status == 200 else b"down")

            def log_message(self, *a: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/metadata"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def mdserver() -> Iterator[MetadataServer]:
    s = MetadataServer()
    yield s
    s.close()


@pytest.fixture
def setup(make_app, tmp_path, mdserver, clock):
    idp = SAMLIdP(str(tmp_path / "idp"))

    def build(**kw: Any):
        mdserver.body = idp.metadata_xml(**kw).encode()
        app = make_app({"auth": {"providers": {"google": {
            "provider": "saml", "idpMetadata": mdserver.url, "spEntityId": "https://portal.example.test",
            "metadataRefresh": 3600,
            "attributeMapping": {"email": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress"}}}},
            "skills": SKILLS, "session": {"cookieSecure": False}})
        client = app.test_client()
        idp.trust_sp(client.get("/sso/google/metadata").data.decode())
        return app, client, app.extensions["ccsso"].providers["google"]

    return idp, build


def sign_in(client, idp) -> int:
    loc = client.get("/sso/google/login?next=/me").headers["Location"]
    return client.post("/sso/google/acs", data=idp.respond(loc, User())).status_code


def test_url_metadata_is_cached_and_refreshed_on_schedule(setup, mdserver, clock):
    idp, build = setup
    _app, client, prov = build()
    assert mdserver.hits == 0   # nothing fetched at start-up
    assert sign_in(client, idp) == 303 and sign_in(client, idp) == 303
    assert mdserver.hits == 1
    clock.advance(3601)
    prov.idp()
    assert mdserver.hits == 2


def test_cache_duration_and_valid_until_shorten_the_schedule(setup, mdserver, clock):
    _idp, build = setup
    _app, _client, prov = build(cache_duration="PT10M")
    prov.idp()
    clock.advance(599)
    prov.idp()
    assert mdserver.hits == 1
    clock.advance(2)
    prov.idp()
    assert mdserver.hits == 2


def test_last_good_copy_kept_while_unreachable_until_valid_until(setup, mdserver, clock):
    idp, build = setup
    _app, client, prov = build(valid_hours=2)
    assert sign_in(client, idp) == 303
    mdserver.status = 500
    clock.advance(3601)
    before = prov.idp()
    assert client.get("/sso/google/login").status_code == 302   # stale but valid copy
    assert prov.idp() is before
    hits = mdserver.hits
    prov.idp()
    assert mdserver.hits == hits             # retry is rate-limited
    clock.advance(3 * 3600)                  # past validUntil, IdP still down
    resp = client.get("/sso/google/login", headers={"Accept": "application/json"})
    assert resp.status_code == 503


def test_first_fetch_failure_is_503(setup, mdserver):
    _idp, build = setup
    _app, client, _prov = build()
    mdserver.status = 404
    resp = client.get("/sso/google/login", headers={"Accept": "application/json"})
    assert resp.status_code == 503 and resp.get_json()["error"] == "idp_unavailable"


def test_certificate_rollover_without_restart(setup, mdserver, tmp_path, clock):
    idp, build = setup
    _app, client, prov = build()
    assert sign_in(client, idp) == 303
    # the IdP adds a new key to its metadata and starts signing with it
    new = make_keypair(str(tmp_path / "new"), "idp-new")
    old = idp.keys
    idp.extra_certs = [new.cert_b64]
    mdserver.body = idp.metadata_xml().encode()
    idp.keys, idp.extra_certs = new, [old.cert_b64]
    idp._server = None
    clock.advance(5)   # well before the scheduled refresh
    assert sign_in(client, idp) == 303
    assert new.cert_b64 in prov.idp().signing_certs
    # an unknown key again within the cooldown: no refetch, refused
    hits = mdserver.hits
    rogue = make_keypair(str(tmp_path / "rogue"), "rogue")
    idp.keys = rogue
    idp._server = None
    assert sign_in(client, idp) == 400
    assert mdserver.hits == hits


def test_parse_duration():
    assert parse_duration("PT1H") == 3600
    assert parse_duration("P1DT30M") == 86400 + 1800
    assert parse_duration(None) is None
    with pytest.raises(MetadataError):
        parse_duration("1 hour")


def test_metadata_with_several_idps_needs_idp_entity_id(tmp_path):
    a = SAMLIdP(str(tmp_path / "a"), entity_id="https://a.example/saml", cn="a").metadata_xml()
    b = SAMLIdP(str(tmp_path / "b"), entity_id="https://b.example/saml", cn="b").metadata_xml()
    strip = lambda x: x.split("?>", 1)[-1]
    doc = ('<md:EntitiesDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata">'
           + strip(a) + strip(b) + "</md:EntitiesDescriptor>").encode()
    with pytest.raises(MetadataError, match="idpEntityId"):
        parse_idp_metadata(doc, entity_id=None, now=0)
    md = parse_idp_metadata(doc, entity_id="https://b.example/saml", now=0)
    assert md.entity_id == "https://b.example/saml" and "a.example" not in md.xml
