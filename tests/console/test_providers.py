"""The console's identity-providers section: fetch status, certificate ends (30 / 7 days, expired), check-config."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from joserfc.jwk import RSAKey

from flask_ccsso import signals
from flask_ccsso.state import get_state
from flask_ccsso.testing import listen_to
from tests.support.console import CONSOLE, OPERATOR, certificate, console_config
from tests.support.console_audit import submit
from tests.support.saml import provider_block
from tests.support.saml_idp import SAMLIdP


def _page(app: Any, **query: Any) -> str:
    resp = app.test_client(identity=OPERATOR).get(f"{CONSOLE}/providers", query_string=query)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_data(as_text=True)


def _saml_app(make_app: Any, op: Any, tmp_path: Any, *, idp_days: float, sp_days: float | None = None) -> Any:
    """The console app with a SAML provider ``corp`` whose IdP signs with a certificate ending in ``idp_days``."""
    idp = SAMLIdP(str(tmp_path / "idp"), keys=certificate(str(tmp_path / "idp"), "corp-idp", days_left=idp_days))
    meta = idp.write_metadata(str(tmp_path / "idp-metadata.xml"))
    cfg = console_config(op)
    block = provider_block(meta)
    if sp_days is not None:
        sp = certificate(str(tmp_path / "sp"), "portal-sp", days_left=sp_days)
        block.update(spCertificate=sp.cert_path, spPrivateKey=sp.key_path)
    cfg["auth"]["providers"]["corp"] = block
    return make_app(cfg)


def _certificate_row(page: str, label: str) -> str:
    m = re.search(rf'<tr data-certificate="{re.escape(label)}" data-level="(\w+)">(.*?)</tr>', page, re.DOTALL)
    assert m, page
    return m.group(0)


@pytest.mark.parametrize(("days", "level", "expiry", "notice"), [
    (5, "urgent", 'data-expiry="7"', "urgent"),
    (20, "warning", 'data-expiry="30"', "warning"),
    (-3, "expired", 'data-expiry="expired"', "expired"),
    (200, "ok", 'data-expiry="ok"', None),
])
def test_saml_idp_signing_certificate_end_is_warned(make_app: Any, op: Any, tmp_path: Any, days: float, level: str,
                                                     expiry: str, notice: str | None) -> None:
    from flask_ccsso.testing import CCSSOTestClient

    app = _saml_app(make_app, op, tmp_path, idp_days=days)
    app.test_client_class = CCSSOTestClient
    page = _page(app)
    row = _certificate_row(page, "IdP signing certificate 1")
    assert f'data-level="{level}"' in row and expiry in row and "CN=corp-idp" in row
    notices = re.findall(r'data-certificate-notice="(\w+)" data-provider="(\w+)"', page)
    assert notices == ([(notice, "corp")] if notice else [])
    if notice:  # the notice is at the top, before the providers' own sections
        assert page.index("data-certificate-notice") < page.index('id="provider-op"')
    assert "https://idp.example.test/saml" in page  # the IdP entity id, from the metadata
    assert re.search(r'<tr data-document="SAML metadata">.*?<span class="badge ok">yes</span>', page, re.DOTALL)


def test_the_sp_certificate_end_is_shown_too(make_app: Any, op: Any, tmp_path: Any) -> None:
    from flask_ccsso.testing import CCSSOTestClient

    app = _saml_app(make_app, op, tmp_path, idp_days=365, sp_days=10)
    app.test_client_class = CCSSOTestClient
    row = _certificate_row(_page(app), "SP certificate (this app)")
    assert 'data-level="warning"' in row and "CN=portal-sp" in row


def test_oidc_discovery_age_and_last_error(console_app: Any, op: Any, clock: Any) -> None:
    app = console_app()
    hits = op.discovery_hits
    page = _page(app)
    assert op.discovery_hits == hits  # showing the page reaches no IdP
    assert re.search(r'<tr data-document="discovery document">.*?not fetched yet', page, re.DOTALL)
    assert 'data-status="unknown"' in page
    prov = get_state(app).providers["op"]
    prov.metadata()
    clock.advance(300)
    page = _page(app)
    assert re.search(r'data-field="last-success">5 min ago<', page)
    assert re.search(r'<tr data-document="discovery document">.*?<span class="badge ok">yes</span>', page, re.DOTALL)
    assert f"Issuer</th><td>{op.issuer}</td>" in page
    # the IdP goes down: the cached copy serves on, the error is shown
    op.down = True
    clock.advance(prov.settings.discovery_ttl + 1)
    prov.metadata()
    page = _page(app)
    assert 'data-status="degraded"' in page and "data-unavailable" not in page
    error = re.search(r'data-field="last-error">(.*?)</td>', page, re.DOTALL).group(1)
    assert "503" in error or "discovery" in error


def test_oidc_jwks_key_certificate_end_is_warned(console_app: Any, op: Any, tmp_path: Any) -> None:
    pair = certificate(str(tmp_path), "op-signing", days_left=5)
    der = base64.b64encode(base64.b64decode("".join(pair.cert_pem.splitlines()[1:-1]))).decode()
    keyed = RSAKey.import_key(pair.key_pem, parameters={"kid": "k-x5c", "use": "sig", "alg": "RS256", "x5c": [der]})
    op.keys = [keyed, op.key]  # the op fixture keeps the last one for the next test
    app = console_app()
    get_state(app).providers["op"].jwks.keyset()
    page = _page(app)
    row = _certificate_row(page, "JWKS key k-x5c")
    assert 'data-level="urgent"' in row and "CN=op-signing" in row
    assert 'data-certificate-notice="urgent" data-provider="op"' in page


def test_check_config_findings_render_only_when_asked(console_app: Any, op: Any) -> None:
    app = console_app()
    page = _page(app)
    assert 'id="check-findings"' not in page and 'id="run-checks"' in page
    assert 'id="check-findings"' not in _page(app, check=1)  # a link (the old ?check=1) reaches no IdP
    client = app.test_client(identity=OPERATOR)
    with listen_to(signals.permission_denied) as denied:
        forged = client.post(f"{CONSOLE}/providers", headers={"Accept": "text/html"})  # no token: refused
    assert forged.status_code == 400 and [d.kwargs["reason"] for d in denied] == ["csrf_failed"]
    resp = submit(client, client.get(f"{CONSOLE}/providers").get_data(as_text=True), "run-checks-form", "run-checks")
    assert resp.status_code == 200
    page = resp.get_data(as_text=True)
    table = page[page.index('id="check-findings"'):]
    assert "<caption>" in table
    assert f"provider op: discovery document OK (issuer {op.issuer})." in table
    assert re.search(r'<tr data-level="warning">.*?session cookie', table, re.DOTALL)  # cookieSecure false
    assert 'data-level="error"' not in table


def test_the_overview_counts_certificate_warnings_and_failing_providers(make_app: Any, op: Any,
                                                                         tmp_path: Any) -> None:
    from flask_ccsso.exceptions import IdPUnavailable
    from flask_ccsso.testing import CCSSOTestClient

    app = _saml_app(make_app, op, tmp_path, idp_days=5)
    app.test_client_class = CCSSOTestClient
    op.down = True
    with pytest.raises(IdPUnavailable):
        get_state(app).providers["op"].metadata()
    resp = app.test_client(identity=OPERATOR).get(f"{CONSOLE}/")
    page = resp.get_data(as_text=True)
    assert re.search(r'id="count-certificates" class="bad">\s*<span class="number">1<', page)
    assert re.search(r'id="count-provider-errors" class="bad"><span class="number">1<', page)
    assert 'id="certificate-alert"' in page and "IdP signing certificate 1 of corp" in page
    assert 'data-unavailable="op"' in page
    providers = _page(app)
    assert 'data-unavailable="op"' in providers and 'data-status="unavailable"' in providers
