"""A tiny app for ``tests/security/test_audit_shutdown.py``, run under gunicorn.

``create_app()`` reads its audit destination from the environment:
``AUDIT_SHUTDOWN_COLLECTOR`` (an HTTP collector's URL) and ``AUDIT_SHUTDOWN_SPOOL``
(the spool directory). ``GET /emit?n=<k>`` records ``k`` ``permission.denied``
events and answers their ids and the worker's pid, so the test knows exactly
what each worker had to deliver.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, jsonify, request

from flask_ccsso.audit import init_audit, parse_logging_block

#: the sink's name, and so its spool file's: ``ccsso-audit-siem.spool.sqlite3``
SINK = "siem"


def logging_block(collector: str, spool_dir: str) -> dict[str, Any]:
    """A read timeout far beyond the 5 s close budget: a write still waits when the worker exits."""
    return {"level": "audit", "events": ["permission.denied"], "failureThreshold": False,
            "flushInterval": 0.05, "batchSize": 5, "retryAttempts": 1, "spoolDir": spool_dir,
            "destinations": [{"type": "http", "name": SINK, "url": collector, "connectTimeout": 1,
                              "readTimeout": 60}]}


def create_app() -> Flask:
    app = Flask(__name__, instance_path=os.environ["AUDIT_SHUTDOWN_SPOOL"])
    pipeline = init_audit(app, parse_logging_block(logging_block(os.environ["AUDIT_SHUTDOWN_COLLECTOR"],
                                                                 os.environ["AUDIT_SHUTDOWN_SPOOL"])))

    @app.get("/health")
    def health() -> Any:
        return {"pid": os.getpid()}

    @app.get("/emit")
    def emit() -> Any:
        ids = []
        for _ in range(int(request.args.get("n", 1))):
            event = pipeline.emit("permission.denied", reason="missing_skill", skills=("deploy",))
            assert event is not None
            ids.append(event.id)
        return jsonify(ids=ids, pid=os.getpid())

    return app
