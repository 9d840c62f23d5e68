"""Many workers and hosts, end to end, with real processes (docs/sessions.md, "Scaling out").

The same portal (``tests/scale/scaleout_app.py``) runs under gunicorn twice -- host
A and host B, 3 sync workers each -- sharing the Redis on 127.0.0.1:6379
(a key prefix of its own) for sessions and pending sign-ins, and PostgreSQL
(a table of its own) for the audit trail. The dev IdP is a third gunicorn
process on its own port. A ``requests`` session plays the browser and
follows every redirect by hand, so each hop can be sent where the test
wants: a sign-in started on A is finished on B.

Every response says which worker served it (``X-Worker-Pid``). A few
requests sent at once with ``?hold=`` (the worker sleeps before the app sees
the request) make every sync worker take one, so "on every worker" is
checked, not hoped for.

The tests share one cluster and run in file order: each step counts the audit
events it causes, and ``test_audit_events_land_once_each`` stops the portals
with SIGTERM and compares the table with that tally. The store-outage test
runs a third portal against a private, throw-away redis-server: the shared
Redis is never stopped.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator

import pytest

requests = pytest.importorskip("requests")
redis = pytest.importorskip("redis")
sa = pytest.importorskip("sqlalchemy")
pytest.importorskip("psycopg")
pytest.importorskip("gunicorn")

pytestmark = [pytest.mark.scale, pytest.mark.redis, pytest.mark.postgres, pytest.mark.timeout(120)]

from tests.scale.cluster import (
    PG_URL,
    REDIS_URL,
    TESTS_DIR,
    WORKERS,
    Cluster,
    Proc,
    base_env,
    cookie_of,
    count_skill_answers,
    free_port,
    get,
    gunicorn,
    sign_in,
    spread,
    unreachable_services,
    wait_http,
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    why = unreachable_services()
    if why:
        pytest.skip(why)
    run = f"so{os.getpid()}{secrets.token_hex(3)}"
    tmp = tmp_path_factory.mktemp("scaleout")
    ports = [free_port() for _ in range(4)]
    while len(set(ports)) < 4:
        ports = [free_port() for _ in range(4)]
    idp_port, a_port, b_port, c_port = ports
    cl = Cluster(run=run, tmp=tmp, issuer=f"http://127.0.0.1:{idp_port}/devidp", a=f"http://127.0.0.1:{a_port}",
                 b=f"http://127.0.0.1:{b_port}", c_port=c_port, key_prefix=f"ccsso-test:{run}:",
                 table=f"ccsso_audit_{run}", secret_key=secrets.token_hex(32), client_secret=secrets.token_hex(16))
    try:
        idp_env = base_env()
        idp_env.update(SECRET_KEY=cl.secret_key, SCALEOUT_CLIENT_SECRET=cl.client_secret,
                       SCALEOUT_IDP_ISSUER=cl.issuer, SCALEOUT_IDP_INSTANCE=str(tmp / "idp"),
                       SCALEOUT_IDP_REDIRECTS=f"{cl.a}/sso/dev/callback,http://127.0.0.1:{c_port}/sso/dev/callback",
                       CCSSO_DEVIDP_ENABLED="1")
        cl.procs["idp"] = gunicorn("idp", "scaleout_app:create_idp_app()", idp_port, idp_env, tmp, workers=2)
        # two hosts: the same code, the same config (public URL = A, as behind a load balancer)
        cl.procs["host-a"] = gunicorn("host-a", "scaleout_app:create_app()", a_port, cl.portal_env("host-a"), tmp)
        cl.procs["host-b"] = gunicorn("host-b", "scaleout_app:create_app()", b_port, cl.portal_env("host-b"), tmp)
        wait_http(cl.procs["idp"], f"{cl.issuer}/.well-known/openid-configuration")
        wait_http(cl.procs["host-a"], f"{cl.a}/health")
        wait_http(cl.procs["host-b"], f"{cl.b}/health")
        yield cl
    finally:
        for proc in cl.procs.values():
            proc.stop()
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{cl.key_prefix}*", count=500))
        if keys:
            client.delete(*keys)
        client.close()
        engine = sa.create_engine(PG_URL)
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{cl.table}"'))
        engine.dispose()


# --------------------------------------------------------------------------- 1. sign-in across workers

def test_sign_in_hops_land_on_different_workers(cluster: Cluster) -> None:
    """login, authorize and callback on three different processes: state, nonce and
    PKCE verifier travel through Redis, not a worker's memory."""
    crossed = None
    for _ in range(12):
        jar = requests.Session()
        _, hops = sign_in(cluster, jar, "alice", start=cluster.a, finish=cluster.a)
        cluster.alice_sessions += 1
        me = get(cluster.a, "/whoami", cookie_of(jar)).json()
        assert me["email"] == "alice@example.com"
        if hops["login"] != hops["callback"]:
            crossed = (jar, hops)
            break
    assert crossed is not None, "every callback landed on the worker that started the sign-in"
    jar, hops = crossed
    assert len({hops["login"], hops["authorize"], hops["callback"]}) == 3, hops
    cluster.jars["alice-a"] = jar


def test_sign_in_started_on_host_a_finishes_on_host_b(cluster: Cluster) -> None:
    jar = requests.Session()
    callback, hops = sign_in(cluster, jar, "alice", start=cluster.a, finish=cluster.b)
    cluster.alice_sessions += 1
    cluster.jars["alice-ab"] = jar
    # the session is one: both hosts see alice
    for base in (cluster.a, cluster.b):
        r = get(base, "/whoami", cookie_of(jar))
        assert r.status_code == 200 and r.json()["email"] == "alice@example.com", r.text
    assert hops["login"] != hops["callback"]

    # 4. a used callback URL is refused on the other host, for this browser and for another one
    replay_same = jar.get(callback.replace(cluster.b, cluster.a), allow_redirects=False, timeout=10)
    assert replay_same.status_code == 400, replay_same.text
    replay_other = requests.get(callback, allow_redirects=False, timeout=10)
    assert replay_other.status_code == 400, replay_other.text
    cluster.tally["auth.login_failed"] += 2
    # the refused replay did not touch the real session
    assert get(cluster.b, "/whoami", cookie_of(jar)).json()["email"] == "alice@example.com"


def test_bob_signs_in_on_host_b(cluster: Cluster) -> None:
    """Host B may also start a sign-in (its redirectUri is the shared public URL, A)."""
    jar = requests.Session()
    _, hops = sign_in(cluster, jar, "bob", start=cluster.b, finish=cluster.a)
    cluster.jars["bob"] = jar
    assert hops["login"] != hops["callback"]  # two hosts, two processes
    assert get(cluster.a, "/whoami", cookie_of(jar)).json()["email"] == "bob@example.com"


# --------------------------------------------------------------------------- 2. same identity, same decisions everywhere

@pytest.mark.parametrize("host", ["a", "b"])
def test_every_worker_sees_the_same_identity_and_decisions(cluster: Cluster, host: str) -> None:
    base = cluster.a if host == "a" else cluster.b
    alice = cookie_of(cluster.jars["alice-ab"])
    bob = cookie_of(cluster.jars["bob"])

    for r in spread(base, "/whoami", alice):
        assert r.status_code == 200 and r.json()["email"] == "alice@example.com", r.text
    for r in spread(base, "/whoami", bob):
        assert r.status_code == 200 and r.json()["email"] == "bob@example.com", r.text

    allowed = spread(base, "/migrations", alice)
    assert all(r.status_code == 200 and r.json()["email"] == "alice@example.com" for r in allowed)
    denied = spread(base, "/security", alice)
    assert all(r.status_code == 403 for r in denied), [r.status_code for r in denied]
    assert all(r.json()["error"] for r in denied)
    bob_denied = spread(base, "/migrations", bob)
    assert all(r.status_code == 403 for r in bob_denied)
    bob_allowed = spread(base, "/security", bob)
    assert all(r.status_code == 200 and r.json()["email"] == "bob@example.com" for r in bob_allowed)
    for batch in (allowed, denied, bob_denied, bob_allowed):
        count_skill_answers(cluster, batch)

    # nobody signed in: no worker serves the page
    for r in count_skill_answers(cluster, spread(base, "/migrations", None)):
        assert r.status_code == 401 and r.json()["error"] == "not_authenticated", r.text


# --------------------------------------------------------------------------- 3. revocation from the command line

def test_cli_revoke_ends_the_session_on_every_worker_and_host(cluster: Cluster) -> None:
    listed = cluster.flask("ccsso", "sessions", "list", "--user", "alice@example.com", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]
    assert len(rows) == cluster.alice_sessions and {r["email"] for r in rows} == {"alice@example.com"}

    done = cluster.flask("ccsso", "sessions", "revoke", "--user", "alice@example.com")
    assert done.returncode == 0, done.stderr
    assert f"Revoked {cluster.alice_sessions} sessions of alice@example.com." in done.stdout, done.stdout
    cluster.tally["session.revoked"] += 1  # one identity; recorded by the CLI's own process

    # the very next request of each revoked browser, on either host, is signed out and told why
    for name, base in (("alice-ab", cluster.b), ("alice-a", cluster.a)):
        cookie = cookie_of(cluster.jars[name])
        first = count_skill_answers(cluster, [get(base, "/migrations", cookie)])[0]
        assert first.status_code == 401, first.text
        assert first.json()["error"] == "revoked", first.text
        cluster.tally["session.expired"] += 1
        # ... and stays signed out on every worker of both hosts
        for host in (cluster.a, cluster.b):
            for r in count_skill_answers(cluster, spread(host, "/migrations", cookie)):
                assert r.status_code == 401 and r.json()["error"] == "not_authenticated", r.text
            browser = count_skill_answers(cluster, [get(host, "/migrations", cookie, as_json=False)])[0]
            assert browser.status_code == 302 and "/sso/" in browser.headers["Location"]

    # other people are untouched
    bob = cookie_of(cluster.jars["bob"])
    for host in (cluster.a, cluster.b):
        r = count_skill_answers(cluster, [get(host, "/security", bob)])[0]
        assert r.status_code == 200 and r.json()["email"] == "bob@example.com"

    after = cluster.flask("ccsso", "sessions", "list", "--user", "alice@example.com")
    assert after.returncode == 0 and "No live sessions." in after.stdout, after.stdout + after.stderr


# --------------------------------------------------------------------------- 5. the audit trail

def test_audit_events_land_once_each(cluster: Cluster) -> None:
    cluster.stop_portals()  # SIGTERM: gunicorn stops its workers gracefully; each flushes its pipeline
    assert cluster.stopped == {"host-a": 0, "host-b": 0}, (cluster.stopped, cluster.procs["host-a"].log(),
                                                           cluster.procs["host-b"].log())
    engine = sa.create_engine(PG_URL)
    try:
        with engine.connect() as conn:
            counts = Counter({row[0]: int(row[1]) for row in conn.execute(
                sa.text(f'SELECT type, count(*) FROM "{cluster.table}" GROUP BY type'))})
            total, distinct = conn.execute(
                sa.text(f'SELECT count(*), count(DISTINCT event_id) FROM "{cluster.table}"')).one()
            expired = [row[0] for row in conn.execute(
                sa.text(f"SELECT reason FROM \"{cluster.table}\" WHERE type = 'session.expired'"))]
            denied = Counter({row[0]: int(row[1]) for row in conn.execute(sa.text(
                f"SELECT reason, count(*) FROM \"{cluster.table}\" WHERE type = 'permission.denied' GROUP BY reason"))})
        from flask_ccsso.audit import verify_chain

        ok, broken = verify_chain(engine, cluster.table)
    finally:
        engine.dispose()
    assert total == distinct
    assert dict(counts) == dict(cluster.tally), f"table {dict(counts)} != requests {dict(cluster.tally)}"
    assert expired == ["revoked"] * cluster.tally["session.expired"]
    assert dict(denied) == dict(cluster.denied_reasons)
    assert ok, f"hash chain broken at {broken}"

    verify = cluster.flask("ccsso", "audit", "verify")
    assert verify.returncode == 0 and "intact" in verify.stdout, verify.stdout + verify.stderr


def test_preload_workers_deliver_audit_events(cluster: Cluster) -> None:
    """``gunicorn --preload`` (the app made once in the master, then forked) must not lose the audit trail."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    table = f"{cluster.table}_preload"
    env = cluster.portal_env("host-p", public=base)
    env["SCALEOUT_AUDIT_TABLE"] = table
    proc = Proc("host-preload", [sys.executable, "-m", "gunicorn", "-w", str(WORKERS), "-k", "sync", "--preload",
                                 "-b", f"127.0.0.1:{port}", "--graceful-timeout", "10", "--pythonpath",
                                 str(TESTS_DIR), "--log-level", "warning", "scaleout_app:create_app()"],
                env, cluster.tmp)
    engine = sa.create_engine(PG_URL)
    try:
        wait_http(proc, f"{base}/health")
        refused = spread(base, "/migrations", None)  # one permission.denied each, from every worker
        assert all(r.status_code == 401 for r in refused)
        assert proc.stop() == 0
        with engine.connect() as conn:
            rows = conn.execute(sa.text(f'SELECT count(*) FROM "{table}"')).scalar() \
                if sa.inspect(conn).has_table(table) else 0
        assert rows == len(refused)
    finally:
        proc.stop()
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table}"'))
        engine.dispose()


# --------------------------------------------------------------------------- 6. the session store goes away

def test_private_redis_outage_answers_503_on_every_worker(cluster: Cluster) -> None:
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    base = f"http://127.0.0.1:{cluster.c_port}"
    rargv = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(cluster.tmp)]

    def start_redis(name: str) -> Proc:
        proc = Proc(name, rargv, base_env(), cluster.tmp)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=port, socket_connect_timeout=0.5).ping()
                return proc
            except redis.RedisError:
                assert proc.alive(), proc.log()
                time.sleep(0.05)
        raise AssertionError(f"private redis-server did not start:\n{proc.log()}")

    procs: list[Proc] = []
    try:
        procs.append(start_redis("redis-private"))
        portal = gunicorn("host-c", "scaleout_app:create_app()", cluster.c_port,
                          cluster.portal_env("host-c", public=base, redis_url=url, key_prefix="c:", audit=False),
                          cluster.tmp)
        procs.append(portal)
        wait_http(portal, f"{base}/health")

        jar = requests.Session()
        sign_in(cluster, jar, "alice", start=base, finish=base, public=base, audited=False)
        cookie = cookie_of(jar)
        assert all(r.status_code == 200 for r in spread(base, "/migrations", cookie))

        procs[0].stop(sig=signal.SIGKILL)  # the store dies
        for r in spread(base, "/migrations", cookie):
            assert r.status_code == 503, (r.status_code, r.text)
            assert r.json()["error"] == "store_unavailable" and r.headers.get("Retry-After") == "5"
        for r in spread(base, "/whoami", cookie, as_json=False):
            assert r.status_code == 503 and "text/html" in r.headers["Content-Type"], (r.status_code, r.text)
        assert get(base, "/sso/dev/login", None, as_json=False).status_code == 503
        assert get(base, "/health", None).status_code == 200  # a page without the session still works

        procs[0] = start_redis("redis-private-2")  # back, empty: the sessions are gone
        for r in spread(base, "/migrations", cookie):
            assert r.status_code == 401, (r.status_code, r.text)
        jar = requests.Session()
        sign_in(cluster, jar, "alice", start=base, finish=base, public=base, audited=False)
        for r in spread(base, "/migrations", cookie_of(jar)):
            assert r.status_code == 200 and r.json()["email"] == "alice@example.com"
    finally:
        for proc in reversed(procs):
            proc.stop()
