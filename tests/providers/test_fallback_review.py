"""IdP fallback, second round (the red-team review of 79d6ac4): regression tests.

* a break-glass sign-in is announced whenever the provider it stands in for
  is unavailable -- however long ago that was learnt, through a signing-key
  (JWKS) outage too, and whether the banner's link, the chooser or a typed URL
  led there;
* ``fallbackOnly``: a break-glass provider that is hidden and refused while
  the providers listing it are up;
* a dead primary that accepts connections but never answers does not make
  break-glass clicks queue behind each other;
* a step-up is never offered a fallback, at the login or at the callback, and
  a made-up ``?stepup=`` is no step-up.
* (round 3) unlocking a ``fallbackOnly`` provider does not trust a cached
  "up" nor an old "down": the primary is probed afresh, single-flight, at most
  once per ``RECHECK_AFTER`` per worker -- never on the primary's own sign-ins
  or protected requests.

Real parts only: refused connections are a port bound on 127.0.0.1 nobody
listens on, the silent IdP a socket that listens and never accepts (the
kernel completes the handshake, nothing ever answers), the working IdPs the
suite's local OPs over real HTTP.
"""

from __future__ import annotations

import html
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from flask_ccsso import reasons, signals
from flask_ccsso.config import parse_config
from flask_ccsso.exceptions import ConfigError
from flask_ccsso.stores import MemoryStore
from flask_ccsso.testing import listen_to
from tests.providers import test_fallback as first_round
from tests.providers.test_fallback import HTML, JSON, config, dead_app, fallback_links, primary, sign_in_via, stop
from tests.support.local_op import CLIENT_ID, CLIENT_SECRET, LocalOP
from tests.support.oidc import callback, start_login

#: the first round's fixtures: a refused port, an OP of the test's own
dead_port = first_round.dead_port
own_op = first_round.own_op

#: the silent primary's ``timeout`` (seconds): each fetch from it takes this long (3 in a row: 6 s)
SILENT_TIMEOUT = 2


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel's backlog) but never
    answers: every fetch from it waits its full timeout."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield sock.getsockname()[1]
    sock.close()


def working_primary(op: LocalOP, **over: Any) -> dict[str, Any]:
    """Corp SSO served by ``op`` (a local OP this test controls)."""
    return primary(op.issuer, clientId=CLIENT_ID, clientSecret=CLIENT_SECRET, **over)


def fallback_only(cfg: dict[str, Any]) -> dict[str, Any]:
    cfg["auth"]["providers"]["breakglass"]["fallbackOnly"] = True
    return cfg


def provider_buttons(page: str) -> list[str]:
    return [urlsplit(html.unescape(h)).path for h in re.findall(r'<a class="provider" href="([^"]+)"', page)]


# --------------------------------------------------------------------------- a JWKS outage, however old

def test_break_glass_during_a_jwks_outage_is_announced_after_the_recheck_window(make_app, op, own_op, clock):
    """The primary's discovery document is cached, its signing keys cannot be
    fetched: the sign-in at the primary finds that out (before sending anyone
    to the IdP), and a break-glass sign-in 31 s later -- past the window in
    which the primary is not tried again -- is still a fallback sign-in."""
    app = make_app(config(op, working_primary(own_op)))
    corp = app.extensions["ccsso"].providers["corp"]
    corp.metadata()  # the discovery document is cached (a sign-in started earlier fetched it)
    own_op.down = True  # from now on it answers 503 to everything
    client = app.test_client()
    resp = client.get("/sso/corp/login?next=/me", headers=HTML)
    assert resp.status_code == 503
    assert corp.availability().documents == ("signing keys (JWKS)",)
    (link,) = fallback_links(resp.get_data(as_text=True))
    clock.advance(31)
    jwks_hits = own_op.jwks_hits
    with listen_to(signals.fallback_used) as used, listen_to(signals.failure_threshold) as alerts:
        assert sign_in_via(client, op, link).status_code == 302
    assert [r.kwargs["primary"] for r in used] == ["corp"] and len(alerts) == 1
    assert own_op.jwks_hits == jwks_hits  # judged from the recorded status: the dead IdP was not asked


def test_a_worker_that_never_saw_the_jwks_outage_finds_it_from_the_link(make_app, op, own_op, dead_port):
    """A fresh worker checks the primary's signing keys too, not just its
    (fetchable) discovery document, when a break-glass sign-in arrives."""
    own_op.extra_metadata = {"jwks_uri": f"http://127.0.0.1:{dead_port}/jwks"}
    cfg = config(op, working_primary(own_op))
    first, second = make_app(cfg), make_app(cfg)
    (link,) = fallback_links(first.test_client().get("/sso/corp/login?next=/me", headers=HTML).get_data(as_text=True))
    with listen_to(signals.fallback_used, sender=second) as used:
        assert sign_in_via(second.test_client(), op, link).status_code == 302
    assert [r.kwargs["primary"] for r in used] == ["corp"]
    assert second.extensions["ccsso"].providers["corp"].availability().documents == ("signing keys (JWKS)",)


def test_the_banner_of_a_jwks_outage_ends_once_the_primary_is_tried_again(make_app, op, own_op, clock):
    app = make_app(config(op, working_primary(own_op)))
    app.extensions["ccsso"].providers["corp"].metadata()
    own_op.down = True
    client = app.test_client()
    assert client.get("/sso/corp/login").status_code == 503
    own_op.down = False  # the IdP is back
    clock.advance(31)
    assert "Corp SSO is unreachable" in client.get("/sso/login").get_data(as_text=True)  # the chooser fetches nothing
    resp = client.get("/sso/corp/login?next=/me")  # the sign-in tries the keys again, and they answer
    assert resp.status_code == 302 and resp.headers["Location"].startswith(own_op.issuer + "/authorize")
    assert "unreachable" not in client.get("/sso/login").get_data(as_text=True)


# --------------------------------------------------------------------------- the use, not the link, is announced

def test_a_direct_break_glass_sign_in_while_the_primary_is_down_is_announced(make_app, op, dead_port):
    app = dead_app(make_app, op, dead_port)
    client = app.test_client()
    assert client.get("/sso/corp/login?next=/me").status_code == 503  # corp is known to be down
    with listen_to(signals.fallback_used) as used, listen_to(signals.failure_threshold) as alerts:
        assert sign_in_via(client, op, "/sso/breakglass/login?next=/me").status_code == 302
        # from the chooser's plain button too
        chooser = client.get("/sso/login?next=/me").get_data(as_text=True)
        assert sign_in_via(client, op, "/sso/breakglass/login?next=/me").status_code == 302
    assert "/sso/breakglass/login" in provider_buttons(chooser)
    assert [(r.kwargs["provider"], r.kwargs["primary"]) for r in used] == [("breakglass", "corp")] * 2
    assert [a.kwargs["key_type"] for a in alerts] == ["idp_fallback"] * 2


def test_a_break_glass_sign_in_on_a_fresh_worker_checks_the_primary(make_app, op, dead_port):
    """No link, no outage known to this worker: the same cheap check finds the primary down."""
    app = dead_app(make_app, op, dead_port)
    with listen_to(signals.fallback_used) as used:
        assert sign_in_via(app.test_client(), op, "/sso/breakglass/login?next=/me").status_code == 302
    assert [r.kwargs["primary"] for r in used] == ["corp"]


def test_the_link_only_picks_the_primary_when_several_are_down(make_app, op, dead_port):
    cfg = config(op, primary(f"http://127.0.0.1:{dead_port}/idp"))
    cfg["auth"]["providers"]["hr"] = primary(f"http://127.0.0.1:{dead_port}/hr", displayName="HR SSO")
    app = make_app(cfg)
    client = app.test_client()
    assert client.get("/sso/corp/login").status_code == 503  # corp is known to be down, hr not yet
    with listen_to(signals.fallback_used) as used:
        assert sign_in_via(client, op, "/sso/breakglass/login?next=/me&fallback_for=hr").status_code == 302
        assert sign_in_via(client, op, "/sso/breakglass/login?next=/me").status_code == 302
    assert [r.kwargs["primary"] for r in used] == ["hr", "corp"]


# --------------------------------------------------------------------------- fallbackOnly

def _config_error(cfg: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        parse_config(cfg)
    return e.value


BASE = {"provider": "oidc", "clientId": "x", "issuer": "https://idp.example.com"}


def test_fallback_only_defaults_to_false_and_needs_a_provider_listing_it():
    cfg = parse_config({"auth": {"providers": {"a": {**BASE, "fallback": ["b"]}, "b": {**BASE, "fallbackOnly": True}}}})
    assert cfg.providers["b"].fallback_only is True and cfg.providers["a"].fallback_only is False
    err = _config_error({"auth": {"providers": {"a": BASE, "b": {**BASE, "fallbackOnly": True}}}})
    assert err.path == "auth.providers.b.fallbackOnly" and "no provider lists 'b'" in err.problem
    assert err.fix and "'fallback' list" in err.fix
    single = _config_error({"auth": {**BASE, "fallbackOnly": True}})
    assert single.path == "auth.fallbackOnly"
    default = _config_error({"auth": {"default": "b", "providers": {"a": {**BASE, "fallback": ["b"]},
                                                                   "b": {**BASE, "fallbackOnly": True}}}})
    assert default.path == "auth.default" and "fallbackOnly" in default.problem
    assert _config_error({"auth": {**BASE, "fallbackOnly": "yes"}}).path == "auth.fallbackOnly"


def test_a_fallback_only_provider_is_refused_while_its_primary_is_up(make_app, op, own_op, failures):
    app = make_app(fallback_only(config(op, working_primary(own_op))))
    client = app.test_client()
    chooser = client.get("/sso/login?next=/me").get_data(as_text=True)
    assert provider_buttons(chooser) == ["/sso/corp/login"]  # hidden
    with listen_to(signals.user_logged_in) as logins, listen_to(signals.fallback_used) as used:
        page = client.get("/sso/breakglass/login?next=/me", headers=HTML)
        body = client.get("/sso/breakglass/login?next=/me", headers=JSON)
        forged = client.get("/sso/breakglass/login?next=/me&fallback_for=corp", headers=JSON)
    assert logins == [] and used == []
    assert page.status_code == 403 and page.headers["Cache-Control"] == "no-store"
    text = html.unescape(page.get_data(as_text=True))
    assert "Break-glass is for emergencies only" in text and "Corp SSO can be reached now" in text
    (action,) = re.findall(r'<a class="button" href="([^"]+)">Sign in with Corp SSO</a>', text)
    assert urlsplit(action).path == "/sso/corp/login" and parse_qs(urlsplit(action).query) == {"next": ["/me"]}
    for resp in (body, forged):
        assert resp.status_code == 403
        data = resp.get_json()
        assert data["error"] == reasons.FALLBACK_NOT_NEEDED == "fallback_not_needed"
        assert data["provider"] == "breakglass"
        assert [(s["provider"], urlsplit(s["login_url"]).path) for s in data["sign_in_with"]] == [
            ("corp", "/sso/corp/login")]
    assert [(f["provider"], f["reason"]) for f in failures] == [("breakglass", "fallback_not_needed")] * 3
    assert own_op.discovery_hits >= 1  # the primary was really checked (and answered)


def test_a_fallback_only_provider_serves_while_its_primary_is_down(make_app, op, dead_port):
    app = make_app(fallback_only(config(op, primary(f"http://127.0.0.1:{dead_port}/idp"))))
    client = app.test_client()
    assert provider_buttons(client.get("/sso/login").get_data(as_text=True)) == ["/sso/corp/login"]
    page = client.get("/sso/corp/login?next=/me", headers=HTML).get_data(as_text=True)
    (link,) = fallback_links(page)
    assert provider_buttons(client.get("/sso/login").get_data(as_text=True)) == [
        "/sso/corp/login", "/sso/breakglass/login"]  # shown now that the outage is known
    with listen_to(signals.fallback_used) as used:
        assert sign_in_via(client, op, link).status_code == 302
        # a worker that knows nothing yet checks the primary, finds it down, and lets the sign-in through
        fresh = make_app(fallback_only(config(op, primary(f"http://127.0.0.1:{dead_port}/idp"))))
        assert sign_in_via(fresh.test_client(), op, "/sso/breakglass/login?next=/me").status_code == 302
    assert [r.kwargs["primary"] for r in used] == ["corp", "corp"]


def test_without_fallback_only_a_break_glass_provider_still_signs_in_while_the_primary_is_up(make_app, op, own_op):
    """``fallbackOnly`` is opt-in: a plain fallback provider is an ordinary provider while its primary is up."""
    app = make_app(config(op, working_primary(own_op)))
    client = app.test_client()
    assert provider_buttons(client.get("/sso/login").get_data(as_text=True)) == [
        "/sso/corp/login", "/sso/breakglass/login"]
    with listen_to(signals.fallback_used) as used:
        assert sign_in_via(client, op, "/sso/breakglass/login?next=/me").status_code == 302
    assert used == []


# --------------------------------------------------------------------------- a silent primary: no queue

def _concurrently(app: Any, link: str, count: int = 3) -> tuple[float, list[int]]:
    """``count`` browsers follow ``link`` at once; the wall time until all are answered, and their statuses."""
    statuses: list[int] = []
    start = threading.Barrier(count + 1)

    def click() -> None:
        client = app.test_client()
        start.wait()
        statuses.append(client.get(link).status_code)

    threads = [threading.Thread(target=click) for _ in range(count)]
    for t in threads:
        t.start()
    start.wait()
    began = time.monotonic()
    for t in threads:
        t.join(30)
    return time.monotonic() - began, statuses


def test_break_glass_clicks_do_not_wait_on_a_primary_known_to_be_silent(make_app, op, silent_port, clock):
    app = make_app(config(op, primary(f"http://127.0.0.1:{silent_port}/idp", timeout=SILENT_TIMEOUT)))
    began = time.monotonic()
    page = app.test_client().get("/sso/corp/login?next=/me", headers=HTML)
    assert page.status_code == 503 and time.monotonic() - began >= SILENT_TIMEOUT  # that one fetch waited
    (link,) = fallback_links(page.get_data(as_text=True))
    clock.advance(31)  # past the window in which the primary is not tried again
    failed_at = app.extensions["ccsso"].providers["corp"].availability().last_error_at
    took, statuses = _concurrently(app, link)
    assert statuses == [302, 302, 302]
    assert app.extensions["ccsso"].providers["corp"].availability().last_error_at == failed_at  # not fetched
    assert took < SILENT_TIMEOUT, f"break-glass clicks waited {took:.1f} s on the silent primary"


def test_concurrent_break_glass_clicks_on_a_fresh_worker_share_one_check(make_app, op, silent_port):
    """Nothing is known yet: one click checks the primary (and waits its
    timeout), the others wait for that check and take its answer, rather
    than fetching again one after another (3 clicks would take 3 timeouts)."""
    app = make_app(config(op, primary(f"http://127.0.0.1:{silent_port}/idp", timeout=SILENT_TIMEOUT)))
    with listen_to(signals.fallback_used, sender=app) as used:
        took, statuses = _concurrently(app, "/sso/breakglass/login?next=/me&fallback_for=corp")
    assert statuses == [302, 302, 302]
    assert took < 2 * SILENT_TIMEOUT, f"3 break-glass clicks took {took:.1f} s: they queued on the silent primary"
    assert app.extensions["ccsso"].providers["corp"].availability().failure == "timeout"
    assert used == []  # (announced when each sign-in completes, not when it starts)


def test_concurrent_sign_ins_at_a_silent_primary_share_one_fetch(make_app, op, silent_port, clock):
    """The same at the primary's own sign-in, once the recheck window has passed."""
    app = make_app(config(op, primary(f"http://127.0.0.1:{silent_port}/idp", timeout=SILENT_TIMEOUT)))
    assert app.test_client().get("/sso/corp/login").status_code == 503
    clock.advance(31)
    took, statuses = _concurrently(app, "/sso/corp/login?next=/me")
    assert statuses == [503, 503, 503]
    assert took < 2 * SILENT_TIMEOUT, f"3 sign-ins took {took:.1f} s: they queued on the silent primary"


# --------------------------------------------------------------------------- the callback

def _two_workers(make_app: Any, cfg: dict[str, Any], clock: Any) -> tuple[Any, Any]:
    store = MemoryStore(clock)
    return make_app(cfg, store=store), make_app(cfg, store=store)


def _same_browser(first: Any, second: Any) -> tuple[Any, Any]:
    c1 = first.test_client()
    c2 = second.test_client()
    return c1, c2


def _share_cookie(c1: Any, c2: Any) -> None:
    c2.set_cookie("ccsso_session", c1.get_cookie("ccsso_session").value)


def test_a_callback_meeting_a_jwks_outage_keeps_the_sign_ins_next(make_app, op, own_op, dead_port, clock):
    """Started on a worker with the keys cached, finished on one that cannot fetch them."""
    first, second = _two_workers(make_app, config(op, working_primary(own_op)), clock)
    c1, c2 = _same_browser(first, second)
    url = start_login(c1, "corp", next_url="/me?tab=2")
    own_op.extra_metadata = {"jwks_uri": f"http://127.0.0.1:{dead_port}/jwks"}
    _share_cookie(c1, c2)
    resp = callback(c2, own_op.issue_code(url), provider="corp", headers=HTML)
    assert resp.status_code == 503
    (link,) = fallback_links(resp.get_data(as_text=True))
    assert parse_qs(urlsplit(link).query) == {"next": ["/me?tab=2"], "fallback_for": ["corp"]}


def test_a_callback_meeting_a_dead_discovery_keeps_the_sign_ins_next(make_app, op, own_op, clock):
    """The IdP is gone before the pending sign-in is even taken: it is read (not consumed) for its ``next``."""
    first, second = _two_workers(make_app, config(op, working_primary(own_op)), clock)
    c1, c2 = _same_browser(first, second)
    url = start_login(c1, "corp", next_url="/reports")
    params = own_op.issue_code(url)
    stop(own_op)
    _share_cookie(c1, c2)
    resp = callback(c2, params, provider="corp", headers=HTML)
    assert resp.status_code == 503
    (link,) = fallback_links(resp.get_data(as_text=True))
    assert parse_qs(urlsplit(link).query)["next"] == ["/reports"]


def test_a_step_up_callback_is_never_offered_a_fallback(make_app, op, own_op, dead_port, clock):
    cfg = config(op, working_primary(own_op, scopes=["openid", "profile", "email"]))
    cfg["skills"] = {**cfg["skills"], "sensitive-thing": {"allowedGroups": ["database-admins"], "sensitive": True}}
    first, second = _two_workers(make_app, cfg, clock)
    c1, c2 = _same_browser(first, second)
    assert callback(c1, own_op.issue_code(start_login(c1, "corp")), provider="corp").status_code == 302
    url = start_login(c1, "corp", next_url="/me", stepup="sensitive-thing")  # keys cached on the first worker
    own_op.extra_metadata = {"jwks_uri": f"http://127.0.0.1:{dead_port}/jwks"}  # the keys go away
    _share_cookie(c1, c2)
    resp = callback(c2, own_op.issue_code(url), provider="corp", headers=HTML)
    assert resp.status_code == 503
    text = resp.get_data(as_text=True)
    assert fallback_links(text) == [] and "Break-glass" not in text


# --------------------------------------------------------------------------- a made-up step-up

def test_a_made_up_stepup_parameter_does_not_skip_the_known_outage(make_app, op, dead_port, clock):
    app = dead_app(make_app, op, dead_port)
    client = app.test_client()
    prov = app.extensions["ccsso"].providers["corp"]
    assert client.get("/sso/corp/login").status_code == 503
    first = prov.availability().last_error_at
    clock.advance(5)
    resp = client.get("/sso/corp/login?stepup=nope", headers=HTML)
    assert resp.status_code == 503 and fallback_links(resp.get_data(as_text=True))  # a plain sign-in's page
    assert prov.availability().last_error_at == first  # the dead IdP was not asked again


# --------------------------------------------------------------------------- controls

def test_bad_fallback_for_values_and_next_stay_safe(make_app, op, dead_port):
    app = dead_app(make_app, op, dead_port)
    client = app.test_client()
    for q in ("fallback_for=corp&fallback_for=x", "fallback_for=%E2%9C%93", "fallback_for=", "fallback_for=%00"):
        assert client.get(f"/sso/breakglass/login?next=/me&{q}").status_code == 302
    page = client.get("/sso/corp/login?next=//evil.example/x", headers=HTML).get_data(as_text=True)
    assert "evil" not in page and fallback_links(page)
    body = client.get("/sso/corp/login?next=https://evil.example", headers=JSON).get_json()
    assert "evil" not in str(body)


def test_a_saml_response_meeting_dead_metadata_keeps_the_sign_ins_next(make_app, op, tmp_path, clock):
    """The ACS cannot check the response (the IdP's metadata is gone on this worker): the pending
    sign-in it answers is found by its unverified ``InResponseTo``, for ``next`` and the step-up flag only."""
    from tests.providers.saml.test_saml_metadata import MetadataServer
    from tests.support.saml_idp import SAMLIdP, User

    idp = SAMLIdP(str(tmp_path / "idp"))
    mdserver = MetadataServer()
    try:
        mdserver.body = idp.metadata_xml().encode()
        saml = {"provider": "saml", "idpMetadata": mdserver.url, "spEntityId": "https://portal.example.test",
                "displayName": "Google Workspace", "fallback": ["breakglass"], "timeout": 1,
                "attributeMapping": {"email": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress"}}
        cfg = config(op, {})
        cfg["auth"]["providers"] = {"google": saml, "breakglass": cfg["auth"]["providers"]["breakglass"]}
        first, second = _two_workers(make_app, cfg, clock)
        c1 = first.test_client()
        idp.trust_sp(c1.get("/sso/google/metadata").data.decode())
        started = c1.get("/sso/google/login?next=/reports")
        assert started.status_code == 302, started.data
        location = started.headers["Location"]
        mdserver.status = 503  # the metadata goes away; the second worker never had it
        resp = second.test_client().post("/sso/google/acs", data=idp.respond(location, User()), headers=HTML)
    finally:
        mdserver.close()
    assert resp.status_code == 503
    (link,) = fallback_links(resp.get_data(as_text=True))
    assert parse_qs(urlsplit(link).query) == {"next": ["/reports"], "fallback_for": ["google"]}


def test_an_unsolicited_saml_response_at_a_fallback_only_provider_is_refused(make_app, op, dead_port, idp, tmp_path,
                                                                              failures):
    """``fallbackOnly`` is enforced where the sign-in ends too: a response that no sign-in started
    here asked for carries no fallback verdict, so it is refused (even during the outage)."""
    from tests.support.saml import provider_block
    from tests.support.saml_idp import User

    saml = provider_block(idp.write_metadata(str(tmp_path / "idp-metadata.xml")), displayName="Emergency SAML",
                          fallbackOnly=True, allowUnsolicited=True)
    cfg = config(op, primary(f"http://127.0.0.1:{dead_port}/idp", fallback=["google"]))
    cfg["auth"]["providers"]["google"] = saml
    app = make_app(cfg)
    client = app.test_client()
    idp.trust_sp(client.get("/sso/google/metadata").data.decode())
    started = client.get("/sso/google/login?next=/me")  # corp is down: the emergency provider may be used
    assert started.status_code == 302, started.data
    data = idp.respond(started.headers["Location"], User(), in_response_to=None)
    data.pop("RelayState")
    with listen_to(signals.user_logged_in) as logins:
        resp = client.post("/sso/google/acs", data=data, headers=HTML)
    assert resp.status_code == 403 and logins == []
    assert "Emergency SAML is for emergencies only" in html.unescape(resp.get_data(as_text=True))
    assert failures[-1]["reason"] == "fallback_not_needed" and failures[-1]["provider"] == "google"


# --------------------------------------------------------------------------- fallbackOnly at the bearer gate

def test_a_fallback_only_providers_bearer_tokens_serve_only_during_an_outage(make_app, op, own_op, clock, failures):
    """Not a second front door for APIs either: an access token of a ``fallbackOnly``
    provider is refused (401 ``fallback_not_needed``, audited) while the provider it
    stands in for is up, and accepted while that one is known to be unavailable."""
    from tests.support.skills import access_token, bearer

    app = make_app(fallback_only(config(op, working_primary(own_op))))
    client = app.test_client()
    token = access_token(op, clock, sub="u-bob", email="bob@example.com")
    refused = client.get("/me", headers=bearer(token))
    assert refused.status_code == 401 and refused.get_json()["error"] == reasons.FALLBACK_NOT_NEEDED
    assert [f["reason"] for f in failures] == [reasons.FALLBACK_NOT_NEEDED]

    stop(own_op)  # the everyday IdP goes away; a sign-in there finds out
    corp = app.extensions["ccsso"].providers["corp"]
    assert client.get("/sso/corp/login?next=/me", headers=HTML).status_code == 503
    assert corp.availability().unavailable
    assert client.get("/me", headers=bearer(token)).status_code == 200


# --------------------------------------------------------------------------- round 3: the active probe

def test_break_glass_unlocks_when_a_warm_worker_loses_the_primary(make_app, op, own_op, clock):
    """A worker that fetched the primary's documents once keeps serving the cached
    copies when the IdP dies, so its recorded status stays "up" -- offering is left
    to that status, but unlocking a ``fallbackOnly`` provider probes the primary."""
    app = make_app(fallback_only(config(op, working_primary(own_op))))
    corp = app.extensions["ccsso"].providers["corp"]
    corp.ensure_published()  # an earlier sign-in fetched discovery + JWKS
    own_op.down = True       # (the cached copies are still fresh: the worker fetches nothing)
    client = app.test_client()
    assert client.get("/sso/corp/login?next=/me", headers=HTML).status_code == 302  # from the cached copies
    assert not corp.availability().unavailable  # the offer is unchanged
    with listen_to(signals.fallback_used, sender=app) as used:
        resp = sign_in_via(client, op, "/sso/breakglass/login?next=/me")
    assert resp.status_code == 302, resp.status_code
    assert [r.kwargs["primary"] for r in used] == ["corp"]  # announced as a fallback sign-in
    known = corp.availability()
    assert known.unavailable and "reachability check" in known.documents  # recorded: down by probe


def test_a_saml_primary_on_a_warm_worker_is_probed_too(make_app, op, clock, tmp_path):
    """The same for a SAML primary: its metadata URL is fetched afresh."""
    from tests.providers.saml.test_saml_metadata import MetadataServer
    from tests.support.saml_idp import SAMLIdP

    idp = SAMLIdP(str(tmp_path / "idp"))
    mdserver = MetadataServer()
    try:
        mdserver.body = idp.metadata_xml().encode()
        saml = {"provider": "saml", "idpMetadata": mdserver.url, "spEntityId": "https://portal.example.test",
                "displayName": "Google Workspace", "fallback": ["breakglass"], "timeout": 1}
        cfg = fallback_only(config(op, {}))
        cfg["auth"]["providers"] = {"google": saml, "breakglass": cfg["auth"]["providers"]["breakglass"]}
        app = make_app(cfg)
        google = app.extensions["ccsso"].providers["google"]
        client = app.test_client()
        google.ensure_published()  # a warm worker
        assert client.get("/sso/breakglass/login?next=/me", headers=HTML).status_code == 403  # it answers
        mdserver.status = 503
        assert client.get("/sso/breakglass/login?next=/me", headers=HTML).status_code == 403  # verdict kept 30 s
        clock.advance(31)
        assert client.get("/sso/breakglass/login?next=/me", headers=HTML).status_code == 302
        assert google.availability().unavailable
    finally:
        mdserver.close()


def test_the_probe_costs_one_fetch_per_recheck_window_and_none_on_the_primarys_own_path(make_app, op, own_op, clock):
    """A spammed break-glass URL costs at most one discovery fetch per 30 s; sign-ins at the
    primary and its bearer tokens (protected requests) never probe."""
    from tests.support.skills import access_token, bearer

    app = make_app(fallback_only(config(op, working_primary(own_op))))
    corp = app.extensions["ccsso"].providers["corp"]
    client = app.test_client()
    corp.ensure_published()
    hits = own_op.discovery_hits
    for _ in range(3):
        assert client.get("/sso/corp/login?next=/me", headers=HTML).status_code == 302
    token = access_token(own_op, clock, sub="u-ann", email="ann@example.com")
    client.get("/me", headers=bearer(token))
    assert own_op.discovery_hits == hits  # the cached copy: no probe
    for _ in range(5):
        assert client.get("/sso/breakglass/login?next=/me", headers=HTML).status_code == 403
    assert own_op.discovery_hits == hits + 1  # one probe, its verdict kept
    clock.advance(31)
    for _ in range(3):
        assert client.get("/sso/breakglass/login?next=/me", headers=HTML).status_code == 403
    assert own_op.discovery_hits == hits + 2


def test_break_glass_locks_again_once_the_probe_finds_the_primary_back(make_app, op, own_op, clock):
    """A probe's "down" is kept for 30 s only: after that the primary is probed again,
    and a success clears the recorded outage."""
    app = make_app(fallback_only(config(op, working_primary(own_op))))
    corp = app.extensions["ccsso"].providers["corp"]
    client = app.test_client()
    corp.ensure_published()
    own_op.down = True
    assert client.get("/sso/breakglass/login?next=/me", headers=HTML).status_code == 302
    own_op.down = False
    clock.advance(31)
    assert client.get("/sso/breakglass/login?next=/me", headers=HTML).status_code == 403
    assert not corp.availability().unavailable


def test_concurrent_probes_share_one_fetch():
    """Single-flight: callers arriving while a probe runs wait for it and take its verdict."""
    from flask_ccsso.exceptions import IdPUnavailable
    from flask_ccsso.providers.availability import FetchStatus, Probe

    now = [1000.0]
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def check() -> str:
        calls.append(1)
        started.set()
        release.wait(10)
        raise IdPUnavailable("Could not reach the identity provider.", failure="refused")

    status = FetchStatus(lambda: now[0])
    probe = Probe(check, status, lambda: now[0])
    verdicts: list[bool] = []
    threads = [threading.Thread(target=lambda: verdicts.append(probe.down())) for _ in range(4)]
    threads[0].start()
    assert started.wait(10)
    for t in threads[1:]:
        t.start()
    release.set()
    for t in threads:
        t.join(10)
    assert verdicts == [True] * 4 and len(calls) == 1
    assert status.snapshot().unavailable and status.snapshot().failure == "refused"
    status.succeeded("discovery document")  # any later success clears the probe's verdict
    assert not status.snapshot().unavailable


def test_break_glass_bearer_token_stops_once_the_primary_is_back(make_app, op, own_op, clock):
    """A recorded outage older than 30 s is re-checked (one probe) before a break-glass
    bearer token is accepted: an API-only worker does not accept them for ever."""
    from tests.support.skills import access_token, bearer

    app = make_app(fallback_only(config(op, working_primary(own_op))))
    client = app.test_client()
    own_op.down = True
    assert client.get("/sso/corp/login?next=/me", headers=HTML).status_code == 503
    token = access_token(op, clock, sub="u-bob", email="bob@example.com")
    assert client.get("/me", headers=bearer(token)).status_code == 200  # a fresh outage: served
    own_op.down = False
    clock.advance(3600)
    token = access_token(op, clock, sub="u-bob", email="bob@example.com")
    refused = client.get("/me", headers=bearer(token))
    assert refused.status_code == 401 and refused.get_json()["error"] == reasons.FALLBACK_NOT_NEEDED
