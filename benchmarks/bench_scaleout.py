"""Requests per second for a protected route across 3 gunicorn sync workers.

    python benchmarks/bench_scaleout.py [--requests 3000] [--seconds 10] [--clients 12]

Starts, on loopback, the dev IdP and the scale-out portal of
``tests/scale/scaleout_app.py`` (sessions in the Redis on 127.0.0.1:6379 under a
key prefix of its own, audit off), signs alice in, then sends GET
/migrations (``@requires_skill``: one Redis read per request) from
``--clients`` threads until ``--requests`` answers or ``--seconds`` have
passed, whichever comes first. Every answer must be 200. Prints the figure,
stops everything and deletes its Redis keys.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import redis
import requests

import tests.scale.cluster as t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=12)
    ap.add_argument("--workers", type=int, default=3)
    args = ap.parse_args()

    run = f"bench{secrets.token_hex(3)}"
    tmp = Path(tempfile.mkdtemp(prefix="ccsso-bench-scaleout-"))
    idp_port, a_port = t.free_port(), t.free_port()
    cl = t.Cluster(run=run, tmp=tmp, issuer=f"http://127.0.0.1:{idp_port}/devidp", a=f"http://127.0.0.1:{a_port}",
                   b="", c_port=0, key_prefix=f"ccsso-bench:{run}:", table="", secret_key=secrets.token_hex(32),
                   client_secret=secrets.token_hex(16))
    try:
        idp_env = t.base_env()
        idp_env.update(SECRET_KEY=cl.secret_key, SCALEOUT_CLIENT_SECRET=cl.client_secret, SCALEOUT_IDP_ISSUER=cl.issuer,
                       SCALEOUT_IDP_INSTANCE=str(tmp / "idp"), SCALEOUT_IDP_REDIRECTS=f"{cl.a}/sso/dev/callback",
                       CCSSO_DEVIDP_ENABLED="1")
        cl.procs["idp"] = t.gunicorn("idp", "scaleout_app:create_idp_app()", idp_port, idp_env, tmp, workers=2)
        cl.procs["host-a"] = t.gunicorn("host-a", "scaleout_app:create_app()", a_port,
                                        cl.portal_env("host-a", audit=False), tmp, workers=args.workers)
        t.wait_http(cl.procs["idp"], f"{cl.issuer}/.well-known/openid-configuration")
        t.wait_http(cl.procs["host-a"], f"{cl.a}/health")
        jar = requests.Session()
        t.sign_in(cl, jar, "alice", start=cl.a, finish=cl.a)
        cookie = t.cookie_of(jar)
        t.spread(cl.a, "/migrations", cookie, workers=args.workers)  # every worker warm

        lock = threading.Lock()
        done = {"n": 0, "bad": 0}
        pids: set[str] = set()
        deadline = time.monotonic() + args.seconds

        def client() -> None:
            headers = {"Cookie": f"{t.COOKIE}={cookie}", "Accept": "application/json"}
            while time.monotonic() < deadline:
                with lock:
                    if done["n"] >= args.requests:
                        return
                    done["n"] += 1
                r = requests.get(f"{cl.a}/migrations", headers=headers, allow_redirects=False, timeout=10)
                with lock:
                    pids.add(r.headers.get("X-Worker-Pid", "?"))
                    if r.status_code != 200:
                        done["bad"] += 1

        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        start = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        elapsed = time.perf_counter() - start
        print(f"protected GET /migrations, {args.workers} gunicorn sync workers, {args.clients} client threads, "
              f"sessions in Redis: {done['n']} requests in {elapsed:.2f} s = {done['n'] / elapsed:.0f} req/s "
              f"({len(pids)} workers answered, {done['bad']} non-200)")
        if done["bad"]:
            raise SystemExit(1)
    finally:
        for proc in cl.procs.values():
            proc.stop()
        client_ = redis.Redis.from_url(t.REDIS_URL)
        keys = list(client_.scan_iter(match=f"{cl.key_prefix}*", count=500))
        if keys:
            client_.delete(*keys)
        client_.close()


if __name__ == "__main__":
    main()
