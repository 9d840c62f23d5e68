"""The logging sink: one JSON line per event on a Python logger (``flask_ccsso.audit``).

Control characters are already escaped in every field, so one event is one
line however the logger is formatted. Point the logger's handler at a file, at
syslog or at your log shipper. Records are INFO; the fallback of
``destination: "azure-log-analytics"`` without ``azureMonitor`` writes them at WARNING, the level a plain Flask app shows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ..events import AuditEvent
from .base import Sink


class LoggingSink(Sink):
    def open(self) -> None:
        self.logger = logging.getLogger(self.settings.logger)

    def write_batch(self, events: Sequence[AuditEvent]) -> None:
        level = self.settings.log_level
        for event in events:
            self.logger.log(level, event.to_json())


__all__ = ["LoggingSink"]
