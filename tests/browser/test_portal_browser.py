"""The example portal in a real browser: Debian's headless Chromium through Selenium.

The portal runs as its own server process on 127.0.0.1 (the README's
``flask --app example_app run``, with ``CCSSO_DEVIDP_ENABLED=1``); Chromium
signs in through the development IdP. Screenshots go to test-artifacts/.
This test fails -- it does not skip -- when Chromium, chromedriver or
Selenium is missing: a browser test that silently skips proves nothing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1200,900"]
#: seconds a sign-in may age before infrastructure-deploy asks for it again
MAX_AUTH_AGE = 3


def _require(path_or_name: str, what: str) -> str:
    found = shutil.which(path_or_name)
    if not found:
        pytest.fail(f"{what} is missing ({path_or_name}): install Debian's chromium and chromium-driver "
                    "(apt install chromium chromium-driver). The browser test does not skip.", pytrace=False)
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    instance = tmp_path_factory.mktemp("portal-instance")
    env = dict(os.environ, CCSSO_DEVIDP_ENABLED="1", CCSSO_EXAMPLE_BASE_URL=base,
               CCSSO_EXAMPLE_INSTANCE=str(instance), CCSSO_EXAMPLE_MAX_AUTH_AGE=str(MAX_AUTH_AGE),
               SECRET_KEY="browser-test-" + "x" * 32, PYTHONPATH=str(ROOT))
    env.pop("CCSSO_EXAMPLE_IDP", None)
    log = open(instance / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "flask", "--app", "example_app", "run", "--host", "127.0.0.1",
                             "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the portal exited ({proc.returncode}):\n{(instance / 'server.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{base}/", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the portal did not start:\n{(instance / 'server.log').read_text()}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    chromium = _require("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else "chromium", "Chromium")
    driver_path = _require("/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else "chromedriver",
                           "chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is missing: pip install selenium (it drives Debian's chromedriver).", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def idp_sign_in(driver: Any, username: str) -> None:
    from selenium.webdriver.common.by import By

    assert "/devidp/authorize" in driver.current_url, driver.current_url
    assert "DEVELOPMENT IDENTITY PROVIDER" in driver.page_source.upper()
    driver.find_element(By.CSS_SELECTOR, f'button[name="username"][value="{username}"]').click()
    wait_until(driver, lambda d: "/devidp/" not in d.current_url and d.execute_script(
        "return document.readyState") == "complete")


def wait_until(driver: Any, condition: Any, timeout: float = 15) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(condition)


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
