"""Browser-test helpers: the example portal as its own server process, and Debian's headless Chromium.

A browser test fails -- it does not skip -- when Chromium, chromedriver or
Selenium is missing: a browser test that silently skips proves nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.support.network import free_port

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1200,900"]


def require(path_or_name: str, what: str) -> str:
    found = shutil.which(path_or_name)
    if not found:
        pytest.fail(f"{what} is missing ({path_or_name}): install Debian's chromium and chromium-driver "
                    "(apt install chromium chromium-driver). The browser test does not skip.", pytrace=False)
    return found


@contextlib.contextmanager
def portal_process(instance: Path, env: Mapping[str, str], *, port: int | None = None,
                   base: str | None = None) -> Iterator[str]:
    """The example portal served by ``flask --app example_app run`` on 127.0.0.1 (its dev IdP on);
    yields its address once ``/`` answers 200. ``base`` is the address the portal names as its own
    (``CCSSO_EXAMPLE_BASE_URL``; default: where it is served)."""
    port = port or free_port()
    served = f"http://127.0.0.1:{port}"
    full = dict(os.environ, CCSSO_DEVIDP_ENABLED="1", CCSSO_EXAMPLE_BASE_URL=base or served,
                CCSSO_EXAMPLE_INSTANCE=str(instance), PYTHONPATH=str(ROOT), **env)
    full.pop("CCSSO_EXAMPLE_IDP", None)
    instance.mkdir(parents=True, exist_ok=True)
    log_path = instance / f"server-{port}.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "flask", "--app", "example_app", "run", "--host", "127.0.0.1",
                             "--port", str(port)], cwd=ROOT, env=full, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the portal exited ({proc.returncode}):\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{served}/", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the portal did not start:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield served
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[Any]:
    """A headless Chromium (Selenium + Debian's chromedriver) with a profile of its own."""
    binary = require("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else "chromium", "Chromium")
    driver_path = require("/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else "chromedriver",
                          "chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is missing: pip install selenium (it drives Debian's chromedriver).", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: Any, name: str, also: Path | None = None) -> None:
    """A screenshot in test-artifacts/browser/ (and a copy at ``also``)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
    if also is not None:
        also.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(also))


def wait_until(driver: Any, condition: Callable[[Any], Any], timeout: float = 15) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(condition)


def idp_sign_in(driver: Any, username: str) -> None:
    """On the development IdP's sign-in page: pick ``username``; waits until back at the portal."""
    from selenium.webdriver.common.by import By

    assert "/devidp/authorize" in driver.current_url, driver.current_url
    assert "DEVELOPMENT IDENTITY PROVIDER" in driver.page_source.upper()
    driver.find_element(By.CSS_SELECTOR, f'button[name="username"][value="{username}"]').click()
    wait_until(driver, lambda d: "/devidp/" not in d.current_url and d.execute_script(
        "return document.readyState") == "complete")
