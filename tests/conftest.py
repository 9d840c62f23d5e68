from __future__ import annotations

import itertools
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from flask import Flask

from flask_ccsso import CCSSO, current_identity, login_required, requires_skill
from flask_ccsso.stores import MemoryStore
from tests.local_op import CLIENT_ID, CLIENT_SECRET, LocalOP


class Clock:
    """A clock the extension takes: tests move time instead of sleeping."""

    def __init__(self) -> None:
        import time

        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


SKILLS = {
    "database-migration": {"allowedGroups": ["database-admins", "senior-developers"], "requiredScopes": ["migration:write"]},
    "security-audit": {"allowedGroups": ["security-team"], "requiredScopes": ["security:read"]},
    "infrastructure-deploy": {"allowedGroups": ["devops-engineers"], "requiredScopes": ["infra:deploy"]},
}


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


_counter = itertools.count()


def oidc_config(op: LocalOP, **over: Any) -> dict[str, Any]:
    prov = {"provider": "oidc", "clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET, "issuer": op.issuer,
            "scopes": ["openid", "profile", "email", "migration:write"]}
    prov.update(over)
    return {"auth": {"providers": {"op": prov}}, "skills": SKILLS,
            "session": {"cookieSecure": False}}


@pytest.fixture
def clock() -> Clock:
    return Clock()


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


def start_login(client: Any, provider: str = "op", next_url: str = "/me", **params: str) -> str:
    q = {"next": next_url, **params}
    resp = client.get(f"/sso/{provider}/login?{urlencode(q)}")
    assert resp.status_code == 302, resp.data
    return resp.headers["Location"]


def callback(client: Any, params: dict[str, str], provider: str = "op", **kw: Any) -> Any:
    return client.get(f"/sso/{provider}/callback?{urlencode(params)}", **kw)


def authorize_params(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
