"""The console's sessions section (placeholder: being built)."""

from __future__ import annotations

from flask import Blueprint

from . import page


def register(bp: Blueprint) -> None:
    """Add this section's routes to the console blueprint."""

    @bp.get("/sessions", endpoint="sessions")
    def sessions_page() -> str:
        return page("placeholder.html", title="sessions")
