"""The sign-in's store writes: one round trip, and a sign-in that could not be stored is no sign-in.

Issue 12: the OIDC callback wrote the old record's deletion, three index
entries and the new record separately (five round trips). Now they are one
batch: a single ``MULTI``/``EXEC`` on Redis, counted here on the wire with a
counting connection class on a real Redis (every send is one round trip).

Issue 13, item 9: a sign-in (OIDC callback, SAML ACS) whose session could not
be stored -- the store partitioned after the request read the session --
answers 503 and is audited as a refused sign-in (``auth.login_failed``,
reason ``store_unavailable``), never as ``auth.login``; nothing of it is left
in the store.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from flask_ccsso import signals
from flask_ccsso.sessions import SESSION_KEY
from flask_ccsso.sessions.index import email_key, idp_session_key, user_key
from flask_ccsso.stores import RedisStore
from flask_ccsso.testing import listen_to
from tests.sessions.partition import Partition
from tests.support.oidc import callback, start_login
from tests.support.saml import SKILLS as SAML_SKILLS
from tests.support.saml import login as saml_login
from tests.support.saml import post as saml_post
from tests.support.saml import provider_block
from tests.support.saml_idp import User
from tests.support.sessions import REDIS_URL, login, session_config
from tests.support.store_partition import cut_mid_request, partitioned_redis, until_store_answers
from tests.support.wire import count_round_trips

pytestmark = pytest.mark.redis

JSON = {"Accept": "application/json"}


def test_the_oidc_callback_writes_the_session_in_one_round_trip(redis_app: Any, op: Any) -> None:
    app = redis_app()
    store = app.session_interface.store
    wire = count_round_trips(store)
    client = app.test_client()
    url = start_login(client)
    params = op.issue_code(url, claims=op.id_claims(_nonce(url), sid="op-sid-7"))
    wire.sends.clear()
    resp = callback(client, params)
    assert resp.status_code == 302, resp.data

    writes = wire.writes()
    assert len(writes) == 1, wire.sends  # one round trip for every write of the sign-in
    (batch,) = writes
    assert batch[0] == "MULTI" and batch[-1] == "EXEC", batch  # all or nothing
    assert batch.count("DEL") == 1  # the pre-sign-in record (session fixation)
    assert batch.count("SADD") == 3 and batch.count("SET") == 1  # user, email, IdP session; the record
    # the end of the request writes nothing more
    assert wire.commands() == [["GET"], batch], wire.sends  # the session's read, the batch: nothing more

    # and what it wrote is what revocation and the CLI read
    state = app.extensions["ccsso"]
    (handle,) = store.set_members(user_key("op:u-alice"))
    assert store.set_members(email_key("alice@example.com")) == {"op:u-alice"}
    assert store.set_members(idp_session_key("op", "op-sid-7")) == {handle}
    assert [s.handle for s in state.sessions.sessions_of("alice@example.com")] == [handle]
    assert client.get("/me", headers=JSON).status_code == 200


def _nonce(url: str) -> str:
    from tests.support.oidc import authorize_params

    return authorize_params(url)["nonce"]


# --------------------------------------------------------------------------- item 9


@pytest.fixture
def net() -> Iterator[Partition]:
    with partitioned_redis() as proxy:
        yield proxy


def _partitioned_app(make_app: Any, config: dict[str, Any], net: Partition, prefix: str, endpoint: str | None,
                     closers: list[Any]) -> Any:
    """Sessions (and their index) behind the partition, pending sign-ins on the
    shared Redis; the partition falls the first time ``endpoint`` runs, after
    the request read its session."""
    config["session"]["store"] = {"type": "redis", "url": net.url, "keyPrefix": prefix}
    shared = RedisStore.from_url(REDIS_URL, prefix=prefix)
    app = make_app(config, store=shared)
    closers.append(app.session_interface.close)
    closers.append(shared.close)
    if endpoint is not None:
        cut_mid_request(app, net, lambda request: request.endpoint == endpoint)
    return app


def _refused_not_logged_in(resp: Any, logins: list[Any], failed: list[Any], provider: str) -> None:
    assert resp.status_code == 503, resp.data
    assert not any(h.startswith("ccsso_session=") and "Expires=Thu, 01 Jan 1970" not in h
                   for h in resp.headers.getlist("Set-Cookie")), resp.headers  # no signed-in cookie
    assert logins == []  # never audited as a successful login
    assert [(f.kwargs["reason"], f.kwargs["provider"]) for f in failed] == [("store_unavailable", provider)]


def _nothing_stored(app: Any, client: Any, net: Partition) -> None:
    net.heal()
    resp = until_store_answers(client)
    assert resp.status_code == 401  # signed out, not half signed in
    store = app.session_interface.store
    assert [k for kind in ("user:", "email:", "idpsid:") for k in store.keys(kind)] == []
    records = [app.session_interface.read_sid(k[len("session:"):]) for k in store.keys("session:")]
    assert not any(SESSION_KEY in (r or {}) for r in records)  # only the pre-sign-in record (a browser binding)
    assert app.extensions["ccsso"].sessions.sessions_of() == []


def test_an_oidc_sign_in_that_could_not_be_stored_is_refused(make_app: Any, op: Any, net: Partition, prefix: str,
                                                            closers: list[Any]) -> None:
    app = _partitioned_app(make_app, session_config(op), net, prefix, "ccsso.callback", closers)
    client = app.test_client()
    params = op.issue_code(start_login(client))
    with listen_to(signals.user_logged_in) as logins, listen_to(signals.login_failed) as failed:
        resp = callback(client, params, headers=JSON)
    _refused_not_logged_in(resp, logins, failed, "op")
    assert resp.get_json()["error"] == "store_unavailable"
    _nothing_stored(app, client, net)
    assert login(client, op)  # and the next sign-in works


def test_a_saml_sign_in_that_could_not_be_stored_is_refused(make_app: Any, idp: Any, net: Partition, prefix: str,
                                                           tmp_path: Any, closers: list[Any]) -> None:
    meta = idp.write_metadata(str(tmp_path / "idp-metadata.xml"))
    config = {"auth": {"providers": {"google": provider_block(meta)}}, "skills": SAML_SKILLS,
              "session": {"cookieSecure": False}}
    app = _partitioned_app(make_app, config, net, prefix, "ccsso.acs", closers)
    client = app.test_client()
    idp.trust_sp(client.get("/sso/google/metadata").data.decode())
    form = idp.respond(saml_login(client), User(email="alice@example.com"))
    with listen_to(signals.user_logged_in) as logins, listen_to(signals.login_failed) as failed:
        resp = saml_post(client, form)
    _refused_not_logged_in(resp, logins, failed, "google")
    assert resp.mimetype == "text/html"  # a browser's form post: the page, not JSON
    _nothing_stored(app, client, net)


def test_a_sign_in_is_announced_only_once_it_is_stored(make_app: Any, op: Any, net: Partition, prefix: str,
                                                      closers: list[Any]) -> None:
    """The partition falls the moment ``auth.login`` is sent: by then the
    session must already be stored (before, the record was written at the end
    of the request: a 503 for a login the audit trail had recorded)."""
    app = _partitioned_app(make_app, session_config(op), net, prefix, None, closers)
    client = app.test_client()
    params = op.issue_code(start_login(client))

    def cut(sender: Any, **kw: Any) -> None:
        net.cut("reset")

    with listen_to(signals.login_failed) as failed, signals.user_logged_in.connected_to(cut, sender=app):
        resp = callback(client, params)
    assert resp.status_code == 302 and failed == [], resp.data  # what was announced is what happened
    net.heal()
    resp = until_store_answers(client)
    assert resp.status_code == 200 and resp.get_json()["subject"] == "u-alice"
