"""A process that records audit events, for the durability tests (run as ``python -m tests.audit.emitter``).

Usage: ``emitter.py SPOOL_DIR BLOCK_JSON COUNT RATE [then]``

It starts the audit pipeline of a tiny Flask app with the ``logging`` block
``BLOCK_JSON`` (``spoolDir`` set to ``SPOOL_DIR``), then records ``COUNT``
``auth.login`` events, ``RATE`` a second (0: as fast as it can), printing each
event's id on its own line *after* ``emit`` returned -- the moment a request
that sent the signal would complete. Then it prints ``EMITTED`` and:

- ``then=wait`` (default): waits for a signal. SIGTERM exits the way gunicorn's
  worker does (``sys.exit``: atexit runs, so the pipeline closes with its
  budget); SIGKILL is a crash.
- ``then=flush``: flushes (up to 60 s), prints ``FLUSHED <ok>``, closes, exits.
- ``then=close``: closes straight away (a CLI command), prints ``CLOSED``, exits.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from typing import Any

from flask import Flask

from flask_ccsso.audit import init_audit, parse_logging_block


def main(argv: list[str]) -> int:
    spool_dir, block_json, count, rate = argv[0], argv[1], int(argv[2]), float(argv[3])
    then = argv[4] if len(argv) > 4 else "wait"
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # gunicorn's graceful worker exit
    block = json.loads(block_json)
    block["spoolDir"] = spool_dir
    app = Flask("emitter", instance_path=spool_dir + "-instance")
    pipeline = init_audit(app, parse_logging_block(block))
    print("STARTED", flush=True)
    start = time.monotonic()
    for n in range(count):
        if rate > 0:
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        event = pipeline.emit("auth.login", subject=f"user-{n}", provider="okta", method="oidc")
        assert event is not None
        print(event.id, flush=True)
    print("EMITTED", flush=True)
    if then == "flush":
        # flush() also returns for a sink that is down (its events are kept): wait until the
        # spool is empty too, so everything left by the last process was really delivered
        deadline = time.monotonic() + 90
        ok = pipeline.flush(60)
        while time.monotonic() < deadline and not _delivered_all(pipeline):
            time.sleep(0.1)
            ok = pipeline.flush(10)
        ok = ok and _delivered_all(pipeline)
        if not ok:
            print(f"health: {pipeline.health()}", file=sys.stderr, flush=True)
        print(f"FLUSHED {ok}", flush=True)
        pipeline.close()
        return 0
    if then == "close":
        pipeline.close()
        print("CLOSED", flush=True)
        return 0
    while True:
        time.sleep(3600)


def _delivered_all(pipeline: Any) -> bool:
    return all(s["up"] and s["in_spool"] == 0 and s["backlog"] == 0 and s["queued"] == 0
               for s in pipeline.health()["sinks"].values())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
