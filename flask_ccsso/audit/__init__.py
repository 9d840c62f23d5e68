"""The audit pipeline: signals -> events -> queue -> sinks (see ``docs/audit.md``).

Public names::

    parse_logging_block(raw, path="logging") -> AuditSettings
    init_audit(app, settings, *, clock=time.time) -> AuditPipeline
    AuditPipeline.emit(event_type, **fields) / .flush(timeout) / .close(timeout)
    verify_chain(engine, table="ccsso_audit_events") -> (ok, first_broken_event_id)
    flask_ccsso.cli.audit.audit    -- the ``audit`` click group (the CLI lives in ``flask_ccsso.cli``)
"""

from __future__ import annotations

from typing import Any

from .dispatcher import AuditPipeline, get_pipeline, init_audit, request_id
from .events import SCHEMA_VERSION, AuditEvent
from .settings import AuditSettings, SinkSettings, parse_logging_block


def __getattr__(name: str) -> Any:
    # SQLAlchemy helpers are imported lazily: they pull in SQLAlchemy
    if name in ("verify_chain", "create_table"):
        from .sinks import sqlalchemy as _sa

        return getattr(_sa, name)
    raise AttributeError(name)


__all__ = [
    "SCHEMA_VERSION",
    "AuditEvent",
    "AuditPipeline",
    "AuditSettings",
    "SinkSettings",
    "create_table",
    "get_pipeline",
    "init_audit",
    "parse_logging_block",
    "request_id",
    "verify_chain",
]
