"""What every ``flask ccsso`` command shares: loading the app, one-line errors, masking.

Each command loads the app through :func:`load_app` (or :func:`with_app`),
never through Flask's ``with_appcontext``: an app that cannot start (an
invalid config, the development IdP refusing to run) must end the command
with one line and exit code 2, not a traceback. Doing it where the app is
loaded -- rather than by catching exceptions around the whole command --
keeps click's own exits (``--help`` is ``Exit(0)``, a ``RuntimeError``
subclass) and a command's own errors out of that path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import update_wrapper
from typing import Any, NoReturn, TypeVar, cast

import click
from flask import Flask, has_app_context
from flask.cli import NoAppException, ScriptInfo

from .._context import current_flask_app
from .._validate import mask_url
from ..config import _SECRET_KEYS
from ..exceptions import CCSSOError, ConfigError, StoreUnavailable
from ..state import CCSSOState, get_state
from ..stores.database import database_error_line

__all__ = ["app_state", "as_config", "current_state", "database_errors", "error_text", "fail", "find_app", "load_app",
           "mask_url", "masked", "report_error", "with_app"]

F = TypeVar("F", bound=Callable[..., Any])

#: keys of raw config blocks (``logging``) whose values never get printed: the
#: keys that must be ``${VAR}`` in a file, plus sink headers; settings structs
#: mark their secret fields instead (``secret_field``)
SECRET_FIELDS = frozenset(_SECRET_KEYS | {"secret", "headers"})


# --------------------------------------------------------------------------- one-line errors

def report_error(message: str) -> None:
    """``[ERROR] message`` on stderr: how every command reports a failure."""
    click.echo(f"[{click.style('ERROR', fg='red')}] {message}", err=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Report ``message`` as one line and end the command (exit 2: it could not do its job)."""
    report_error(message)
    click.get_current_context().exit(code)
    raise AssertionError("unreachable")  # pragma: no cover - ctx.exit raises


# --------------------------------------------------------------------------- the app

def load_app() -> Flask:
    """The app ``flask --app`` names (or the one whose context is active).

    A ``ConfigError`` or a ``RuntimeError`` while the app is created (the
    development IdP's switches) ends the command with its message and exit
    code 2; no app to be found at all is click's usage error (also exit 2).
    """
    if has_app_context():
        return current_flask_app()
    return _create(click.get_current_context().ensure_object(ScriptInfo))


def find_app() -> Flask | None:
    """Like :func:`load_app`, but no app at all is ``None``, not an error: the
    audit commands also work on a bare ``--url``, even outside ``flask``."""
    if has_app_context():
        return load_app()
    ctx = click.get_current_context(silent=True)
    info = ctx.find_object(ScriptInfo) if ctx else None
    if info is None:
        return None
    try:
        return _create(info)
    except NoAppException:
        return None


def _create(info: ScriptInfo) -> Flask:
    """``info.load_app()``, with the app's start-up errors as one line and exit 2."""
    try:
        return info.load_app()
    except ConfigError as exc:
        fail(f"configuration: {exc}")
    except StoreUnavailable as exc:  # the session store's tables are made at start-up
        fail(f"the app could not start: {error_text(exc)}")
    except RuntimeError as exc:
        fail(f"the app could not start: {exc}")


def app_state(app: Flask) -> CCSSOState:
    """flask-ccsso's state on ``app``; exit 2 with the fix when it was never initialised."""
    try:
        return get_state(app)
    except RuntimeError:
        fail("flask-ccsso is not initialised on this app (call CCSSO(app) or sso.init_app(app) in the factory).")


def current_state() -> CCSSOState:
    """flask-ccsso's state on the command's app (see :func:`load_app` and :func:`app_state`)."""
    return app_state(load_app())


def with_app(f: F) -> F:
    """Run the command inside the app's context, loaded by :func:`load_app`
    (what ``flask.cli.with_appcontext`` does, with the one-line start-up errors)."""

    @click.pass_context
    def run_in_app(ctx: click.Context, /, *args: Any, **kwargs: Any) -> Any:
        if not has_app_context():
            ctx.with_resource(load_app().app_context())
        try:
            return ctx.invoke(f, *args, **kwargs)
        except StoreUnavailable as exc:
            fail(error_text(exc))

    return cast(F, update_wrapper(run_in_app, f))


# --------------------------------------------------------------------------- database errors

#: what to do when the session store's tables are missing (the app creates them when it starts)
STORE_TABLE_FIX = "start the app once (it creates the store's tables), or check session.store.url."


def error_text(exc: CCSSOError) -> str:
    """The one line a command prints for ``exc``: for an unreachable store,
    which store (URL, password masked), what failed and the fix
    (:func:`~flask_ccsso.stores.database.database_error_line`); otherwise the
    error's description."""
    url = exc.extra.get("store_url") if isinstance(exc, StoreUnavailable) else None
    if isinstance(url, str):
        return database_error_line(exc.__cause__ or exc, url, what="session store",
                                   missing_table_fix=STORE_TABLE_FIX)
    return str(exc.description or exc.reason)


@contextmanager
def database_errors(url: str, *, what: str = "audit database", table: str | None = None) -> Iterator[None]:
    """End the command with one line -- the database (password masked), what
    failed, the fix -- and exit 2 on any database error inside the block
    (SQLAlchemy's, a driver's, a missing driver), instead of a traceback."""
    try:
        yield
    except click.exceptions.Exit:
        raise
    except (ImportError, OSError) as exc:
        fail(database_error_line(exc, url, what=what, table=table))
    except Exception as exc:
        if not _is_database_error(exc):
            raise
        fail(database_error_line(exc, url, what=what, table=table))


def _is_database_error(exc: BaseException) -> bool:
    """A SQLAlchemy or DB-API error (told by module, so SQLAlchemy is not imported here)."""
    return any(type(e).__module__.split(".")[0] in ("sqlalchemy", "sqlite3", "psycopg", "psycopg2", "redis")
               for e in (exc, exc.__cause__, exc.__context__) if e is not None)


# --------------------------------------------------------------------------- masking

def masked(value: Any, key: str = "") -> Any:
    """A JSON-safe copy of ``value`` with every secret replaced by ``***``.

    A settings struct is shown as the user writes it (:func:`as_config`);
    a field marked secret (``setting(..., secret=True)``) is masked whatever
    its name; in raw blocks the key names in :data:`SECRET_FIELDS` are; URLs
    keep everything but their credentials (``_validate.mask_url``).
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return as_config(value)
    if key in SECRET_FIELDS:
        return "***" if value else value
    if isinstance(value, dict):
        return {str(k): masked(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [masked(v, key) for v in value]
        return sorted(items, key=str) if isinstance(value, (set, frozenset)) else items
    if isinstance(value, str):
        return mask_url(value) if "://" in value else value
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return str(value)


def as_config(settings: Any) -> dict[str, Any]:
    """A settings struct under the user's own config keys, secrets masked.

    Each field's camelCase key is declared once, in its ``setting(...)``
    (the field metadata's ``key``), which is also what the parser reads: the
    printed config therefore uses exactly the keys a config file holds.
    Fields that are no config key (a provider's ``name`` and ``path``, a
    skill's ``name``: the block's own name) are left out.
    """
    out: dict[str, Any] = {}
    for f in dataclasses.fields(settings):
        key = f.metadata.get("key")
        if key is None:
            continue
        value = getattr(settings, f.name)
        out[key] = ("***" if value else value) if f.metadata.get("secret") else masked(value, key)
    return out

