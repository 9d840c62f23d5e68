"""The charts' numbers: audit events counted per time bucket, in SQL.

Every count is one ``GROUP BY`` over a time range of the audit table, read
through its indexes (``(type, time)`` for counts per type, ``time`` for the
people active). The bucket is a prefix of the stored time: every ``time`` has
the fixed-width form ``YYYY-MM-DDTHH:MM:SS.ffffffZ``, so ``substr(time, 1, 13)``
is the hour and ``substr(time, 1, 10)`` the day, in UTC, on SQLite and
PostgreSQL alike. Buckets without events are filled with zeros here, so a chart
shows a quiet hour as a zero, not as a gap.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from ..audit.settings import FailureThresholdSettings

#: range name -> (length, bucket). The first is the default.
RANGES: dict[str, tuple[timedelta, str]] = {
    "24h": (timedelta(hours=24), "hour"),
    "7d": (timedelta(days=7), "day"),
    "30d": (timedelta(days=30), "day"),
}
RANGE_LABELS = {"24h": "Last 24 hours", "7d": "Last 7 days", "30d": "Last 30 days"}
#: bucket -> (characters of the stored time it keeps, step)
BUCKETS: dict[str, tuple[int, timedelta]] = {"hour": (13, timedelta(hours=1)), "day": (10, timedelta(days=1))}

#: the failure alerts the sign-in chart counts (not an audit sink's losses, not a fallback sign-in)
FAILURE_ALERT_KEYS = ("user", "address")
#: at most this many alert events are read for the sign-in chart (they are one per key per window)
MAX_ALERT_ROWS = 10_000

#: Okabe & Ito's palette: told apart with any colour vision, and each series also has its own
#: line style or point shape, so colour is never the only difference
PALETTE = {"blue": "#0072B2", "vermillion": "#D55E00", "orange": "#E69F00", "green": "#009E73",
           "sky": "#56B4E9", "purple": "#CC79A7", "yellow": "#F0E442", "black": "#000000"}

_STORED = "%Y-%m-%dT%H:%M:%S.%fZ"


@dataclass(frozen=True)
class Window:
    """A time range cut into buckets: ``start`` (included) to ``end`` (excluded), UTC."""

    name: str
    bucket: str
    start: datetime
    end: datetime

    @classmethod
    def ending_at(cls, now: float, name: str) -> Window:
        """The range ``name`` up to the end of the current bucket (``now`` in epoch seconds)."""
        length, bucket = RANGES[name]
        at = datetime.fromtimestamp(now, timezone.utc)
        current = at.replace(minute=0, second=0, microsecond=0)
        if bucket == "day":
            current = current.replace(hour=0)
        end = current + BUCKETS[bucket][1]
        return cls(name=name, bucket=bucket, start=end - length, end=end)

    @property
    def keys(self) -> list[str]:
        """Each bucket's key (the stored time's prefix), oldest first."""
        width, step = BUCKETS[self.bucket]
        out, at = [], self.start
        while at < self.end:
            out.append(at.strftime(_STORED)[:width])
            at += step
        return out

    def label(self, key: str) -> str:
        """How a bucket is shown: ``2025-01-31 09:00`` or ``2025-01-31``."""
        return f"{key[:10]} {key[11:13]}:00" if self.bucket == "hour" else key

    @property
    def bounds(self) -> tuple[str, str]:
        return self.start.strftime(_STORED), self.end.strftime(_STORED)

    def bucket_expr(self, t: sa.Table) -> sa.ColumnElement[str]:
        return sa.func.substr(t.c.time, 1, BUCKETS[self.bucket][0])


@dataclass
class Series:
    """One line or set of bars: a label, a value per bucket (or per category), a colour and a style."""

    key: str
    label: str
    data: list[int]
    color: str
    dash: bool = False
    point: str = "circle"
    kind: str | None = None  # "line" or "bar" inside a chart of the other kind

    def as_json(self) -> dict[str, Any]:
        return {"key": self.key, "label": self.label, "data": self.data, "color": self.color, "dash": self.dash,
                "point": self.point, "kind": self.kind}


@dataclass
class Chart:
    """One chart and the table beside it (the same numbers).

    ``labels`` are the buckets (or categories), ``series`` the values;
    ``reference`` lines (the alert threshold) are drawn but are not data, so the
    table states them beneath instead of as a column.
    """

    id: str
    title: str
    kind: str
    caption: str
    labels: list[str]
    series: list[Series]
    reference: list[Series] = field(default_factory=list)
    empty_text: str = "No events in this range."
    horizontal: bool = False

    @property
    def empty(self) -> bool:
        return not any(v for s in self.series for v in s.data)

    def rows(self) -> list[tuple[str, list[int]]]:
        """The table: one row per label, one column per series."""
        return [(label, [s.data[i] for s in self.series]) for i, label in enumerate(self.labels)]

    @property
    def totals(self) -> list[int]:
        return [sum(s.data) for s in self.series]

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "title": self.title, "labels": self.labels,
                "series": [s.as_json() for s in self.series], "reference": [s.as_json() for s in self.reference],
                "horizontal": self.horizontal}


def type_counts_query(t: sa.Table, window: Window, types: Iterable[str]) -> sa.Select[Any]:
    """Events per (type, bucket): an index range read of ``(type, time)`` per type, nothing else read."""
    start, end = window.bounds
    bucket = window.bucket_expr(t).label("bucket")
    return (sa.select(t.c.type, bucket, sa.func.count().label("n"))
            .where(t.c.type.in_(sorted(types)), t.c.time >= start, t.c.time < end)
            .group_by(t.c.type, bucket))


def counts_by_type(conn: sa.Connection, t: sa.Table, window: Window, types: Iterable[str]) -> dict[str, Counter[str]]:
    """type -> bucket -> events, for ``types`` in ``window``."""
    out: dict[str, Counter[str]] = {name: Counter() for name in types}
    for type_, key, n in conn.execute(type_counts_query(t, window, types)):
        out[type_][key] = int(n)
    return out


def denials_query(t: sa.Table, window: Window, limit: int = 20) -> sa.Select[Any]:
    start, end = window.bounds
    n = sa.func.count().label("n")
    return (sa.select(t.c.skill, n)
            .where(t.c.type == "permission.denied", t.c.time >= start, t.c.time < end)
            .group_by(t.c.skill).order_by(n.desc(), t.c.skill).limit(limit))


def denials_by_skill(conn: sa.Connection, t: sa.Table, window: Window, limit: int = 20) -> list[tuple[str, int]]:
    """The skills most often refused in ``window`` (``permission.denied``), most first."""
    return [(skill if skill is not None else "(no skill)", int(count))
            for skill, count in conn.execute(denials_query(t, window, limit))]


def people_query(t: sa.Table, window: Window) -> sa.Select[Any]:
    start, end = window.bounds
    bucket = window.bucket_expr(t).label("bucket")
    person = sa.func.coalesce(t.c.actor_email, t.c.actor_subject)
    columns: list[sa.ColumnElement[Any]] = [bucket, sa.func.count(sa.distinct(person))]
    return (sa.select(*columns)
            .where(t.c.time >= start, t.c.time < end, person.is_not(None),
                   t.c.outcome.not_in(["failure", "alert"]))
            .group_by(bucket))


def people_active(conn: sa.Connection, t: sa.Table, window: Window) -> Counter[str]:
    """bucket -> distinct people (email, else subject) with an event of a session in it: any event
    with an actor except failed sign-ins and alerts (someone who only failed was never signed in)."""
    return Counter({key: int(n) for key, n in conn.execute(people_query(t, window))})


def alerts_query(t: sa.Table, window: Window) -> sa.Select[Any]:
    start, end = window.bounds
    return (sa.select(t.c.time, t.c.event)
            .where(t.c.type == "auth.failure_threshold", t.c.time >= start, t.c.time < end)
            .limit(MAX_ALERT_ROWS))


def failure_alerts(conn: sa.Connection, t: sa.Table, window: Window) -> Counter[str]:
    """bucket -> repeated-failure alerts (``auth.failure_threshold`` for a person or an address).

    The key type is only in the event's JSON; alerts are rare (one per key per
    window), so their rows are read through ``(type, time)`` and sorted here.
    """
    width = BUCKETS[window.bucket][0]
    out: Counter[str] = Counter()
    for when, text in conn.execute(alerts_query(t, window)):
        try:
            data = (json.loads(text).get("data") or {})
        except (TypeError, ValueError, AttributeError):
            continue
        if isinstance(data, dict) and data.get("key_type") in FAILURE_ALERT_KEYS:
            out[when[:width]] += 1
    return out


def build_charts(conn: sa.Connection, t: sa.Table, window: Window,
                 threshold: FailureThresholdSettings | None) -> list[Chart]:
    """Every chart of the page, for ``window``."""
    keys = window.keys
    labels = [window.label(k) for k in keys]
    per = RANGE_LABELS[window.name].lower()
    unit = "hour" if window.bucket == "hour" else "day"
    counts = counts_by_type(conn, t, window, ("auth.login", "auth.login_failed", "stepup.required",
                                              "stepup.satisfied"))

    def col(type_: str) -> list[int]:
        return [counts[type_].get(k, 0) for k in keys]

    alerts = failure_alerts(conn, t, window)
    reference = []
    if threshold is not None:
        reference.append(Series("threshold", f"Alert threshold ({threshold_words(threshold)})", [threshold.count] * len(keys),
                                PALETTE["black"], dash=True, point="line"))
    signins = Chart(
        id="signins", title="Sign-ins and failed sign-ins", kind="line",
        caption=f"Sign-ins (auth.login) and failed sign-ins (auth.login_failed) per {unit}, {per}, UTC; "
                "repeated-failure alerts raised (auth.failure_threshold for a person or an address)"
                + ("; the dashed line is the alert threshold." if threshold is not None
                   else "; failure alerts are off (logging.failureThreshold is false)."),
        labels=labels,
        series=[Series("signins", "Sign-ins", col("auth.login"), PALETTE["blue"]),
                Series("failed", "Failed sign-ins", col("auth.login_failed"), PALETTE["vermillion"],
                       point="triangle"),
                Series("alerts", "Failure alerts raised", [alerts.get(k, 0) for k in keys], PALETTE["purple"],
                       point="rectRot", kind="bar")],
        reference=reference, empty_text=f"No sign-ins or failed sign-ins {per}.")
    denied = denials_by_skill(conn, t, window)
    denials = Chart(
        id="denials", title="Denials by skill", kind="bar", horizontal=True,
        caption=f"Requests refused (permission.denied) per skill, {per}, most first (top 20).",
        labels=[skill for skill, _ in denied],
        series=[Series("denials", "Denials", [n for _, n in denied], PALETTE["vermillion"])],
        empty_text=f"No denials {per}.")
    stepups = Chart(
        id="stepups", title="Step-ups", kind="line",
        caption=f"Step-ups asked for (stepup.required) and completed (stepup.satisfied) per {unit}, {per}, UTC.",
        labels=labels,
        series=[Series("required", "Step-ups asked for", col("stepup.required"), PALETTE["orange"]),
                Series("satisfied", "Step-ups completed", col("stepup.satisfied"), PALETTE["green"], dash=True,
                       point="rect")],
        empty_text=f"No step-ups {per}.")
    active = people_active(conn, t, window)
    people = Chart(
        id="active", title="People active", kind="line",
        caption=f"Distinct people with at least one audited event of a session (any event with a person, "
                f"except failed sign-ins and alerts) per {unit}, {per}, UTC. Derived from the audit trail: it "
                "counts people seen, not open sessions (a session with no audited event in a bucket is not "
                "counted; the Sessions page lists the open ones).",
        labels=labels,
        series=[Series("people", "People active", [active.get(k, 0) for k in keys], PALETTE["sky"])],
        empty_text=f"Nobody active {per}.")
    return [signins, denials, stepups, people]


def threshold_words(threshold: FailureThresholdSettings) -> str:
    """``5 failures per person or address within 5 minutes``: the legend's and the page's words."""
    return f"{threshold.count} failures per person or address within {_duration(threshold.window)}"


def _duration(seconds: float) -> str:
    if seconds >= 120 and seconds % 60 == 0:
        return f"{int(seconds // 60)} minutes"
    return f"{seconds:g} seconds"


__all__ = ["PALETTE", "RANGES", "RANGE_LABELS", "Chart", "Series", "Window", "alerts_query", "build_charts",
           "counts_by_type", "denials_by_skill", "denials_query", "failure_alerts", "people_active", "people_query",
           "threshold_words", "type_counts_query"]
