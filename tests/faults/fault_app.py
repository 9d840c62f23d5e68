"""The portal the fault suite runs under gunicorn: ``tests/scale/scaleout_app.py``'s portal with
two audit sinks (the private PostgreSQL and an HTTP collector) and a ledger of what it emitted.

Extra variables (besides scaleout_app's ``SCALEOUT_*``):

``FAULT_PG_URL``, ``FAULT_PG_TABLE``   the SQL sink's database and table
``FAULT_COLLECTOR_URL``               the HTTP sink's collector
``FAULT_LEDGER_DIR``                  where every process appends what it emitted
``FAULT_SLIDING_WRITE``               optional ``session.slidingWriteInterval``

The ledger is the suite's independent account of what was emitted: every event the pipeline
accepts is first written, by its id, to ``emitted-<pid>.log`` with one ``os.write`` on an
``O_APPEND`` file (in the kernel before the pipeline sees the event, so it survives a SIGKILL of
the process), and every "lost events" alert (``failure_threshold`` with ``key_type="audit_sink"``)
to ``alerts-<pid>.log``. Lines are ``<event id> <type> <request id or -> <epoch seconds>``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import scaleout_app
from flask import Flask

from flask_ccsso import signals

_fds: dict[tuple[int, str], int] = {}
_base_config = scaleout_app.portal_config


def _append(kind: str, line: str) -> None:
    key = (os.getpid(), kind)
    fd = _fds.get(key)
    if fd is None:  # per process: a forked worker opens its own file
        path = os.path.join(os.environ["FAULT_LEDGER_DIR"], f"{kind}-{os.getpid()}.log")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        _fds[key] = fd
    os.write(fd, line.encode())


def fault_config() -> dict[str, Any]:
    cfg = _base_config()
    if os.environ.get("FAULT_SLIDING_WRITE"):
        cfg["session"]["slidingWriteInterval"] = float(os.environ["FAULT_SLIDING_WRITE"])
    cfg["logging"] = {
        "level": "audit",
        "events": scaleout_app.AUDIT_EVENTS,
        "failureThreshold": False,
        "flushInterval": 0.2,
        "retryAttempts": 2,
        "retryBackoff": 0.1,
        "maxBackoff": 1.0,
        "spoolDir": os.path.join(os.environ["SCALEOUT_INSTANCE"], "audit-spool"),
        "destinations": [
            {"type": "sqlalchemy", "name": "pg", "url": "${FAULT_PG_URL}", "table": os.environ["FAULT_PG_TABLE"]},
            {"type": "http", "name": "siem", "url": "${FAULT_COLLECTOR_URL}"},
        ],
    }
    return cfg


def _ledger(app: Flask) -> None:
    pipeline = app.extensions["ccsso_audit"]
    submit = pipeline._submit

    def ledgered_submit(event: Any) -> None:
        _append("emitted", f"{event.id} {event.type} {event.request_id or '-'} {time.time():.6f}\n")
        submit(event)

    pipeline._submit = ledgered_submit

    def alert(sender: Any, **kw: Any) -> None:
        if kw.get("key_type") == "audit_sink":
            _append("alerts", f"{kw.get('key')} {kw.get('count')} {time.time():.6f}\n")

    signals.failure_threshold.connect(alert, sender=app, weak=False)


def create_app() -> Flask:
    scaleout_app.portal_config = fault_config  # the same portal, with this audit block
    app = scaleout_app.create_app()
    _ledger(app)
    return app
