"""SCIM deprovisioning and the IdP-outage fallback in the example portal, in a real browser.

* SCIM (``CCSSO_EXAMPLE_SCIM_TOKEN``): Erin is signed in in Chromium; the IdP's
  provisioning app (here: plain HTTP from the test, with Okta's documented
  bodies) deactivates her; her next page load is signed out and her next
  sign-in is refused.
* Fallback (``CCSSO_EXAMPLE_OUTAGE_DEMO=1``): the everyday IdP is down; the
  sign-in page says so and offers the break-glass provider, through which Erin
  signs in and lands where she was going.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import ROOT, chromium, idp_sign_in, portal_process, shot, wait_until

pytestmark = pytest.mark.browser

SCIM_TOKEN = "browser-scim-secret-" + "z" * 32
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    with chromium(tmp_path / "profile") as driver:
        yield driver


def scim(base: str, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(f"{base}/scim/v2{path}", method=method, data=json.dumps(body).encode(), headers={
        "Authorization": f"Bearer {SCIM_TOKEN}", "Content-Type": "application/scim+json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return dict(json.loads(resp.read()))


@pytest.mark.skipif(sys.version_info < (3, 11), reason="scim2-models needs Python 3.11")
def test_scim_deactivation_signs_the_browser_out_and_refuses_its_sign_in(tmp_path: Path, browser: Any) -> None:
    env = {"CCSSO_EXAMPLE_SCIM_TOKEN": SCIM_TOKEN, "SECRET_KEY": "scim-browser-" + "x" * 32}
    with portal_process(tmp_path / "instance", env) as base:
        browser.get(f"{base}/access")
        wait_until(browser, lambda d: "/devidp/authorize" in d.current_url)
        idp_sign_in(browser, "erin")
        assert browser.current_url == f"{base}/access" and "Erin" in browser.page_source

        user = scim(base, "POST", "/Users", {"schemas": [USER], "userName": "erin@example.com",
                                             "name": {"givenName": "Erin", "familyName": "Engineer"},
                                             "emails": [{"primary": True, "value": "erin@example.com"}],
                                             "externalId": "00u-dev-erin", "active": True})
        done = scim(base, "PATCH", f"/Users/{user['id']}",
                    {"schemas": [PATCH_OP], "Operations": [{"op": "replace", "value": {"active": False}}]})
        assert done["active"] is False

        # her next page load: the session was ended before SCIM's answer; signing in again is refused
        browser.get(f"{base}/access")
        wait_until(browser, lambda d: d.execute_script("return document.readyState") == "complete")
        if "/devidp/authorize" in browser.current_url:
            idp_sign_in(browser, "erin")
        assert browser.current_url != f"{base}/access"
        assert "deprovisioned" in browser.page_source
        shot(browser, "scim-deprovisioned")


def test_an_idp_outage_offers_break_glass_and_signs_in_through_it(tmp_path: Path, browser: Any) -> None:
    env = {"CCSSO_EXAMPLE_OUTAGE_DEMO": "1", "SECRET_KEY": "outage-browser-" + "x" * 32}
    with portal_process(tmp_path / "instance", env) as base:
        browser.get(f"{base}/sso/corp/login?next=/access")
        wait_until(browser, lambda d: d.execute_script("return document.readyState") == "complete")
        page = browser.page_source
        assert "Corp SSO" in page and "unreachable" in page
        also = ROOT / "docs" / "img" / "fallback-offered.png" if os.environ.get("CCSSO_UPDATE_SCREENSHOTS") == "1" else None
        shot(browser, "fallback-offered", also=also)
        links = browser.find_elements("css selector", 'a[href*="/sso/dev/login"]')
        assert links, page
        links[0].click()
        wait_until(browser, lambda d: "/devidp/authorize" in d.current_url)
        idp_sign_in(browser, "erin")
        assert browser.current_url == f"{base}/access", browser.current_url
        assert "Erin" in browser.page_source
