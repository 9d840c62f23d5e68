"""SAML 2.0 sign-in against a real IdP (pysaml2's ``saml2.server.Server``,
real xmlsec1 signatures), driven through the portal's routes.

Every attack starts from a response the real IdP built and signed, then
tampered with -- after signing (the signature must fail, or the pre-scan
must refuse the shape before xmlsec1 runs) or before the IdP signs it (the
explicit checks after pysaml2 must refuse it).
"""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, urlsplit

import pytest

from flask_ccsso import signals
from flask_ccsso.testing import log_out
from tests.support.saml import SKILLS, login, post, provider_block, refused
from tests.support.saml_idp import SAMLIdP, User, decode_form, form, make_keypair

# -------------------------------------------------------------------------- the happy path

def test_login_through_real_idp_shows_email_and_groups(saml_portal, idp):
    _app, client = saml_portal()
    location = login(client)
    q = parse_qs(urlsplit(location).query)
    # RelayState is an opaque key: the next URL is not in it
    assert "/me" not in q["RelayState"][0]
    resp = post(client, idp.respond(location, User()))
    assert resp.status_code == 303 and resp.headers["Location"] == "/me"
    me = client.get("/me").get_json()
    assert me["email"] == "alice@example.com"
    assert me["groups"] == ["database-admins", "engineering"]
    assert me["scopes"] == ["migration:write"]
    assert client.get("/migrations").status_code == 200


def test_identity_facts(saml_portal, idp):
    _app, client = saml_portal()
    seen = []
    signals.user_logged_in.connect(lambda s, **kw: seen.append(kw), weak=False)
    try:
        t0 = int(time.time())
        post(client, idp.respond(login(client), User(), session_index="sess-42"))
    finally:
        signals.user_logged_in.receivers.clear()
    ident = seen[-1]["identity"]
    assert ident.subject == "alice@example.com" and ident.provider == "google" and ident.name == "Alice Example"
    assert ident.session_index == "sess-42"
    assert ident.acr == "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"
    assert ident.amr == ("pwd",)
    assert abs(ident.auth_time - t0) < 5
    assert ident.groups_complete is True
    assert seen[-1]["method"] == "saml"


def test_truncated_groups_are_not_no_groups(saml_portal, idp):
    _app, client = saml_portal()
    seen = []
    signals.user_logged_in.connect(lambda s, **kw: seen.append(kw), weak=False)
    try:
        user = User(groups=["engineering"], extra={"groupsTruncated": ["true"]})
        post(client, idp.respond(login(client), user))
    finally:
        signals.user_logged_in.receivers.clear()
    assert seen[-1]["identity"].groups_complete is False


def test_signed_response_and_encrypted_assertion(saml_portal, idp, tmp_path):
    sp = make_keypair(str(tmp_path / "sp"), "sp")
    _app, client = saml_portal(spCertificate=sp.cert_path, spPrivateKey=sp.key_pem, signAuthnRequests=True,
                         wantResponseSigned=True, wantAssertionsEncrypted=True)
    location = login(client)
    assert "Signature=" in location and "SigAlg=" in location   # checked by the real IdP in respond()
    data = idp.respond(location, User(), sign_response=True, encrypt=True)
    assert "EncryptedAssertion" in decode_form(data)
    resp = post(client, data)
    assert resp.status_code == 303, resp.data
    assert client.get("/me").get_json()["email"] == "alice@example.com"


def test_allow_unsolicited(saml_portal, idp):
    _app, client = saml_portal(allowUnsolicited=True)
    location = login(client)
    data = idp.respond(location, User(), in_response_to=None)
    data.pop("RelayState")
    resp = post(client, data)
    assert resp.status_code == 303 and resp.headers["Location"] == "/"


# -------------------------------------------------------------------------- xmlsec1 budget

def test_xmlsec1_runs_once_per_response_and_never_for_refused_shapes(saml_portal, idp, monkeypatch):
    _app, client = saml_portal()
    data = idp.respond(login(client), User())
    calls = count_xmlsec(monkeypatch)
    t = time.perf_counter()
    assert post(client, data).status_code == 303
    elapsed = time.perf_counter() - t
    assert [c[1] for c in calls] == ["--verify"], calls   # one process per response
    assert elapsed < 2.0
    print(f"\nACS with one signed assertion: {len(calls)} xmlsec1 run(s), {elapsed * 1000:.0f} ms")
    calls.clear()
    bad = re.sub(r'xml-exc-c14n#"/></(\w+):Transforms>',
                 r'xml-exc-c14n#"/><\1:Transform Algorithm="http://www.w3.org/TR/1999/REC-xslt-19991116"/></\1:Transforms>',
                 decode_form(data), count=1)
    assert "xslt" in bad
    resp = post(client, form(bad, data["RelayState"]))
    assert resp.status_code == 400 and calls == []


# -------------------------------------------------------------------------- attacks

def count_xmlsec(monkeypatch) -> list[list[str]]:
    """Every xmlsec1 run: flask-ccsso's own (``saml_xmlsec.run``, which
    decides sign-in), any pysaml2 would start (``saml2.sigver.Popen``), and
    every in-process verification (``saml_binding.verify_node``, counted as
    ``["xmlsec-binding", "--verify"]``)."""
    import saml2.sigver

    from flask_ccsso.providers import saml_binding, saml_xmlsec

    calls: list[list[str]] = []
    real_popen, real_run, real_node = saml2.sigver.Popen, saml_xmlsec.run, saml_binding.verify_node

    def counting_node(ctx, sig):
        calls.append(["xmlsec-binding", "--verify"])
        return real_node(ctx, sig)

    monkeypatch.setattr(saml_binding, "verify_node", counting_node)

    def counting(args, *a, **kw):
        calls.append(list(args))
        return real_popen(args, *a, **kw)

    def counting_run(args, *a, **kw):
        calls.append(list(args))
        return real_run(args, *a, **kw)

    monkeypatch.setattr(saml2.sigver, "Popen", counting)
    monkeypatch.setattr(saml_xmlsec, "run", counting_run)
    return calls


def _mutated(idp, location, mutate, **kw):
    return idp.respond(location, User(), mutate=mutate, **kw)


def test_wrong_audience(saml_portal, idp, failures):
    _app, client = saml_portal()

    def m(r):
        r.assertion[0].conditions.audience_restriction[0].audience[0].text = "https://other-sp.example"

    assert refused(post(client, _mutated(idp, login(client), m)), failures, "invalid_audience")


def test_wrong_destination(saml_portal, idp, failures):
    _app, client = saml_portal()

    def m(r):
        r.destination = "https://evil.example/acs"

    assert refused(post(client, _mutated(idp, login(client), m, sign_response=True)), failures, "invalid_response")


def test_wrong_recipient(saml_portal, idp, failures):
    _app, client = saml_portal()

    def m(r):
        r.assertion[0].subject.subject_confirmation[0].subject_confirmation_data.recipient = "https://evil/acs"

    assert refused(post(client, _mutated(idp, login(client), m)), failures, "invalid_response")


def test_expired(saml_portal, idp, failures, clock):
    _app, client = saml_portal()
    data = idp.respond(login(client), User())
    clock.advance(400)   # the IdP's assertions live 5 minutes; skew is 60 s
    assert refused(post(client, data), failures, "token_expired")


def test_not_yet_valid(saml_portal, idp, failures):
    _app, client = saml_portal()

    def m(r):
        r.assertion[0].conditions.not_before = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))

    assert refused(post(client, _mutated(idp, login(client), m)), failures, "invalid_response")


def test_replayed(saml_portal, idp, failures):
    app, client = saml_portal()
    data = idp.respond(login(client), User())
    assert post(client, data).status_code == 303
    other = app.test_client()   # another browser, same shared store
    assert refused(post(other, data), failures, "replayed")


def test_replayed_after_pending_gone_is_refused_by_assertion_id(saml_portal, idp, failures):
    """Even when the pre-check is raced past, the atomic add refuses."""
    app, client = saml_portal()
    data = idp.respond(login(client), User())
    store = app.extensions["ccsso"].store
    assert post(client, data).status_code == 303
    keys = [k for k in store.keys("saml-assertion:")]
    assert keys, "assertion id recorded in the shared store"


def test_unsolicited(saml_portal, idp, failures):
    _app, client = saml_portal()
    data = idp.respond(login(client), User(), in_response_to=None)
    assert refused(post(client, data), failures, "unsolicited")


def test_in_response_to_unknown(saml_portal, idp, failures):
    _app, client = saml_portal()
    data = idp.respond(login(client), User(), in_response_to="id-never-sent")
    assert refused(post(client, data), failures, "state_missing")


def test_other_idp_other_key(saml_portal, idp, failures, tmp_path):
    _app, client = saml_portal()
    evil = SAMLIdP(str(tmp_path / "evil"), entity_id="https://evil-idp.example/saml", base=idp.base, cn="evil")
    evil.trust_sp(client.get("/sso/google/metadata").data.decode())
    assert refused(post(client, evil.respond(login(client), User())), failures, "issuer_mismatch")


def test_same_issuer_wrong_signing_key(saml_portal, idp, failures, tmp_path):
    _app, client = saml_portal()
    rogue = SAMLIdP(str(tmp_path / "rogue"), entity_id=idp.entity_id, base=idp.base, cn="rogue")
    rogue.trust_sp(client.get("/sso/google/metadata").data.decode())
    location = login(client)
    data = rogue.respond(location, User())
    assert refused(post(client, data), failures, "invalid_response")
    # without KeyInfo the pre-scan cannot tell: xmlsec1 must refuse it
    location = login(client)
    data = rogue.respond(location, User())
    xml = re.sub(r"<(\w+):KeyInfo>.*?</\1:KeyInfo>", "", decode_form(data), flags=re.DOTALL)
    assert "KeyInfo" not in xml
    assert refused(post(client, form(xml, data["RelayState"])), failures, "invalid_response")


def test_signature_stripped(saml_portal, idp, failures):
    _app, client = saml_portal()
    data = idp.respond(login(client), User())
    xml = strip_signatures(decode_form(data))
    assert "Signature" not in xml
    assert refused(post(client, form(xml, data["RelayState"])), failures, "invalid_response")


def test_content_tampered_after_signing(saml_portal, idp, failures):
    _app, client = saml_portal()
    data = idp.respond(login(client), User())
    xml = decode_form(data).replace(">engineering<", ">security-team<")
    assert refused(post(client, form(xml, data["RelayState"])), failures, "invalid_response")


def strip_signatures(xml):
    return re.sub(r"<(\w+):Signature[ >].*?</\1:Signature>", "", xml, flags=re.DOTALL)


def _assertion(xml):
    m = re.search(r"<(\w+):Assertion[ >].*?</\1:Assertion>", xml, re.DOTALL)
    return m.group(0), m.group(1)


@pytest.mark.parametrize("variant", ["sibling", "nested-in-evil", "same-id", "in-extensions"])
def test_signature_wrapping(saml_portal, idp, failures, variant):
    _app, client = saml_portal()
    data = idp.respond(login(client), User())
    xml = decode_form(data)
    signed, p = _assertion(xml)
    evil = strip_signatures(signed)
    evil = evil.replace("alice@example.com", "admin@example.com").replace(">engineering<", ">security-team<")
    evil_id = evil.replace('ID="id-', 'ID="evil-', 1)
    if variant == "sibling":
        tampered = xml.replace(signed, evil_id + signed)
    elif variant == "nested-in-evil":
        tampered = xml.replace(signed, evil_id.replace(f"</{p}:Assertion>", f"<{p}:Advice>{signed}</{p}:Advice></{p}:Assertion>"))
    elif variant == "same-id":
        tampered = xml.replace(signed, evil + signed)
    else:
        tampered = re.sub(r"<(\w+):Status>", lambda m: f"<{m.group(1)}:Extensions>{signed}</{m.group(1)}:Extensions>"
                          f"<{m.group(1)}:Status>", xml.replace(signed, evil_id), count=1)
    assert tampered != xml
    assert refused(post(client, form(tampered, data["RelayState"])), failures, "invalid_response")
    assert client.get("/me").status_code != 200


def test_comment_split_name_id(saml_portal, idp, failures):
    """CVE-2017-11427 family: the attacker owns alice@example.com.evil.test."""
    _app, client = saml_portal()
    data = idp.respond(login(client), User(email="alice@example.com.evil.test"))
    xml = re.sub(r">alice@example.com(\.evil\.test</\w+:NameID>)", r">alice@example.com<!---->\1",
                 decode_form(data))
    assert "<!---->" in xml
    resp = post(client, form(xml, data["RelayState"]))
    assert refused(resp, failures, "invalid_response")
    assert b"comment" in resp.data


@pytest.mark.parametrize("prolog", [
    '<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
    ('<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
     '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'),
    '<!doctype r>',
])
def test_doctype_xxe_billion_laughs(saml_portal, idp, failures, prolog, monkeypatch):
    _app, client = saml_portal()
    data = idp.respond(login(client), User())
    xml = decode_form(data).replace('<?xml version="1.0"?>', '<?xml version="1.0"?>' + prolog, 1)
    calls = count_xmlsec(monkeypatch)
    resp = post(client, form(xml, data["RelayState"]), headers={"Accept": "application/json"})
    assert refused(resp, failures, "invalid_response")
    assert resp.get_json()["error"] == "invalid_response"
    assert calls == []


def test_oversized(saml_portal, idp, failures, monkeypatch):
    _app, client = saml_portal(maxResponseSize=20000)
    data = idp.respond(login(client), User(groups=[f"group-{i:04d}" for i in range(600)]))
    calls = count_xmlsec(monkeypatch)
    resp = post(client, data)
    # over 2 * maxResponseSize + 8192 bytes: refused by the ACS route before the form is parsed
    assert resp.status_code == 413 and failures[-1]["reason"] == "request_too_large"
    assert b"too large" in resp.data and calls == []


def test_assertion_for_provider_a_posted_to_provider_b(make_app, idp, tmp_path, failures):
    other = SAMLIdP(str(tmp_path / "other"), entity_id="https://other-idp.example/saml", cn="other")
    cfg = {"auth": {"providers": {
        "google": provider_block(idp.write_metadata(str(tmp_path / "a.xml"))),
        "okta": provider_block(other.write_metadata(str(tmp_path / "b.xml"))),
        "google2": provider_block(idp.write_metadata(str(tmp_path / "c.xml"))),
    }}, "skills": SKILLS, "session": {"cookieSecure": False}}
    app = make_app(cfg)
    client = app.test_client()
    idp.trust_sp(client.get("/sso/google/metadata").data.decode())
    data = idp.respond(login(client), User())
    assert refused(post(client, data, provider="okta"), failures, "issuer_mismatch")
    # same IdP behind two providers: Destination / pending record tell them apart
    assert refused(post(client, data, provider="google2"), failures, "invalid_response")
    assert post(client, data).status_code == 303


# -------------------------------------------------------------------------- step-up

def test_step_up_force_authn(make_app, idp, tmp_path, failures):
    skills = {"database-migration": {"allowedGroups": ["database-admins"], "sensitive": True, "maxAuthAge": 300}}
    app = make_app({"auth": {"providers": {"google": provider_block(idp.write_metadata(str(tmp_path / "m.xml")))}},
                    "skills": skills, "session": {"cookieSecure": False}})
    client = app.test_client()
    idp.trust_sp(client.get("/sso/google/metadata").data.decode())
    location = login(client, stepup="database-migration")
    req, _ = idp.parse_login(location)
    assert req.force_authn == "true"
    # the IdP re-used an old session: refused
    stale = idp.respond(location, User(), authn_instant=int(time.time()) - 3600)
    assert refused(post(client, stale), failures, "stepup_not_satisfied")
    satisfied = []
    signals.stepup_satisfied.connect(lambda s, **kw: satisfied.append(kw), weak=False)
    try:
        location = login(client, stepup="database-migration")
        assert post(client, idp.respond(location, User())).status_code == 303
    finally:
        signals.stepup_satisfied.receivers.clear()
    assert satisfied and satisfied[0]["skill"] == "database-migration"


def test_step_up_requested_authn_context(make_app, idp, tmp_path, failures):
    app = make_app({"auth": {"providers": {"google": provider_block(idp.write_metadata(str(tmp_path / "m.xml")))}},
                    "skills": SKILLS, "session": {"cookieSecure": False}})
    client = app.test_client()
    idp.trust_sp(client.get("/sso/google/metadata").data.decode())
    location = login(client, stepup="mfa-thing")
    req, _ = idp.parse_login(location)
    mfa = "urn:oasis:names:tc:SAML:2.0:ac:classes:MobileTwoFactorContract"
    assert req.requested_authn_context.authn_context_class_ref[0].text == mfa
    assert refused(post(client, idp.respond(location, User())), failures, "stepup_not_satisfied")
    location = login(client, stepup="mfa-thing")
    assert post(client, idp.respond(location, User(), authn_class=mfa)).status_code == 303


# -------------------------------------------------------------------------- logout

def test_idp_initiated_logout_ends_the_session(saml_portal, idp):
    app, client = saml_portal()
    post(client, idp.respond(login(client), User(), session_index="sess-1"))
    assert client.get("/me").status_code == 200
    revoked = []
    signals.session_revoked.connect(lambda s, **kw: revoked.append(kw), weak=False)
    try:
        url = idp.logout_request("http://localhost/sso/google/slo", "alice@example.com", "sess-1")
        resp = app.test_client().get(url[len("http://localhost"):])
    finally:
        signals.session_revoked.receivers.clear()
    assert resp.status_code == 302 and resp.headers["Location"].startswith(f"{idp.base}/slo/redirect?SAMLResponse=")
    assert revoked and revoked[0]["reason"] == "saml_slo" and revoked[0]["count"] == 1
    assert client.get("/me", headers={"Accept": "application/json"}).status_code == 401
    # replaying the same LogoutRequest is refused
    assert app.test_client().get(url[len("http://localhost"):]).status_code == 400


def test_idp_initiated_logout_must_be_signed(saml_portal, idp, failures):
    app, client = saml_portal()
    post(client, idp.respond(login(client), User(), session_index="sess-2"))
    url = idp.logout_request("http://localhost/sso/google/slo", "alice@example.com", "sess-2", sign=False)
    assert app.test_client().get(url[len("http://localhost"):]).status_code == 400
    rogue = SAMLIdP(idp.directory + "-rogue", entity_id=idp.entity_id, base=idp.base, cn="rogue")
    rogue.trust_sp(client.get("/sso/google/metadata").data.decode())
    url = rogue.logout_request("http://localhost/sso/google/slo", "alice@example.com", "sess-2")
    assert app.test_client().get(url[len("http://localhost"):]).status_code == 400
    assert client.get("/me").status_code == 200


def test_sp_initiated_logout(saml_portal, idp, tmp_path):
    sp = make_keypair(str(tmp_path / "sp"), "sp")
    _app, client = saml_portal(spCertificate=sp.cert_path, spPrivateKey=sp.key_path)
    post(client, idp.respond(login(client), User(), session_index="sess-3"))
    resp = log_out(client)  # the confirm page, then its form (POST with the CSRF token)
    assert resp.status_code == 303
    location = resp.headers["Location"]
    assert location.startswith(f"{idp.base}/slo/redirect?SAMLRequest=") and "Signature=" in location
    req, q = idp.parse_logout_request(location)
    assert req.name_id.text == "alice@example.com" and req.session_index[0].text == "sess-3"
    back = idp.logout_response(req, q.get("RelayState"), "http://localhost/sso/google/slo")
    resp = client.get(back[len("http://localhost"):])
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/sso/logged-out")
    assert client.get(back[len("http://localhost"):]).status_code == 400   # answered once


def test_xmlsec1_budget_signed_response_with_encrypted_signed_assertion(saml_portal, idp, tmp_path, monkeypatch):
    """Worst case the IdP can choose: response signed, assertion signed and encrypted."""
    sp = make_keypair(str(tmp_path / "sp"), "sp")
    _app, client = saml_portal(spCertificate=sp.cert_path, spPrivateKey=sp.key_path, wantResponseSigned=True,
                         wantAssertionsEncrypted=True)
    data = idp.respond(login(client), User(), sign_response=True, encrypt=True)
    calls = count_xmlsec(monkeypatch)
    t = time.perf_counter()
    assert post(client, data).status_code == 303
    elapsed = time.perf_counter() - t
    # verify response, decrypt, verify decrypted assertion: one run each, no --version runs
    assert [c[1] for c in calls] == ["--verify", "--decrypt", "--verify"], calls
    print(f"\nACS signed response + encrypted signed assertion: {len(calls)} xmlsec1 runs, {elapsed * 1000:.0f} ms")
