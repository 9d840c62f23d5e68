"""The shared fixtures of the suite (one home). Helpers they build on live in tests/support/.

A folder's own conftest.py holds only fixtures used in that folder alone.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from werkzeug.serving import make_server

from flask_ccsso import CCSSO, current_identity, login_required, requires_skill
from flask_ccsso.stores import MemoryStore, RedisStore
from tests.support.audit import PG_URL as AUDIT_PG_URL
from tests.support.audit import Collector
from tests.support.clock import Clock
from tests.support.example import Portal
from tests.support.local_op import LocalOP
from tests.support.saml import SKILLS as SAML_SKILLS
from tests.support.saml import provider_block
from tests.support.saml_idp import SAMLIdP
from tests.support.sessions import REDIS_URL, delete_prefix, session_config, unique_prefix
from tests.support.skills import add_skill_routes, skills_config


@pytest.fixture(scope="session")
def local_op() -> Iterator[LocalOP]:
    op = LocalOP()
    yield op
    op.close()


@pytest.fixture
def op(local_op: LocalOP) -> Iterator[LocalOP]:
    """The shared local OP, reset between tests."""
    local_op.keys = [local_op.keys[-1]]
    local_op.key = local_op.keys[0]
    local_op.extra_metadata = {}
    local_op.refresh_handler = None
    local_op.down = False
    local_op.graph_pages = []
    local_op.graph_fail = False
    yield local_op


@pytest.fixture
def failures() -> Iterator[list[dict[str, Any]]]:
    """The keyword arguments of every ``login_failed`` signal sent during the test."""
    from flask_ccsso import signals

    got: list[dict[str, Any]] = []

    def rec(sender: Any, **kw: Any) -> None:
        got.append(kw)

    signals.login_failed.connect(rec)
    yield got
    signals.login_failed.disconnect(rec)


@pytest.fixture
def clock() -> Clock:
    return Clock()


_counter = itertools.count()


@pytest.fixture
def make_app(tmp_path: Any, clock: Clock) -> Iterator[Callable[..., Flask]]:
    made: list[Flask] = []

    def factory(config: dict[str, Any], *, store: Any = None, **flask_config: Any) -> Flask:
        app = Flask(f"test_app_{next(_counter)}", instance_path=str(tmp_path / "instance"))
        app.config.update(SECRET_KEY="test-secret", TESTING=True, CCSSO=config, **flask_config)
        CCSSO(app, clock=clock, store=store if store is not None else MemoryStore(clock))
        made.append(app)

        @app.get("/")
        def home() -> str:
            return "home"

        @app.get("/me")
        @login_required
        def me() -> dict[str, Any]:
            return {"subject": current_identity.subject, "email": current_identity.email,
                    "groups": sorted(current_identity.groups), "scopes": sorted(current_identity.scopes),
                    "provider": current_identity.provider}

        @app.get("/migrations")
        @requires_skill("database-migration")
        def migrations() -> str:
            return "migrations ok"

        return app

    yield factory
    for app in made:  # stop each app's audit writer thread
        pipeline = app.extensions["ccsso"].audit
        if pipeline is not None:
            pipeline.close(timeout=2)


# --------------------------------------------------------------------------- skills

@pytest.fixture
def app(make_app: Any, op: LocalOP) -> Flask:
    """The skills test app: a route per skill of ``MORE_SKILLS`` (a module that needs another app defines its own ``app``)."""
    return add_skill_routes(make_app(skills_config(op)))


@pytest.fixture
def client(app: Flask) -> Any:
    return app.test_client()


# --------------------------------------------------------------------------- sessions on the real Redis

@pytest.fixture
def prefix() -> Iterator[str]:
    """A Redis key prefix of this test's own; its keys are deleted afterwards."""
    p = unique_prefix()
    yield p
    delete_prefix(p)


@pytest.fixture
def closers() -> Iterator[list[Callable[[], None]]]:
    """Close functions to call (newest first) when the test ends."""
    items: list[Callable[[], None]] = []
    yield items
    for close in reversed(items):
        close()


@pytest.fixture
def redis_app(make_app: Any, op: Any, prefix: str, closers: list[Callable[[], None]]) -> Callable[..., Any]:
    """An app on the real Redis (sessions and shared state), under this test's prefix."""

    def factory(url: str = REDIS_URL, **session: Any) -> Any:
        store = RedisStore.from_url(url, prefix=prefix)
        app = make_app(session_config(op, {"type": "redis", "url": url, "keyPrefix": prefix}, **session), store=store)
        closers.append(app.session_interface.close)
        closers.append(store.close)
        return app

    return factory


# --------------------------------------------------------------------------- SAML

#: the signature verifiers every SAML test module runs against (``xmlsecBackend``)
SAML_BACKENDS = ("xmlsec1", "binding")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test of a SAML module (``*saml*`` file or folder) runs once per
    verifier: the xmlsec1 program and the in-process ``xmlsec`` binding. The
    binding is the default only because this whole suite passes against both."""
    path = metafunc.definition.path
    if "saml_backend" in metafunc.fixturenames and ("saml" in path.name or path.parent.name == "saml"):
        metafunc.parametrize("saml_backend", SAML_BACKENDS, indirect=True)


@pytest.fixture(autouse=True)
def saml_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """The verifier a SAML module's test runs against (None elsewhere: the
    default). A provider whose config leaves ``xmlsecBackend`` at ``auto``
    gets this one; ``binding`` is skipped when the binding cannot be loaded."""
    backend: str | None = getattr(request, "param", None)
    if backend is None:
        return None
    from flask_ccsso.providers import saml_binding, saml_xmlsec

    if backend == "binding" and saml_binding.available() is not None:
        pytest.skip(f"xmlsecBackend binding: {saml_binding.available()}")
    real = saml_xmlsec.in_process_verifier

    def forced(asked: str, setting: str = "xmlsecBackend") -> Any:
        return real(backend if asked == "auto" else asked, setting)

    monkeypatch.setattr(saml_xmlsec, "in_process_verifier", forced)
    return backend


@pytest.fixture
def idp(tmp_path: Any) -> SAMLIdP:
    """A real SAML IdP (pysaml2's server, xmlsec1 signatures) with its own key pair."""
    return SAMLIdP(str(tmp_path / "idp"))


@pytest.fixture
def saml_portal(make_app: Any, idp: SAMLIdP, tmp_path: Any) -> Callable[..., tuple[Flask, Any]]:
    """(app, client) with one SAML provider ``google`` trusting ``idp``."""

    def build(**over: Any):
        meta = idp.write_metadata(str(tmp_path / "idp-metadata.xml"))
        app = make_app({"auth": {"providers": {"google": provider_block(meta, **over)}}, "skills": SAML_SKILLS,
                        "session": {"cookieSecure": False}})
        client = app.test_client()
        idp.trust_sp(client.get("/sso/google/metadata").data.decode())
        return app, client

    return build


# --------------------------------------------------------------------------- the example portal

@pytest.fixture
def example_portal(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Portal]:
    """The example app with its dev IdP, served on 127.0.0.1 so its back channel is real HTTP."""
    from example_app import create_app  # here, so only the tests that use the example app import it

    holder: dict[str, Flask] = {}

    def dispatch(environ: Any, start_response: Any) -> Any:
        return holder["app"](environ, start_response)

    server = make_server("127.0.0.1", 0, dispatch, threaded=True)
    base = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setenv("CCSSO_DEVIDP_ENABLED", "1")
    monkeypatch.setenv("CCSSO_EXAMPLE_BASE_URL", base)
    monkeypatch.delenv("CCSSO_EXAMPLE_IDP", raising=False)
    monkeypatch.delenv("CCSSO_EXAMPLE_MAX_AUTH_AGE", raising=False)
    clock = Clock()
    app = create_app({"TESTING": True, "SECRET_KEY": "test", "SERVER_NAME": f"127.0.0.1:{server.server_port}",
                      "INSTANCE_PATH": str(tmp_path / "instance")}, clock=clock)
    holder["app"] = app
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Portal(app, base, clock)
    finally:
        server.shutdown()
        server.server_close()
        pipeline = app.extensions.get("ccsso_audit")
        if pipeline is not None:
            pipeline.close()


# --------------------------------------------------------------------------- audit

@pytest.fixture(name="collector")
def collector_fixture() -> Iterator[Collector]:
    """A real HTTP collector on 127.0.0.1 (see tests/support/audit.py ``Collector``)."""
    c = Collector()
    yield c
    c.stop()


@pytest.fixture(name="pg_table")
def pg_table_fixture() -> Iterator[tuple[sa.Engine, str]]:
    """A uniquely named table in the ``test`` database, dropped afterwards."""
    engine = sa.create_engine(AUDIT_PG_URL)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:  # pragma: no cover
        engine.dispose()
        pytest.skip(f"PostgreSQL is not reachable on 127.0.0.1:5432 ({type(exc.orig).__name__})")
    name = f"ccsso_audit_t_{uuid.uuid4().hex[:12]}"
    yield engine, name
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP TABLE IF EXISTS "{name}"'))
    engine.dispose()
