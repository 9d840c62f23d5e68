"""The scale-out harness: gunicorn processes, a cluster of two portal hosts and a dev IdP, and a
``requests`` browser that follows each redirect by hand (used by test_scaleout.py and benchmarks/).
"""

from __future__ import annotations

import html
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import redis
import requests
import sqlalchemy as sa

from tests.support.network import free_port  # noqa: F401 - importers of this module use it

TESTS_DIR = Path(__file__).resolve().parent
REDIS_URL = "redis://127.0.0.1:6379/0"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
COOKIE = "ccsso_session"
WORKERS = 3
JSON = {"Accept": "application/json"}
HOLD = 0.3


def unreachable_services() -> str | None:
    """Why the cluster cannot run here (no Redis / PostgreSQL), or None."""
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except Exception as exc:  # noqa: BLE001
        return f"no Redis at 127.0.0.1:6379 ({exc.__class__.__name__})"
    try:
        engine = sa.create_engine(PG_URL)
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001
        return f"no PostgreSQL at 127.0.0.1:5432 ({exc.__class__.__name__})"
    return None


# --------------------------------------------------------------------------- processes

class Proc:
    """A child in its own process group; stopped with SIGTERM, then SIGKILL for stragglers."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True, cwd=str(TESTS_DIR))
        self.returncode: int | None = None

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15.0, sig: int = signal.SIGTERM) -> int | None:
        """Stop the process (``sig`` to the leader: gunicorn's graceful shutdown), then its group."""
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(sig)
                self.returncode = self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.returncode = None
        else:
            self.returncode = self.popen.returncode
        try:  # whatever is left of the group (workers of a master that did not stop)
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.popen.poll() is None:
            self.popen.wait(5)
        self._log.close()
        return self.returncode


def wait_http(proc: Proc, url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise AssertionError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.log()}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{proc.name} did not answer {url} within {timeout}s:\n{proc.log()}")


def gunicorn(name: str, app: str, port: int, env: dict[str, str], log_dir: Path, workers: int = WORKERS) -> Proc:
    argv = [sys.executable, "-m", "gunicorn", "-w", str(workers), "-k", "sync", "-b", f"127.0.0.1:{port}",
            "--graceful-timeout", "10", "--timeout", "30", "--pythonpath", str(TESTS_DIR),
            "--log-level", "warning", app]
    return Proc(name, argv, env, log_dir)


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCALEOUT_", "CCSSO_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    return env


# --------------------------------------------------------------------------- the cluster

@dataclass
class Cluster:
    run: str
    tmp: Path
    issuer: str
    a: str
    b: str
    c_port: int
    key_prefix: str
    table: str
    secret_key: str
    client_secret: str
    procs: dict[str, Proc] = field(default_factory=dict)
    tally: Counter[str] = field(default_factory=Counter)
    denied_reasons: Counter[str] = field(default_factory=Counter)
    jars: dict[str, Any] = field(default_factory=dict)
    alice_sessions: int = 0
    stopped: dict[str, int | None] = field(default_factory=dict)

    def portal_env(self, instance: str, *, public: str | None = None, redis_url: str = REDIS_URL,
                   key_prefix: str | None = None, audit: bool = True) -> dict[str, str]:
        env = base_env()
        env.update(SECRET_KEY=self.secret_key, SCALEOUT_CLIENT_SECRET=self.client_secret,
                   SCALEOUT_PUBLIC_URL=public or self.a, SCALEOUT_IDP_ISSUER=self.issuer,
                   SCALEOUT_REDIS_URL=redis_url, SCALEOUT_KEY_PREFIX=key_prefix or self.key_prefix,
                   SCALEOUT_INSTANCE=str(self.tmp / instance))
        if audit:
            env.update(SCALEOUT_AUDIT_URL=PG_URL, SCALEOUT_AUDIT_TABLE=self.table)
        return env

    def flask(self, *args: str, instance: str = "host-a") -> subprocess.CompletedProcess[str]:
        """``flask --app scaleout_app:create_app <args>`` with host A's environment."""
        return subprocess.run([sys.executable, "-m", "flask", "--app", "scaleout_app:create_app", *args],
                              env=self.portal_env(instance), cwd=str(TESTS_DIR), capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL, check=False)

    def stop_portals(self) -> None:
        for name in ("host-a", "host-b"):
            proc = self.procs.get(name)
            if proc is not None and name not in self.stopped:
                self.stopped[name] = proc.stop()


# --------------------------------------------------------------------------- the browser

def pid(resp: Any) -> str:
    return str(resp.headers.get("X-Worker-Pid"))


def sign_in(cl: Cluster, jar: Any, username: str, *, start: str, finish: str, next_path: str = "/whoami",
            public: str | None = None, audited: bool = True) -> tuple[str, dict[str, str]]:
    """Sign in hop by hop: /sso/dev/login on ``start``, the IdP, the callback on ``finish``.

    Returns the callback URL as sent and the worker that served each hop.
    """
    public = public or cl.a
    hops: dict[str, str] = {}
    r = jar.get(f"{start}/sso/dev/login", params={"next": next_path}, allow_redirects=False, timeout=10)
    assert r.status_code == 302, r.text
    hops["login"] = pid(r)
    authorize = r.headers["Location"]
    assert authorize.startswith(f"{cl.issuer}/authorize?"), authorize
    r = jar.get(authorize, allow_redirects=False, timeout=10)
    hops["authorize"] = pid(r)
    if r.status_code == 200:  # the IdP's sign-in page (no IdP session yet in this jar)
        action = urljoin(authorize, html.unescape(re.search(r'<form method="post" action="([^"]+)"', r.text).group(1)))
        csrf = re.search(r'name="csrf" value="([^"]+)"', r.text).group(1)
        r = jar.post(action, data={"csrf": csrf, "username": username}, allow_redirects=False, timeout=10)
        hops["idp_form"] = pid(r)
    assert r.status_code in (302, 303), r.text
    callback = r.headers["Location"]
    assert callback.startswith(f"{public}/sso/dev/callback?"), callback
    parts = urlsplit(callback)
    here = f"{finish}{parts.path}?{parts.query}"
    r = jar.get(here, allow_redirects=False, timeout=10)
    assert r.status_code == 302, (r.status_code, r.text)
    assert urlsplit(r.headers["Location"]).path == next_path
    hops["callback"] = pid(r)
    if audited:
        cl.tally["auth.login"] += 1
    return here, hops


def cookie_of(jar: Any) -> str:
    value = jar.cookies.get(COOKIE)
    assert value, "no session cookie"
    return str(value)


def get(base: str, path: str, cookie: str | None, *, as_json: bool = True, hold: float = 0.0) -> Any:
    headers = dict(JSON) if as_json else {}
    if cookie:
        headers["Cookie"] = f"{COOKIE}={cookie}"
    params = {"hold": str(hold)} if hold else None
    return requests.get(f"{base}{path}", headers=headers, params=params, allow_redirects=False, timeout=15)


def spread(base: str, path: str, cookie: str | None, *, as_json: bool = True, workers: int = WORKERS,
           rounds: int = 10) -> list[Any]:
    """``workers`` requests at once with ``?hold=`` until every worker has answered at least one."""
    seen: set[str] = set()
    out: list[Any] = []
    with ThreadPoolExecutor(workers) as pool:
        for _ in range(rounds):
            batch = list(pool.map(lambda _i: get(base, path, cookie, as_json=as_json, hold=HOLD), range(workers)))
            out.extend(batch)
            seen.update(pid(r) for r in batch)
            if len(seen) >= workers:
                return out
    raise AssertionError(f"only {len(seen)} of {workers} workers of {base} answered {path}: {sorted(seen)}")


def count_skill_answers(cl: Cluster, responses: list[Any]) -> list[Any]:
    """Tally the audit events a @requires_skill route records: ``skill.invoked`` when it
    serves, ``permission.denied`` (with the answer's reason) when it refuses."""
    for r in responses:
        if r.status_code == 200:
            cl.tally["skill.invoked"] += 1
        elif r.status_code in (401, 403):
            cl.tally["permission.denied"] += 1
            cl.denied_reasons[r.json()["error"]] += 1
        elif r.status_code == 302:  # a browser sent to sign in
            cl.tally["permission.denied"] += 1
            cl.denied_reasons["not_authenticated"] += 1
        else:
            raise AssertionError(f"unexpected answer {r.status_code}: {r.text}")
    return responses
