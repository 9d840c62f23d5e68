"""The benchmark harness: interleaved timing, raw WSGI calls and the result protocol.

Every ``benchmarks/bench_*.py`` module is a harness module::

    def run(quick: bool) -> dict:
        return {"name": "request",
                "rows": [{"scenario": "...", "median_us": 41.2, "p99_us": 80.3,
                          "ratios": {"bare_flask": 2.1, "flask_login": 0.93},   # any subset
                          "extra": {"store_rt": 1.0, ...}}],
                "targets": [{"target": "...", "value": 0.93, "limit": 0.90, "met": False, "note": "..."}]}

    if __name__ == "__main__":
        standalone(run)

``benchmarks/run.py`` imports every such module, calls ``run(quick)``, and writes
``results.json`` and ``results.md``. ``quick=True`` means tiny counts: the run
only proves the benchmark still works (CI), its figures mean nothing.

Timing (:func:`interleave`): contenders are timed in the same process in
interleaved rounds, one batch of ``batch`` calls per contender per round, the
contender order rotated each round; background load on a shared machine then
hits every contender alike and the ratios between them hold. For each call the
harness takes ``perf_counter_ns`` before and after, so a :class:`Stats` has

* ``median_us``: the median over the rounds of each round's mean per-call time
  (what every ratio uses: it includes the occasional slow call, GC pauses, a
  writer thread taking the GIL, which a per-call median would hide);
* ``p50_us`` / ``p99_us``: percentiles of the single-call latencies of all rounds;
* ``cpu_us``: the median over the rounds of the calling thread's own CPU time per
  call (``time.thread_time_ns`` around each batch): what the call itself costs,
  without time spent waiting for the GIL while a background thread (an audit
  writer) runs, or for the CPU on a busy machine;
* ``n``: calls timed (``batch * rounds``).

The two ``perf_counter_ns`` calls add about 0.1 µs to every call of every
contender alike.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import re
import socket
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # ``python benchmarks/bench_x.py`` from a clone: flask_ccsso and tests.support
    sys.path.insert(0, ROOT)

REDIS_URL = os.environ.get("CCSSO_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_URL = os.environ.get("CCSSO_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

#: "Audit on" in every protected-request figure: the ``logging`` block of the usual Azure
#: Log Analytics setup guides, as docs/audit.md quotes it (``skill.invoked`` recorded with
#: claims and groups). Without ``azureMonitor`` its events go to the ``flask_ccsso.audit``
#: logger; :func:`quiet_logs` gives that logger a null handler.
AUDIT_LOGGING: dict[str, Any] = {
    "level": "audit",
    "destination": "azure-log-analytics",
    "events": ["auth.login", "auth.logout", "skill.invoked", "permission.denied", "token.refreshed"],
    "includeUserClaims": True,
    "includeGroupMemberships": True,
}
SEED_LOGGING = AUDIT_LOGGING  # the name the project's first config blocks gave it


# --------------------------------------------------------------------------- timing

@dataclass(frozen=True)
class Stats:
    """One contender's timing; see the module docstring for what each figure is."""

    median_us: float
    p50_us: float
    p99_us: float
    n: int
    rounds: int
    cpu_us: float = math.nan

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` (0-100) percentile, nearest rank on the sorted values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


def interleave(contenders: dict[str, Callable[[], object]], *, batch: int, rounds: int,
               warmup: int | None = None) -> dict[str, Stats]:
    """Time each contender in ``rounds`` interleaved rounds of ``batch`` calls each.

    Every contender is first called ``warmup`` times (default ``min(batch, 200)``),
    untimed. Returns the :class:`Stats` of each contender, in the order given.
    """
    names = list(contenders)
    warm = min(batch, 200) if warmup is None else warmup
    for name in names:
        fn = contenders[name]
        for _ in range(warm):
            fn()
    means: dict[str, list[float]] = {name: [] for name in names}
    cpus: dict[str, list[float]] = {name: [] for name in names}
    calls: dict[str, list[int]] = {name: [] for name in names}
    clock = time.perf_counter_ns
    cpu_clock = time.thread_time_ns
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)] if names else []
        for name in order:
            fn = contenders[name]
            lat = calls[name]
            total = 0
            c0 = cpu_clock()
            for _ in range(batch):
                t0 = clock()
                fn()
                dt = clock() - t0
                lat.append(dt)
                total += dt
            cpus[name].append((cpu_clock() - c0) / batch / 1000)
            means[name].append(total / batch / 1000)
    out: dict[str, Stats] = {}
    for name in names:
        us = [v / 1000 for v in calls[name]]
        out[name] = Stats(median_us=statistics.median(means[name]) if means[name] else math.nan,
                          p50_us=percentile(us, 50), p99_us=percentile(us, 99), n=len(us), rounds=rounds,
                          cpu_us=statistics.median(cpus[name]) if cpus[name] else math.nan)
    gc.collect()
    return out


def ratio(a: Stats | None, b: Stats | None) -> float | None:
    """``a.median_us / b.median_us``; None if either is missing."""
    if a is None or b is None or not b.median_us or math.isnan(a.median_us) or math.isnan(b.median_us):
        return None
    return a.median_us / b.median_us


# --------------------------------------------------------------------------- WSGI

def environ(path: str, headers: dict[str, str] | None = None, *, method: str = "GET",
            remote_addr: str = "10.0.0.7", **kw: Any) -> dict[str, Any]:
    """A prebuilt WSGI environ (copied by :func:`wsgi_call` for every call)."""
    from werkzeug.test import EnvironBuilder

    return EnvironBuilder(path=path, method=method, headers=headers or {},
                          environ_base={"REMOTE_ADDR": remote_addr}, **kw).get_environ()


class Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def code(self) -> int:
        return int(self.status.split(" ", 1)[0])

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


def wsgi_call(app: Any, environ: dict[str, Any]) -> str:
    """Call ``app.wsgi_app`` with a copy of ``environ``, consume and close the body; the status line."""
    status: list[str] = []

    def start_response(s: str, headers: Any, exc_info: Any = None) -> Any:
        status.append(s)
        return _discard

    body = app.wsgi_app(environ.copy(), start_response)
    try:
        for _ in body:
            pass
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return status[0]


def _discard(data: bytes) -> None:
    pass


def wsgi_response(app: Any, environ: dict[str, Any]) -> Response:
    """Like :func:`wsgi_call`, keeping headers and body (for checks outside the timed loop)."""
    got: list[Any] = []

    def start_response(s: str, headers: Any, exc_info: Any = None) -> Any:
        got[:] = [s, list(headers)]
        return _discard

    body = app.wsgi_app(environ.copy(), start_response)
    try:
        data = b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return Response(got[0], got[1], data)


def caller(app: Any, env: dict[str, Any], expect: int = 200) -> Callable[[], str]:
    """Check once that ``env`` answers ``expect``; return the zero-argument callable to time."""
    resp = wsgi_response(app, env)
    if resp.code != expect:
        raise AssertionError(f"{getattr(app, 'name', app)}: {env.get('PATH_INFO')} answered {resp.status}, "
                             f"expected {expect}: {resp.body[:300]!r}")

    def call() -> str:
        return wsgi_call(app, env)

    return call


# --------------------------------------------------------------------------- I/O counting

_RESP_CMD = re.compile(rb"\*\d+\r\n\$\d+\r\n([A-Za-z]+)\r\n")
_REDIS_WRITES = frozenset({b"SET", b"SETEX", b"PSETEX", b"SETNX", b"DEL", b"UNLINK", b"SADD", b"SREM", b"EXPIRE",
                           b"PEXPIRE", b"EVALSHA", b"EVAL", b"GETDEL", b"GETEX", b"EXEC", b"HSET", b"INCR",
                           b"INCRBY", b"ZADD", b"ZREM", b"LPUSH", b"RPUSH"})


class IOCounter:
    """I/O counters, patched in at class level (:meth:`install`), counting the calling
    thread's I/O during :meth:`per_call` only; :meth:`uninstall` takes every patch and
    listener out again, so the timed runs carry none of them.

    * ``redis_rt``: packed commands sent on a redis-py connection (a pipeline is one),
      ``redis_writes``: those containing a writing command;
    * ``sql`` / ``sql_writes``: statements executed on engines passed to :meth:`watch_engine`
      (INSERT/UPDATE/DELETE/REPLACE, and ``sql_commits``, count as writes). On SQLite the
      statements are counted by the ``sqlite3`` connection itself (a trace callback set at
      each pool checkout), so a store reading on the raw DBAPI connection is counted too.
      On a networked database also ``sql_pings`` (``pool_pre_ping`` on checkout) and
      ``sql_resets`` (the ROLLBACK when a connection goes back to the pool with a transaction
      open; the driver sends nothing for an idle connection -- psycopg 3 skips it -- so that
      one is not counted): round trips too;
    * ``connects``: ``socket.connect`` calls (new outbound connections),
      ``http``: requests sent through a ``requests`` adapter.
    """

    def __init__(self) -> None:
        self.c: Counter[str] = Counter()
        self._installed = False
        self._undo: list[Callable[[], None]] = []
        self._engines: dict[int, Any] = {}
        #: only this thread's I/O is counted (:meth:`per_call` sets it): an audit
        #: writer thread's connection attempts are not the request's
        self.thread: int | None = None

    def _patch(self, owner: Any, name: str, value: Any) -> None:
        orig = owner.__dict__[name] if name in getattr(owner, "__dict__", {}) else getattr(owner, name)
        setattr(owner, name, value)
        self._undo.append(lambda: setattr(owner, name, orig))

    def install(self) -> IOCounter:
        if self._installed:
            return self
        self._installed = True
        counters = _ThreadCounter(self)
        with contextlib.suppress(ImportError):
            from redis.connection import AbstractConnection

            orig_send = AbstractConnection.send_packed_command

            def send_packed_command(conn: Any, command: Any, check_health: bool = True) -> None:
                if counters.active():
                    raw = b"".join(bytes(c) for c in command) if isinstance(command, (list, tuple)) else bytes(command)
                    counters["redis_rt"] += 1
                    if {m.upper() for m in _RESP_CMD.findall(raw)} & _REDIS_WRITES:
                        counters["redis_writes"] += 1
                return orig_send(conn, command, check_health)

            self._patch(AbstractConnection, "send_packed_command", send_packed_command)

        orig_connect = socket.socket.connect

        def connect(sock: socket.socket, address: Any) -> Any:
            counters["connects"] += 1
            return orig_connect(sock, address)

        self._patch(socket.socket, "connect", connect)

        with contextlib.suppress(ImportError):
            from requests.adapters import HTTPAdapter

            orig_adapter_send = HTTPAdapter.send

            def adapter_send(adapter: Any, request: Any, *a: Any, **kw: Any) -> Any:
                counters["http"] += 1
                return orig_adapter_send(adapter, request, *a, **kw)

            self._patch(HTTPAdapter, "send", adapter_send)
        for engine in list(self._engines.values()):
            self._listen(engine)
        return self

    def uninstall(self) -> None:
        """Restore everything :meth:`install` and :meth:`watch_engine` changed."""
        while self._undo:
            self._undo.pop()()
        self._installed = False
        self._engines.clear()

    def watch_engine(self, engine: Any) -> None:
        """Count the statements run on a SQLAlchemy engine (now if installed, else from the
        next :meth:`install` on; :meth:`uninstall` forgets it)."""
        if engine is None or id(engine) in self._engines:
            return
        self._engines[id(engine)] = engine
        if self._installed:
            self._listen(engine)

    def _listen(self, engine: Any) -> None:
        import sqlalchemy as sa

        counters = _ThreadCounter(self)

        def listen(name: str, fn: Callable[..., Any]) -> None:
            sa.event.listen(engine, name, fn)
            self._undo.append(lambda: sa.event.remove(engine, name, fn))

        def count(statement: str) -> None:
            if not counters.active():
                return
            word = statement.lstrip()[:8].upper()
            if word.startswith(("BEGIN", "SAVEPOINT", "RELEASE", "PRAGMA")):
                return
            if word.startswith("COMMIT"):
                counters["sql_commits"] += 1
                return
            counters["sql"] += 1
            if word.startswith(("INSERT", "UPDATE", "DELETE", "REPLACE")):
                counters["sql_writes"] += 1

        if engine.dialect.name == "sqlite":  # in-process: the statements only; no pings or resets travel
            def checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
                with contextlib.suppress(Exception):
                    dbapi_conn.set_trace_callback(count if counters.active() else None)

            def checkin(dbapi_conn: Any, record: Any) -> None:
                with contextlib.suppress(Exception):
                    dbapi_conn.set_trace_callback(None)

            listen("checkout", checkout)
            listen("checkin", checkin)
            return

        def before(conn: Any, cursor: Any, statement: str, *a: Any) -> None:
            count(statement)

        def commit(conn: Any) -> None:
            counters["sql_commits"] += 1

        def reset(dbapi_conn: Any, record: Any, *a: Any) -> None:  # ROLLBACK when a connection goes back
            # only a connection inside a transaction sends it: psycopg 3 returns at once when idle
            # (libpq's trace shows nothing sent), as does sqlite3 outside a transaction
            info = getattr(dbapi_conn, "info", None)
            status = getattr(info, "transaction_status", None)
            if status is not None and int(status) == 0:  # psycopg.pq.TransactionStatus.IDLE
                return
            if getattr(dbapi_conn, "in_transaction", None) is False:  # sqlite3
                return
            counters["sql_resets"] += 1

        listen("before_cursor_execute", before)
        listen("commit", commit)
        listen("reset", reset)
        orig_ping = engine.dialect.do_ping

        def do_ping(dbapi_conn: Any) -> bool:  # pool_pre_ping: a round trip per checkout
            counters["sql_pings"] += 1
            return bool(orig_ping(dbapi_conn))

        self._patch(engine.dialect, "do_ping", do_ping)

    def per_call(self, fn: Callable[[], object], calls: int) -> dict[str, float]:
        """Run ``fn`` ``calls`` times (untimed) and return each counter per call, plus
        ``store_rt`` (Redis round trips + SQL statements, pings and resets), ``store_writes``
        (Redis writes + SQL writes and commits) and ``net`` (connections + HTTP requests)."""
        if not self._installed:
            raise RuntimeError("IOCounter.install() first")
        self.c.clear()
        self.thread = threading.get_ident()
        try:
            for _ in range(calls):
                fn()
        finally:
            self.thread = None
        c = dict(self.c)
        out = {k: v / calls for k, v in c.items()}
        out["store_rt"] = (c.get("redis_rt", 0) + c.get("sql", 0) + c.get("sql_pings", 0)
                           + c.get("sql_resets", 0)) / calls
        out["store_writes"] = (c.get("redis_writes", 0) + c.get("sql_writes", 0) + c.get("sql_commits", 0)) / calls
        out["net"] = (c.get("connects", 0) + c.get("http", 0)) / calls
        return {k: round(v, 3) for k, v in sorted(out.items())}


class _ThreadCounter:
    """``counters[key] += 1`` that counts only on the counter's current thread."""

    __slots__ = ("owner",)

    def __init__(self, owner: IOCounter) -> None:
        self.owner = owner

    def __getitem__(self, key: str) -> int:
        return self.owner.c[key]

    def __setitem__(self, key: str, value: int) -> None:
        if self.active():
            self.owner.c[key] = value

    def active(self) -> bool:
        return self.owner.thread is not None and threading.get_ident() == self.owner.thread


COUNTER = IOCounter()


# --------------------------------------------------------------------------- services and environment

def redis_unavailable(url: str = REDIS_URL) -> str | None:
    """Why Redis cannot be used (a short sentence), or None."""
    try:
        import redis
    except ImportError:
        return "redis-py is not installed (pip install -e '.[redis]')"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
        client.ping()
        client.close()
    except Exception as exc:  # noqa: BLE001 - any failure means "not here"
        return f"no Redis at {url} ({exc.__class__.__name__})"
    return None


def pg_unavailable(url: str = PG_URL) -> str | None:
    """Why PostgreSQL cannot be used, or None."""
    try:
        import sqlalchemy as sa

        engine = sa.create_engine(url, connect_args={"connect_timeout": 2})
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        finally:
            engine.dispose()
    except Exception as exc:  # noqa: BLE001
        return f"no PostgreSQL at {url.split('@')[-1]} ({exc.__class__.__name__})"
    return None


def missing(module: str, pip_name: str | None = None) -> str | None:
    """``"<pkg> is not installed ..."`` if ``module`` cannot be imported, else None."""
    try:
        __import__(module)
    except ImportError:
        return f"{pip_name or module} is not installed (pip install -e '.[bench]')"
    return None


def delete_redis_keys(prefix: str, url: str = REDIS_URL) -> None:
    """Remove every key under ``prefix`` (a benchmark's own, random prefix)."""
    with contextlib.suppress(Exception):
        import redis

        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i:i + 500])
        client.close()


def quiet_logs() -> None:
    """Keep library and audit log lines out of the benchmark output (and its cost
    to a null handler): flask_ccsso's own warnings, werkzeug, the audit logger."""
    import logging

    for name in ("werkzeug", "flask_ccsso"):
        logging.getLogger(name).setLevel(logging.ERROR)
    audit = logging.getLogger("flask_ccsso.audit")
    audit.handlers[:] = [logging.NullHandler()]
    audit.propagate = False
    audit.setLevel(logging.INFO)  # events are still formatted and handed to a handler, as in production


@contextlib.contextmanager
def timer() -> Iterator[dict[str, float]]:
    """``with timer() as t: ...`` then ``t["s"]``: elapsed seconds."""
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        yield out
    finally:
        out["s"] = time.perf_counter() - t0


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import platform

    info: dict[str, Any] = {"python": platform.python_version(), "implementation": platform.python_implementation(),
                            "platform": platform.platform(), "cpus": os.cpu_count()}
    import importlib.util

    # redis-py parses replies in C when hiredis is installed (the ``hiredis`` extra): every Redis row changes
    info["hiredis"] = importlib.util.find_spec("hiredis") is not None
    with contextlib.suppress(OSError):
        info["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    with contextlib.suppress(Exception):
        import subprocess

        git = ["git", "-C", ROOT]
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                                check=False).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10, check=False).stdout.strip()
        info["commit"] = (commit + ("+uncommitted changes" if dirty else "")) or None
    return info


# --------------------------------------------------------------------------- the result protocol

def row(scenario: str, stats: Stats | None, *, ratios: dict[str, float | None] | None = None,
        extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """One result row. ``stats`` None (a contender that could not run: say why in
    ``extra["skipped"]``) gives ``median_us``/``p99_us`` None."""
    return {"scenario": scenario,
            "median_us": None if stats is None else round(stats.median_us, 2),
            "p99_us": None if stats is None else round(stats.p99_us, 2),
            "ratios": {k: round(v, 3) for k, v in (ratios or {}).items() if v is not None},
            "extra": dict(extra or {})}


def skipped(scenario: str, why: str) -> dict[str, Any]:
    """A row for a contender that could not run here (a missing package or service)."""
    return row(scenario, None, extra={"skipped": why})


def target(name: str, value: float | None, limit: float, note: str = "", *,
           at_least: bool = False) -> dict[str, Any]:
    """A target: met if ``value <= limit`` (``value >= limit`` with ``at_least``).
    ``value`` None (not measured) is not met; say why in ``note``."""
    met = value is not None and not math.isnan(value) and (value >= limit if at_least else value <= limit)
    return {"target": name, "value": None if value is None else round(value, 3), "limit": limit,
            "met": bool(met), "note": note}


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    return str(v).replace("|", "\\|")


def render_markdown(results: list[dict[str, Any]]) -> str:
    """A markdown table per benchmark (scenario, median, p99, every ratio it reports, a column
    per scalar ``extra`` key, a note column for the rest), then one table of every target."""
    out: list[str] = []
    targets: list[tuple[str, dict[str, Any]]] = []
    for res in results:
        out.append(f"### {res['name']}\n")
        if res.get("error"):
            out.append(f"**failed:** `{_fmt(res['error'])}`\n")
        if res.get("note"):
            out.append(f"{res['note']}\n")
        rows = res.get("rows", [])
        if rows:
            keys: list[str] = []
            extras: list[str] = []
            for r in rows:
                keys += [k for k in r.get("ratios", {}) if k not in keys]
                extras += [k for k, v in (r.get("extra") or {}).items()
                           if k not in extras and k != "skipped" and isinstance(v, (int, float, str))]
            notes = any((r.get("extra") or {}).get("skipped") or any(
                not isinstance(v, (int, float, str)) for v in (r.get("extra") or {}).values()) for r in rows)
            head = ["scenario", "median µs", "p99 µs", *(f"× {k}" for k in keys), *extras, *(["note"] if notes else [])]
            out.append("| " + " | ".join(head) + " |")
            out.append("|---|" + "---:|" * (len(head) - 1 - notes) + ("---|" if notes else ""))
            for r in rows:
                extra = r.get("extra") or {}
                rest = {k: v for k, v in extra.items() if k not in extras}
                cells = [_fmt(r["scenario"]), _fmt(r.get("median_us")), _fmt(r.get("p99_us")),
                         *(_fmt(r.get("ratios", {}).get(k)) for k in keys), *(_fmt(extra.get(k)) for k in extras),
                         *([_fmt(rest or None)] if notes else [])]
                out.append("| " + " | ".join(cells) + " |")
            out.append("")
        targets += [(res["name"], t) for t in res.get("targets", [])]
    if targets:
        out.append("### targets\n")
        out.append("| benchmark | target | value | limit | met | note |")
        out.append("|---|---|---|---|---|---|")
        for name, t in targets:
            out.append(f"| {name} | {_fmt(t['target'])} | {_fmt(t['value'])} | {_fmt(t['limit'])} | "
                       f"{'yes' if t['met'] else '**no**'} | {_fmt(t.get('note', ''))} |")
        out.append("")
    return "\n".join(out)


def standalone(run: Callable[..., dict[str, Any]],
               options: Callable[[argparse.ArgumentParser], None] | None = None) -> None:
    """``python benchmarks/bench_x.py [--quick] [--json]``: run one module and print its table.

    ``options`` adds a module's own command-line options (default None: an option not given);
    those given are passed to ``run`` as keyword arguments, so ``run(quick)`` alone, as
    ``run.py`` calls it, keeps the module's defaults.
    """
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="tiny counts: proves the benchmark runs, figures mean nothing")
    ap.add_argument("--json", action="store_true", help="print the JSON result instead of the table")
    if options is not None:
        options(ap)
    args = ap.parse_args()
    given = {k: v for k, v in vars(args).items() if k not in ("quick", "json") and v is not None}
    with timer() as t:
        res = run(args.quick, **given)
    res.setdefault("seconds", round(t["s"], 1))
    if args.json:
        print(json.dumps(res, indent=2, default=str))
    else:
        print(render_markdown([res]))
        print(f"({res['name']}: {t['s']:.1f} s{', quick' if args.quick else ''})")
