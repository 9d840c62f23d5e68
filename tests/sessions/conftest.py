"""Fixtures of the session tests only (shared ones are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from tests.support.sessions import PG_URL, session_config, store_block


@pytest.fixture
def store_app(make_app: Any, op: Any, tmp_path: Any, prefix: str,
              closers: list[Callable[[], None]]) -> Iterator[Callable[..., Any]]:
    """``store_app(kind, **session)``: an app whose sessions live in the ``kind`` backend (see ``BACKENDS``)."""
    made: list[tuple[str, str]] = []

    def factory(kind: str, **session: Any) -> Any:
        app = make_app(session_config(op, store_block(kind, tmp_path, prefix), **session))
        closers.append(app.session_interface.close)
        made.append((kind, prefix))
        return app

    yield factory
    for kind, pfx in made:
        if kind == "postgresql":
            engine = sa.create_engine(PG_URL)
            with engine.begin() as conn:  # this test's rows (sessions and shared state) in the store's tables
                for table in ("ccsso_kv", "ccsso_kv_set"):
                    conn.execute(sa.text(f"DELETE FROM {table} WHERE key LIKE :p"), {"p": pfx + "%"})
            engine.dispose()
