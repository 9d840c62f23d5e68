"""The console's audit section (placeholder: being built)."""

from __future__ import annotations

from flask import Blueprint

from . import page


def register(bp: Blueprint) -> None:
    """Add this section's routes to the console blueprint."""

    @bp.get("/audit", endpoint="audit")
    def audit_page() -> str:
        return page("placeholder.html", title="audit")
