"""The console's charts: sign-ins and failures, denials by skill, step-ups, people active.

One GET page, ``/charts?range=24h|7d|30d`` (hourly buckets for a day, daily
beyond). The numbers are counted in SQL (:mod:`.chart_data`); the page carries
them twice: in a ``<script type="application/json">`` block that the package's
own ``console-charts.js`` draws with the vendored Chart.js (the console's CSP
runs no inline script and loads nothing from elsewhere), and in a table beside
each chart, the accessible form of the same numbers (and what a reader of the
page without scripts sees).
"""

from __future__ import annotations

from flask import Blueprint, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import exc as sa_exc

from ..audit.sinks.sqlalchemy import audit_table
from ..state import get_state
from ..stores.database import database_error_line
from . import page, record_action, settings
from .audit_source import SourceUnavailable, find_source, reading
from .chart_data import PALETTE, RANGE_LABELS, RANGES, Window, build_charts, threshold_words


def charts_page() -> ResponseReturnValue:
    state = get_state()
    name = request.args.get("range", next(iter(RANGES)))
    ranges = [(key, RANGE_LABELS[key], url_for(".charts", range=key)) for key in RANGES]
    if name not in RANGES:
        record_action("charts_range_refused", f"range: {name[:40]!r}")
        return page("charts.html", title="Charts", ranges=ranges, current=None, charts=[],
                    error=f"Unknown range {name[:40]!r}: choose one of {', '.join(RANGES)}."), 400
    try:
        source = find_source(state.audit_settings, settings().audit_destination)
    except SourceUnavailable as exc:
        return page("audit_unavailable.html", title="Charts", problem=exc.problem, fix=exc.fix,
                    configured=exc.configured, health=None)
    window = Window.ending_at(state.clock(), name)
    threshold = state.audit_settings.failure_threshold
    try:
        with reading(source) as engine, engine.connect() as conn:
            charts = build_charts(conn, audit_table(source.table), window, threshold)
    except SourceUnavailable as exc:
        return page("audit_unavailable.html", title="Charts", problem=exc.problem, fix=exc.fix,
                    configured=exc.configured, health=None)
    except sa_exc.SQLAlchemyError as exc:
        line = database_error_line(exc, source.url, what="audit database", table=source.table)
        return page("charts.html", title="Charts", ranges=ranges, current=name, charts=[], error=line), 503
    data = {"charts": [c.as_json() for c in charts if not c.empty], "palette": PALETTE}
    return page("charts.html", title="Charts", ranges=ranges, current=name, window=window, charts=charts,
                threshold=threshold, threshold_text=threshold_words(threshold) if threshold else None,
                source=source, chart_data=data, error=None)


def register(bp: Blueprint) -> None:
    """Add this section's routes to the console blueprint."""
    bp.add_url_rule("/charts", endpoint="charts", view_func=charts_page, methods=["GET"])


__all__ = ["register"]
