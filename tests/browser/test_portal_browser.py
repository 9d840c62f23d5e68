"""The example portal in a real browser: Debian's headless Chromium through Selenium.

The portal runs as its own server process on 127.0.0.1 (the README's
``flask --app example_app run``, with ``CCSSO_DEVIDP_ENABLED=1``); Chromium
signs in through the development IdP. Screenshots go to test-artifacts/.
This test fails -- it does not skip -- when Chromium, chromedriver or
Selenium is missing: a browser test that silently skips proves nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import chromium, idp_sign_in, portal_process, shot, wait_until

pytestmark = pytest.mark.browser

#: seconds a sign-in may age before infrastructure-deploy asks for it again
MAX_AUTH_AGE = 3


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    instance = tmp_path_factory.mktemp("portal-instance")
    env = {"CCSSO_EXAMPLE_MAX_AUTH_AGE": str(MAX_AUTH_AGE), "SECRET_KEY": "browser-test-" + "x" * 32}
    with portal_process(instance, env) as base:
        yield base


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    with chromium(tmp_path / "chromium-profile") as driver:
        yield driver


def sign_out(driver: Any, base: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "sign-out").click()
    wait_until(driver, lambda d: d.current_url.endswith("/sso/logged-out"))
    assert driver.current_url == f"{base}/sso/logged-out", driver.current_url
    assert "signed out" in driver.page_source


def test_alice_permitted_and_forbidden_pages(portal: str, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{portal}/")
    shot(browser, "01-home-anonymous")
    browser.find_element(By.ID, "sign-in").click()
    wait_until(browser, lambda d: "/devidp/authorize" in d.current_url)
    shot(browser, "02-devidp-sign-in")
    idp_sign_in(browser, "alice")
    assert browser.current_url == f"{portal}/", browser.current_url
    assert "Welcome, Alice" in browser.page_source
    shot(browser, "03-home-alice")

    browser.get(f"{portal}/migrations")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Database migrations"
    shot(browser, "04-migrations-alice")

    browser.get(f"{portal}/security/audit")
    assert browser.find_element(By.ID, "forbidden").text == "Access denied"
    assert "security-audit" in browser.page_source
    shot(browser, "05-security-audit-forbidden")

    browser.get(f"{portal}/access")
    row = browser.find_element(By.CSS_SELECTOR, 'tr[data-skill="database-migration"] td.yes')
    assert row.text == "yes"
    shot(browser, "06-my-access-alice")
    # a link to /sso/logout (typed, or on another site) only asks: one click on the confirm page signs out
    browser.get(f"{portal}/sso/logout")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Sign out?"
    browser.get(f"{portal}/access")
    assert browser.current_url == f"{portal}/access", "opening /sso/logout must not sign out"
    browser.get(f"{portal}/sso/logout")
    browser.find_element(By.ID, "confirm-sign-out").click()
    wait_until(browser, lambda d: d.current_url.endswith("/sso/logged-out"))
    assert "signed out" in browser.page_source
    shot(browser, "07-signed-out")
    browser.get(f"{portal}/")
    assert browser.find_elements(By.ID, "sign-in")


def test_carol_steps_up_for_infrastructure_deploy(portal: str, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{portal}/deploy")
    idp_sign_in(browser, "carol")
    assert browser.current_url == f"{portal}/deploy", browser.current_url
    shot(browser, "10-deploy-fresh")
    time.sleep(MAX_AUTH_AGE + 1.5)  # let the sign-in grow older than the sensitive skill allows

    browser.get(f"{portal}/deploy")
    # step-up: the IdP shows its sign-in page again although its session is alive
    assert "/devidp/authorize" in browser.current_url, browser.current_url
    assert "prompt=login" in browser.current_url
    assert "currently signed in as" in browser.page_source
    shot(browser, "11-step-up-sign-in-again")
    idp_sign_in(browser, "carol")
    assert browser.current_url == f"{portal}/deploy", browser.current_url
    browser.find_element(By.CSS_SELECTOR, "button.primary").click()
    wait_until(browser, lambda d: d.find_elements(By.ID, "deployed"))
    assert "Deployment to staging started" in browser.find_element(By.ID, "deployed").text
    shot(browser, "12-deployed")
    sign_out(browser, portal)
