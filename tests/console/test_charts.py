"""The charts: counts per time bucket from the audit table, the alert threshold, the vendored chart
library, no external URL, and the empty state. The tables beside the charts carry the numbers."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest
from flask import Flask

from flask_ccsso import signals
from flask_ccsso.audit.sinks.sqlalchemy import audit_table
from flask_ccsso.console.chart_data import (
    PALETTE,
    Window,
    alerts_query,
    denials_query,
    people_query,
    type_counts_query,
)
from flask_ccsso.testing import listen_to
from tests.support.clock import Clock
from tests.support.console import OPERATOR
from tests.support.console_audit import NOW, by_id, emit_at, flush, full_scans, query_plan, table_rows, text_of

URL = "/sso-console/charts"


def at(day: int, hour: int, minute: int = 0) -> float:
    return datetime(2026, 11, day, hour, minute, tzinfo=timezone.utc).timestamp()


@pytest.fixture
def charts(console_app: Callable[..., Flask], clock: Clock) -> Callable[..., tuple[Flask, Any]]:
    def make(**console: Any) -> tuple[Flask, Any]:
        clock.now = NOW
        app = console_app(**console)
        return app, app.test_client(identity=OPERATOR)

    return make


def known_events(app: Flask, clock: Clock) -> None:
    """Sign-ins, failures, alerts, denials and step-ups at known times (today 30 Nov, 10:30 UTC)."""
    emit = emit_at
    for minute in (10, 20):
        emit(app, clock, at(30, 9, minute), "auth.login", email="ada@example.com", provider="okta")
    emit(app, clock, at(30, 7, 5), "auth.login", email="bob@example.com", provider="okta")
    for minute in (1, 2, 3):
        emit(app, clock, at(30, 9, minute), "auth.login_failed", email="eve@example.com", provider="okta")
    emit(app, clock, at(30, 8, 59), "auth.login_failed", email="eve@example.com", provider="okta")
    emit(app, clock, at(30, 9, 4), "auth.failure_threshold", key_type="user", key="eve@example.com", count=5,
         window=300)
    emit(app, clock, at(30, 9, 5), "auth.failure_threshold", key_type="audit_sink", key="siem", count=3,
         window=60)  # an audit sink's loss: not a sign-in alert
    for skill in ("deploy", "deploy", "deploy", "billing"):
        emit(app, clock, at(30, 6), "permission.denied", email="bob@example.com", skill=skill)
    emit(app, clock, at(30, 8, 10), "stepup.required", email="ada@example.com", skill="deploy")
    emit(app, clock, at(30, 8, 11), "stepup.required", email="carol@example.com", skill="deploy")
    emit(app, clock, at(30, 8, 12), "stepup.satisfied", email="ada@example.com", skill="deploy")
    # yesterday, outside the last 24 hours (09:00 is before 10:00 yesterday) but inside 7 days
    emit(app, clock, at(29, 9), "auth.login", email="dan@example.com", provider="entra")
    emit(app, clock, at(29, 9, 30), "permission.denied", email="dan@example.com", skill="payroll")
    # 1 November: inside the last 30 days only
    emit(app, clock, at(1, 12), "auth.login", email="old@example.com")
    flush(app)


def row_for(html: str, table: str, label: str) -> list[str]:
    for row in table_rows(html, table):
        if row[0] == label:
            return row[1:]
    raise AssertionError(f"no row {label!r} in #{table}")


def test_last_24_hours_by_hour(charts: Any, clock: Clock) -> None:
    app, client = charts()
    known_events(app, clock)
    resp = client.get(URL)
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    rows = table_rows(html, "chart-signins-table")
    assert len(rows) == 24
    assert rows[0][0] == "2026-11-29 11:00" and rows[-1][0] == "2026-11-30 10:00"
    # sign-ins, failed sign-ins, failure alerts (a person's, not the audit sink's)
    assert row_for(html, "chart-signins-table", "2026-11-30 09:00") == ["2", "3", "1"]
    assert row_for(html, "chart-signins-table", "2026-11-30 08:00") == ["0", "1", "0"]
    assert row_for(html, "chart-signins-table", "2026-11-30 07:00") == ["1", "0", "0"]
    assert row_for(html, "chart-signins-table", "2026-11-30 10:00") == ["0", "0", "0"]
    totals = by_id(html, "chart-signins-table").xpath("./tfoot/tr/td")
    assert [td.text_content() for td in totals] == ["3", "4", "1"]
    assert table_rows(html, "chart-denials-table") == [["deploy", "3"], ["billing", "1"]]
    assert row_for(html, "chart-stepups-table", "2026-11-30 08:00") == ["2", "1"]
    # people with a session's event: ada (09h sign-ins), bob (07h sign-in, 06h denials), ada+carol (08h step-ups)
    assert row_for(html, "chart-active-table", "2026-11-30 09:00") == ["1"]
    assert row_for(html, "chart-active-table", "2026-11-30 08:00") == ["2"]
    assert row_for(html, "chart-active-table", "2026-11-30 06:00") == ["1"]
    assert "not open sessions" in text_of(html, "chart-active-caption")  # says what it counts


def test_last_7_and_30_days_by_day(charts: Any, clock: Clock) -> None:
    app, client = charts()
    known_events(app, clock)
    html = client.get(URL, query_string={"range": "7d"}).get_data(as_text=True)
    rows = table_rows(html, "chart-signins-table")
    assert [r[0] for r in rows] == [f"2026-11-{d:02d}" for d in range(24, 31)]
    assert row_for(html, "chart-signins-table", "2026-11-30") == ["3", "4", "1"]
    assert row_for(html, "chart-signins-table", "2026-11-29") == ["1", "0", "0"]
    assert table_rows(html, "chart-denials-table") == [["deploy", "3"], ["billing", "1"], ["payroll", "1"]]
    assert by_id(html, "chart-range-7d").get("aria-current") == "true"

    html = client.get(URL, query_string={"range": "30d"}).get_data(as_text=True)
    rows = table_rows(html, "chart-signins-table")
    assert len(rows) == 30 and rows[0][0] == "2026-11-01" and rows[-1][0] == "2026-11-30"
    assert row_for(html, "chart-signins-table", "2026-11-01") == ["1", "0", "0"]


def test_the_chart_data_block_holds_the_same_numbers_as_the_tables(charts: Any, clock: Clock) -> None:
    app, client = charts()
    known_events(app, clock)
    html = client.get(URL).get_data(as_text=True)
    block = by_id(html, "ccsso-chart-data")
    assert block.get("type") == "application/json"
    data = json.loads(block.text)
    signins = next(c for c in data["charts"] if c["id"] == "signins")
    table = table_rows(html, "chart-signins-table")
    for i, series in enumerate(signins["series"]):
        assert [str(v) for v in series["data"]] == [row[i + 1] for row in table]
    assert signins["labels"] == [row[0] for row in table]
    colours = {s["color"] for c in data["charts"] for s in c["series"] + c["reference"]}
    assert colours <= set(PALETTE.values())  # Okabe-Ito only


def test_the_failure_alert_threshold_is_drawn_as_a_dashed_line(charts: Any, clock: Clock) -> None:
    app, client = charts()
    known_events(app, clock)
    html = client.get(URL).get_data(as_text=True)
    assert by_id(html, "chart-threshold").get("data-count") == "5"
    assert "5 failures per person or address within 5 minutes" in text_of(html, "chart-signins-threshold")
    signins = next(c for c in json.loads(by_id(html, "ccsso-chart-data").text)["charts"] if c["id"] == "signins")
    (line,) = signins["reference"]
    assert line["dash"] is True and line["color"] == PALETTE["black"]
    assert line["data"] == [5] * 24


def test_a_configured_threshold_is_the_one_drawn(make_app: Any, op: Any, audit_url: str, clock: Clock) -> None:
    from flask_ccsso.testing import CCSSOTestClient
    from tests.support.console import console_config

    cfg = console_config(op, audit_url=audit_url)
    cfg["logging"]["failureThreshold"] = {"count": 12, "window": 90}
    clock.now = NOW
    app = make_app(cfg)
    app.test_client_class = CCSSOTestClient
    emit_at(app, clock, at(30, 9), "auth.login_failed", email="eve@example.com")
    flush(app)
    html = app.test_client(identity=OPERATOR).get(URL).get_data(as_text=True)
    assert by_id(html, "chart-threshold").get("data-count") == "12"
    assert "12 failures per person or address within 90 seconds" in text_of(html, "chart-signins-threshold")

    cfg["logging"]["failureThreshold"] = False
    off = make_app(cfg)
    off.test_client_class = CCSSOTestClient
    html = off.test_client(identity=OPERATOR).get(URL).get_data(as_text=True)
    assert "Failure alerts are off" in text_of(html, "chart-threshold")
    assert by_id(html, "chart-signins-threshold") is None


def test_the_chart_library_is_served_from_the_package(charts: Any, clock: Clock) -> None:
    app, client = charts()
    known_events(app, clock)
    html = client.get(URL).get_data(as_text=True)
    scripts = [s.get("src") for s in by_id(html, "ccsso-chart-data").getparent().xpath("//script[@src]")]
    assert scripts == ["/sso-console/static/vendor/chartjs/chart.umd.min.js", "/sso-console/static/console-charts.js"]
    for src in scripts:
        with client.get(src) as resp:
            assert resp.status_code == 200
            assert resp.mimetype in ("text/javascript", "application/javascript")
    with client.get(scripts[0]) as resp:
        assert resp.get_data(as_text=True).startswith("/*!\n * Chart.js v4.")
    with client.get(scripts[1]) as resp:
        assert "http" not in resp.get_data(as_text=True)  # the console's script fetches nothing
    # no inline script: only the JSON data block, which a browser never runs
    inline = [s for s in by_id(html, "ccsso-chart-data").getparent().xpath("//script[not(@src)]")]
    assert [s.get("type") for s in inline] == ["application/json"]


@pytest.mark.parametrize("path", [URL, f"{URL}?range=7d", "/sso-console/audit",
                                  "/sso-console/audit?type=auth.login", "/sso-console/audit/events/1"])
def test_no_page_references_an_external_url(charts: Any, clock: Clock, path: str) -> None:
    app, client = charts()
    known_events(app, clock)
    html = client.get(path).get_data(as_text=True)
    urls = re.findall(r"https?://[^\s\"'<>)]+", html)
    assert [u for u in urls if not u.startswith("http://localhost/")] == []


def test_json_in_the_data_block_cannot_end_the_script(charts: Any, clock: Clock) -> None:
    app, client = charts()
    emit_at(app, clock, at(30, 9), "permission.denied", email="x@example.com",
            skill="</script><script>alert(1)</script>")
    flush(app)
    html = client.get(URL).get_data(as_text=True)
    assert "</script><script>alert(1)" not in html
    data = json.loads(by_id(html, "ccsso-chart-data").text)
    denials = next(c for c in data["charts"] if c["id"] == "denials")
    assert denials["labels"] == ["</script><script>alert(1)</script>"]
    assert table_rows(html, "chart-denials-table") == [["</script><script>alert(1)</script>", "1"]]


def test_no_events_is_a_friendly_empty_state(charts: Any, clock: Clock) -> None:
    app, client = charts()
    resp = client.get(URL)  # nothing written yet: not even the database file
    assert resp.status_code == 200
    assert "no event has been written to it" in text_of(resp.get_data(as_text=True), "audit-unavailable")
    emit_at(app, clock, at(30, 9) - 60 * 86400, "auth.login", email="ada@example.com")  # outside every range
    flush(app)
    resp = client.get(URL)
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    assert "No sign-ins, denials, step-ups or activity in this range yet" in text_of(html, "charts-empty")
    for chart in ("signins", "denials", "stepups", "active"):
        assert by_id(html, f"chart-{chart}-empty") is not None
        assert by_id(html, f"chart-{chart}") is None
    assert by_id(html, "ccsso-chart-data") is None  # nothing to draw: no script loaded
    assert "No sign-ins or failed sign-ins last 24 hours" in text_of(html, "chart-signins-empty")


def test_some_charts_empty_others_drawn(charts: Any, clock: Clock) -> None:
    app, client = charts()
    emit_at(app, clock, at(30, 9), "auth.login", email="ada@example.com")
    flush(app)
    html = client.get(URL).get_data(as_text=True)
    assert by_id(html, "charts-empty") is None
    assert by_id(html, "chart-signins") is not None and by_id(html, "chart-denials-empty") is not None
    ids = [c["id"] for c in json.loads(by_id(html, "ccsso-chart-data").text)["charts"]]
    assert ids == ["signins", "active"]


def test_every_chart_has_a_label_and_a_caption(charts: Any, clock: Clock) -> None:
    app, client = charts()
    known_events(app, clock)
    html = client.get(URL).get_data(as_text=True)
    for chart in ("signins", "denials", "stepups", "active"):
        canvas = by_id(html, f"chart-{chart}")
        assert canvas.get("role") == "img" and len(canvas.get("aria-label")) > 20
        assert text_of(html, f"chart-{chart}-caption")
        assert by_id(html, f"chart-{chart}-table").xpath("./caption")


def test_an_unknown_range_is_a_400(charts: Any) -> None:
    _, client = charts()
    with listen_to(signals.console_action) as actions:
        resp = client.get(URL, query_string={"range": "1y"})
    assert resp.status_code == 400
    assert [a.kwargs["action"] for a in actions] == ["charts_range_refused"]
    assert "Unknown range" in text_of(resp.get_data(as_text=True), "charts-error")


@pytest.mark.parametrize("name", ["counts", "denials", "people", "alerts"])
def test_chart_queries_read_through_indexes(filled: Any, name: str) -> None:
    engine, table = filled
    t = audit_table(table)
    window = Window.ending_at(NOW, "24h")
    stmt = {"counts": type_counts_query(t, window, ("auth.login", "auth.login_failed")),
            "denials": denials_query(t, window), "people": people_query(t, window),
            "alerts": alerts_query(t, window)}[name]
    with engine.connect() as conn:
        plan = query_plan(conn, stmt)
    assert not full_scans(plan, table), plan
    assert any(f"ix_{table}_" in line for line in plan), plan
