"""The audit explorer: filters, keyset pages, exports, the hash chain, delivery health, and its limits.

Events are recorded through the app's own audit pipeline (its one writer, stamped by the test clock)
into the SQLite table of ``audit_url``; the query plans are checked on SQLite and on the real PostgreSQL.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from flask import Flask

from flask_ccsso import signals
from flask_ccsso.audit.sinks.sqlalchemy import audit_table, create_table, missing_indexes
from flask_ccsso.cli.audit import audit as audit_cli
from flask_ccsso.console import audit_query
from flask_ccsso.console.audit_query import AuditFilters, csv_cell, page_query
from flask_ccsso.state import get_state
from flask_ccsso.testing import listen_to
from tests.support.clock import Clock
from tests.support.console import OPERATOR, console_config
from tests.support.console_audit import (
    NOW,
    by_id,
    csrf_token_of,
    emit_at,
    export,
    fill,
    flush,
    full_scans,
    query_plan,
    submit,
    table_rows,
    text_of,
)
from tests.support.network import free_port
from tests.support.waiting import wait_for

HOUR = 3600.0
URL = "/sso-console/audit"


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def explorer(console_app: Callable[..., Flask], clock: Clock) -> Callable[..., tuple[Flask, Any]]:
    """``explorer(**console)``: (app, operator client), the clock at :data:`NOW`."""

    def make(**console: Any) -> tuple[Flask, Any]:
        clock.now = NOW
        app = console_app(**console)
        return app, app.test_client(identity=OPERATOR)

    return make


#: (tag, hours before NOW, type, fields) -- the tag is the event's ``reason`` (shown in its own column)
EVENTS = [
    ("e1", 5.0, "auth.login", {"email": "ada@example.com", "subject": "ada-sub", "provider": "okta"}),
    ("e2", 4.0, "auth.login_failed", {"email": "bob@example.com", "provider": "entra"}),
    ("e3", 3.0, "permission.denied", {"email": "ada@example.com", "subject": "ada-sub", "provider": "okta",
                                      "skill": "deploy"}),
    ("e4", 2.0, "stepup.required", {"email": "carol@example.com", "subject": "carol-sub", "provider": "entra",
                                    "skill": "billing"}),
    ("e5", 1.0, "auth.logout", {"email": "ada@example.com", "subject": "ada-sub", "provider": "google"}),
    ("e6", 0.5, "permission.denied", {"email": "bob@example.com", "subject": "bob-sub", "provider": "okta",
                                      "skill": "billing"}),
]


def record(app: Flask, clock: Clock, events: list[tuple[str, float, str, dict[str, Any]]] = EVENTS) -> None:
    for tag, hours, kind, fields in events:
        emit_at(app, clock, NOW - hours * HOUR, kind, reason=tag, **fields)
    flush(app)


def tags(html: str) -> list[str]:
    """The ``reason`` column of the events table, top to bottom (our tags)."""
    header_index = 7  # #, time, type, outcome, person, provider, skill, reason
    return [row[header_index] for row in table_rows(html, "audit-events") if len(row) > 1]


def every_page(client: Any, query: dict[str, str]) -> list[str]:
    """The tags of every page of ``query``, following the "Older events" links to the end."""
    shown: list[str] = []
    html = client.get(URL, query_string=query).get_data(as_text=True)
    while True:
        shown += tags(html)
        older = by_id(html, "audit-older")
        if older is None:
            return shown
        html = client.get(older.get("href")).get_data(as_text=True)


@pytest.mark.parametrize(("query", "expected"), [
    ({}, ["e6", "e5", "e4", "e3", "e2", "e1"]),
    ({"type": "permission.denied"}, ["e6", "e3"]),
    ({"person": "ada@example.com"}, ["e5", "e3", "e1"]),
    ({"person": "ADA@example.com"}, ["e5", "e3", "e1"]),  # an email as the IdP sent it, or lower-cased
    ({"person": "carol-sub"}, ["e4"]),  # a subject
    ({"skill": "billing"}, ["e6", "e4"]),
    ({"outcome": "failure"}, ["e2"]),
    ({"provider": "entra"}, ["e4", "e2"]),
    ({"from": iso(NOW - 3.5 * HOUR), "to": iso(NOW - 1.5 * HOUR)}, ["e4", "e3"]),
    # what a datetime-local input sends: no seconds, no zone (UTC)
    ({"from": "2026-11-30T07:00", "to": "2026-11-30T09:00"}, ["e4", "e3"]),
    ({"to": "2026-11-30T07:00:00+01:00"}, ["e1"]),  # an offset: 06:00 UTC
    ({"type": "permission.denied", "skill": "billing"}, ["e6"]),
    ({"person": "ada@example.com", "provider": "okta", "from": iso(NOW - 4 * HOUR)}, ["e3"]),
    ({"type": "auth.login", "person": "nobody@example.com"}, []),
])
def test_each_filter_narrows_to_its_events(explorer: Any, clock: Clock, query: dict[str, str],
                                           expected: list[str]) -> None:
    app, client = explorer()
    record(app, clock)
    resp = client.get(URL, query_string=query)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    html = resp.get_data(as_text=True)
    assert tags(html) == expected
    if not expected:
        assert by_id(html, "audit-no-events") is not None
    # the form shows what was asked
    if "person" in query:
        assert by_id(html, "filter-person").get("value") == query["person"]


def test_the_export_and_older_links_keep_the_filters(explorer: Any, clock: Clock) -> None:
    app, client = explorer()
    record(app, clock)
    html = client.get(URL, query_string={"type": "permission.denied", "skill": "billing"}).get_data(as_text=True)
    exports = by_id(html, "audit-exports")  # a post form: the filters are its fields
    fields = {f.get("name"): f.get("value") for f in exports.xpath('.//input[@type="hidden"]')}
    assert fields == {"csrf_token": fields["csrf_token"], "type": "permission.denied", "skill": "billing"}
    assert by_id(html, "audit-export-csv").get("formaction") == f"{URL}/export.csv"
    assert by_id(html, "audit-export-ndjson").get("formaction") == f"{URL}/export.ndjson"
    action = by_id(html, "audit-verify-form").get("action")
    assert "type=permission.denied" in action and "skill=billing" in action


def test_keyset_pages_return_every_event_exactly_once_while_events_arrive(explorer: Any, clock: Clock) -> None:
    app, client = explorer()
    first = [(f"old{i}", 10 - i / 20, "auth.login" if i % 3 else "permission.denied",
              {"email": f"p{i % 7}@example.com", "provider": "okta"}) for i in range(120)]
    record(app, clock, first)
    seen: list[str] = []
    seqs: list[int] = []
    html = client.get(URL).get_data(as_text=True)
    pages = 0
    while True:
        pages += 1
        page_tags = tags(html)
        assert len(page_tags) <= audit_query.PAGE_SIZE
        seen += page_tags
        seqs += [int(row.get("data-seq")) for row in by_id(html, "audit-events").xpath("./tbody/tr[@data-seq]")]
        # new events arrive between the pages: they are newer, so they never show up on an older page
        record(app, clock, [(f"new{pages}-{j}", 0.1, "auth.login", {"email": "late@example.com"})
                            for j in range(15)])
        older = by_id(html, "audit-older")
        if older is None:
            break
        assert by_id(html, "audit-newest") is None or pages > 1
        html = client.get(older.get("href")).get_data(as_text=True)
        assert by_id(html, "audit-newest") is not None
    assert pages == 3  # 50 + 50 + 20
    assert sorted(seen) == sorted(tag for tag, *_ in first)  # every one, exactly once
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == len(seqs)
    # the newest page now starts with what arrived meanwhile
    assert tags(client.get(URL).get_data(as_text=True))[0].startswith("new")


def _person(i: int) -> dict[str, str]:
    """ann by email, ann by subject only (another email), or zed."""
    return [{"email": "ann@example.com"}, {"subject": "ann@example.com", "email": "a2@example.com"},
            {"email": "zed@example.com"}][i % 3]


@pytest.mark.parametrize("query", [{"type": "permission.denied"}, {"person": "ann@example.com"},
                                   {"person": "ann@example.com", "type": "permission.denied"}])
def test_keyset_pages_of_a_filtered_view(explorer: Any, clock: Clock, query: dict[str, str]) -> None:
    app, client = explorer()
    events = [(f"x{i}", 10 - i / 20, "permission.denied" if i % 2 else "auth.login", {**_person(i), "skill": "deploy"})
              for i in range(180)]
    record(app, clock, events)

    def matches(kind: str, fields: dict[str, str]) -> bool:
        person = query.get("person")
        return query.get("type", kind) == kind and (person is None or person in fields.values())

    expected = [tag for tag, _, kind, fields in reversed(events) if matches(kind, fields)]  # newest first
    assert len(expected) > 50
    assert every_page(client, query) == expected


def test_csv_export_holds_the_filtered_events_and_defuses_formulas(explorer: Any, clock: Clock) -> None:
    app, client = explorer()
    record(app, clock, [
        ("ok", 2.0, "permission.denied", {"email": "ann@example.com", "subject": "ann", "skill": "deploy",
                                          "provider": "okta"}),
        ("=1+2", 1.0, "permission.denied", {"email": "=HYPERLINK(\"http://evil\")", "subject": "+cmd",
                                            "skill": "@SUM(A1)", "provider": "-2+3"}),
        ("other", 0.5, "auth.login", {"email": "ann@example.com"}),
    ])
    resp = export(client, "csv", {"type": "permission.denied"})
    assert resp.status_code == 200
    assert resp.mimetype == "text/csv"
    assert resp.headers["Content-Disposition"].startswith('attachment; filename="audit-events-')
    assert resp.headers["Content-Disposition"].endswith('.csv"')
    assert resp.headers["X-Export-Limit"] == str(audit_query.EXPORT_LIMIT)
    rows = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))
    assert [r["reason"] for r in rows] == ["'=1+2", "ok"]  # newest first, only the denials
    evil, plain = rows
    assert evil["actor_email"] == "'=HYPERLINK(\"http://evil\")"
    assert evil["actor_subject"] == "'+cmd"
    assert evil["skill"] == "'@SUM(A1)"
    assert evil["provider"] == "'-2+3"
    assert plain["actor_email"] == "ann@example.com" and plain["skill"] == "deploy" and plain["provider"] == "okta"
    assert plain["type"] == "permission.denied" and plain["outcome"] == "denied"
    assert plain["time"] == "2026-11-30T08:30:00.000000Z"
    assert int(evil["seq"]) > int(plain["seq"])
    # the export is audited, with the operator as actor and the filters as target
    flush(app)
    engine = sa.create_engine(get_state(app).audit_settings.database_url or "")
    try:
        with engine.connect() as conn:
            t = audit_table()
            action = conn.execute(sa.select(t.c.event).where(t.c.type == "console.action")).scalars().all()
    finally:
        engine.dispose()  # Python 3.13 warns about a SQLite connection left to the garbage collector
    assert len(action) == 1
    event = json.loads(action[0])
    assert event["actor"]["email"] == OPERATOR["email"]
    assert event["data"]["action"] == "audit_export"
    assert event["data"]["target"] == "type=permission.denied"
    assert event["data"]["count"] == 2  # the rows exported


@pytest.mark.parametrize(("value", "cell"), [
    ("=cmd", "'=cmd"), ("+1", "'+1"), ("-1", "'-1"), ("@x", "'@x"), ("\tx", "'\tx"), ("\rx", "'\rx"),
    ("plain", "plain"), ("a=b", "a=b"), (None, ""), (42, "42"),
])
def test_a_csv_cell_that_a_spreadsheet_would_run_is_prefixed(value: Any, cell: str) -> None:
    assert csv_cell(value) == cell


def test_an_export_is_capped_at_its_limit(explorer: Any, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    app, client = explorer()
    record(app, clock, [(f"n{i}", 5 - i / 10, "auth.login", {"email": "a@example.com"}) for i in range(8)])
    monkeypatch.setattr(audit_query, "EXPORT_LIMIT", 3)
    with listen_to(signals.console_action) as actions:
        lines = export(client, "ndjson").get_data(as_text=True).splitlines()
    assert [(a.kwargs["action"], a.kwargs["count"]) for a in actions] == [("audit_export", 3)]
    assert [json.loads(line)["event"]["reason"] for line in lines] == ["n7", "n6", "n5"]  # the newest three


def test_ndjson_export_lines_check_against_the_hash_chain(explorer: Any, clock: Clock) -> None:
    app, client = explorer()
    record(app, clock)
    resp = export(client, "ndjson", {"person": "ada@example.com"})
    assert resp.status_code == 200
    assert resp.mimetype == "application/x-ndjson"
    assert resp.headers["Content-Disposition"].endswith('.ndjson"')
    lines = resp.get_data(as_text=True).splitlines()
    assert [json.loads(line)["event"]["reason"] for line in lines] == ["e5", "e3", "e1"]
    for line in lines:
        item = json.loads(line)
        raw = line[line.index('"event":') + len('"event":'):-1]  # the stored event text, byte for byte
        assert hashlib.sha256(f"{item['prev_hash']}\n{raw}".encode()).hexdigest() == item["hash"]
        assert item["event"]["actor"]["email"] == "ada@example.com"


def test_an_export_with_no_match_is_just_the_header(explorer: Any, clock: Clock) -> None:
    app, client = explorer()
    record(app, clock)
    with listen_to(signals.console_action) as actions:
        assert export(client, "csv", {"skill": "nothing"}).get_data(as_text=True).strip() == \
            ",".join(audit_query.CSV_COLUMNS)
        assert export(client, "ndjson", {"skill": "nothing"}).get_data() == b""
    assert [a.kwargs["count"] for a in actions] == [0, 0]


def test_chain_verification_runs_on_request_and_finds_an_edited_row(explorer: Any, clock: Clock,
                                                                     audit_url: str) -> None:
    app, client = explorer()
    record(app, clock)
    html = client.get(URL).get_data(as_text=True)
    assert by_id(html, "audit-verify-result") is None  # a full read of the table: only when asked
    assert client.get(URL, query_string={"verify": "1"}).get_data(as_text=True).count("audit-verify-result") == 0
    html = submit(client, html, "audit-verify-form").get_data(as_text=True)  # the button: a post, its token
    result = by_id(html, "audit-verify-result")
    assert result.get("data-intact") == "true"
    assert "2026-11-30 10:30:00 UTC" in text_of(html, "audit-verify-result")  # when it ran

    engine = sa.create_engine(audit_url)
    t = audit_table()
    with engine.begin() as conn:
        victim = conn.execute(sa.select(t.c.seq, t.c.event_id).where(t.c.reason == "e3")).one()
        conn.execute(t.update().where(t.c.seq == victim.seq).values(actor_email="mallory@example.com"))
    engine.dispose()
    html = submit(client, html, "audit-verify-form").get_data(as_text=True)
    assert by_id(html, "audit-verify-result").get("data-intact") == "false"
    assert text_of(html, "audit-verify-broken") == victim.event_id
    link = by_id(html, "audit-verify-result").xpath(".//a")[0].get("href")
    assert link == f"{URL}/events/{victim.seq}"


def test_event_detail_shows_the_stored_fields_escaped(explorer: Any, clock: Clock) -> None:
    app, client = explorer()
    record(app, clock, [("<script>alert(1)</script>", 1.0, "auth.login_failed",
                         {"email": "<b>x</b>@example.com", "detail": "<img src=x onerror=alert(1)>"})])
    html = client.get(URL).get_data(as_text=True)
    assert "<script>alert(1)" not in html and "<img src=x" not in html and "<b>x</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    seq = by_id(html, "audit-events").xpath("./tbody/tr[@data-seq]")[0].get("data-seq")
    resp = client.get(f"{URL}/events/{seq}")
    assert resp.status_code == 200
    detail = resp.get_data(as_text=True)
    assert "<img src=x" not in detail and "<script>alert" not in detail
    assert text_of(detail, "audit-field-actor_email").endswith("<b>x</b>@example.com")  # shown as text
    shown = json.loads(text_of(detail, "audit-event-json").replace("\n", " "))
    assert shown["detail"] == "<img src=x onerror=alert(1)>"
    assert len(by_id(detail, "audit-field-hash").xpath("./td")[0].text_content()) == 64
    assert client.get(f"{URL}/events/999999").status_code == 404


def test_delivery_health_shows_backlog_spool_and_lost(make_app: Any, op: Any, audit_url: str, tmp_path: Any,
                                                      clock: Clock) -> None:
    cfg = console_config(op, audit_url=audit_url)
    cfg["logging"].update(spoolDir=str(tmp_path / "spool"), retryAttempts=1, retryBackoff=0.01, maxBackoff=0.05)
    cfg["logging"]["destinations"].append({"type": "http", "name": "siem",
                                           "url": f"http://127.0.0.1:{free_port()}/collect"})  # nobody listens
    clock.now = NOW
    app = make_app(cfg)
    from flask_ccsso.testing import CCSSOTestClient
    app.test_client_class = CCSSOTestClient
    client = app.test_client(identity=OPERATOR)
    pipeline = get_state(app).audit
    assert pipeline is not None
    for i in range(5):
        pipeline.emit("auth.login", email=f"p{i}@example.com", reason=f"r{i}")
    wait_for(lambda: pipeline.health()["sinks"]["siem"]["in_spool"] >= 5, 15, "the siem events in its spool")
    flush(app)

    html = client.get(URL).get_data(as_text=True)
    assert text_of(html, "audit-health-badge") == "degraded"
    siem = by_id(html, "audit-health-siem")
    assert siem.xpath('./td[@class="c-state"]')[0].text_content().strip().startswith("down")
    assert int(siem.xpath('./td[@class="c-in_spool"]')[0].text_content()) >= 5
    db = by_id(html, "audit-health-audit-db")
    assert db.xpath('./td[@class="c-state"]')[0].text_content().strip() == "up"
    assert int(db.xpath('./td[@class="c-written"]')[0].text_content()) >= 5
    assert db.xpath('./td[@class="c-lost"]')[0].text_content().strip() == "0"

    next(s for s in pipeline.sinks if s.name == "siem").stats.lost = 7  # as counted after a full backlog
    html = client.get(URL).get_data(as_text=True)
    assert text_of(html, "audit-health-badge") == "losing"
    assert by_id(html, "audit-health-siem").xpath('./td[@class="c-lost"]')[0].text_content().strip() == "7"


def test_without_a_sql_destination_the_page_says_how_to_add_one(make_app: Any, op: Any) -> None:
    cfg = console_config(op)
    cfg["logging"] = {"destinations": [{"type": "logging"}]}
    app = make_app(cfg)
    from flask_ccsso.testing import CCSSOTestClient
    app.test_client_class = CCSSOTestClient
    client = app.test_client(identity=OPERATOR)
    token = csrf_token_of(client)
    for path in (URL, f"{URL}/export.csv", f"{URL}/events/1", "/sso-console/charts"):
        resp = client.post(path, data={"csrf_token": token}) if "export" in path else client.get(path)
        assert resp.status_code == 200, path
        html = resp.get_data(as_text=True)
        notice = text_of(html, "audit-unavailable")
        assert "No SQL audit destination is configured" in notice
        assert '"type": "sqlalchemy"' in notice and "docs/audit.md" in notice


def test_an_audit_destination_that_is_not_sql_is_named(console_app: Any) -> None:
    client = console_app(auditDestination="nope").test_client(identity=OPERATOR)
    resp = client.get(URL)
    assert resp.status_code == 200
    notice = text_of(resp.get_data(as_text=True), "audit-unavailable")
    assert "console.auditDestination names no destination ('nope')" in notice and "'audit-db'" in notice


def test_the_named_audit_destination_is_read(make_app: Any, op: Any, audit_url: str, tmp_path: Any,
                                             clock: Clock) -> None:
    cfg = console_config(op, audit_url=audit_url, auditDestination="second")
    cfg["logging"]["destinations"].append({"type": "sqlalchemy", "name": "second",
                                           "url": f"sqlite:///{tmp_path}/second.db", "table": "trail"})
    clock.now = NOW
    app = make_app(cfg)
    from flask_ccsso.testing import CCSSOTestClient
    app.test_client_class = CCSSOTestClient
    record(app, clock, EVENTS[:2])
    html = app.test_client(identity=OPERATOR).get(URL).get_data(as_text=True)
    assert "table trail" in text_of(html, "audit-source") and "'second'" in text_of(html, "audit-source")
    assert tags(html) == ["e2", "e1"]


def test_a_database_that_cannot_be_read_is_a_503_naming_it(make_app: Any, op: Any, audit_url: str,
                                                            tmp_path: Any) -> None:
    cfg = console_config(op, audit_url=audit_url, auditDestination="down")
    cfg["logging"]["spoolDir"] = str(tmp_path / "spool")
    cfg["logging"]["destinations"].append({
        "type": "sqlalchemy", "name": "down",
        "url": f"postgresql+psycopg://postgres:hunter2@127.0.0.1:{free_port()}/audit"})
    app = make_app(cfg)
    from flask_ccsso.testing import CCSSOTestClient
    app.test_client_class = CCSSOTestClient
    client = app.test_client(identity=OPERATOR)
    token = csrf_token_of(client)
    for path in (URL, f"{URL}/export.csv", f"{URL}/events/3"):
        resp = client.post(path, data={"csrf_token": token}) if "export" in path else client.get(path)
        assert resp.status_code == 503, path
        html = resp.get_data(as_text=True)
        assert "hunter2" not in html
        assert "refused" in text_of(html, "audit-database-error")


@pytest.mark.parametrize(("query", "field"), [
    ({"from": "yesterday"}, "from"),
    ({"to": "2026-13-45T99:00"}, "to"),
    ({"from": "2026-11-30T10:00", "to": "2026-11-30T09:00"}, "to"),
    ({"from": "2" * 41}, "from"),
    ({"person": "a" * 300}, "person"),
    ({"skill": "x\x00y"}, "skill"),
    ({"provider": "p" * 257}, "provider"),
    ({"outcome": "maybe"}, "outcome"),
    ({"type": "'; DROP TABLE ccsso_audit_events; --"}, "type"),
    ({"before": "12abc"}, "before"),
    ({"before": "9" * 40}, "before"),
])
def test_bad_filter_input_is_a_400_page_naming_the_field(explorer: Any, query: dict[str, str], field: str) -> None:
    _, client = explorer()
    with listen_to(signals.console_action) as actions:
        resp = client.get(URL, query_string=query, headers={"Accept": "text/html"})
    assert resp.status_code == 400
    assert [a.kwargs["action"] for a in actions] == ["audit_filter_refused"]  # audited
    assert actions[0].kwargs["target"].startswith(f"{field}: ")
    html = resp.get_data(as_text=True)
    assert text_of(html, "audit-error").startswith(f"That filter cannot be used: {field}")
    assert by_id(html, "audit-filters") is not None  # the form, to correct it
    if field != "before":
        resp = client.post(f"{URL}/export.csv", data={**query, "csrf_token": csrf_token_of(client)})
        assert resp.status_code == 400


def test_an_unknown_export_format_is_a_404(explorer: Any) -> None:
    _, client = explorer()
    assert client.post(f"{URL}/export.xlsx", data={"csrf_token": csrf_token_of(client)}).status_code == 404


# -- indexes and query plans --------------------------------------------------------------------

#: filter -> the index a page with it reads (the rare values of :func:`fill`); for a type either
#: index that starts with it (PostgreSQL's planner may take (type, time) and sort the few rows)
PLANS = [
    (AuditFilters(type="permission.denied"), "type_"),
    (AuditFilters(person="rare@example.com"), "actor_email_seq"),
    (AuditFilters(person="rare-sub"), "actor_subject_seq"),
    (AuditFilters(skill="rare-skill"), "skill_seq"),
    (AuditFilters(provider="rare-idp"), "provider_seq"),
    (AuditFilters(outcome="denied"), "outcome_seq"),
    (AuditFilters(start="2026-11-29T12:00:00.000000Z", end="2026-11-29T13:00:00.000000Z"), "time"),
]


@pytest.mark.parametrize(("filters", "index"), PLANS, ids=[suffix.strip("_") for _, suffix in PLANS])
def test_a_filtered_page_reads_an_index_not_the_table(filled: Any, filters: AuditFilters, index: str) -> None:
    engine, table = filled
    t = audit_table(table)
    with engine.connect() as conn:
        for before in (None, 2000):  # the first page and an older one
            plan = query_plan(conn, page_query(t, filters, before))
            assert not full_scans(plan, table), plan
            assert any(f"ix_{table}_{index}" in line for line in plan), plan
            rows = conn.execute(page_query(t, filters, before)).mappings().all()
            assert rows, "the filter matches events"


def test_every_filter_combination_avoids_a_full_scan(filled: Any) -> None:
    engine, table = filled
    t = audit_table(table)
    combined = AuditFilters(start="2026-11-29T00:00:00.000000Z", end="2026-11-30T12:00:00.000000Z",
                            person="rare@example.com", type="permission.denied", skill="rare-skill",
                            outcome="denied", provider="rare-idp")
    with engine.connect() as conn:
        plan = query_plan(conn, page_query(t, combined, None))
        assert not full_scans(plan, table), plan
        plan = query_plan(conn, page_query(t, AuditFilters(), 1500))  # no filter: the primary key, backwards
        assert not any("Seq Scan" in line for line in plan), plan


def test_init_db_adds_the_indexes_an_existing_table_lacks(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path}/old.db"
    engine = sa.create_engine(url)
    # a table as an earlier release made it: time, type and actor_email indexed, nothing else
    old = sa.MetaData()
    sa.Table("ccsso_audit_events", old,
             *[sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable, unique=c.unique,
                         index=c.name in ("time", "type", "actor_email"))
               for c in audit_table().columns])
    old.create_all(engine)
    assert len(missing_indexes(engine)) == 7
    create_table(engine, add_indexes=False)  # what the sink does at start: never indexes a table that exists
    assert len(missing_indexes(engine)) == 7
    result = CliRunner().invoke(audit_cli, ["init-db", "--url", url])
    assert result.exit_code == 0, result.output
    assert missing_indexes(engine) == []
    assert CliRunner().invoke(audit_cli, ["init-db", "--url", url]).exit_code == 0  # and again: nothing to do
    engine.dispose()


def test_the_explorer_warns_about_missing_indexes(explorer: Any, clock: Clock, audit_url: str) -> None:
    app, client = explorer()
    record(app, clock, EVENTS[:1])
    assert by_id(client.get(URL).get_data(as_text=True), "audit-missing-indexes") is None
    engine = sa.create_engine(audit_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_ccsso_audit_events_skill_seq")
    html = client.get(URL).get_data(as_text=True)
    assert "ix_ccsso_audit_events_skill_seq" in text_of(html, "audit-missing-indexes")
    assert "flask ccsso audit init-db" in text_of(html, "audit-missing-indexes")
    create_table(engine)
    engine.dispose()
    assert by_id(client.get(URL).get_data(as_text=True), "audit-missing-indexes") is None


def test_postgresql_index_names_fit_its_identifier_limit(pg_table: Any) -> None:
    engine, name = pg_table
    long_name = (name + "_" + "x" * 63)[:63]
    try:
        create_table(engine, long_name)
        create_table(engine, long_name)  # found again by name: nothing to add, no error
        assert missing_indexes(engine, long_name) == []
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{long_name}"')


# -- what another site cannot start; what an export holds back from the writers ------------------

def test_an_export_is_a_post_with_the_csrf_token(explorer: Any, clock: Clock) -> None:
    app, client = explorer()
    record(app, clock, EVENTS[:2])
    with listen_to(signals.console_action) as actions, listen_to(signals.permission_denied) as denied:
        assert client.get(f"{URL}/export.csv").status_code == 405  # a link (or an <img>) exports nothing
        forged = client.post(f"{URL}/export.csv", data={"type": "auth.login"}, headers={"Accept": "text/html"})
        assert forged.status_code == 400
        wrong = client.post(f"{URL}/export.csv", data={"csrf_token": "x" * 43}, headers={"Accept": "text/html"})
        assert wrong.status_code == 400
    assert actions == []
    assert [d.kwargs["reason"] for d in denied] == ["csrf_failed", "csrf_failed"]


def _many(audit_url: str, n: int) -> None:
    """``n`` sign-ins written straight into the table (quicker than the pipeline, same rows)."""
    from flask_ccsso.audit.events import build_event
    from flask_ccsso.audit.sinks.sqlalchemy import write_events

    engine = sa.create_engine(audit_url)
    t = create_table(engine)
    write_events(engine, t, [build_event("auth.login", {"email": f"x{i}@example.com"},
                                         clock=lambda i=i: NOW - 7200 + i) for i in range(n)], dedupe=False)
    engine.dispose()


def test_an_export_the_client_leaves_records_the_rows_it_got(explorer: Any, clock: Clock, audit_url: str) -> None:
    app, client = explorer()
    record(app, clock, EVENTS[:1])
    _many(audit_url, 2500)
    with listen_to(signals.console_action) as actions:
        resp = export(client, "csv", buffered=False)
        assert resp.status_code == 200
        assert actions == []  # the count is known only at the end
        chunks = iter(resp.response)
        taken = [next(chunks) for _ in range(11)]  # the header and ten rows, then the client goes away
        assert len(taken) == 11
        resp.close()
    assert [(a.kwargs["action"], a.kwargs["count"]) for a in actions] == [("audit_export", 10)]
    assert actions[0].kwargs["identity"].email == OPERATOR["email"]

    with listen_to(signals.console_action) as actions:
        export(client, "ndjson", buffered=False).close()  # gone at once (the test client took the first line)
        whole = export(client, "ndjson").get_data(as_text=True).splitlines()
    assert [a.kwargs["count"] for a in actions] == [1, len(whole)]
    assert len(whole) > 2500  # three chunks of 1000 and what is left, each event once
    assert len({json.loads(line)["seq"] for line in whole}) == len(whole)


def test_an_open_export_does_not_block_audit_writes(explorer: Any, clock: Clock, audit_url: str) -> None:
    import sqlite3
    import time

    app, client = explorer()
    record(app, clock, EVENTS[:1])
    _many(audit_url, 3000)
    resp = export(client, "csv", buffered=False)  # a slow download: the first rows read, the rest not yet
    assert resp.status_code == 200
    try:
        next(iter(resp.response))
        writer = sqlite3.connect(audit_url.removeprefix("sqlite:///"), timeout=2.0, isolation_level=None)
        try:
            started = time.monotonic()
            writer.execute("BEGIN IMMEDIATE")  # what the sink's write_events does
            writer.execute("UPDATE ccsso_audit_events SET reason = reason WHERE seq = 1")
            writer.execute("COMMIT")  # "database is locked" after 2 s while a reader held the file
            assert time.monotonic() - started < 1.0
            assert writer.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            writer.close()
    finally:
        resp.close()


@pytest.mark.parametrize("seq", ["9223372036854775808", "99999999999999999999999"])
def test_an_event_number_beyond_the_column_is_a_404(explorer: Any, clock: Clock, seq: str) -> None:
    app, client = explorer()
    record(app, clock, EVENTS[:1])
    app.testing = False  # what production sees: an exception would be a 500
    app.config["PROPAGATE_EXCEPTIONS"] = False
    assert client.get(f"{URL}/events/{seq}").status_code == 404
    assert client.get(f"{URL}/events/9223372036854775807").status_code == 404  # the largest: no such event


STREAMED = [AuditFilters(), AuditFilters(type="permission.denied"), AuditFilters(person="rare@example.com"),
            AuditFilters(start="2026-11-29T12:00:00.000000Z", end="2026-11-30T02:00:00.000000Z"),
            AuditFilters(start="2026-11-29T12:00:00.000000Z", provider="okta")]


@pytest.mark.parametrize("filters", STREAMED, ids=["all", "type", "person", "range", "range-provider"])
def test_an_export_reads_short_chunks_and_holds_no_connection_between_them(filled: Any,
                                                                           filters: AuditFilters) -> None:
    engine, table = filled
    t = audit_table(table)
    with engine.connect() as conn:
        expected = [r["seq"] for r in conn.execute(audit_query.newest_query(t, filters, None, 5000)).mappings()]
    assert 7 < len(expected) <= 3000
    got = []
    for row in audit_query.stream_rows(engine, t, filters, chunk=7):
        assert engine.pool.checkedout() == 0  # nothing open while the rows are handed on
        got.append(row["seq"])
    assert got == expected
    assert [r["seq"] for r in audit_query.stream_rows(engine, t, filters, limit=10, chunk=7)] == expected[:10]


def test_a_wide_time_range_page_reads_the_time_index_without_sorting(filled: Any) -> None:
    """Paged in (time, seq) order down the time index: SQLite's holds seq (the rowid) after time, so
    nothing is sorted; PostgreSQL sorts only the events of one microsecond (an incremental sort on top
    of the time order), never the range."""
    engine, table = filled
    t = audit_table(table)
    wide = AuditFilters(start="2000-01-01T00:00:00.000000Z", end="2100-01-01T00:00:00.000000Z")
    with engine.connect() as conn:
        for before in (None, 2000):
            plan = query_plan(conn, page_query(t, wide, before))
            assert not full_scans(plan, table), plan
            assert not any("TEMP B-TREE" in line for line in plan), plan
            assert not any(re.match(r"\s*(->\s*)?Sort\s+\(", line) for line in plan), plan  # a full sort
            assert all(line.rstrip().endswith('"time"') for line in plan if "Presorted Key:" in line), plan
            assert any(f"ix_{table}_time " in line + " " for line in plan), plan
            rows = conn.execute(page_query(t, wide, before)).mappings().all()
            assert len(rows) == audit_query.PAGE_SIZE + 1


def test_time_range_pages_follow_the_clock_even_when_writers_disagree(explorer: Any, clock: Clock) -> None:
    """Two writers whose clocks differ store events whose ``time`` goes back now and then: a range is
    paged in time order, and every event in it is shown once."""
    app, client = explorer()
    skewed = [(f"k{i}", 9 - i / 20 + (0.4 if i % 4 == 0 else 0.0), "auth.login", {"email": "a@example.com"})
              for i in range(130)]
    record(app, clock, skewed)
    query = {"from": iso(NOW - 10 * HOUR), "to": iso(NOW)}
    expected = [tag for tag, hours, *_ in sorted(skewed, key=lambda e: (e[1], -int(e[0][1:])))]  # newest first
    assert every_page(client, query) == expected


def test_the_console_reads_postgresql_with_a_statement_timeout(pg_table: Any) -> None:
    from flask_ccsso.console.audit_source import STATEMENT_TIMEOUT_MS, AuditSource, reading
    from tests.support.audit import PG_URL

    with reading(AuditSource(name="pg", url=PG_URL, table="unused")) as engine, engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == f"{STATEMENT_TIMEOUT_MS // 1000}s"


def test_chain_verification_reads_in_chunks_and_finds_a_break_past_the_first(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from flask_ccsso.audit.sinks import sqlalchemy as sink

    engine = sink.make_engine(f"sqlite:///{tmp_path}/chain.db")
    t = fill(engine, "ccsso_audit_events", 50, NOW)
    monkeypatch.setattr(sink, "VERIFY_CHUNK", 7)
    assert sink.verify_chain(engine) == (True, None)
    with engine.begin() as conn:
        victim = conn.execute(sa.select(t.c.event_id).where(t.c.seq == 23)).scalar_one()
        conn.execute(t.update().where(t.c.seq == 23).values(reason="edited"))
    assert sink.verify_chain(engine) == (False, victim)
    engine.dispose()
