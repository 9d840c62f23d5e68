"""Operator console test helpers: a config with the console on, its operators, browsers that sign in
through the local OP from a given address and user agent, reading the pages, and certificates that
expire when a test says."""

from __future__ import annotations

import copy
import datetime as dt
import os
import re
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from flask_ccsso.testing import csrf_token_in
from tests.support.oidc import oidc_config
from tests.support.saml_idp import KeyPair
from tests.support.sessions import login

#: the console skill of the tests: sensitive (step-up), granted by one group
OPERATOR_SKILL = "sso-operator"
OPERATOR_GROUP = "sso-operators"
#: an identity holding the console skill (sign in with ``client.sign_in(OPERATOR)``)
OPERATOR: dict[str, Any] = {"subject": "olivia", "email": "olivia@example.com", "groups": [OPERATOR_GROUP]}
#: a signed-in person without it
PERSON: dict[str, Any] = {"subject": "bob", "email": "bob@example.com", "groups": ["developers"]}


def console_config(op: Any, *, store: dict[str, Any] | None = None, audit_url: str | None = None,
                   **console: Any) -> dict[str, Any]:
    """``oidc_config(op)`` with the operator skill and ``console.enabled`` (plus ``console`` overrides);
    with ``audit_url`` every event goes to that SQL audit table."""
    cfg = copy.deepcopy(oidc_config(op))
    cfg["skills"][OPERATOR_SKILL] = {"allowedGroups": [OPERATOR_GROUP], "sensitive": True, "maxAuthAge": 600,
                                     "description": "Operate single sign-on: sessions, audit, providers."}
    cfg["console"] = {"enabled": True, "skill": OPERATOR_SKILL, **console}
    if store is not None:
        cfg["session"]["store"] = store
    if audit_url is not None:
        cfg["logging"] = {"level": "audit", "flushInterval": 0.05,
                          "destinations": [{"type": "sqlalchemy", "name": "audit-db", "url": audit_url}]}
    return cfg


#: the console's pages
CONSOLE = "/sso-console"
_ROW = re.compile(r'<tr data-session="([0-9a-f]{12})" data-user="([^"]*)">')


def browser(app: Any, op: Any, *, subject: str, email: str, ip: str, ua: str,
            groups: list[str] | None = None) -> Any:
    """A test client signed in through the local OP (the real sign-in) from address ``ip`` with
    ``User-Agent: ua``; every later request comes from there too."""
    client = app.test_client()
    client.environ_base.update(REMOTE_ADDR=ip, HTTP_USER_AGENT=ua)
    login(client, op, id_claims={"sub": subject, "email": email, "groups": groups or ["developers"]})
    return client


def listed(html: str) -> list[tuple[str, str]]:
    """``(fingerprint, provider:subject)`` of every row of the page's session tables."""
    return _ROW.findall(html)


def confirm_and_post(client: Any, confirm_url: str) -> Any:
    """Open a confirmation page and post its form back with its CSRF token (what a browser does)."""
    page = client.get(confirm_url)
    assert page.status_code == 200, page.get_data(as_text=True)
    html = page.get_data(as_text=True)
    action = re.search(r'<form method="post" action="([^"]+)" id="confirm-form">', html)
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', html))
    assert action and csrf_token_in(html) == fields["csrf_token"]
    return client.post(action.group(1), data={k: _unescape(v) for k, v in fields.items()})


def _unescape(value: str) -> str:
    return value.replace("&#34;", '"').replace("&#39;", "'").replace("&lt;", "<").replace("&gt;", ">") \
        .replace("&amp;", "&")


def certificate(directory: str, cn: str, *, days_left: float) -> KeyPair:
    """A self-signed key pair whose certificate ends ``days_left`` days from now (negative: expired)
    -- an IdP's or SP's signing certificate, as :func:`tests.support.saml_idp.make_keypair` makes them."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.timezone.utc)
    not_after = now + dt.timedelta(days=days_left)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(min(now, not_after) - dt.timedelta(days=30))
            .not_valid_after(not_after).sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    os.makedirs(directory, exist_ok=True)
    key_path, cert_path = os.path.join(directory, f"{cn}.key"), os.path.join(directory, f"{cn}.crt")
    for path, text in ((key_path, key_pem), (cert_path, cert_pem)):
        with open(path, "w") as fh:
            fh.write(text)
    return KeyPair(key_path, cert_path, key_pem, cert_pem)
