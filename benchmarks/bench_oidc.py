"""What the OIDC callback costs, and ID-token verification beside a bare joserfc verify.

    python benchmarks/bench_oidc.py [--quick]      (or: python benchmarks/run.py --only oidc)
    python benchmarks/bench_oidc.py --profile [--calls 30]   (pyinstrument)

The OpenID Provider is the in-process test provider (``tests/support/local_op.py``:
real HTTP on 127.0.0.1 from a thread, RS256 ID tokens signed by joserfc), so the
token endpoint is served locally. Contenders, interleaved in one run:

* ``ID token: validate_id_token``: everything flask-ccsso checks on an ID token
  (signature against the cached JWKS with the local algorithm allow-list,
  ``iss``, ``aud``, ``azp``, ``sub``, ``exp``/``iat`` with leeway, ``nonce``,
  freshness, required claims) -- the same token every call;
* ``ID token: bare joserfc``: ``jwt.decode(token, key, algorithms=["RS256"])``
  with the key already imported: a signature check and JSON, nothing else;
* ``callback``: a whole ``GET /sso/op/callback`` through ``app.wsgi_app``, each
  call answering its own sign-in (started through the app, code issued by the
  provider beforehand): state lookup, the token POST to the local provider,
  ID-token validation, the session written (Redis at 127.0.0.1:6379 when it is
  there, else the embedded SQLite file). ``extra.cpu_ms`` is the request
  thread's CPU per callback (the provider's thread is not counted).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as h


def _portal(op: Any, workdir: str, prefix: str | None) -> Any:
    from flask import Flask

    from flask_ccsso import CCSSO
    from flask_ccsso.stores import MemoryStore
    from tests.support.oidc import oidc_config

    cfg = oidc_config(op)
    if prefix is not None:
        cfg["session"]["store"] = {"type": "redis", "url": h.REDIS_URL, "keyPrefix": prefix}
    app = Flask("oidc_bench", instance_path=os.path.join(workdir, "inst"))
    app.config.update(SECRET_KEY="x" * 32, CCSSO=cfg)
    CCSSO(app, store=MemoryStore())
    return app


def cpu_interleave(contenders: dict[str, Any], *, batch: int, rounds: int) -> dict[str, float]:
    """The median, over interleaved rounds, of each contender's CPU µs per call
    (``time.thread_time`` around a batch): on a shared machine the wall clock also
    counts the wait for a core, and the thread's CPU time does not."""
    per: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn = contenders[name]
            t0 = time.thread_time()
            for _ in range(batch):
                fn()
            per[name].append((time.thread_time() - t0) / batch * 1e6)
    return {name: sorted(v)[len(v) // 2] for name, v in per.items()}


def _fresh_callback(app: Any, op: Any) -> dict[str, Any]:
    """A callback environ answering a sign-in started through ``app`` just now."""
    resp = h.wsgi_response(app, h.environ("/sso/op/login", query_string={"next": "/me"}))
    assert resp.code == 302, resp.status
    cookies = "; ".join(v.split(";", 1)[0] for k, v in resp.headers if k == "Set-Cookie")
    params = op.issue_code(resp.header("Location") or "")
    return h.environ("/sso/op/callback", {"Cookie": cookies} if cookies else {}, query_string=params)


def run(quick: bool) -> dict[str, Any]:
    from tests.support.local_op import LocalOP

    h.quiet_logs()
    workdir = tempfile.mkdtemp(prefix="ccsso-bench-oidc-")
    prefix = None if h.redis_unavailable() else f"ccsso-bench-oidc-{uuid.uuid4().hex[:8]}:"
    op = LocalOP()
    try:
        return _run(quick, op, workdir, prefix)
    finally:
        op.close()
        if prefix is not None:
            h.delete_redis_keys(prefix)


def _run(quick: bool, op: Any, workdir: str, prefix: str | None) -> dict[str, Any]:
    from joserfc import jwt
    from joserfc.jwk import KeySet

    app = _portal(op, workdir, prefix)
    provider = app.extensions["ccsso"].providers["op"]
    token = op.sign(op.id_claims("bench-nonce"))
    key = KeySet.import_key_set(KeySet(op.keys).as_dict(private=False)).keys[0]
    rows: list[dict[str, Any]] = []

    with app.app_context():
        ours = provider.validate_id_token(token, nonce="bench-nonce")
        bare = jwt.decode(token, key, algorithms=["RS256"])
        assert ours == bare.claims
        contenders = {
            "ID token: validate_id_token": lambda: provider.validate_id_token(token, nonce="bench-nonce"),
            "ID token: bare joserfc": lambda: jwt.decode(token, key, algorithms=["RS256"]),
        }
        tokens = h.interleave(contenders, batch=20 if quick else 200, rounds=3 if quick else 30)
        cpu_us = cpu_interleave(contenders, batch=20 if quick else 200, rounds=3 if quick else 30)
    ours_st, bare_st = tokens["ID token: validate_id_token"], tokens["ID token: bare joserfc"]
    bare_cpu = cpu_us["ID token: bare joserfc"]
    for name, st in tokens.items():
        rows.append(h.row(name, st, ratios={"bare_joserfc": h.ratio(st, bare_st)},
                          extra={"cpu_us": round(cpu_us[name], 1),
                                 "cpu_x_bare_joserfc": round(cpu_us[name] / bare_cpu, 3) if bare_cpu else None}))

    # the callback: a fresh sign-in per call
    n = 3 if quick else 40
    envs = [_fresh_callback(app, op) for _ in range(n + 2)]
    cpu: list[float] = []

    def callback() -> str:
        env = envs.pop()
        t0 = time.thread_time()
        status = h.wsgi_call(app, env)
        cpu.append(time.thread_time() - t0)
        if not status.startswith(("302", "303")):
            raise AssertionError(f"the callback answered {status}")
        return status

    cb = h.interleave({"callback": callback}, batch=1, rounds=n, warmup=2)["callback"]
    cpu_sorted = sorted(cpu[2:])
    cpu_ms = cpu_sorted[len(cpu_sorted) // 2] * 1000 if cpu_sorted else None
    rows.append(h.row("callback", cb, extra={
        "ms": round(cb.median_us / 1000, 2), "cpu_ms": None if cpu_ms is None else round(cpu_ms, 2),
        "sessions": "Redis" if prefix else "embedded SQLite", "token_endpoint": urlsplit(op.issuer).netloc}))

    cpu_ratio = cpu_us["ID token: validate_id_token"] / bare_cpu if bare_cpu else None
    wall_ratio = h.ratio(ours_st, bare_st)
    targets = [h.target("ID-token verification / bare joserfc RS256 verify (x, CPU)", cpu_ratio, 1.2,
                        "same token, key imported once; every check of OIDC Core 3.1.3.7 still made; wall ratio "
                        f"{'-' if wall_ratio is None else f'{wall_ratio:.3f}'} at load average "
                        f"{h.machine().get('loadavg')}")]
    return {"name": "oidc", "rows": rows, "targets": targets,
            "note": "ID-token rows: the same RS256 token every call; callback: a fresh sign-in per call, "
                    "token endpoint on 127.0.0.1."}


def profile(calls: int) -> None:
    """``--profile [--calls N]``: pyinstrument over N callbacks (fresh sign-ins)."""
    from pyinstrument import Profiler

    from tests.support.local_op import LocalOP

    h.quiet_logs()
    prefix = None if h.redis_unavailable() else f"ccsso-bench-oidc-{uuid.uuid4().hex[:8]}:"
    op = LocalOP()
    try:
        app = _portal(op, tempfile.mkdtemp(prefix="ccsso-bench-oidc-"), prefix)
        envs = [_fresh_callback(app, op) for _ in range(calls + 2)]
        for env in envs[:2]:
            h.wsgi_call(app, env)
        prof = Profiler(interval=0.0005)
        prof.start()
        for env in envs[2:]:
            h.wsgi_call(app, env)
        prof.stop()
        print(prof.output_text(unicode=True, color=False))
    finally:
        op.close()
        if prefix is not None:
            h.delete_redis_keys(prefix)


if __name__ == "__main__":
    if "--profile" in sys.argv:
        args = sys.argv[sys.argv.index("--profile") + 1:]
        profile(int(args[args.index("--calls") + 1]) if "--calls" in args else 30)
    else:
        h.standalone(run)
