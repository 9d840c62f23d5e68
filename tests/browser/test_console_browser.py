"""The operator console in a real browser: Debian's headless Chromium through Selenium.

Two portal processes (the README's ``flask --app example_app run``) share one
Redis (``CCSSO_EXAMPLE_REDIS_URL``) and one ``SECRET_KEY``: two hosts behind a
load balancer. Erin signs in on host A; her browser's cookie works on host B
too. Bob (``security-team``: the ``sso-operator`` skill) opens host A's
console, is refused a forged post without the CSRF token, then ends Erin's
sessions -- and host B refuses her at her next request. Erin, who lacks the
skill, is refused the console. Every page is opened and its screenshot saved:
``CCSSO_UPDATE_SCREENSHOTS=1`` also writes them to docs/img/console/ (the
pictures docs/console.md shows).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import ROOT, chromium, idp_sign_in, portal_process, shot, wait_until
from tests.support.sessions import REDIS_URL, delete_prefix

pytestmark = [pytest.mark.browser, pytest.mark.redis]

DOCS_IMG = ROOT / "docs" / "img" / "console"


def doc_shot(driver: Any, name: str) -> None:
    """A screenshot of the whole page (the window grown to its height) in test-artifacts/browser/,
    and in docs/img/console/ when asked to update the docs."""
    height = min(int(driver.execute_script("return document.documentElement.scrollHeight")), 2400)
    driver.set_window_size(1200, max(height, 600) + 100)  # + the window's own chrome
    driver.execute_script("window.scrollTo(0, 0)")
    also = DOCS_IMG / f"{name}.png" if os.environ.get("CCSSO_UPDATE_SCREENSHOTS") == "1" else None
    shot(driver, f"console-{name}", also=also)
    driver.set_window_size(1200, 900)


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    prefix = f"ccsso-console-browser-{uuid.uuid4().hex[:8]}:"
    env = {"SECRET_KEY": "console-browser-" + "x" * 32, "CCSSO_EXAMPLE_REDIS_URL": REDIS_URL,
           "CCSSO_EXAMPLE_REDIS_PREFIX": prefix}
    try:
        with portal_process(tmp_path_factory.mktemp("host-a"), env) as a, \
                portal_process(tmp_path_factory.mktemp("host-b"), env) as b:
            yield a, b
    finally:
        delete_prefix(prefix)


@pytest.fixture
def bob(tmp_path: Path) -> Iterator[Any]:
    with chromium(tmp_path / "bob-profile") as driver:
        yield driver


@pytest.fixture
def erin(tmp_path: Path) -> Iterator[Any]:
    with chromium(tmp_path / "erin-profile") as driver:
        yield driver


def sign_in_at(driver: Any, url: str, username: str) -> None:
    """Open ``url`` signed out, sign in at the development IdP as ``username``, land on ``url``."""
    driver.get(url)
    wait_until(driver, lambda d: "/devidp/authorize" in d.current_url)
    idp_sign_in(driver, username)
    assert driver.current_url == url, driver.current_url


def by_id(driver: Any, element_id: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def forged_post(driver: Any, action: str, fields: dict[str, str]) -> None:
    """Submit a form the console never rendered (no CSRF token), as a forged page would."""
    driver.execute_script("""
        const form = document.createElement('form');
        form.method = 'post'; form.action = arguments[0];
        for (const [name, value] of Object.entries(arguments[1])) {
          const input = document.createElement('input');
          input.type = 'hidden'; input.name = name; input.value = value; form.appendChild(input);
        }
        document.body.appendChild(form); form.submit();""", action, fields)
    wait_until(driver, lambda d: d.current_url.endswith(action.split("?")[0]) and
               d.execute_script("return document.readyState") == "complete")


def test_console_pages_revoke_across_hosts_csrf_and_refusal(hosts: tuple[str, str], bob: Any, erin: Any) -> None:
    a, b = hosts
    # Erin signs in on host A; the same cookie is good on host B (the shared Redis)
    sign_in_at(erin, f"{a}/access", "erin")
    erin.get(f"{b}/access")
    assert erin.current_url == f"{b}/access" and "Erin" in erin.page_source

    # a person without the skill is refused, in the browser too
    erin.get(f"{a}/sso-console/")
    assert "Access denied" in erin.page_source and "sso-operator" in erin.page_source
    doc_shot(erin, "refused")

    # Bob, the operator
    sign_in_at(bob, f"{a}/sso-console/", "bob")
    assert by_id(bob, "console-operator").text == "bob@example.com"
    assert by_id(bob, "count-sessions").text.startswith("2")  # Erin's and his own
    doc_shot(bob, "overview")

    bob.get(f"{a}/sso-console/sessions")
    rows = css(bob, '#sessions-table tr[data-user="dev:00u-dev-erin"]')
    assert len(rows) == 1
    fingerprint = rows[0].get_attribute("data-session")
    assert "HeadlessChrome" in rows[0].find_element("css selector", '[data-field="user-agent"]').text
    assert rows[0].find_element("css selector", '[data-field="ip"]').text == "127.0.0.1"
    doc_shot(bob, "sessions")

    # a forged post without the CSRF token is refused and changes nothing
    forged_post(bob, f"{a}/sso-console/sessions/revoke-all", {"user": "erin@example.com"})
    shot(bob, "console-csrf-refused")
    assert "csrf_failed" in bob.page_source, bob.page_source[:2000]
    erin.get(f"{b}/access")
    assert erin.current_url == f"{b}/access", "a forged post must not end the session"

    # the real action: confirm page, then the form with its token
    bob.get(f"{a}/sso-console/sessions")
    by_id(bob, f"revoke-all-{fingerprint}").click()
    wait_until(bob, lambda d: d.find_elements("id", "confirm-revoke"))
    assert "erin@example.com" in by_id(bob, "confirm-what").text
    doc_shot(bob, "confirm")
    by_id(bob, "confirm-revoke").click()
    wait_until(bob, lambda d: d.find_elements("id", "notice"))
    assert not css(bob, 'tr[data-user="dev:00u-dev-erin"]')

    # host B refuses Erin at her next request: she is sent to sign in again
    erin.get(f"{b}/access")
    wait_until(erin, lambda d: d.execute_script("return document.readyState") == "complete")
    assert erin.current_url != f"{b}/access"
    assert "/devidp/authorize" in erin.current_url or "revoked" in erin.page_source.lower()

    # a failed sign-in (a callback with a forged state), for the audit trail and the charts
    erin.get(f"{a}/sso/dev/callback?code=forged&state=forged")
    assert "state_missing" in erin.page_source or "Sign-in failed" in erin.page_source

    # the audit explorer: the operator's action is in the trail, with him as the actor
    def action_listed(d: Any) -> bool:  # the audit writer delivers off the request path: reload until it has
        d.get(f"{a}/sso-console/audit?type=console.action")
        return bool(css(d, "#audit-events tbody tr[data-seq]"))

    wait_until(bob, action_listed)
    actions = css(bob, "#audit-events tbody tr[data-seq]")
    assert actions and "bob@example.com" in actions[0].text and "revoke_user" in bob.page_source
    bob.get(f"{a}/sso-console/audit")
    by_id(bob, "audit-verify").click()  # a post with the CSRF token: it reads the whole table
    wait_until(bob, lambda d: d.find_elements("id", "audit-verify-result"))
    assert by_id(bob, "audit-verify-result").get_attribute("data-intact") == "true"
    assert len(css(bob, "#audit-events tbody tr[data-seq]")) >= 5
    doc_shot(bob, "audit")
    export = by_id(bob, "audit-export-csv").get_property("formAction")  # a post form's button
    assert export == f"{a}/sso-console/audit/export.csv"
    # what the button posts (the form: its CSRF token and filters) comes back as a CSV attachment
    answer = bob.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch(arguments[0], {method: 'POST', body: new URLSearchParams(new FormData(arguments[1]))})
          .then(async r => done([r.status, r.headers.get('Content-Disposition'), await r.text()]));""",
        export, by_id(bob, "audit-exports"))
    assert answer[0] == 200 and answer[1].startswith("attachment;") and answer[2].startswith("seq,time,type")

    # a link on another site (host B is the same site, another origin) runs nothing: a page offers the link
    bob.get(f"{b}/")
    bob.execute_script("""
        const link = document.createElement('a');
        link.id = 'to-console'; link.href = arguments[0]; link.textContent = 'console';
        document.body.appendChild(link);""", f"{a}/sso-console/audit?type=console.action")
    by_id(bob, "to-console").click()
    wait_until(bob, lambda d: d.find_elements("id", "other-site"))
    assert not css(bob, "#audit-events")
    shot(bob, "console-other-site")
    by_id(bob, "open-target").click()  # the operator's own click, from the console's origin
    wait_until(bob, lambda d: d.find_elements("id", "audit-events"))
    assert bob.current_url == f"{a}/sso-console/audit?type=console.action"

    # the charts: drawn by the vendored Chart.js under the console's CSP, numbers in the tables
    bob.get_log("browser")  # what came before (the refused forged post) is not this page's
    bob.get(f"{a}/sso-console/charts")
    wait_until(bob, lambda d: d.execute_script(
        "return !!window.Chart && [...document.querySelectorAll('canvas')].length > 0 && "
        "[...document.querySelectorAll('canvas')].every(c => Chart.getChart(c))"))
    logs = [e for e in bob.get_log("browser") if e.get("level") == "SEVERE" and "favicon" not in e.get("message", "")]
    assert not logs, logs  # no CSP violation, no script error
    signins = by_id(bob, "chart-signins-table").text
    assert "Sign-ins" in signins
    doc_shot(bob, "charts")

    # the other pages
    bob.get(f"{a}/sso-console/skills?user=erin%40example.com")
    assert css(bob, "#explain-table") or by_id(bob, "explain-problem")
    bob.get(f"{a}/sso-console/skills?user=bob%40example.com&skill=sso-operator")
    assert css(bob, "#explain-table")
    doc_shot(bob, "skills")

    bob.get(f"{a}/sso-console/providers")
    assert css(bob, '[data-provider="dev"]')
    by_id(bob, "run-checks").click()
    wait_until(bob, lambda d: d.find_elements("id", "check-findings"))
    doc_shot(bob, "providers")
