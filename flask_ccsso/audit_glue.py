"""Wires the audit pipeline to an app at ``init_app``.

The ``logging`` block is validated here, at start-up, like every other block;
the pipeline then only listens to :mod:`flask_ccsso.signals` (it never reaches
into the gate or the providers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Flask

if TYPE_CHECKING:
    from .extension import CCSSOState


def init_state(app: Flask, state: CCSSOState) -> None:
    from .audit import init_audit, parse_logging_block

    settings = parse_logging_block(state.config.logging or None)
    state.audit_settings = settings
    if settings.level != "off":
        state.audit = init_audit(app, settings, clock=state.clock)
