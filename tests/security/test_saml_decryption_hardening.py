"""Issue #10 item 2: XML decryption must not fetch, read files, burn CPU or
memory on the attacker's behalf.

0.1.0 handed attacker-controlled XML-Enc to ``xmlsec1 --decrypt`` with no URI
or key-data restrictions and no limits: a ``CipherReference`` or
``RetrievalMethod`` URI made the server fetch any URL (blind SSRF),
``file:///dev/zero`` grew xmlsec1 to GiBs, an XPath transform burned minutes
of CPU.

The class: before any decryption the EncryptedAssertion must match an
allow-list (EncryptedData > EncryptionMethod + KeyInfo/EncryptedKey(RSA-OAEP,
CipherValue) + CipherValue, nothing else); and xmlsec1 itself runs with
every URI kind but "empty" disabled, key data limited to the inline
EncryptedKey, a wall-clock timeout, a CPU limit and an address-space limit.
Each attack below is refused with a 400 quickly, without a single request to
the loopback server and without starting xmlsec1.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from typing import Any

import pytest

from flask_ccsso.exceptions import AuthenticationFailed
from tests.security.saml_encryption import XENC, count_xmlsec, login, post, wrap_and_encrypt_assertion
from tests.support.saml_idp import User, decode_form

RSA_OAEP = f"{XENC}rsa-oaep-mgf1p"
XPATH_BOMB = ('<ds:Transform Algorithm="http://www.w3.org/TR/1999/REC-xpath-19991116">'
              "<ds:XPath>count(//. | //@* | //namespace::*) &gt; 0</ds:XPath></ds:Transform>")
#: the data CipherData: the last one, after the KeyInfo
_DATA_CIPHER = re.compile(r"(</ds:KeyInfo>)<xenc:CipherData><xenc:CipherValue>[^<]*</xenc:CipherValue></xenc:CipherData>")
_KEY_INFO = re.compile(r"<ds:KeyInfo><xenc:EncryptedKey>.*?</xenc:EncryptedKey></ds:KeyInfo>", re.DOTALL)
_KEY_CIPHER = re.compile(r"(<xenc:EncryptedKey><xenc:EncryptionMethod [^>]*/>)<xenc:CipherData>")
_ENCRYPTED_KEY = re.compile(r"<xenc:EncryptedKey>.*?</xenc:EncryptedKey>", re.DOTALL)


def _cipher_reference(uri: str, transforms: str = "") -> str:
    inner = f"<xenc:Transforms>{transforms}</xenc:Transforms>" if transforms else ""
    return f'<xenc:CipherData><xenc:CipherReference URI="{uri}">{inner}</xenc:CipherReference></xenc:CipherData>'


def hostile(kind: str, xml: str, url: str) -> str:
    """One hostile variant of a genuine encrypted response."""
    if kind == "cipher-reference-http":
        out = _DATA_CIPHER.sub(lambda m: m.group(1) + _cipher_reference(f"{url}/cipher"), xml)
    elif kind == "cipher-reference-file":
        out = _DATA_CIPHER.sub(lambda m: m.group(1) + _cipher_reference("file:///dev/zero"), xml)
    elif kind == "cipher-reference-xpath":
        # a same-document reference (the Response) through an XPath transform: the CPU bomb
        rid = re.search(r'<\w+:Response [^>]*?\bID="([^"]+)"', xml).group(1)  # type: ignore[union-attr]
        out = _DATA_CIPHER.sub(lambda m: m.group(1) + _cipher_reference(f"#{rid}", XPATH_BOMB), xml)
    elif kind == "cipher-reference-http-xpath":
        out = _DATA_CIPHER.sub(lambda m: m.group(1) + _cipher_reference(f"{url}/x", XPATH_BOMB), xml)
    elif kind == "key-cipher-reference":
        ek = _ENCRYPTED_KEY.search(xml).group(0)  # type: ignore[union-attr]
        ek2 = re.sub(r"<xenc:CipherData><xenc:CipherValue>[^<]*</xenc:CipherValue></xenc:CipherData>",
                     _cipher_reference(f"{url}/key"), ek)
        out = xml.replace(ek, ek2)
    elif kind == "retrieval-method":
        out = _KEY_INFO.sub(f'<ds:KeyInfo><ds:RetrievalMethod URI="{url}/ek" '
                            f'Type="{XENC}EncryptedKey"/></ds:KeyInfo>', xml)
    elif kind == "retrieval-method-in-encrypted-key":
        out = _KEY_CIPHER.sub(lambda m: m.group(1) + f'<ds:KeyInfo><ds:RetrievalMethod URI="{url}/rsa"/>'
                              "</ds:KeyInfo><xenc:CipherData>", xml)
    elif kind == "nested-encrypted-key":
        ek = _ENCRYPTED_KEY.search(xml).group(0)  # type: ignore[union-attr]
        out = _KEY_CIPHER.sub(lambda m: m.group(1) + f"<ds:KeyInfo>{ek}</ds:KeyInfo><xenc:CipherData>", xml, count=1)
    elif kind == "encrypted-key-sibling":
        ek = _ENCRYPTED_KEY.search(xml).group(0)  # type: ignore[union-attr]
        sibling = ek.replace("<xenc:EncryptedKey>", f'<xenc:EncryptedKey xmlns:xenc="{XENC}" Id="ek1">', 1)
        out = _KEY_INFO.sub('<ds:KeyInfo><ds:RetrievalMethod URI="#ek1" '
                            f'Type="{XENC}EncryptedKey"/></ds:KeyInfo>', xml)
        out = re.sub(r"(</xenc:EncryptedData>)", lambda m: m.group(1) + sibling, out, count=1)
    elif kind == "rsa-1_5":
        out = xml.replace(RSA_OAEP, f"{XENC}rsa-1_5")
    elif kind == "encryption-properties":
        out = re.sub(r"(</xenc:CipherData>)(</xenc:EncryptedData>)",
                     lambda m: m.group(1) + f'<xenc:EncryptionProperties><xenc:EncryptionProperty Target="{url}/p"/>'
                     "</xenc:EncryptionProperties>" + m.group(2), xml)
    else:  # pragma: no cover
        raise AssertionError(kind)
    assert out != xml, kind
    return out


KINDS = ["cipher-reference-http", "cipher-reference-file", "cipher-reference-xpath", "cipher-reference-http-xpath",
         "key-cipher-reference", "retrieval-method", "retrieval-method-in-encrypted-key", "nested-encrypted-key",
         "encrypted-key-sibling", "rsa-1_5", "encryption-properties"]


@pytest.fixture
def genuine(encrypted_portal, idp, sp_keys):
    """(client, relay, xml): a genuine IdP-signed assertion, encrypted to the SP."""

    def build(**settings: Any):
        app, client = encrypted_portal(**settings)
        location = login(client)
        data = idp.respond(location, User())
        return app, client, data["RelayState"], wrap_and_encrypt_assertion(decode_form(data), sp_keys.cert_path)

    return build


@pytest.mark.parametrize("settings", [{}, {"wantAssertionsEncrypted": True}], ids=["default", "encryption-on"])
@pytest.mark.parametrize("kind", KINDS)
def test_hostile_encryption_shapes_are_refused_before_xmlsec1(genuine, canary, failures, monkeypatch, kind, settings):
    _app, client, relay, xml = genuine(**settings)
    bad = hostile(kind, xml, canary.url)
    calls = count_xmlsec(monkeypatch)
    t = time.perf_counter()
    resp = post(client, bad, relay, headers={"Accept": "application/json"})
    elapsed = time.perf_counter() - t
    assert resp.status_code == 400, resp.data
    assert failures and failures[-1]["reason"] == "invalid_response"
    assert canary.hits == []          # no SSRF, not even once
    assert calls == []                # the allow-list refused it: xmlsec1 never started
    assert elapsed < 2.0
    assert client.get("/me", headers={"Accept": "application/json"}).status_code == 401


def test_the_genuine_response_is_accepted(genuine):
    """The variants above start from a response that signs in when untouched."""
    _app, client, relay, xml = genuine(wantAssertionsEncrypted=True)
    resp = post(client, xml, relay)
    assert resp.status_code == 303, resp.data


# ------------------------------------------------------------------ xmlsec1 itself is hardened

def _provider(app):
    return app.extensions["ccsso"].providers["google"]


def test_xmlsec1_decrypt_does_not_dereference_even_without_the_allow_list(genuine, canary):
    """Defence in depth: hand xmlsec1 a CipherReference / RetrievalMethod directly
    (past the pre-scan): nothing is fetched and the loopback server hears nothing.
    (xmlsec1 ignores a RetrievalMethod inside the EncryptedKey's KeyInfo -- key
    data is limited to enc-key -- so that one still decrypts, without a request.)"""
    app, _client, _relay, xml = genuine(wantAssertionsEncrypted=True)
    prov = _provider(app)
    with app.app_context():
        key_file = prov.keys()[0]
        for kind in ("cipher-reference-http", "key-cipher-reference", "retrieval-method",
                     "cipher-reference-file"):
            t = time.perf_counter()
            with pytest.raises(AuthenticationFailed):
                prov.xmlsec_runner.decrypt(hostile(kind, xml, canary.url).encode(), key_file)
            assert time.perf_counter() - t < 5.0, kind
        prov.xmlsec_runner.decrypt(hostile("retrieval-method-in-encrypted-key", xml, canary.url).encode(), key_file)
    assert canary.hits == []


def test_xmlsec1_verify_does_not_dereference(genuine, canary, idp):
    """A Reference to a remote URI is not fetched by our --verify run."""
    app, _client, _relay, xml = genuine(wantAssertionsEncrypted=True)
    from flask_ccsso.providers.saml_xmlsec import RESPONSE_SIGNATURE

    doc = re.sub(r"(<\w+:Issuer[^>]*>[^<]*</\w+:Issuer>)", lambda m: m.group(1) + (
        '<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo>'
        '<ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>'
        '<ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/>'
        f'<ds:Reference URI="{canary.url}/ref"><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>'
        "<ds:DigestValue>AAAA</ds:DigestValue></ds:Reference></ds:SignedInfo><ds:SignatureValue>AAAA"
        "</ds:SignatureValue></ds:Signature>"), xml, count=1)
    assert canary.url in doc
    with app.app_context():
        assert _provider(app).xmlsec_runner.verify(doc.encode(), RESPONSE_SIGNATURE, idp_certs(app)) is False
    assert canary.hits == []


def idp_certs(app) -> list[str]:
    return list(_provider(app).idp().signing_certs)


def test_a_slow_decryption_is_killed(genuine, failures, caplog):
    """The real xmlsec1, on the ACS path, under a timeout it cannot meet: killed, 400
    (the answer is the one every unauthenticated-ciphertext failure gets; the log says why)."""
    app, client, relay, xml = genuine(wantAssertionsEncrypted=True)
    _provider(app).xmlsec_runner.timeout = 0.001
    t = time.perf_counter()
    with caplog.at_level(logging.INFO, logger="flask_ccsso"):
        resp = post(client, xml, relay)
    assert resp.status_code == 400, resp.data
    assert b"could not be decrypted and verified" in resp.data
    assert "was killed" in caplog.text and "took too long" in caplog.text
    assert time.perf_counter() - t < 5.0


def test_run_kills_the_process_group_on_timeout(tmp_path):
    from flask_ccsso.providers.saml_xmlsec import XmlsecTimeout, run

    pid_file = tmp_path / "pid"
    code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    t = time.perf_counter()
    with pytest.raises(XmlsecTimeout):
        run([sys.executable, "-c", code], timeout=1.0)
    assert time.perf_counter() - t < 10.0
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)   # killed and reaped, not left running


def test_run_limits_memory():
    from flask_ccsso.providers.saml_xmlsec import run

    res = run([sys.executable, "-c", "b = bytearray(2 << 30); print(len(b))"], timeout=30, memory=512 << 20)
    assert res.returncode != 0 and b"MemoryError" in res.stderr
    ok = run([sys.executable, "-c", "b = bytearray(16 << 20); print(len(b))"], timeout=30, memory=512 << 20)
    assert ok.returncode == 0, ok.stderr


def test_run_limits_cpu():
    """The CPU limit backs the wall clock: a spinning child gets SIGXCPU/SIGKILL."""
    import subprocess

    from flask_ccsso.providers.saml_xmlsec import _limits

    proc = subprocess.run([sys.executable, "-c", "while True: pass"], preexec_fn=_limits(1, 512 << 20),
                          timeout=30, capture_output=True, check=False)
    assert proc.returncode < 0


# ------------------------------------------------------------------ canonicalization cost, before xmlsec1

_EXC_C14N_TRANSFORM = re.compile(r'<(\w+):Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"\s*/>')


def c14n_bomb(kind: str, xml: str) -> str:
    """A genuine response turned into one whose assertion costs libxml2's
    exclusive c14n seconds of CPU. No valid signature is needed: xmlsec1
    canonicalizes and digests the referenced assertion before it can tell."""
    prefixes, nested = 8, ""
    if kind == "prefix-list":
        # 10,000 inclusive prefixes, each looked up through 30 ancestors, 90 times over
        prefixes = 10_000
        nested = ('<x:e xmlns:x="urn:example:x">' * 30 + "</x:e>" * 30) * 90
    elif kind == "namespaces-in-scope":
        # 5,000 declarations on one element above 15,000 empty ones (a legal 8-prefix list)
        decls = " ".join(f'xmlns:q{i}="urn:example:q{i}"' for i in range(5_000))
        nested = f"<x:e xmlns:x=\"urn:example:x\" {decls}>" + "<x:e/>" * 15_000 + "</x:e>"
    elif kind == "depth":
        # 16 inclusive prefixes (a legal list) looked up through 250 ancestors, 35,000 times
        prefixes = 16
        nested = '<x:e xmlns:x="urn:example:x">' * 250 + "<x:e/>" * 35_000 + "</x:e>" * 250
    else:  # pragma: no cover
        raise AssertionError(kind)
    # the assertion's exc-c14n transform, with an InclusiveNamespaces PrefixList
    matches = list(_EXC_C14N_TRANSFORM.finditer(xml))
    assert matches, "the genuine response has an exc-c14n transform"
    m = matches[-1]
    plist = " ".join(f"p{i}" for i in range(prefixes))
    transform = (f'<{m.group(1)}:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#">'
                 f'<ec:InclusiveNamespaces xmlns:ec="http://www.w3.org/2001/10/xml-exc-c14n#" PrefixList="{plist}"/>'
                 f"</{m.group(1)}:Transform>")
    out = xml[:m.start()] + transform + xml[m.end():]
    out = re.sub(r"(</\w+:Assertion>)", lambda a: nested + a.group(1), out, count=1)
    assert len(out.encode()) < 256 * 1024, len(out)
    return out


@pytest.mark.parametrize("kind", ["prefix-list", "namespaces-in-scope", "depth"])
def test_canonicalization_cost_bombs_are_refused_before_xmlsec1(encrypted_portal, idp, failures, monkeypatch, kind):
    """An unauthenticated post (one outstanding InResponseTo suffices, and it is
    not consumed by a refusal) made every metadata certificate's xmlsec1 run
    burn CPU until its 5 s kill. The pre-scan bounds what c14n work a document
    can ask for -- PrefixList length, nesting depth, namespace declarations in
    scope -- so such a post is a 400 before any xmlsec1 starts."""
    _app, client = encrypted_portal()
    location = login(client)
    data = idp.respond(location, User())
    bad = c14n_bomb(kind, decode_form(data))
    calls = count_xmlsec(monkeypatch)
    t = time.perf_counter()
    resp = post(client, bad, data["RelayState"], headers={"Accept": "application/json"})
    elapsed = time.perf_counter() - t
    assert resp.status_code == 400, resp.data
    assert failures and failures[-1]["reason"] == "invalid_response"
    assert calls == []
    assert elapsed < 2.0
    assert client.get("/me", headers={"Accept": "application/json"}).status_code == 401


# ------------------------------------------------------------------ no decryption oracle

def _unsigned(xml: str) -> str:
    """The response with its assertion's signature removed (still well-formed)."""
    out = re.sub(r"<(\w+):Signature\b.*?</\1:Signature>", "", xml, count=1, flags=re.DOTALL)
    assert out != xml
    return out


def test_unauthenticated_ciphertext_failures_all_answer_alike(encrypted_portal, idp, sp_keys, failures):
    """When no Response signature covers the ciphertext (only the assertion
    inside is signed), a post whose ciphertext does not decrypt, one that
    decrypts to a well-formed but unsigned assertion, and one whose decrypted
    assertion was altered all get the same answer: the answers must not tell
    "decrypts to well-formed XML" from "does not" (the Jager-Somorovsky oracle
    on CBC). Before, each said which step failed."""
    _app, client = encrypted_portal(wantAssertionsEncrypted=True)
    answers = []
    for variant in ("garbled-ciphertext", "unsigned-plaintext", "altered-plaintext"):
        location = login(client)
        data = idp.respond(location, User())
        xml = decode_form(data)
        if variant == "unsigned-plaintext":
            xml = _unsigned(xml)
        elif variant == "altered-plaintext":
            xml = xml.replace(User().email, "admin@example.com")
        enc = wrap_and_encrypt_assertion(xml, sp_keys.cert_path)
        if variant == "garbled-ciphertext":
            enc = _DATA_CIPHER.sub(lambda m: m.group(1) + "<xenc:CipherData><xenc:CipherValue>"
                                   + "QUFB" * 64 + "</xenc:CipherValue></xenc:CipherData>", enc)
        resp = post(client, enc, data["RelayState"], headers={"Accept": "application/json"})
        assert resp.status_code == 400, (variant, resp.data)
        answers.append((resp.get_json(), failures[-1]["reason"], failures[-1]["detail"]))
    assert answers[0] == answers[1] == answers[2], answers
