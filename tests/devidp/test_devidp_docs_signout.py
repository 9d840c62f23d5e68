"""Sign-out end to end from the portal docs/devidp.md shows, over real HTTP.

The snippet is read out of the page (so the page cannot drift from what
works), written to a ``portal.py`` and imported as ``flask --app portal``
would, then served by a real werkzeug server on 127.0.0.1. A ``requests``
session plays the browser: sign in at the development IdP, ``POST
/sso/logout`` with the confirm page's CSRF token, follow the IdP's
``end_session``, land on ``/sso/logged-out`` -- and the IdP's own session
is gone: the next protected page shows the IdP's sign-in page again instead
of signing the person straight back in.
"""

from __future__ import annotations

import html
import importlib.util
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
import requests
from flask import Flask
from werkzeug.serving import make_server

from flask_ccsso.testing import csrf_token_in

DOC = Path(__file__).resolve().parents[2] / "docs" / "devidp.md"
#: the origin the page writes; the test serves the same portal on a free port
DOC_ORIGIN = "http://127.0.0.1:5000"


def documented_portal() -> str:
    """The page's Python block that mounts the IdP and the extension."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    portal = [b for b in blocks if "DevIdP(\n" in b and "CCSSO(app)" in b]
    assert len(portal) == 1, "docs/devidp.md should show one whole development portal"
    return portal[0]


@pytest.fixture
def portal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The documented portal served on a free loopback port; yields its origin."""
    holder: dict[str, Flask] = {}

    def dispatch(environ: Any, start_response: Any) -> Any:
        return holder["app"](environ, start_response)

    server = make_server("127.0.0.1", 0, dispatch, threaded=True)
    origin = f"http://127.0.0.1:{server.server_port}"
    source = documented_portal()
    assert DOC_ORIGIN in source
    path = tmp_path / "portal.py"
    path.write_text(source.replace(DOC_ORIGIN, origin), encoding="utf-8")
    monkeypatch.setenv("CCSSO_DEVIDP_ENABLED", "1")  # switch 2, as the page's console line sets it
    name = f"ccsso_docs_portal_{server.server_port}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        holder["app"] = module.app
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield origin
    finally:
        server.shutdown()
        server.server_close()
        sys.modules.pop(name, None)
        state = holder.get("app") and holder["app"].extensions.get("ccsso")
        if state is not None and state.audit is not None:
            state.audit.close(timeout=2)


def hop(browser: requests.Session, url: str, origin: str, **kwargs: Any) -> requests.Response:
    """One request, no redirect followed (each hop is asserted)."""
    return browser.request(kwargs.pop("method", "GET"), urljoin(origin + "/", url), allow_redirects=False,
                           timeout=10, **kwargs)


def follow(browser: requests.Session, resp: requests.Response, origin: str, stop_at: str) -> requests.Response:
    """Follow redirects until one leads to a path starting with ``stop_at`` (that one is fetched) or none is left."""
    for _ in range(10):
        if not resp.is_redirect:
            return resp
        resp = hop(browser, resp.headers["Location"], origin)
        if urlsplit(resp.url).path.startswith(stop_at):
            return resp
    raise AssertionError("too many redirects")


def idp_sign_in_page(browser: requests.Session, origin: str) -> requests.Response:
    """Open the protected home page and follow the hops to the IdP's answer."""
    start = hop(browser, "/", origin)
    assert start.status_code == 302, start.text
    return follow(browser, start, origin, stop_at="/devidp/authorize")


def sign_in_as(browser: requests.Session, origin: str, username: str) -> requests.Response:
    page = idp_sign_in_page(browser, origin)
    assert page.status_code == 200 and 'name="username"' in page.text, page.text
    action = html.unescape(re.search(r'<form method="post" action="([^"]+)"', page.text).group(1))
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    answer = hop(browser, action, origin, method="POST", data={"csrf": csrf, "username": username})
    assert answer.status_code == 302 and "/sso/dev/callback" in answer.headers["Location"], answer.text
    landing = follow(browser, answer, origin, stop_at="/")
    while landing.is_redirect:
        landing = hop(browser, landing.headers["Location"], origin)
    return landing


def test_documented_portal_signs_out_at_the_idp_too(portal: str) -> None:
    browser = requests.Session()
    home = sign_in_as(browser, portal, "alice")
    assert home.status_code == 200 and home.text == "Hello alice@example.com"

    # sign out as a browser does: the confirm page, then its form with the CSRF token
    confirm = hop(browser, "/sso/logout", portal)
    token = csrf_token_in(confirm.text)
    assert confirm.status_code == 200 and token
    out = hop(browser, "/sso/logout", portal, method="POST", data={"csrf_token": token})
    assert out.status_code == 303
    end_session = out.headers["Location"]
    assert urlsplit(end_session).path == "/devidp/end_session" and "id_token_hint=" in end_session

    # the IdP accepts what the extension sends and sends the browser back to it
    idp = hop(browser, end_session, portal)
    assert idp.status_code == 302, idp.text
    back = urlsplit(idp.headers["Location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == f"{portal}/sso/logged-out"
    page = hop(browser, idp.headers["Location"], portal)
    assert page.status_code == 200 and "You have been signed out" in page.text

    # the IdP session is gone too: the next protected page asks who you are
    again = idp_sign_in_page(browser, portal)
    assert again.status_code == 200, (again.status_code, again.headers.get("Location"))
    assert 'name="username"' in again.text
    assert hop(browser, "/", portal).status_code == 302  # and the portal's session stays ended


def test_sign_out_page_accepted_on_redirect_origins_only() -> None:
    from flask_ccsso.devidp import DevClient

    client = DevClient("portal", "s", ["http://127.0.0.1:8000/auth/okta/callback", "http://localhost:8000/cb"],
                       post_logout_redirect_uris=["http://127.0.0.1:8000/bye"])
    accepted = client.accepted_post_logout_redirect_uris()
    assert accepted == ("http://127.0.0.1:8000/bye", "http://127.0.0.1:8000/sso/logged-out",
                        "http://127.0.0.1:8000/auth/logged-out", "http://localhost:8000/sso/logged-out")
