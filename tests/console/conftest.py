"""Console fixtures: an app with the operator console on (memory store, SQLite audit table)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from flask_ccsso.testing import CCSSOTestClient
from tests.support.console import console_config


@pytest.fixture
def audit_url(tmp_path: Any) -> str:
    return f"sqlite:///{tmp_path}/audit.db"


@pytest.fixture
def console_app(make_app: Any, op: Any, audit_url: str) -> Callable[..., Flask]:
    """``console_app(**console_overrides)``: an app with the console on; its test client signs in with ``identity=``."""

    def factory(**console: Any) -> Flask:
        app = make_app(console_config(op, audit_url=audit_url, **console))
        app.test_client_class = CCSSOTestClient
        return app

    return factory
