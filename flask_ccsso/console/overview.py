"""The console's front page: what needs attention now, and where each section is."""

from __future__ import annotations

from flask import Blueprint

from . import page


def register(bp: Blueprint) -> None:
    """Add the overview route to the console blueprint."""

    @bp.get("/", endpoint="index")
    def index() -> str:
        return page("index.html", title="Overview")
