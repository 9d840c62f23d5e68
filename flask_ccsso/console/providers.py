"""The console's providers section (placeholder: being built)."""

from __future__ import annotations

from flask import Blueprint

from . import page


def register(bp: Blueprint) -> None:
    """Add this section's routes to the console blueprint."""

    @bp.get("/providers", endpoint="providers")
    def providers_page() -> str:
        return page("placeholder.html", title="providers")
