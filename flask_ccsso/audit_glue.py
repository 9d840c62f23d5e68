"""Wires the audit pipeline to an app at ``init_app``.

The ``logging`` block is validated at start-up, like every other block; the
pipeline then only listens to :mod:`flask_ccsso.signals` (it never reaches
into the gate or the providers).
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask

from .audit.dispatcher import AuditPipeline, init_audit
from .audit.settings import AuditSettings, parse_logging_block
from .config import CCSSOConfig
from .exceptions import ConfigError


def audit_settings(config: CCSSOConfig, instance_path: str | None = None) -> AuditSettings:
    """The validated ``logging`` block (a start-up :class:`ConfigError` otherwise),
    its SQLite URLs and spool folder resolved against ``instance_path``
    (:meth:`AuditSettings.resolved`)."""
    settings = parse_logging_block(config.logging or None)
    if config.console.enabled and not settings.records("console.action"):
        # the console changes other people's sessions: every action it takes is audited, or it is not served
        if settings.level == "off":
            raise ConfigError("console.enabled", "is true, but logging.level is off: the operator console's "
                              "actions would go unaudited.", 'set logging.level to "audit" (see docs/audit.md).')
        raise ConfigError("logging.events", "does not list console.action, but the operator console is enabled: "
                          "its actions would go unaudited.", 'add "console.action" to logging.events.')
    return settings if instance_path is None else settings.resolved(instance_path)


def start_audit(app: Flask, settings: AuditSettings, clock: Callable[[], float]) -> AuditPipeline | None:
    """Start the pipeline (``None`` when ``logging.level`` is ``off``)."""
    if settings.level == "off":
        return None
    return init_audit(app, settings, clock=clock)


__all__ = ["audit_settings", "start_audit"]
