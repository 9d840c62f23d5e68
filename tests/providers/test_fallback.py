"""IdP redundancy (issue #15, item 3): a provider's ``fallback`` providers are
offered while its IdP cannot be reached, a sign-in through one is announced
(``auth.fallback_used`` and the alert signal), and sessions outlive the outage.

Real parts only: the unreachable IdPs are a port bound on 127.0.0.1 that
nobody listens on (connections refused) or a local OP whose server is shut
down and closed; the fallback is the suite's local OP, signed in through
over real HTTP.
"""

from __future__ import annotations

import html
import logging
import re
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from flask_ccsso import signals
from flask_ccsso.config import parse_config
from flask_ccsso.exceptions import ConfigError
from flask_ccsso.testing import listen_to
from tests.support.local_op import CLIENT_ID, CLIENT_SECRET, LocalOP
from tests.support.oidc import SKILLS, callback, start_login
from tests.support.saml import provider_block

JSON = {"Accept": "application/json"}
HTML = {"Accept": "text/html"}
#: the primary's client secret: must never reach a log line, a page or an event
PRIMARY_SECRET = "corp-client-secret-4f1c9a"


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A port bound on 127.0.0.1 but not listening: connections are refused
    (held, so nothing else can start listening there meanwhile)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def own_op() -> Iterator[LocalOP]:
    """A local OP of this test's own, which the test may stop for good (:func:`stop`)."""
    op = LocalOP()
    yield op
    stop(op)


def stop(op: LocalOP) -> None:
    """Stop serving and close the listening socket: from now on connections are refused."""
    if op.thread.is_alive():
        op.server.shutdown()
    op.server.server_close()


def breakglass(op: LocalOP) -> dict[str, Any]:
    """The working fallback: the suite's local OP."""
    return {"provider": "oidc", "clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET, "issuer": op.issuer,
            "scopes": ["openid", "profile", "email"], "displayName": "Break-glass", "introspection": False}


def primary(issuer: str, **over: Any) -> dict[str, Any]:
    block = {"provider": "oidc", "clientId": "corp-portal", "clientSecret": PRIMARY_SECRET, "issuer": issuer,
             "timeout": 1, "displayName": "Corp SSO", "fallback": ["breakglass"], "introspection": False}
    block.update(over)
    return block


def config(op: LocalOP, corp: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"auth": {"providers": {"corp": corp, "breakglass": breakglass(op)}}, "skills": SKILLS,
            "session": {"cookieSecure": False}, **extra}


def dead_app(make_app: Any, op: LocalOP, dead_port: int, **over: Any) -> Any:
    return make_app(config(op, primary(f"http://127.0.0.1:{dead_port}/idp", **over)))


def fallback_links(page: str) -> list[str]:
    """The banner's links to the fallback providers (unescaped)."""
    return [html.unescape(h) for h in re.findall(r'<a class="fallback" href="([^"]+)"', page)]


def sign_in_via(client: Any, op: LocalOP, link: str) -> Any:
    """Follow a login link to the local OP and back; the callback's response."""
    resp = client.get(link)
    assert resp.status_code == 302, resp.data
    return callback(client, op.issue_code(resp.headers["Location"]), provider="breakglass")


# --------------------------------------------------------------------------- config

def _error(cfg: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        parse_config(cfg)
    return e.value


def _two(a: dict[str, Any], b: dict[str, Any], c: dict[str, Any] | None = None) -> dict[str, Any]:
    base = {"provider": "oidc", "clientId": "x", "issuer": "https://idp.example.com"}
    provs = {"a": {**base, **a}, "b": {**base, **b}}
    if c is not None:
        provs["c"] = {**base, **c}
    return {"auth": {"providers": provs}}


def test_fallback_names_other_configured_providers():
    cfg = parse_config(_two({"fallback": ["b"]}, {}))
    assert cfg.providers["a"].fallback == ("b",) and cfg.providers["b"].fallback == ()


@pytest.mark.parametrize("cfg, path, problem, fix", [
    (_two({"fallback": ["nope"]}, {}), "auth.providers.a.fallback[0]", "names provider 'nope', which is not configured",
     "use one of b"),
    (_two({"fallback": ["a"]}, {}), "auth.providers.a.fallback[0]", "names this provider itself", "another"),
    (_two({"fallback": ["b", "b"]}, {}), "auth.providers.a.fallback[1]", "names 'b' twice", "once"),
    (_two({"fallback": ["b"]}, {"fallback": ["a"]}), "auth.providers.a.fallback", "makes a cycle: a -> b -> a",
     "must not fall back"),
    (_two({"fallback": ["b"]}, {"fallback": ["c"]}, {"fallback": ["a"]}), "auth.providers.a.fallback",
     "makes a cycle: a -> b -> c -> a", "remove one"),
    (_two({"fallback": "b"}, {}), "auth.providers.a.fallback", "must be a list", "JSON list"),
    ({"auth": {"provider": "oidc", "clientId": "x", "issuer": "https://idp.example.com", "fallback": ["okta"]}},
     "auth.fallback[0]", "names provider 'okta', which is not configured", "auth.providers"),
], ids=["unknown", "itself", "twice", "cycle", "longer-cycle", "not-a-list", "single-provider"])
def test_bad_fallbacks_are_refused_at_start_up(cfg, path, problem, fix):
    err = _error(cfg)
    assert err.path == path, str(err)
    assert problem in err.problem, str(err)
    assert err.fix and fix in err.fix, str(err)


def test_a_fallback_may_have_fallbacks_of_its_own():
    """A chain without a cycle is fine (a -> b -> c, and c alone)."""
    cfg = parse_config(_two({"fallback": ["b", "c"]}, {"fallback": ["c"]}, {}))
    assert cfg.providers["a"].fallback == ("b", "c")


# --------------------------------------------------------------------------- the sign-in page while the IdP is down

def test_login_at_a_dead_primary_offers_the_fallback(make_app, op, dead_port, failures):
    app = dead_app(make_app, op, dead_port)
    client = app.test_client()
    resp = client.get("/sso/corp/login?next=/me", headers=HTML)
    assert resp.status_code == 503
    assert resp.headers["Cache-Control"] == "no-store" and resp.headers["Retry-After"]
    assert resp.headers["Content-Security-Policy"].startswith("default-src 'none'")
    page = resp.get_data(as_text=True)
    assert "Corp SSO is unreachable</strong>; sign in with" in page
    (link,) = fallback_links(page)
    parts = urlsplit(link)
    assert parts.path == "/sso/breakglass/login"
    assert parse_qs(parts.query) == {"next": ["/me"], "fallback_for": ["corp"]}
    assert f"127.0.0.1:{dead_port}" in page and "refused" in page  # what failed, as the plain 503 page says it
    (retry,) = re.findall(r'<a id="ccsso-retry" href="([^"]+)">Try Corp SSO again</a>', page)
    assert urlsplit(html.unescape(retry)).path == "/sso/corp/login"
    assert parse_qs(urlsplit(html.unescape(retry)).query) == {"next": ["/me"]}
    assert failures[-1]["provider"] == "corp" and failures[-1]["reason"] == "idp_unavailable"
    assert PRIMARY_SECRET not in page


def test_api_clients_get_a_json_503_naming_the_fallbacks(make_app, op, dead_port):
    app = dead_app(make_app, op, dead_port)
    resp = app.test_client().get("/sso/corp/login?next=/me", headers=JSON)
    assert resp.status_code == 503 and resp.headers["Retry-After"]
    body = resp.get_json()
    assert body["error"] == "idp_unavailable" and body["failure"] == "refused"
    assert body["provider"] == "corp"
    (offer,) = body["fallbacks"]
    assert offer["provider"] == "breakglass" and offer["display_name"] == "Break-glass"
    assert parse_qs(urlsplit(offer["login_url"]).query) == {"next": ["/me"], "fallback_for": ["corp"]}


def test_a_known_outage_is_not_waited_on_again_at_once(make_app, op, dead_port, clock, failures):
    """Within RECHECK_AFTER of a failure the page is served without trying the
    IdP (nothing new is learnt about it); afterwards the IdP is tried again."""
    app = dead_app(make_app, op, dead_port)
    client = app.test_client()
    prov = app.extensions["ccsso"].providers["corp"]
    assert client.get("/sso/corp/login").status_code == 503
    first = prov.availability()
    assert first.unavailable and first.documents == ("discovery document",) and first.failure == "refused"
    clock.advance(10)
    again = client.get("/sso/corp/login", headers=HTML)
    assert again.status_code == 503 and "Corp SSO is unreachable" in again.get_data(as_text=True)
    assert prov.availability().last_error_at == first.last_error_at  # not fetched
    assert len(failures) == 2  # each refused sign-in is still announced
    clock.advance(31)
    assert client.get("/sso/corp/login").status_code == 503
    assert prov.availability().last_error_at == first.last_error_at + 41  # tried again


def test_the_chooser_shows_the_banner_for_a_provider_known_to_be_down(make_app, op, dead_port):
    app = dead_app(make_app, op, dead_port)
    client = app.test_client()
    before = client.get("/sso/login?next=/me").get_data(as_text=True)
    assert "unreachable" not in before and not fallback_links(before)  # nothing known yet, and nothing fetched
    assert app.extensions["ccsso"].providers["corp"].availability().last_error is None
    client.get("/sso/corp/login?next=/me")
    resp = client.get("/sso/login?next=/me", headers=HTML)
    assert resp.status_code == 200
    page = resp.get_data(as_text=True)
    assert "Corp SSO is unreachable</strong>; sign in with" in page
    (link,) = fallback_links(page)
    assert parse_qs(urlsplit(link).query) == {"next": ["/me"], "fallback_for": ["corp"]}
    buttons = [html.unescape(h) for h in re.findall(r'<a class="provider" href="([^"]+)"', page)]
    # the primary stays on offer; the fallback's button says whom it stands in for
    assert [urlsplit(b).path for b in buttons] == ["/sso/corp/login", "/sso/breakglass/login"]
    assert buttons[1] == link


# --------------------------------------------------------------------------- signing in through the fallback

def test_fallback_sign_in_is_announced_once(make_app, op, dead_port, collector):
    app = make_app(config(op, primary(f"http://127.0.0.1:{dead_port}/idp"), logging={
        "level": "audit", "destinations": [{"type": "http", "url": collector.url}], "flushInterval": 0.05}))
    client = app.test_client()
    link = fallback_links(client.get("/sso/corp/login?next=/me").get_data(as_text=True))[0]
    with listen_to(signals.fallback_used) as used, listen_to(signals.failure_threshold) as alerts, \
            listen_to(signals.user_logged_in) as logins:
        resp = sign_in_via(client, op, link)
        assert resp.status_code == 302 and resp.headers["Location"] == "/me"
        me = client.get("/me")  # the session's requests raise nothing more
    assert me.status_code == 200 and me.get_json()["provider"] == "breakglass"
    assert len(logins) == 1
    assert len(used) == 1 and len(alerts) == 1
    kw = used[0].kwargs
    assert (kw["provider"], kw["primary"], kw["method"]) == ("breakglass", "corp", "oidc")
    assert kw["identity"].email == "alice@example.com"
    alert = alerts[0].kwargs
    assert (alert["key_type"], alert["key"], alert["count"]) == ("idp_fallback", "alice@example.com", 1)

    assert app.extensions["ccsso"].audit.flush(5)
    events = collector.events()
    (event,) = [e for e in events if e["type"] == "auth.fallback_used"]
    assert event["outcome"] == "info" and event["provider"] == "breakglass"
    assert event["data"] == {"primary": "corp", "method": "oidc"}
    assert event["actor"]["email"] == "alice@example.com"
    (recorded,) = [e for e in events if e["type"] == "auth.failure_threshold"]
    assert recorded["data"]["key_type"] == "idp_fallback" and recorded["data"]["key"] == "alice@example.com"


def test_a_forged_marker_raises_no_alert_while_the_primary_is_up(make_app, op):
    """``fallback_for`` in a URL counts only when the provider it names is
    really unreachable (and lists this one as a fallback)."""
    corp = primary(op.issuer, clientId=CLIENT_ID, clientSecret=CLIENT_SECRET)
    cfg = config(op, corp)
    cfg["auth"]["providers"]["other"] = {**breakglass(op), "displayName": "Other"}
    app = make_app(cfg)
    client = app.test_client()
    with listen_to(signals.fallback_used) as used, listen_to(signals.failure_threshold) as alerts:
        for link in ("/sso/breakglass/login?next=/me&fallback_for=corp",   # corp is up
                     "/sso/other/login?next=/me&fallback_for=corp",        # not corp's fallback
                     "/sso/breakglass/login?next=/me&fallback_for=nope"):  # no such provider
            resp = client.get(link)
            assert resp.status_code == 302, resp.data
            provider = urlsplit(link).path.split("/")[2]
            assert callback(client, op.issue_code(resp.headers["Location"]), provider=provider).status_code == 302
    assert used == [] and alerts == []
    assert app.extensions["ccsso"].providers["corp"].availability().unavailable is False


def test_the_marker_counts_when_the_primary_is_found_down_on_another_worker(make_app, op, dead_port):
    """A worker that never tried the primary checks it when the fallback's link arrives."""
    cfg = config(op, primary(f"http://127.0.0.1:{dead_port}/idp"))
    first, second = make_app(cfg), make_app(cfg)
    link = fallback_links(first.test_client().get("/sso/corp/login?next=/me").get_data(as_text=True))[0]
    assert second.extensions["ccsso"].providers["corp"].availability().last_error is None
    with listen_to(signals.fallback_used, sender=second) as used:
        assert sign_in_via(second.test_client(), op, link).status_code == 302
    assert [r.kwargs["primary"] for r in used] == ["corp"]


# --------------------------------------------------------------------------- what stays as it was

def test_a_provider_without_fallbacks_behaves_as_before(make_app, op, dead_port, clock):
    app = make_app(config(op, primary(f"http://127.0.0.1:{dead_port}/idp", fallback=[])))
    client = app.test_client()
    page = client.get("/sso/corp/login?next=/me", headers=HTML)
    assert page.status_code == 503
    text = page.get_data(as_text=True)
    assert "Temporarily unavailable" in text and "unreachable</strong>" not in text and not fallback_links(text)
    body = client.get("/sso/corp/login?next=/me", headers=JSON).get_json()
    assert body["error"] == "idp_unavailable" and "fallbacks" not in body and "provider" not in body
    before = app.extensions["ccsso"].providers["corp"].availability().last_error_at
    clock.advance(1)
    client.get("/sso/corp/login", headers=JSON)  # every sign-in tries the IdP, as before
    assert app.extensions["ccsso"].providers["corp"].availability().last_error_at == before + 1
    assert "unreachable" not in client.get("/sso/login").get_data(as_text=True)


def test_a_cached_discovery_document_still_serves(make_app, op, own_op, clock):
    """The IdP goes down after a successful fetch: sign-ins keep working on the
    cached copy, so no fallback is offered (the failure is still on record)."""
    app = make_app(config(op, primary(own_op.issuer, clientId=CLIENT_ID, clientSecret=CLIENT_SECRET,
                                      discoveryTtl=60)))
    client = app.test_client()
    assert client.get("/sso/corp/login").status_code == 302
    prov = app.extensions["ccsso"].providers["corp"]
    fetched = prov.availability().last_success
    assert fetched is not None
    stop(own_op)
    clock.advance(61)  # the copy is due for a refresh, which fails
    resp = client.get("/sso/corp/login?next=/me", headers=HTML)
    assert resp.status_code == 302 and resp.headers["Location"].startswith(own_op.issuer + "/authorize")
    state = prov.availability()
    assert not state.unavailable and state.last_success == fetched
    assert state.last_error and "refused" in state.last_error and state.failure == "refused"
    assert "unreachable" not in client.get("/sso/login").get_data(as_text=True)


def test_the_outage_ends_when_the_idp_answers_again(make_app, op, own_op, clock):
    own_op.down = True  # answers 503 to everything
    app = make_app(config(op, primary(own_op.issuer, clientId=CLIENT_ID, clientSecret=CLIENT_SECRET)))
    client = app.test_client()
    assert client.get("/sso/corp/login", headers=JSON).get_json()["failure"] == "bad_answer"
    prov = app.extensions["ccsso"].providers["corp"]
    assert prov.availability().unavailable and "answered HTTP 503" in (prov.availability().last_error or "")
    own_op.down = False
    assert client.get("/sso/corp/login").status_code == 503  # a moment later: still the known outage
    clock.advance(31)
    assert client.get("/sso/corp/login").status_code == 302  # then the IdP is tried again
    state = prov.availability()
    assert not state.unavailable and state.documents == () and state.last_success is not None
    assert "unreachable" not in client.get("/sso/login").get_data(as_text=True)


def test_unreachable_jwks_at_the_login_offers_the_fallback(make_app, op, own_op, dead_port):
    """The discovery document answers, the signing keys cannot be fetched: the
    sign-in is not sent to an IdP whose answer could not be checked."""
    own_op.extra_metadata = {"jwks_uri": f"http://127.0.0.1:{dead_port}/jwks"}
    app = make_app(config(op, primary(own_op.issuer, clientId=CLIENT_ID, clientSecret=CLIENT_SECRET)))
    client = app.test_client()
    resp = client.get("/sso/corp/login?next=/me", headers=HTML)
    assert resp.status_code == 503
    page = resp.get_data(as_text=True)
    assert "Corp SSO is unreachable" in page and fallback_links(page)
    assert app.extensions["ccsso"].providers["corp"].availability().documents == ("signing keys (JWKS)",)
    # (the keys going away between a sign-in's start and its return: test_fallback_review.py)


# --------------------------------------------------------------------------- sessions outlive the outage

def test_a_signed_in_session_keeps_working_while_the_idp_is_down(make_app, op, own_op, clock):
    cfg = config(op, primary(own_op.issuer, clientId=CLIENT_ID, clientSecret=CLIENT_SECRET))
    cfg["session"].update(refreshWindow=300, idleTimeout=7200, outageGrace=0)  # the grace: gate/test_refresh_outage.py
    app = make_app(cfg)
    client = app.test_client()
    url = start_login(client, "corp")
    assert callback(client, own_op.issue_code(url, expires_in=3600), provider="corp").status_code == 302
    stop(own_op)
    assert client.get("/me").status_code == 200  # the session needs no IdP
    clock.advance(3400)  # in the refresh window: the refresh fails, the still-valid token is kept
    me = client.get("/me", headers=JSON)
    assert me.status_code == 200 and me.get_json()["provider"] == "corp"
    clock.advance(201)  # the access token has expired and cannot be renewed: 503, fail closed ...
    resp = client.get("/me", headers=JSON)
    assert resp.status_code == 503 and resp.get_json()["error"] == "idp_unavailable"
    # ... but not signed out: the session is still there (not a 401 / a redirect to sign in)
    again = client.get("/me", headers=JSON)
    assert again.status_code == 503
    assert client.get_cookie("ccsso_session") is not None


# --------------------------------------------------------------------------- SAML, and the logs

def test_a_saml_primary_with_unreachable_metadata_offers_the_fallback(make_app, op, dead_port, tmp_path):
    saml = provider_block(f"http://127.0.0.1:{dead_port}/metadata", timeout=1, displayName="Google Workspace",
                          fallback=["breakglass"])
    app = make_app({"auth": {"providers": {"google": saml, "breakglass": breakglass(op)}}, "skills": SKILLS,
                    "session": {"cookieSecure": False}})
    client = app.test_client()
    page = client.get("/sso/google/login?next=/me", headers=HTML)
    assert page.status_code == 503
    text = page.get_data(as_text=True)
    assert "Google Workspace is unreachable</strong>; sign in with" in text
    (link,) = fallback_links(text)
    assert app.extensions["ccsso"].providers["google"].availability().documents == ("SAML metadata",)
    body = client.get("/sso/google/login?next=/me", headers=JSON).get_json()
    assert body["fallbacks"][0]["provider"] == "breakglass"
    with listen_to(signals.fallback_used) as used:
        assert sign_in_via(client, op, link).status_code == 302
    assert [(r.kwargs["primary"], r.kwargs["provider"]) for r in used] == [("google", "breakglass")]


def test_no_secret_reaches_the_log(make_app, op, dead_port, caplog):
    app = dead_app(make_app, op, dead_port)
    client = app.test_client()
    with caplog.at_level(logging.DEBUG):
        link = fallback_links(client.get("/sso/corp/login?next=/me").get_data(as_text=True))[0]
        client.get("/sso/corp/login?next=/me", headers=JSON)
        client.get("/sso/login?next=/me")
        resp = client.get(link)
        params = op.issue_code(resp.headers["Location"])
        assert callback(client, params, provider="breakglass").status_code == 302
        assert app.extensions["ccsso"].audit.flush(5)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert f"127.0.0.1:{dead_port}" in text  # the outage is logged ...
    for secret in (PRIMARY_SECRET, CLIENT_SECRET, params["code"]):  # ... without a secret
        assert secret not in text
