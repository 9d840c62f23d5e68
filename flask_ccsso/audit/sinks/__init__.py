"""Audit sinks: where events go. See :class:`~flask_ccsso.audit.sinks.base.Sink`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import PoisonBatchError, Sink, SinkError, TransientSinkError

if TYPE_CHECKING:
    from ..settings import AuditSettings, SinkSettings


def make_sink(settings: SinkSettings, audit: AuditSettings, *, spool_dir: str) -> Sink:
    """Build the backend for ``settings.type``; optional dependencies are imported here, lazily."""
    if settings.type == "sqlalchemy":
        from .sqlalchemy import SQLAlchemySink

        return SQLAlchemySink(settings, audit, spool_dir=spool_dir)
    if settings.type == "http":
        from .http import HTTPSink

        return HTTPSink(settings, audit, spool_dir=spool_dir)
    if settings.type == "logging":
        from .logging import LoggingSink

        return LoggingSink(settings, audit, spool_dir=spool_dir)
    raise ValueError(f"unknown audit sink type {settings.type!r}")


__all__ = ["PoisonBatchError", "Sink", "SinkError", "TransientSinkError", "make_sink"]
