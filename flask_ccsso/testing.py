"""Test helpers for apps built on flask-ccsso: no identity provider needed.

::

    from flask_ccsso.testing import CCSSOTestClient, listen_to, make_identity
    from flask_ccsso import signals

    app.test_client_class = CCSSOTestClient

    def test_migrations_page(app):
        client = app.test_client(identity={"email": "alice@example.com",
                                           "groups": ["database-admins"],
                                           "scopes": ["migration:write"]})
        with listen_to(signals.skill_invoked) as calls:
            assert client.get("/migrations").status_code == 200
        assert calls[0].kwargs["skill"] == "database-migration"

The client signs in through the extension's own server-side session (the same
``SessionGate.establish`` a real sign-in calls, the same store, the same
cookie), so timeouts, skills, step-up and sign-out behave exactly as in
production. Like Flask-Login's ``FlaskLoginClient``.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from blinker import ANY, Signal
from flask import Flask, session
from flask.testing import FlaskClient

from ._context import unproxied
from .identity import Identity
from .state import get_state

__all__ = ["CCSSOTestClient", "Record", "csrf_token_in", "listen_to", "log_out", "make_identity"]

_HIDDEN_TOKEN = re.compile(r'<input[^>]*name="csrf_token"[^>]*value="([^"]+)"')


def csrf_token_in(page: Any) -> str | None:
    """The CSRF token of the first ``csrf_token`` hidden field of a page
    (a response or its HTML), as a browser would post it back."""
    html = page if isinstance(page, str) else page.get_data(as_text=True)
    m = _HIDDEN_TOKEN.search(html)
    return m.group(1) if m else None


def log_out(client: FlaskClient, **kwargs: Any) -> Any:
    """Sign out as a browser does: open ``/sso/logout`` (the confirm page),
    then post its form with the CSRF token. Returns the POST's response
    (a 303 to the IdP's logout or to ``/sso/logged-out``). ``kwargs`` go to
    both requests (``headers=...``)."""
    url = f"{get_state(client.application).url_prefix}/logout"
    page = client.get(url, **kwargs)
    token = csrf_token_in(page) if page.status_code == 200 else None
    return client.post(url, data={"csrf_token": token} if token else {}, **kwargs)


def make_identity(**kw: Any) -> Identity:
    """An :class:`~flask_ccsso.identity.Identity` with test defaults.

    Every field of ``Identity`` may be given. ``groups``, ``scopes`` and
    ``roles`` take any iterable of strings; ``amr`` any iterable. Defaults:
    subject ``"test-user"``, provider ``"test"``, email
    ``"<subject>@example.com"``, ``auth_time`` now (a fresh sign-in).
    """
    subject = str(kw.pop("subject", "test-user"))
    data: dict[str, Any] = {
        "subject": subject,
        "provider": kw.pop("provider", "test"),
        "email": kw.pop("email", f"{subject}@example.com"),
        "name": kw.pop("name", None),
        "auth_time": kw.pop("auth_time", time.time()),
    }
    for key in ("groups", "scopes", "roles"):
        value = kw.pop(key, ())
        if isinstance(value, str):
            value = (value,)
        data[key] = frozenset(value)
    if "amr" in kw:
        data["amr"] = tuple(kw.pop("amr"))
    if "claims" in kw:
        data["claims"] = dict(kw.pop("claims"))
    data.update(kw)  # acr, via, tenant, session_index, groups_complete ...
    return Identity(**data)


class CCSSOTestClient(FlaskClient):
    """A test client that starts signed in as ``identity``.

    ``app.test_client_class = CCSSOTestClient``, then
    ``app.test_client(identity=Identity(...) or {...})``. A dict goes through
    :func:`make_identity`; without ``provider`` it gets the app's default (or
    first) configured provider and without ``auth_time`` the app's clock's
    now. ``tokens`` (a dict like the one a real sign-in keeps: access_token,
    refresh_token, expires_at, scope) is stored with the session when given.
    """

    def __init__(self, *args: Any, identity: Identity | Mapping[str, Any] | None = None,
                 tokens: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if identity is not None:
            self.sign_in(identity, tokens=tokens)

    def sign_in(self, identity: Identity | Mapping[str, Any], *, tokens: dict[str, Any] | None = None) -> Identity:
        """Sign this client in as ``identity`` (a new server-side session); return it."""
        app: Flask = self.application
        state = get_state(app)
        if not isinstance(identity, Identity):
            data = dict(identity)
            if not data.get("provider"):
                data["provider"] = state.config.default_provider or next(iter(state.providers))
            data.setdefault("auth_time", state.clock())
            identity = make_identity(**data)
        base = self._base_url(app)
        with app.test_request_context("/", base_url=base):
            state.gate.establish(app, identity, tokens=tokens, logout_state={})
            response = app.response_class()
            app.session_interface.save_session(app, unproxied(session), response)
        self._take_cookies(app, response, base)
        return identity

    def log_out(self, **kwargs: Any) -> Any:
        """Sign out through ``/sso/logout`` as a browser does (see :func:`log_out`)."""
        return log_out(self, **kwargs)

    def sign_out(self) -> None:
        """Forget the session cookie (the server-side record expires on its own)."""
        self.delete_cookie(self.application.config["SESSION_COOKIE_NAME"], domain=self._cookie_domain(self.application))

    # -- cookies -----------------------------------------------------------------------
    def _base_url(self, app: Flask) -> str:
        scheme = app.config.get("PREFERRED_URL_SCHEME") or "http"
        host = app.config.get("SERVER_NAME") or "localhost"
        return f"{scheme}://{host}"

    def _cookie_domain(self, app: Flask) -> str:
        return app.config.get("SESSION_COOKIE_DOMAIN") or urlsplit(self._base_url(app)).hostname or "localhost"

    def _take_cookies(self, app: Flask, response: Any, base: str) -> None:
        name = app.config["SESSION_COOKIE_NAME"]
        for header in response.headers.getlist("Set-Cookie"):
            cookie_name, _, rest = header.partition("=")
            if cookie_name != name:
                continue
            value = rest.split(";", 1)[0]
            self.set_cookie(name, value, domain=self._cookie_domain(app),
                            path=app.config.get("SESSION_COOKIE_PATH") or app.config.get("APPLICATION_ROOT") or "/")
            return
        raise RuntimeError("flask-ccsso did not set a session cookie: is session.store reachable?")


class Record(NamedTuple):
    """One signal delivery: ``sender`` and the keyword arguments."""

    sender: Any
    kwargs: dict[str, Any]


@dataclass
class _Recorder:
    records: list[Record]

    def __call__(self, sender: Any, **kwargs: Any) -> None:
        self.records.append(Record(sender, kwargs))


@contextlib.contextmanager
def listen_to(signal: Signal, sender: Any = ANY) -> Iterator[list[Record]]:
    """Capture what ``signal`` sends inside the block.

    Yields a list that fills with :class:`Record` ``(sender, kwargs)`` tuples,
    so ``sender, kwargs = records[0]`` works. ``sender`` narrows to one app.
    """
    records: list[Record] = []
    with signal.connected_to(_Recorder(records), sender=sender):
        yield records
