"""The SQLAlchemy sink on SQLite and on the real PostgreSQL: de-duplication, the hash chain, the CLI."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from flask import Flask

from flask_ccsso.audit import init_audit, parse_logging_block, verify_chain
from flask_ccsso.audit.events import build_event
from flask_ccsso.audit.sinks.sqlalchemy import audit_table, create_table, tail, write_events
from flask_ccsso.cli.audit import audit
from tests.support.audit import PG_URL, fast_block, make_app


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    """(engine, url, table) on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'audit.db'}"
        engine = sa.create_engine(url)
        yield engine, url, "ccsso_audit_events"
        engine.dispose()
    else:
        engine, name = request.getfixturevalue("pg_table")
        yield engine, PG_URL, name


def events(n, kind="auth.login"):
    return [build_event(kind, {"provider": "okta", "subject": f"u{i}", "email": f"u{i}@x"}) for i in range(n)]


def rows(engine, table):
    t = audit_table(table)
    with engine.connect() as conn:
        return conn.execute(sa.select(t).order_by(t.c.seq)).mappings().all()


def test_write_dedup_and_chain(db):
    engine, _, table = db
    t = create_table(engine, table)
    batch = events(50)
    assert write_events(engine, t, batch[:30]) == 30
    # re-delivery (at-least-once) overlapping the first batch is ignored by event id
    assert write_events(engine, t, batch[20:]) == 20
    assert write_events(engine, t, batch + batch) == 0
    stored = rows(engine, table)
    assert [r["event_id"] for r in stored] == [e.id for e in batch]
    assert stored[0]["prev_hash"] == "0" * 64
    assert all(stored[i]["prev_hash"] == stored[i - 1]["hash"] for i in range(1, 50))
    assert json.loads(stored[3]["event"])["actor"]["email"] == "u3@x"
    assert verify_chain(engine, table) == (True, None)


def test_verify_names_an_edited_row(db):
    engine, _, table = db
    t = create_table(engine, table)
    batch = events(10)
    write_events(engine, t, batch)
    victim = batch[6].id
    # edit the JSON itself: the hash no longer matches
    with engine.begin() as conn:
        ev = conn.execute(sa.select(t.c.event).where(t.c.event_id == victim)).scalar()
        conn.execute(t.update().where(t.c.event_id == victim).values(event=ev.replace("u6@x", "mallory@x")))
    assert verify_chain(engine, table) == (False, victim)


def test_verify_names_an_edited_column_and_a_deleted_row(db):
    engine, _, table = db
    t = create_table(engine, table)
    batch = events(10)
    write_events(engine, t, batch)
    with engine.begin() as conn:
        conn.execute(t.update().where(t.c.event_id == batch[2].id).values(outcome="failure"))
    assert verify_chain(engine, table) == (False, batch[2].id)
    with engine.begin() as conn:
        conn.execute(t.update().where(t.c.event_id == batch[2].id).values(outcome="success"))
        conn.execute(t.delete().where(t.c.event_id == batch[5].id))
    # the row after the gap no longer points at its predecessor
    assert verify_chain(engine, table) == (False, batch[6].id)


def test_pipeline_into_database(db, tmp_path):
    engine, url, table = db
    app = make_app(tmp_path)
    pipeline = init_audit(app, parse_logging_block(fast_block(
        destinations=[{"type": "sqlalchemy", "url": url, "table": table}])))
    try:
        client = app.test_client()
        client.post("/send/user_logged_in?n=30", json={"provider": "okta", "method": "oidc", "step_up": False})
        client.post("/send/permission_denied?n=5", json={"skill": "db", "reason": "missing_group"})
        assert pipeline.flush(10)
    finally:
        pipeline.close()
    stored = rows(engine, table)
    assert len(stored) == 35 and len({r["event_id"] for r in stored}) == 35
    assert [r["type"] for r in stored] == ["auth.login"] * 30 + ["permission.denied"] * 5
    assert stored[0]["client_ip"] == "127.0.0.1" and stored[-1]["outcome"] == "denied"
    assert verify_chain(engine, table) == (True, None)
    assert pipeline.stats["sqlalchemy"]["written"] == 35


def test_cli_standalone(db):
    engine, url, table = db
    runner = CliRunner()
    res = runner.invoke(audit, ["init-db", "--url", url, "--table", table])
    assert res.exit_code == 0, res.output
    t = audit_table(table)
    batch = events(25)
    write_events(engine, t, batch)
    res = runner.invoke(audit, ["tail", "-n", "3", "--url", url, "--table", table])
    assert res.exit_code == 0
    lines = [json.loads(line) for line in res.output.splitlines()]
    assert [x["id"] for x in lines] == [e.id for e in batch[-3:]]
    assert [x["id"] for x in tail(engine, table, 100)] == [e.id for e in batch]
    res = runner.invoke(audit, ["verify", "--url", url, "--table", table])
    assert res.exit_code == 0 and "intact" in res.output
    with engine.begin() as conn:
        conn.execute(t.update().where(t.c.event_id == batch[11].id).values(actor_email="x@evil"))
    res = runner.invoke(audit, ["verify", "--url", url, "--table", table])
    assert res.exit_code == 1 and batch[11].id in res.output


def test_cli_finds_the_url_in_the_app(tmp_path):
    from flask.cli import FlaskGroup, ScriptInfo

    url = f"sqlite:///{tmp_path / 'app.db'}"
    settings = parse_logging_block({"level": "off", "destinations": [{"type": "sqlalchemy", "url": url}]})

    class State:  # what the extension keeps in app.extensions["ccsso"]
        audit_settings = settings

    app = Flask("cliapp", instance_path=str(tmp_path / "inst"))
    app.extensions["ccsso"] = State()
    group = FlaskGroup(create_app=lambda: app)
    group.add_command(audit)
    runner = CliRunner()
    res = runner.invoke(group, ["audit", "init-db"], obj=ScriptInfo(create_app=lambda: app))
    assert res.exit_code == 0, res.output
    engine = sa.create_engine(url)
    assert sa.inspect(engine).has_table("ccsso_audit_events")
    engine.dispose()  # Python 3.13 warns about a pooled connection left to the garbage collector
    res = runner.invoke(group, ["audit", "verify"], obj=ScriptInfo(create_app=lambda: app))
    assert res.exit_code == 0, res.output
    # no app, no url: a usage error that says what to do
    res = CliRunner().invoke(audit, ["verify"])
    assert res.exit_code == 2 and "--url" in res.output


def test_writers_with_their_own_engines_keep_one_chain(db):
    """Several processes (here: threads with engines of their own) write one table at once:
    each reads the last hash under the chain's lock, so the chain never forks. On SQLite the
    write lock is taken before that read (BEGIN IMMEDIATE); without it, pysqlite began the
    transaction only at the INSERT and two writers chained onto the same hash."""
    import threading

    from flask_ccsso.audit.sinks.sqlalchemy import make_engine

    engine, url, table = db
    create_table(engine, table)
    start = threading.Barrier(3)
    errors: list[BaseException] = []

    def writer() -> None:
        own = make_engine(url, writer=True)
        try:
            start.wait()
            for _ in range(20):
                write_events(own, audit_table(table), events(5))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            own.dispose()

    threads = [threading.Thread(target=writer) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert verify_chain(engine, table) == (True, None)
    assert len(rows(engine, table)) == 300
