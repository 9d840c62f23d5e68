"""SCIM fixtures: two app instances ("hosts") sharing the real Redis under this test's prefix."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_ccsso.audit.sinks.sqlalchemy import audit_table
from flask_ccsso.stores.redis import RedisStore
from tests.support.sessions import REDIS_URL, session_config
from tests.support.skills import add_skill_routes

#: the python-scim libraries need Python 3.11 or later: on 3.10 this folder is not collected
collect_ignore_glob = ["test_*.py"] if sys.version_info < (3, 11) else []

#: the bearer secret the tests' IdP sends (from the environment, as in production)
TOKEN = "scim-test-secret-" + "x" * 32


def scim_headers(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json",
            "Accept": "application/scim+json"}


@pytest.fixture
def host(make_app: Any, op: Any, prefix: str, closers: list[Callable[[], None]],
         monkeypatch: pytest.MonkeyPatch) -> Callable[..., Flask]:
    """An app instance with SCIM enabled on the real Redis; every one made in a test shares its store."""
    monkeypatch.setenv("SCIM_TOKEN", TOKEN)

    def factory(logging: dict[str, Any] | None = None, **scim: Any) -> Flask:
        store = RedisStore.from_url(REDIS_URL, prefix=prefix)
        cfg = session_config(op, {"type": "redis", "url": REDIS_URL, "keyPrefix": prefix})
        cfg["scim"] = {"enabled": True, "token": "${SCIM_TOKEN}", **scim}
        if logging is not None:
            cfg["logging"] = logging
        app = add_skill_routes(make_app(cfg, store=store))
        closers.append(app.session_interface.close)
        closers.append(store.close)
        return app

    return factory


def audit_db(tmp_path: Any) -> tuple[dict[str, Any], str]:
    """A logging block writing every event to a SQLite audit table, and the table's URL."""
    url = f"sqlite:///{tmp_path}/audit.db"
    return {"level": "audit", "destinations": [{"type": "sqlalchemy", "url": url}], "flushInterval": 0.05}, url


def audit_rows(url: str, event_type: str) -> list[dict[str, Any]]:
    """The events of ``event_type`` in the audit table, as JSON objects."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            table = audit_table()
            rows = conn.execute(sa.select(table.c.event).where(table.c.type == event_type)).all()
    except sa.exc.OperationalError:  # the table is made by the sink's first write
        return []
    finally:
        engine.dispose()
    return [json.loads(r.event) for r in rows]
