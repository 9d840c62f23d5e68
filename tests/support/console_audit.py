"""Audit explorer and chart test helpers: events written through the app's own audit pipeline at
chosen times, and the console's tables read back from the rendered HTML."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from flask import Flask
from lxml import html as lxml_html

from flask_ccsso.state import get_state
from tests.support.clock import Clock

#: the "now" of the query-plan tests' filled tables (and of the tests that read them)
NOW = datetime(2026, 11, 30, 10, 30, tzinfo=timezone.utc).timestamp()


def emit_at(app: Flask, clock: Clock, when: float, event_type: str, **fields: Any) -> None:
    """Record one event as if it happened at ``when`` (epoch seconds): the pipeline stamps events
    with the app's clock, so the clock is moved there and back. Events go through the app's one
    writer, as in production (no second writer racing it for the hash chain)."""
    pipeline = get_state(app).audit
    assert pipeline is not None
    saved = clock.now
    clock.now = when
    try:
        assert pipeline.emit(event_type, **fields) is not None, f"{event_type} is not recorded at this level"
    finally:
        clock.now = saved


def flush(app: Flask) -> None:
    """Wait until every event so far is in the audit table."""
    pipeline = get_state(app).audit
    assert pipeline is not None and pipeline.flush(10.0)


def page(text: str) -> Any:
    return lxml_html.fromstring(text)


def table_rows(text: str, table_id: str) -> list[list[str]]:
    """The body rows of the table ``table_id``: each cell's text (``th`` and ``td``), whitespace collapsed."""
    tables = page(text).xpath(f'//table[@id="{table_id}"]')
    assert tables, f"no table #{table_id} on the page"
    return [[" ".join(cell.text_content().split()) for cell in row.xpath("./th|./td")]
            for row in tables[0].xpath("./tbody/tr")]


def table_header(text: str, table_id: str) -> list[str]:
    tables = page(text).xpath(f'//table[@id="{table_id}"]')
    assert tables, f"no table #{table_id} on the page"
    return [" ".join(cell.text_content().split()) for cell in tables[0].xpath("./thead/tr/th")]


def by_id(text: str, element_id: str) -> Any:
    """The element with ``id`` (``None`` when there is none)."""
    found = page(text).xpath(f'//*[@id="{element_id}"]')
    return found[0] if found else None


def submit(client: Any, text: str, form_id: str, button_id: str | None = None, **kwargs: Any) -> Any:
    """Post the form ``form_id`` of a page as a browser does: its hidden fields (the CSRF token among
    them) to its ``action``, or to the ``formaction`` of the button ``button_id`` when it has one."""
    forms = page(text).xpath(f'//form[@id="{form_id}"][@method="post"]')
    assert forms, f"no post form #{form_id} on the page"
    form = forms[0]
    action = form.get("action")
    if button_id is not None:
        buttons = form.xpath(f'.//button[@id="{button_id}"]')
        assert buttons, f"no button #{button_id} in #{form_id}"
        action = buttons[0].get("formaction") or action
    fields = {field.get("name"): field.get("value") for field in form.xpath('.//input[@type="hidden"]')}
    assert fields.get("csrf_token"), f"#{form_id} carries no CSRF token"
    return client.post(action.split("#", 1)[0], data=fields, **kwargs)


def csrf_token_of(client: Any) -> str:
    """The CSRF token of ``client``'s session, as a console page carries it (the providers page's form)."""
    from flask_ccsso.testing import csrf_token_in

    token = csrf_token_in(client.get("/sso-console/providers").get_data(as_text=True))
    assert token
    return token


def export(client: Any, fmt: str, query: dict[str, str] | None = None, **kwargs: Any) -> Any:
    """Open the audit explorer with ``query`` (its filters) and press its export button for ``fmt``."""
    text = client.get("/sso-console/audit", query_string=query or {}).get_data(as_text=True)
    return submit(client, text, "audit-exports", f"audit-export-{fmt}", **kwargs)


def text_of(text: str, element_id: str) -> str:
    element = by_id(text, element_id)
    assert element is not None, f"no #{element_id} on the page"
    return " ".join(element.text_content().split())


# -- query plans -----------------------------------------------------------------------------

def query_plan(conn: sa.Connection, stmt: Any) -> list[str]:
    """The database's plan for ``stmt``: SQLite's ``EXPLAIN QUERY PLAN`` details, PostgreSQL's
    ``EXPLAIN`` lines (after ``ANALYZE`` of the tables, so the planner knows their real size)."""
    sql = str(stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    if conn.dialect.name == "sqlite":
        return [str(row[3]) for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql)]
    return [str(row[0]) for row in conn.exec_driver_sql("EXPLAIN " + sql)]


def full_scans(plan: list[str], table: str) -> list[str]:
    """The plan lines that read the whole table: SQLite ``SCAN <table>`` (not through an index),
    PostgreSQL ``Seq Scan``."""
    return [line for line in plan
            if re.fullmatch(rf"SCAN {table}", line.strip()) or "Seq Scan" in line]


def fill(engine: sa.Engine, table: str, n: int, now: float, *, rare_every: int = 97) -> sa.Table:
    """``n`` events one minute apart up to ``now``, written with the sink's own ``write_events``:
    mostly sign-ins of 300 people through okta or entra; every ``rare_every``-th event is a
    ``permission.denied`` of skill ``rare-skill`` through provider ``rare-idp`` by ``rare@example.com``
    (subject ``rare-sub``), so a filter on any of those is selective, as it is in a real trail."""
    from flask_ccsso.audit.events import build_event
    from flask_ccsso.audit.sinks.sqlalchemy import create_table, write_events

    t = create_table(engine, table)
    batch = []
    for i in range(n):
        when = now - (n - i) * 60.0
        if i % rare_every == 0:
            fields = {"subject": "rare-sub", "email": "rare@example.com", "provider": "rare-idp",
                      "skill": "rare-skill"}
            kind = "permission.denied"
        else:
            who = i % 300
            fields = {"subject": f"s{who}", "email": f"p{who}@example.com",
                      "provider": "okta" if i % 2 else "entra"}
            kind = "auth.login" if i % 5 else "skill.invoked"
        batch.append(build_event(kind, fields, clock=lambda when=when: when))
        if len(batch) == 1000:
            write_events(engine, t, batch, dedupe=False)
            batch = []
    if batch:
        write_events(engine, t, batch, dedupe=False)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.exec_driver_sql(f'ANALYZE "{table}"')
    return t
