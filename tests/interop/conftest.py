"""Fixtures for interop tests against a real oidc-provider (see op_harness.py).

Every test collected under tests/interop/ gets the ``interop`` marker. A
missing ``node`` is a hard failure, never a skip: CI must not silently drop
the interop suite.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from .op_harness import Browser, RealOP

HERE = Path(__file__).resolve().parent

REDIRECT_URIS = ["http://localhost/sso/op/callback", "http://localhost/callback"]
POST_LOGOUT_REDIRECT_URIS = ["http://localhost/", "http://localhost/sso/logged-out"]
BACKCHANNEL_LOGOUT_URI = "http://localhost/sso/op/backchannel-logout"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.interop)


def _require_node() -> None:
    if shutil.which("node") is None:
        pytest.fail(
            "interop tests need Node.js (node >= 20) on PATH to run oidc-provider; refusing to skip",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def real_op() -> Iterator[RealOP]:
    """A running oidc-provider shared by the whole session.

    Tests that mutate it (set_groups, restart) must restore what they change.
    """
    _require_node()
    op = RealOP()
    op.start(REDIRECT_URIS, POST_LOGOUT_REDIRECT_URIS, BACKCHANNEL_LOGOUT_URI)
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture
def op_browser(real_op: RealOP) -> Iterator[Browser]:
    """A fresh headless user agent (no OP cookies) for ``real_op``."""
    browser = Browser(real_op)
    try:
        yield browser
    finally:
        browser.close()
