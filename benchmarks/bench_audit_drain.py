"""Audit backlog drain after a collector outage, and the crash journal's cost.

    python benchmarks/bench_audit_drain.py [--quick] [--json] [--rate 300] [--outage 10]
    (or: python benchmarks/run.py --only audit_drain)

1. Drain: events are recorded at ``rate`` a second throughout; after ``lead`` seconds the
   local HTTP collector (``tests/support/audit.Collector``) refuses connections for
   ``outage`` seconds, then comes back; ``after`` seconds after the spool is empty the
   recording stops. Reported, in seconds: how long after the collector came back the
   first event arrived (``first_delivery_s``) and the spool was empty (``drain_s``), the
   maximum delivery delay (arrival at the collector minus the event's time) overall and
   for events recorded after the drain, and the latest delivery counted from the fault's
   end (or from the event's time, for an event recorded later: ``within_s``); events
   spooled when the collector came back, lost, and delivered twice. The pipeline runs with
   its default settings (``batchSize`` 100, ``flushInterval`` 1 s, ``retryBackoff`` 0.5 s,
   ``maxBackoff`` 15 s).
2. Journal: microseconds per event on the request thread for the crash journal's
   encode + ``os.write`` (best of 5 rounds).

Targets: every event delivered within 20 s of the fault's end (the bound of
docs/production.md, which the fault suite checks: ``tests/faults/harness.DELIVERY_BOUND``),
and none lost.

Full run: 300 events/s, a 10 s outage after 5 s, 10 s after the drain (about 30 s).
``--quick``: 50 events/s, a 2 s outage after 1 s, 1 s after the drain (about 5 s).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as h
from flask import Flask

from flask_ccsso.audit import init_audit, parse_logging_block
from flask_ccsso.audit.journal import Journal, encode_event
from tests.support.audit import Collector

#: docs/production.md: every event delivered within 20 s of the fault's end
DELIVERY_BOUND = 20.0


@dataclass(frozen=True)
class Plan:
    rate: float  # events recorded a second, throughout
    lead: float  # seconds of normal delivery before the outage
    outage: float  # seconds the collector refuses connections
    after: float  # seconds of recording after the spool is empty
    journal_events: int  # events per round of the journal measurement


FULL = Plan(rate=300.0, lead=5.0, outage=10.0, after=10.0, journal_events=20000)
QUICK = Plan(rate=50.0, lead=1.0, outage=2.0, after=1.0, journal_events=2000)


class _Stamped(list):  # type: ignore[type-arg]
    """``Collector.requests`` with each request's arrival time: the collector's handler appends
    an entry (under its lock, after reading the body, before answering); this adds ``"at"``,
    ``time.time()``. The collector keeps no time of its own, and the drain figures need one."""

    def append(self, entry: dict[str, Any]) -> None:
        entry["at"] = time.time()
        super().append(entry)


def drain(rate: float, outage: float, lead: float, after: float, cap: float = 300.0) -> dict[str, Any]:
    """One outage under continuous recording; the figures (seconds, counts)."""
    collector = Collector()
    collector.requests = _Stamped()
    spool = tempfile.mkdtemp(prefix="ccsso-drain-")
    try:
        app = Flask("drain", instance_path=spool)
        settings = parse_logging_block({
            "level": "audit", "failureThreshold": False, "spoolDir": spool,
            "destinations": [{"type": "http", "name": "siem", "url": f"{collector.url}/in", "connectTimeout": 0.5}]})
        pipeline = init_audit(app, settings)
        sink = pipeline.sinks[0]
        emitted: list[tuple[str, float]] = []
        stop = threading.Event()

        def record() -> None:
            start = time.monotonic()
            n = 0
            while not stop.is_set() and time.monotonic() - start < cap:
                delay = start + n / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                t = time.time()
                # the event's time rides along in ``detail``, as when docs/audit.md's figures were taken
                event = pipeline.emit("auth.login", subject=f"u{n}", provider="okta", detail=repr(t))
                assert event is not None
                emitted.append((event.id, t))
                n += 1

        thread = threading.Thread(target=record, daemon=True)
        thread.start()
        time.sleep(lead)  # the schedule of the run, not a wait for a condition
        collector.stop()
        down_at = time.monotonic()
        time.sleep(outage)
        spooled_at_recovery = sink.spool.refresh()
        collector.start()
        up_at, up_wall = time.monotonic(), time.time()
        drained_wall = None
        while time.monotonic() - up_at < cap:
            if not sink.is_down and sink.spool.refresh() == 0 and len(sink._queue) < settings.batch_size:
                drained_wall = time.time()
                break
            time.sleep(0.05)
        time.sleep(after)
        stop.set()
        thread.join(10)
        pipeline.flush(60)
        pipeline.close()
    finally:
        collector.stop()
        shutil.rmtree(spool, ignore_errors=True)

    arrivals = [(e["id"], r["at"]) for r in collector.accepted() for e in json.loads(r["body"])]
    first: dict[str, float] = {}
    for event_id, at in arrivals:
        first.setdefault(event_id, at)
    sent = dict(emitted)
    delivered = {i: first[i] - t for i, t in sent.items() if i in first}
    after_drain = [d for i, d in delivered.items() if drained_wall is not None and sent[i] >= drained_wall]
    back = [at for _, at in arrivals if at >= up_wall]
    lost = len(set(sent) - set(first))

    def s(value: float | None) -> float | None:
        return None if value is None else round(value, 2)

    return {
        "rate": rate, "outage_s": outage, "emitted": len(sent),
        "spooled_at_recovery": spooled_at_recovery,
        "first_delivery_s": s(min(back) - up_wall if back else None),
        "drain_s": s(drained_wall - up_wall if drained_wall is not None else None),
        "max_delay_s": s(max(delivered.values(), default=None)),
        "max_delay_after_drain_s": s(max(after_drain, default=None)),
        # counted from the fault's end, or from the event's own time if it was recorded later
        "within_s": s(max((first[i] - max(t, up_wall) for i, t in sent.items() if i in first), default=None)),
        "lost": lost,
        "duplicates": len(arrivals) - len(first),
        "outage_observed_s": s(up_at - down_at),
    }


def journal_cost(n: int) -> dict[str, Any]:
    """Best of 5 rounds of ``n`` events: encode, then ``os.write`` to the journal (µs per event)."""
    directory = tempfile.mkdtemp(prefix="ccsso-journal-")
    try:
        app = Flask("journal", instance_path=directory)
        settings = parse_logging_block({"level": "audit", "failureThreshold": False, "spoolDir": directory,
                                        "destinations": [{"type": "http", "url": "http://127.0.0.1:9/in"}]})
        pipeline = init_audit(app, settings)
        event = pipeline._build("auth.login", {"subject": "00u-ada", "email": "ada@example.com",
                                               "provider": "okta", "method": "oidc"},
                                ("req-1", "203.0.113.9", "Mozilla/5.0"))
        pipeline.close(0.1)
        journal = Journal(os.path.join(directory, "j"))
        record = encode_event(event)
        best_encode = best_write = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n):
                encode_event(event)
            t1 = time.perf_counter()
            with journal.lock:
                for _ in range(n):
                    journal.append(record)
            t2 = time.perf_counter()
            best_encode = min(best_encode, (t1 - t0) / n)
            best_write = min(best_write, (t2 - t1) / n)
        journal.close(keep_files=False)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return {"encode_us": round(best_encode * 1e6, 2), "write_us": round(best_write * 1e6, 2),
            "per_event_us": round((best_encode + best_write) * 1e6, 2), "record_bytes": len(record)}


def run(quick: bool, *, rate: float | None = None, outage: float | None = None) -> dict[str, Any]:
    """``rate`` / ``outage`` (the standalone ``--rate`` / ``--outage``) replace the plan's."""
    h.quiet_logs()  # the sink's "not accepting events" warning during the outage
    plan = QUICK if quick else FULL
    rate = plan.rate if rate is None else rate
    outage = plan.outage if outage is None else outage
    cost = journal_cost(plan.journal_events)
    d = drain(rate, outage, plan.lead, plan.after)
    rows = [
        h.row(f"drain: {outage:g} s collector outage at {rate:g} events/s (seconds, events)", None,
              extra={k: v for k, v in d.items() if k not in ("rate", "outage_s")}),
        h.row("crash journal: encode + os.write per event, request thread (µs, best of 5)", None,
              extra=cost),
    ]
    lost = d["lost"]
    targets = [
        h.target(f"every event delivered within {DELIVERY_BOUND:g} s of the fault's end (s)",
                 None if lost else d["within_s"], DELIVERY_BOUND,
                 f"{lost} events never arrived" if lost else
                 (f"first delivery {d['first_delivery_s']} s after the collector was back, spool empty after "
                  f"{d['drain_s']} s; {d['spooled_at_recovery']} spooled; docs/production.md")),
        h.target("events lost in the outage", lost, 0,
                 f"{d['emitted']} recorded, {d['duplicates']} delivered twice"),
    ]
    return {"name": "audit_drain", "rows": rows, "targets": targets,
            "note": (f"{rate:g} events/s recorded throughout; after {plan.lead:g} s the collector refuses "
                     f"connections for {outage:g} s; recording goes on {plan.after:g} s after the drain. "
                     "The pipeline's defaults (batchSize 100, flushInterval 1 s, retryBackoff 0.5 s, "
                     "maxBackoff 15 s). within_s: the latest delivery after the fault's end (or after the "
                     "event's time, if later).")}


def _options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--rate", type=float, default=None, help=f"events a second (default {FULL.rate:g}; "
                                                             f"--quick {QUICK.rate:g})")
    ap.add_argument("--outage", type=float, default=None, help=f"seconds the collector is down (default "
                                                               f"{FULL.outage:g}; --quick {QUICK.outage:g})")


if __name__ == "__main__":
    h.standalone(run, _options)
