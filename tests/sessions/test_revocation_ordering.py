"""Issue 13, item 5: a revocation and a sign-in of the same person, racing.

The order, as the store sees it: a session stored before the revocation
returned -- also one stored while it ran -- is ended; one stored after it
returned is valid, and stays in the index for the next revocation. Before,
the revocation deleted the whole per-user index after reading it, so a
sign-in that landed in between escaped it and every later one.

The deterministic repro lands a real sign-in between the revocation's read
of the index and its removal of what it read; the stress test runs sign-ins
on threads against a real Redis while revocations run.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from flask_ccsso.extension import get_state
from flask_ccsso.sessions.index import user_key
from tests.support.sessions import login

pytestmark = pytest.mark.redis

JSON = {"Accept": "application/json"}
ALICE = "op:u-alice"


def _status(client: Any) -> int:
    return int(client.get("/me", headers=JSON).status_code)


@pytest.mark.postgres
@pytest.mark.parametrize("kind", ["redis", "postgresql", "embedded"])
def test_a_sign_in_landing_inside_a_revocation_is_ended_and_later_ones_stay_revocable(
        store_app: Any, op: Any, kind: str, monkeypatch: Any) -> None:
    app = store_app(kind)
    state = get_state(app)
    first = app.test_client()
    login(first, op)
    racer = app.test_client()
    store = state.sessions.store
    read = store.set_members
    landed: list[str] = []

    def read_then_a_sign_in_lands(key: str) -> Any:
        members = read(key)
        if key == user_key(ALICE) and not landed:
            landed.append(login(racer, op))  # stored after this read, before the read members are removed
        return members

    monkeypatch.setattr(store, "set_members", read_then_a_sign_in_lands)
    with app.app_context():
        count = state.revoke_user("alice@example.com")
    monkeypatch.undo()
    assert landed
    assert count == 2  # the session before, and the one stored while the revocation ran
    assert _status(first) == 401 and _status(racer) == 401
    assert store.set_members(user_key(ALICE)) == set()  # exactly those two left the index

    later = app.test_client()
    login(later, op)  # after the revocation returned: valid, and indexed
    assert _status(later) == 200
    assert [s.identity_id for s in state.sessions.sessions_of("alice@example.com")] == [ALICE]
    with app.app_context():
        assert state.revoke_user("alice@example.com") == 1  # the next revocation finds it
    assert _status(later) == 401


def test_a_failed_revocation_leaves_the_sessions_it_did_not_end_findable(store_app: Any, op: Any,
                                                                         monkeypatch: Any) -> None:
    app = store_app("redis")
    state = get_state(app)
    clients = [app.test_client() for _ in range(2)]
    for c in clients:
        login(c, op)
    from flask_ccsso.exceptions import StoreUnavailable

    iface = state.session_interface
    real = iface.end_sid
    ended: list[str] = []

    def end_one_then_fail(ref: str, reason: str) -> bool:
        if ended:
            raise StoreUnavailable()
        ended.append(ref)
        return real(ref, reason)

    monkeypatch.setattr(iface, "end_sid", end_one_then_fail)
    with app.app_context(), pytest.raises(StoreUnavailable):
        state.revoke_user("alice@example.com")
    monkeypatch.undo()
    assert sorted(_status(c) for c in clients) == [200, 401]
    assert len(state.sessions.sessions_of("alice@example.com")) == 1  # the survivor is still listed
    with app.app_context():
        assert state.revoke_user("alice@example.com") == 1  # and the retry ends it
    assert [_status(c) for c in clients] == [401, 401]


def test_revocations_racing_threaded_sign_ins_on_redis(store_app: Any, op: Any) -> None:
    """4 threads sign in 6 times each while 3 revocations run. Every session
    whose sign-in finished before a revocation was called is ended; every one
    that started after the last revocation returned is valid; and no session
    escapes the index (a final revocation ends all that are left)."""
    app = store_app("redis")
    state = get_state(app)
    threads, per_thread = 4, 6
    signed: list[tuple[Any, float, float]] = []
    windows: list[tuple[float, float, int]] = []
    lock = threading.Condition()
    errors: list[BaseException] = []

    def sign_in_repeatedly() -> None:
        try:
            for _ in range(per_thread):
                c = app.test_client()
                started = time.monotonic()
                login(c, op)
                with lock:
                    signed.append((c, started, time.monotonic()))
                    lock.notify_all()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
            with lock:
                lock.notify_all()

    def revoke_at(thresholds: tuple[int, ...]) -> None:
        try:
            for n in thresholds:
                with lock:
                    lock.wait_for(lambda n=n: len(signed) >= n or bool(errors), timeout=60)
                called = time.monotonic()
                with app.app_context():
                    count = state.revoke_identity(ALICE, reason="operator")
                windows.append((called, time.monotonic(), count))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    workers = [threading.Thread(target=sign_in_repeatedly) for _ in range(threads)]
    workers.append(threading.Thread(target=revoke_at, args=((3, 10, 17),)))
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert not any(w.is_alive() for w in workers)
    assert errors == []
    assert len(signed) == threads * per_thread and len(windows) == 3

    last_return = max(r for _, r, _ in windows)
    for client, started, finished in signed:
        status = _status(client)
        if any(finished < called for called, _, _ in windows):
            assert status == 401, (started, finished, windows)  # stored before a revocation: ended
        elif started > last_return:
            assert status == 200, (started, finished, windows)  # after every revocation: valid
    assert sum(count for _, _, count in windows) >= sum(
        1 for _, _, f in signed if f < windows[0][0])  # the first revocation ended at least those before it

    with app.app_context():
        state.revoke_identity(ALICE, reason="operator")
    assert [_status(c) for c, _, _ in signed] == [401] * len(signed)  # none escaped the index
    assert state.sessions.store.set_members(user_key(ALICE)) == set()
