"""The SQL store's request-path read (issue #12): one statement, no
transaction and no commit per request, and no ping round trip on a busy
connection -- yet a pooled connection that died (its server process was
terminated, as a database restart or a firewall does) costs no 503: the read
is retried once on a new connection."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from flask_ccsso.stores.sql import SQLStore
from tests.support.sessions import PG_URL

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_store() -> Any:
    app_name = f"ccsso-read-{uuid.uuid4().hex[:8]}"
    store = SQLStore.from_url(f"{PG_URL}?application_name={app_name}", key_prefix=f"{app_name}:")
    store.app_name = app_name  # type: ignore[attr-defined]
    yield store
    store.delete("k")
    store.engine.dispose()


def _statements(store: SQLStore) -> tuple[list[tuple[str, bool]], list[str]]:
    """(statement, sent in autocommit: no BEGIN before it) per statement; commits."""
    statements: list[tuple[str, bool]] = []
    commits: list[str] = []

    def sent(conn: Any, cur: Any, statement: str, *a: Any) -> None:
        statements.append((statement, bool(conn.connection.dbapi_connection.autocommit)))

    sa.event.listen(store.engine, "before_cursor_execute", sent)
    sa.event.listen(store.engine, "commit", lambda conn: commits.append("commit"))
    return statements, commits


def test_a_read_is_one_select_without_transaction_or_commit(pg_store: SQLStore) -> None:
    pg_store.set("k", "value", 60)
    assert pg_store.get("k") == "value"  # the pool holds a connection now
    statements, commits = _statements(pg_store)
    for _ in range(5):
        assert pg_store.get("k") == "value"
    assert pg_store.get("absent") is None
    assert len(statements) == 6  # no ping, nothing else
    assert all(s.lstrip().upper().startswith("SELECT VALUE") and autocommit for s, autocommit in statements)
    assert commits == []
    with pg_store.engine.connect() as conn:  # and nothing was left open on the server
        idle = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %(n)s AND state LIKE 'idle in%%'",
            {"n": pg_store.app_name}).scalar()  # type: ignore[attr-defined]
    assert idle == 0


def test_a_pooled_connection_that_died_is_replaced_without_an_error(pg_store: SQLStore) -> None:
    pg_store.set("k", "value", 60)
    assert pg_store.get("k") == "value"
    killer = sa.create_engine(PG_URL)
    try:
        with killer.connect() as conn:
            killed = conn.exec_driver_sql(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %(n)s",
                {"n": pg_store.app_name}).scalar()  # type: ignore[attr-defined]
            conn.commit()
    finally:
        killer.dispose()
    assert killed >= 1  # the fault happened: our pooled connection is dead
    assert pg_store.get("k") == "value"  # retried on a new connection, no StoreUnavailable
    assert pg_store.get("k") == "value"
