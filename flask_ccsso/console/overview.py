"""The console's front page: what needs attention now, and where each section is.

Cheap on purpose: it reuses the sections' own readers -- the capped session
list (:func:`~flask_ccsso.cli.sessions.session_rows`, as the sessions page
reads it) and the providers' kept state (:func:`.providers.provider_views`,
no network I/O) -- and scans nothing else.
"""

from __future__ import annotations

from flask import Blueprint

from ..cli.sessions import session_rows
from ..state import get_state
from . import page
from .providers import EXPIRED, URGENT, expiring, provider_views
from .sessions import MAX_ROWS


def register(bp: Blueprint) -> None:
    """Add the overview route to the console blueprint."""

    @bp.get("/", endpoint="index")
    def index() -> str:
        rows = session_rows(get_state(), limit=MAX_ROWS + 1)
        views = provider_views()
        certificates = expiring(views)
        failing = [v for v in views if v.unavailable or (
            v.last_error_at is not None and (v.last_success is None or v.last_error_at > v.last_success))]
        return page("index.html", title="Overview", sessions=min(len(rows), MAX_ROWS),
                    sessions_capped=len(rows) > MAX_ROWS, people=len({r["user"] for r in rows[:MAX_ROWS]}),
                    certificates=certificates, urgent=[vc for vc in certificates if vc[1].level in (EXPIRED, URGENT)],
                    failing=failing)
