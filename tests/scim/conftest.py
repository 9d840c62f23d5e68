"""SCIM fixtures: two app instances ("hosts") sharing the real Redis under this test's prefix."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from flask_ccsso.stores.redis import RedisStore
from tests.support.local_op import LocalOP
from tests.support.scim import TOKEN
from tests.support.sessions import REDIS_URL, session_config
from tests.support.skills import add_skill_routes

#: the python-scim libraries need Python 3.11 or later: on 3.10 this folder is not collected
collect_ignore_glob = ["test_*.py"] if sys.version_info < (3, 11) else []

@pytest.fixture
def host(make_app: Any, op: Any, prefix: str, closers: list[Callable[[], None]],
         monkeypatch: pytest.MonkeyPatch) -> Callable[..., Flask]:
    """An app instance with SCIM enabled on the real Redis; every one made in a test shares its store."""
    monkeypatch.setenv("SCIM_TOKEN", TOKEN)

    def factory(logging: dict[str, Any] | None = None, *, secret: bool = True,
                providers: dict[str, Any] | None = None, **scim: Any) -> Flask:
        """``secret``: the static ``scim.token``; ``providers``: more ``auth.providers``
        beside the local OP's ``op``; ``scim``: more keys of the ``scim`` block."""
        store = RedisStore.from_url(REDIS_URL, prefix=prefix)
        cfg = session_config(op, {"type": "redis", "url": REDIS_URL, "keyPrefix": prefix})
        cfg["auth"]["providers"].update(providers or {})
        cfg["scim"] = {"enabled": True, **({"token": "${SCIM_TOKEN}"} if secret else {}), **scim}
        if logging is not None:
            cfg["logging"] = logging
        app = add_skill_routes(make_app(cfg, store=store))
        closers.append(app.session_interface.close)
        closers.append(store.close)
        return app

    return factory


@pytest.fixture(scope="session")
def other_op() -> Iterator[LocalOP]:
    """A second local OP (its own issuer and keys): a trusted provider that is not ``scim.tokenProvider``."""
    other = LocalOP()
    yield other
    other.close()
