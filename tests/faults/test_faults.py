"""The fault suite (issue #13 item 11): a two-host gunicorn portal under bounded load while its
session store, audit database, audit collector and its own workers fail, checked exactly.

One cluster (tests/faults/harness.py) serves every test, in file order: host A and host B (the
same ``fault_app`` portal, 4 sync workers each) on a private redis-server (host B through a
proxy that can cut its network) and a private PostgreSQL, sending the audit trail to that
PostgreSQL and to a local HTTP collector. Each test drives a fixed number of requests from 8
client threads (loopback only), injects one fault and, after it ends, checks:

* no wrong authorization: no protected page without a session, none for another person, none
  for a skill the person lacks, none for a session that was ended (every ended cookie is sent
  again by every later load);
* every event the portal emitted (its ledger, fault_app.py) reached both sinks exactly once after
  de-duplication by event id, within ``DELIVERY_BOUND`` seconds of the fault's end;
* store outages answer 503 (never 500), in JSON to JSON clients; sink outages answer nothing but 2xx/4xx;
* revocation and logout take effect on the next request on every worker of both hosts.

Each test writes its figures (5xx, lost and duplicated events, recovery times) to the report
(``CCSSO_FAULT_REPORT``, default ``<pytest temp>/fault-report.json``) before asserting, and
scripts/fault_report.py prints them as a table. The waits are conditions with upper bounds, never
fixed sleeps; no assertion is about speed.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

requests = pytest.importorskip("requests")
pytest.importorskip("redis")
pytest.importorskip("psycopg")
pytest.importorskip("gunicorn")

from tests.scale.cluster import spread

from .harness import (
    CSRF_RE,
    DELIVERY_BOUND,
    Answer,
    FaultCluster,
    Report,
    ask,
    ended,
    first_served,
    tally,
    wait_until,
    wrong_authorizations,
)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]


def answered(answers: list[Answer], n: int) -> Callable[[], bool]:
    return lambda: len(answers) >= n


def check_events(cl: FaultCluster, report: Report, fault: str, before: set[str], recovered: float,
                 answers: list[Answer], *, completed_only: bool = False) -> dict[str, Any]:
    """Settle this test's events; report and return the accounting (the caller asserts)."""
    ids = set(cl.emitted()) - before
    in_flight: set[str] = set()
    if completed_only:  # events of requests whose worker was killed before it answered
        lost_rids = {a.rid for a in answers if a.status is None}
        in_flight = {i for i, (_t, rid, _s) in cl.emitted().items() if rid in lost_rids} & ids
        ids -= in_flight
    acct = cl.settle(ids)
    acct["delivery_delay_after_recovery_s"] = cl.delivery_delay(ids, recovered)
    last = cl.last_arrival(ids)
    acct["all_delivered_after_s"] = None if last is None else round(max(0.0, last - recovered), 2)
    acct["alerts"] = [a for a in cl.alerts() if a[2] >= recovered - 60]
    acct["in_flight_events_excluded"] = len(in_flight)
    report.add(fault, **acct)
    return acct


def assert_exactly_once(acct: dict[str, Any]) -> None:
    assert acct["emitted"] > 0, "the load emitted no events: the fault was not exercised"
    assert (acct["lost_http"], acct["lost_pg"]) == (0, 0), (
        f"events lost: {acct['lost_http']} at the collector, {acct['lost_pg']} in PostgreSQL of {acct['emitted']} "
        f"({acct['lost_types']}; e.g. {acct['missing_http'] or acct['missing_pg']})")
    assert acct["duplicated_pg"] == 0  # the SQL sink ignores ids it already has


def assert_served_right(cl: FaultCluster, answers: list[Answer]) -> None:
    assert wrong_authorizations(answers) == []
    assert cl.missing_from_ledger(answers) == [], "answers whose audit event the ledger lacks"


# --------------------------------------------------------------------------- 0. no fault

def test_baseline_every_event_delivered_once(fault_cluster: FaultCluster, fault_report: Report) -> None:
    cl = fault_cluster
    before = set(cl.emitted())
    answers = cl.load(160)
    t = tally(answers)
    acct = check_events(cl, fault_report, "none (baseline)", before, time.time(), answers)
    fault_report.add("none (baseline)", **t, recovery_s=0.0)
    assert_served_right(cl, answers)
    assert t["http_5xx"] == 0 and t["no_answer"] == 0, t
    assert_exactly_once(acct)
    assert acct["duplicated_http"] == 0


# --------------------------------------------------------------------------- 1. the session store

def _store_fault(cl: FaultCluster, report: Report, fault: str, inject: Callable[[], None],
                 heal: Callable[[], None], *, wipes: bool) -> tuple[list[Answer], dict[str, Any]]:
    before = set(cl.emitted())
    thread, _stop, answers = cl.background_load(240, deadline=90)
    wait_until(answered(answers, 24), 60, "load before the fault")
    inject()
    at = len(answers)
    wait_until(lambda: sum(1 for a in answers[at:] if a.status == 503) >= 8 or not thread.is_alive(), 60,
               "503s during the store outage")
    during = answers[at:]
    heal()
    healed = time.time()
    if wipes:  # an empty store: every session is gone, so those cookies must never be served again
        for user, cookies in cl.cookies.items():
            for cookie in cookies:
                ended(cl, user, cookie)
        cl.cookies = {}
        cl.fresh_sessions()
        recovery = round(time.time() - healed, 2)
    else:
        recovery = max(first_served(cl, h, "alice", cl.cookies["alice"][0], healed) for h in ("host-a", "host-b"))
    thread.join(90)
    after = cl.load(80)  # every ended cookie is sent again, on both hosts
    t = tally(answers + after)
    report.add(fault, **t, recovery_s=recovery, during_fault=tally(during))
    acct = check_events(cl, report, fault, before, healed, answers + after)
    return answers + after, acct | t


@pytest.mark.parametrize("fault", ["redis_paused", "redis_killed_restarted_empty"])
def test_session_store_outage(fault_cluster: FaultCluster, fault_report: Report, fault: str) -> None:
    """SIGSTOP/SIGCONT of the Redis server (a stall), or SIGKILL and a restart with no data."""
    cl = fault_cluster
    r = cl.redis
    if fault == "redis_paused":
        answers, acct = _store_fault(cl, fault_report, fault, r.pause, r.resume, wipes=False)
    else:
        answers, acct = _store_fault(cl, fault_report, fault, r.kill, r.start, wipes=True)
    assert_served_right(cl, answers)
    assert acct["http_503"] > 0, "the outage was not seen"
    assert acct["http_500"] == 0, acct["statuses"]
    assert acct["html_503_to_json_clients"] == 0, "503s in HTML to clients that asked for JSON"
    assert acct["no_answer"] == 0, "requests the portal never answered during the store outage"
    assert_exactly_once(acct)


# --------------------------------------------------------------------------- 2. the audit sinks

SINK_FAULTS: dict[str, tuple[str, str]] = {
    "postgres_stopped": ("pg.stop", "pg.start"),
    "postgres_hangs": ("pg.pause", "pg.resume"),
    "collector_500": ("collector.500", "collector.ok"),
    "collector_refused": ("collector.refuse", "collector.listen"),
    "collector_hangs": ("collector.hang", "collector.ok"),
}


def _act(cl: FaultCluster, what: str) -> None:
    target, _, verb = what.partition(".")
    if target == "collector" and verb in ("500", "hang", "ok"):
        cl.collector.mode = verb
    else:
        getattr(getattr(cl, target), verb)()


@pytest.mark.parametrize("fault", list(SINK_FAULTS))
def test_audit_sink_outage(fault_cluster: FaultCluster, fault_report: Report, fault: str) -> None:
    """The audit database or collector fails under load: requests never notice; after it recovers,
    every event arrives exactly once (after de-duplication), within the bound."""
    cl = fault_cluster
    inject, heal = SINK_FAULTS[fault]
    before = set(cl.emitted())
    thread, _stop, answers = cl.background_load(240, deadline=90)
    wait_until(answered(answers, 20), 60, "load before the fault")
    _act(cl, inject)
    started = time.time()
    at = len(answers)
    wait_until(lambda: len(answers) >= at + 100 or not thread.is_alive(), 60, "load during the fault")
    _act(cl, heal)
    healed = time.time()
    thread.join(90)
    t = tally(answers)
    fault_report.add(fault, **t, fault_duration_s=round(healed - started, 2))
    acct = check_events(cl, fault_report, fault, before, healed, answers)
    held = cl.held_back(set(cl.emitted()) - before, started, healed)
    fault_report.add(fault, recovery_s=acct["all_delivered_after_s"], held_back=held, collector_posts=dict(cl.collector.posts))
    assert held["pg" if fault.startswith("postgres") else "http"] > 0, f"the fault held no event back: {held}"
    assert_served_right(cl, answers)
    assert t["http_5xx"] == 0 and t["no_answer"] == 0, t  # a request never waits on a sink
    assert_exactly_once(acct)


# --------------------------------------------------------------------------- 3. the portal's own processes

def test_worker_sigkill_loses_no_event_of_an_answered_request(fault_cluster: FaultCluster,
                                                              fault_report: Report) -> None:
    """SIGKILL one of host A's workers under load: gunicorn starts another; every event of a
    request that was answered survives (the killed worker's in-flight request is the only one
    without an answer, and its events are reported, not required)."""
    cl = fault_cluster
    before = set(cl.emitted())
    workers = cl.workers("host-a")
    assert len(workers) == 4, workers
    thread, _stop, answers = cl.background_load(240, hosts=("host-a",), deadline=90)
    wait_until(answered(answers, 60), 60, "load before the kill")
    victim = workers[0]
    os.kill(victim, signal.SIGKILL)
    killed = time.time()
    wait_until(lambda: len(cl.workers("host-a")) == 4 and victim not in cl.workers("host-a"), 60,
               "gunicorn to replace the killed worker")
    respawned = round(time.time() - killed, 2)
    thread.join(90)
    t = tally(answers)
    fault_report.add("worker_sigkill", **t, recovery_s=respawned)
    acct = check_events(cl, fault_report, "worker_sigkill", before, killed, answers, completed_only=True)
    assert_served_right(cl, answers)
    assert t["http_5xx"] == 0, t
    assert t["no_answer"] <= 1, "more than the killed worker's one request went unanswered"
    assert_exactly_once(acct)


# --------------------------------------------------------------------------- 4. logout and revocation

def _live_everywhere(cl: FaultCluster, cookie: str) -> dict[str, list[int]]:
    return {h: [r.status_code for r in spread(cl.bases[h], "/whoami", cookie, workers=4)] for h in ("host-a", "host-b")}


def test_logout_during_a_redis_partition(fault_cluster: FaultCluster, fault_report: Report) -> None:
    """Host B's network to Redis is cut the moment its logout writes to the store. A logout that
    could not end the session must say so, must not be audited as done, and must leave the
    session findable and revocable; one that says it succeeded must have ended it."""
    cl = fault_cluster
    cookie = cl.sign_in("carol", start="host-b", finish="host-b")
    base = cl.bases["host-b"]
    page = requests.get(f"{base}/sso/logout", headers={"Cookie": f"ccsso_session={cookie}", "Accept": "text/html"},
                        timeout=10)
    token = CSRF_RE.search(page.text)
    assert page.status_code == 200 and token, page.text[:300]
    rid = "logout-" + str(time.time_ns())
    cl.proxy.partition_on(b"\r\nSREM\r\n", b"\r\nDEL\r\n", b"\r\nUNLINK\r\n", b"\r\nEVALSHA\r\n", b"\r\nMULTI\r\n")
    t0 = time.time()
    try:
        r = requests.post(f"{base}/sso/logout", data={"csrf_token": token.group(1)}, timeout=30,
                          headers={"Cookie": f"ccsso_session={cookie}", "X-Request-ID": rid, "Origin": base},
                          allow_redirects=False)
    finally:
        partitioned = cl.proxy.triggered.is_set()
        cl.proxy.heal()
    healed = time.time()
    audited = [t for t, r_id, _s in cl.emitted().values() if r_id == rid]
    listed = cl.flask("ccsso", "sessions", "list", "--user", "carol@example.com", "--json")
    rows = [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]
    after = {h: ask(cl.bases[h], h, "/whoami", "carol", cookie).status for h in ("host-a", "host-b")}
    fault_report.add("logout_during_redis_partition", logout_status=r.status_code, logout_s=round(healed - t0, 2),
                     audited=audited, listed_after=len(rows), served_after=after, http_5xx=int(r.status_code >= 500),
                     http_500=int(r.status_code >= 500 and r.status_code != 503))
    assert partitioned, "the logout never wrote to the store: the partition was not exercised"
    assert r.status_code != 500, r.text[:300]
    if r.status_code in (302, 303):  # said it signed out: then it did
        assert after == {"host-a": 401, "host-b": 401}, after
        assert audited == ["auth.logout"]
        ended(cl, "carol", cookie)
        return
    assert r.status_code == 503, r.status_code
    assert "auth.logout" not in audited, "a logout that failed was audited as done"
    assert listed.returncode == 0 and len(rows) == 1, ("the session that survived the failed logout is not listed",
                                                       after, listed.stdout, listed.stderr)
    done = cl.flask("ccsso", "sessions", "revoke", "--user", "carol@example.com")
    assert done.returncode == 0 and "Revoked 1 session of" in done.stdout, done.stdout + done.stderr
    assert _live_everywhere(cl, cookie) == {"host-a": [401] * 4, "host-b": [401] * 4}
    ended(cl, "carol", cookie)


@pytest.mark.parametrize("after", ["pending_taken", "record_written"])
def test_sign_in_whose_session_cannot_be_stored(fault_cluster: FaultCluster, fault_report: Report, after: str) -> None:
    """Host B's network to Redis is cut during the callback -- right after it took its pending
    sign-in from the store, or the moment it writes the new session record (``SET``) -- so the
    session cannot be stored: the browser gets a 503 (or a working session), and a sign-in
    that did not happen is never audited as a successful login."""
    import html
    import re
    from urllib.parse import urljoin, urlsplit

    cl = fault_cluster
    base = cl.bases["host-b"]
    jar = requests.Session()
    r = jar.get(f"{base}/sso/dev/login", params={"next": "/whoami"}, allow_redirects=False, timeout=10)
    authorize = r.headers["Location"]
    r = jar.get(authorize, allow_redirects=False, timeout=10)
    action = urljoin(authorize, html.unescape(re.search(r'<form method="post" action="([^"]+)"', r.text).group(1)))
    csrf = re.search(r'name="csrf" value="([^"]+)"', r.text).group(1)
    r = jar.post(action, data={"csrf": csrf, "username": "carol"}, allow_redirects=False, timeout=10)
    parts = urlsplit(r.headers["Location"])
    rid = "signin-" + str(time.time_ns())
    if after == "pending_taken":
        cl.proxy.partition_after(b"\r\nGETDEL\r\n")
    else:
        cl.proxy.partition_on(b"\r\nSET\r\n")
    try:
        done = jar.get(f"{base}{parts.path}?{parts.query}", headers={"X-Request-ID": rid}, allow_redirects=False,
                       timeout=30)
    finally:
        partitioned = cl.proxy.triggered.is_set()
        cl.proxy.heal()
    audited = [t for t, r_id, _s in cl.emitted().values() if r_id == rid]
    cookie = jar.cookies.get("ccsso_session")
    served = ask(base, "host-b", "/whoami", "carol", cookie).status if cookie else None
    fault_report.add(f"sign_in_session_not_stored ({after})", callback_status=done.status_code, audited=audited,
                     served_after=served, http_5xx=int(done.status_code >= 500),
                     http_500=int(done.status_code >= 500 and done.status_code != 503))
    assert partitioned, "the callback never took its pending sign-in: the partition was not exercised"
    assert done.status_code != 500, done.text[:300]
    if done.status_code == 302 and served == 200:  # it did sign in after all
        assert audited.count("auth.login") == 1
        cl.flask("ccsso", "sessions", "revoke", "--user", "carol@example.com")
        return
    assert done.status_code == 503, (done.status_code, done.text[:300])
    assert "auth.login" not in audited, "a sign-in whose session could not be stored was audited as a login"


def test_revocation_during_a_sign_in(fault_cluster: FaultCluster, fault_report: Report) -> None:
    """Deterministic: the CLI's revocation is held (by the proxy) after it read alice's session
    index and before it writes it again, while alice signs in on host A. Every session that
    existed before is ended on the next request everywhere; the new one is either ended too or
    stays findable, and the next revocation ends it."""
    cl = fault_cluster
    old = list(cl.cookies["alice"])
    cl.proxy.hold_on((b"SMEMBERS", b"user:"), b"user:", b"SMEMBERS")
    revoke: dict[str, Any] = {}

    def run_revoke() -> None:
        revoke["done"] = cl.flask("ccsso", "sessions", "revoke", "--user", "alice@example.com", host="host-b")

    th = threading.Thread(target=run_revoke)
    th.start()
    try:
        held = cl.proxy.held.wait(60)
        new = cl.sign_in("alice", start="host-a", finish="host-a")
    finally:
        cl.proxy.release()
        th.join(90)
    done = revoke["done"]
    assert done.returncode == 0, done.stdout + done.stderr
    for c in old:
        assert _live_everywhere(cl, c) == {"host-a": [401] * 4, "host-b": [401] * 4}
        ended(cl, "alice", c)
    first = {h: ask(cl.bases[h], h, "/whoami", "alice", new).status for h in ("host-a", "host-b")}
    rows: list[str] = []
    again = None
    if first != {"host-a": 401, "host-b": 401}:  # it escaped this revocation: it must be findable, and end next time
        listed = cl.flask("ccsso", "sessions", "list", "--user", "alice@example.com", "--json")
        rows = [line for line in listed.stdout.splitlines() if line.strip()]
        again = cl.flask("ccsso", "sessions", "revoke", "--user", "alice@example.com")
    after = _live_everywhere(cl, new)
    fault_report.add("revocation_during_sign_in", held=held, new_session_after_first_revoke=first,
                     listed_after_first_revoke=len(rows), second_revoke=again.stdout.strip() if again else None,
                     new_session_after_second_revoke=after, http_5xx=0, http_500=0)
    ended(cl, "alice", new)
    assert held, "the revocation never wrote alice's index: the race was not exercised"
    if first != {"host-a": 401, "host-b": 401}:
        assert len(rows) == 1, "the session that escaped the revocation is not listed"
    assert after == {"host-a": [401] * 4, "host-b": [401] * 4}, "a session escaped every later revocation"
    cl.cookies["alice"] = [cl.sign_in("alice", start=s, finish=f) for s, f in (("host-a", "host-b"), ("host-b", "host-a"))]


def test_revocation_during_concurrent_sign_ins(fault_cluster: FaultCluster, fault_report: Report) -> None:
    """Under load: three browsers sign alice in over and over while the CLI revokes her. Sessions
    that were signed in before the revocation started are ended when it returns; after the
    sign-ins stop, one more revocation ends every session of hers, on every host."""
    cl = fault_cluster
    made: list[tuple[float, float, str]] = []  # (started, finished, cookie)
    lock = threading.Lock()
    stop = threading.Event()

    def signer(_n: int) -> None:
        for _ in range(5):
            if stop.is_set():
                return
            t0 = time.time()
            c = cl.sign_in("alice", start="host-a", finish="host-b")
            with lock:
                made.append((t0, time.time(), c))

    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(signer, n) for n in range(3)]
        wait_until(lambda: len(made) >= 6, 60, "sign-ins before the revocation")
        r0 = time.time()
        first = cl.flask("ccsso", "sessions", "revoke", "--user", "alice@example.com")
        r1 = time.time()
        before_revoke = [c for s, f, c in made if f < r0]
        served_after = [c for c in before_revoke if ask(cl.bases["host-b"], "host-b", "/whoami", "alice", c).status == 200]
        stop.set()
        for f in futures:
            f.result(90)
    final = cl.flask("ccsso", "sessions", "revoke", "--user", "alice@example.com")
    survivors = [c for _s, _f, c in made
                 if any(ask(cl.bases[h], h, "/whoami", "alice", c).status == 200 for h in ("host-a", "host-b"))]
    for _s, _f, c in made:
        ended(cl, "alice", c)
    fault_report.add("revocation_during_concurrent_sign_ins", sign_ins=len(made), during_revoke=sum(
        1 for s, f, _c in made if f >= r0 and s <= r1), served_after_revoke=len(served_after),
        survived_final_revoke=len(survivors), first=first.stdout.strip(), final=final.stdout.strip(), http_5xx=0,
        http_500=0)
    assert first.returncode == 0, first.stderr
    assert final.returncode in (0, 1), final.stderr  # 1: nothing left to revoke
    assert served_after == [], "a session signed in before the revocation was still served after it returned"
    assert survivors == [], f"{len(survivors)} of {len(made)} sessions escaped every revocation"
    for u in ("alice",):
        cl.cookies[u] = [cl.sign_in(u, start=s, finish=f) for s, f in (("host-a", "host-b"), ("host-b", "host-a"))]


def test_event_spooled_by_the_cli_is_delivered_by_the_running_portal(fault_cluster: FaultCluster,
                                                                     fault_report: Report) -> None:
    """The collector refuses connections while an operator revokes from the command line (the CLI
    spools its ``session.revoked`` event in host A's spool folder and exits). Once the collector
    is back, the running portal delivers it -- no restart."""
    cl = fault_cluster
    before = set(cl.emitted())
    cl.collector.refuse()
    try:
        done = cl.flask("ccsso", "sessions", "revoke", "--user", "bob@example.com")
    finally:
        cl.collector.listen()
    healed = time.time()
    assert done.returncode == 0, done.stderr
    for c in cl.cookies.pop("bob"):
        ended(cl, "bob", c)
    ask(cl.bases["host-a"], "host-a", "/migrations", None, None)  # traffic on the portal, as in production
    acct = check_events(cl, fault_report, "cli_event_spooled_while_collector_down", before, healed, [])
    held = cl.held_back(set(cl.emitted()) - before, 0.0, healed)
    fault_report.add("cli_event_spooled_while_collector_down", recovery_s=acct["all_delivered_after_s"], http_5xx=0,
                     http_500=0, held_back=held)
    assert held["http"] >= 1, "the CLI's event reached the collector while it refused connections?"
    cl.cookies["bob"] = [cl.sign_in("bob", start=s, finish=f) for s, f in (("host-a", "host-b"), ("host-b", "host-a"))]
    assert_exactly_once(acct)


# --------------------------------------------------------------------------- 5. a third instance on host B's machine

def _host_c(cl: FaultCluster) -> None:
    """A second gunicorn instance beside host B (2 workers x 4 threads, ``slidingWriteInterval: 0``),
    sharing host B's instance folder -- its audit spool -- as two instances on one machine do."""
    if "host-c" not in cl.hosts:
        cl.start_host("host-c", workers=2, threads=4, port=cl.c_port, extra={
            "FAULT_SLIDING_WRITE": "0", "SCALEOUT_INSTANCE": str(cl.tmp / "host-b")})


def test_sliding_write_interval_zero_under_concurrent_requests(fault_cluster: FaultCluster,
                                                               fault_report: Report) -> None:
    """``slidingWriteInterval: 0`` (every request stamps the session) with 2 workers x 4 threads
    and 8 concurrent clients, 7 of them on one session, Redis healthy: no 503, every request served."""
    cl = fault_cluster
    _host_c(cl)
    from tests.scale.cluster import sign_in as scale_sign_in

    jar = requests.Session()
    base = cl.bases["host-c"]
    scale_sign_in(cl.scl, jar, "alice", start=base, finish=base, public=base, audited=False)
    cookie = str(jar.cookies.get("ccsso_session"))
    saved, cl.cookies, dead, cl.dead = cl.cookies, {"alice": [cookie] * 7}, cl.dead, []  # 7 of 8 requests hers
    try:
        answers = cl.load(560, hosts=("host-c",), paths=("/whoami", "/migrations"))
    finally:
        cl.cookies, cl.dead = saved, dead
    mine = [a for a in answers if a.user == "alice"]
    t = tally(mine)
    fault_report.add("sliding_write_interval_0_concurrent", **t, recovery_s=0.0)
    assert wrong_authorizations(answers) == []
    assert t["http_5xx"] == 0, f"{t['http_503']} of {t['requests']} requests on a healthy Redis answered 503"
    assert set(t["statuses"]) == {"200"}, t["statuses"]


def test_sigterm_with_a_hanging_collector_keeps_every_event(fault_cluster: FaultCluster,
                                                            fault_report: Report) -> None:
    """The collector accepts but never answers; the instance beside host B gets a normal SIGTERM
    (a deploy). Its queued events must be delivered or spooled -- none lost, none left to a
    restart: host B, still running on the same spool folder, delivers them once the collector
    is back."""
    cl = fault_cluster
    _host_c(cl)
    before = set(cl.emitted())
    cl.collector.mode = "hang"
    try:
        answers = cl.load(120, hosts=("host-c",))
        t0 = time.time()
        proc = cl.hosts.pop("host-c")
        code = proc.stop(timeout=60)
        took = round(time.time() - t0, 2)
    finally:
        hung = cl.collector.posts.get("hang", 0)
        cl.collector.mode = "ok"
    healed = time.time()
    ask(cl.bases["host-b"], "host-b", "/migrations", None, None)  # traffic on the running portal
    fault_report.add("sigterm_with_hanging_sink", **tally(answers), exit_code=code, shutdown_s=took,
                     collector_hung_posts=hung)
    acct = check_events(cl, fault_report, "sigterm_with_hanging_sink", before, healed, answers)
    fault_report.add("sigterm_with_hanging_sink", recovery_s=acct["all_delivered_after_s"])
    assert hung > 0, "no batch met the hanging collector: the fault was not exercised"
    assert_served_right(cl, answers)
    assert code == 0, proc.log()
    assert_exactly_once(acct)


def test_delivery_bound_is_stated() -> None:
    """The bound the sink tests wait for is the one docs/production.md states."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "production.md").read_text()
    assert f"{int(DELIVERY_BOUND)} s" in text
