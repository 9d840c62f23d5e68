"""Console fixtures: an app with the operator console on (memory store, SQLite audit table), and app
instances sharing the real Redis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_ccsso.stores import RedisStore
from flask_ccsso.testing import CCSSOTestClient
from tests.support.console import console_config
from tests.support.console_audit import NOW, fill
from tests.support.sessions import REDIS_URL


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


@pytest.fixture
def console_host(make_app: Any, op: Any, audit_url: str, prefix: str,
                 closers: list[Callable[[], None]]) -> Callable[..., Flask]:
    """``console_host()``: an app instance ("host") with the console on, on the real Redis under this
    test's prefix; every instance made in a test shares its sessions (as tests/scim's ``host``)."""

    def factory(**console: Any) -> Flask:
        store = RedisStore.from_url(REDIS_URL, prefix=prefix)
        cfg = console_config(op, store={"type": "redis", "url": REDIS_URL, "keyPrefix": prefix},
                             audit_url=audit_url, **console)
        app = make_app(cfg, store=store)
        app.test_client_class = CCSSOTestClient
        closers.append(app.session_interface.close)
        closers.append(store.close)
        return app

    return factory


@pytest.fixture(params=["sqlite", "postgresql"])
def filled(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    """(engine, table) holding 3000 events ending at ``NOW``, on SQLite and on the real PostgreSQL
    (the query-plan tests of the audit explorer and the charts)."""
    if request.param == "sqlite":
        engine = sa.create_engine(f"sqlite:///{tmp_path}/plans.db")
        table = "ccsso_audit_events"
    else:
        engine, table = request.getfixturevalue("pg_table")
    fill(engine, table, 3000, NOW)
    yield engine, table
    if request.param == "sqlite":
        engine.dispose()
