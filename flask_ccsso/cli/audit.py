"""``flask ccsso audit ...``: create the table, show the latest events, verify the chain.

The commands also work on their own (``--url``), with
no app at all. Without ``--url`` the database is the first ``sqlalchemy``
destination of the app's parsed ``logging`` block
(``current_app.extensions["ccsso"].audit_settings``, or the running pipeline's
settings).

A SQLite URL is read as the app reads it: ``{instance}`` and a relative path
mean the app's instance folder, whatever the current directory (with
``--url`` and no app, such a URL is refused with the fix). ``tail`` and
``verify`` never create a database; every database error ends the command
with one line -- the URL (password masked), what failed, the fix -- and exit
code 2.

The SQLAlchemy sink is imported inside the commands, not at the top: the
``flask.commands`` entry point imports this package on *every* ``flask``
invocation (``flask run`` too), and SQLAlchemy costs about 120 ms to import.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from ..audit.settings import DEFAULT_TABLE, AuditSettings
from ..exceptions import ConfigError
from ..stores.database import resolve_database_url, sqlite_file
from ._common import database_errors, fail, find_app, mask_url


def _app_settings() -> AuditSettings | None:
    """The app's audit settings, if an app can be found (``flask --app ...``)."""
    app = find_app()
    if app is None:
        return None
    state = app.extensions.get("ccsso")
    settings = getattr(state, "audit_settings", None)
    if settings is None:
        pipeline = app.extensions.get("ccsso_audit")
        settings = getattr(pipeline, "settings", None)
    if not isinstance(settings, AuditSettings):
        return None
    try:
        return settings.resolved(app.instance_path)
    except ConfigError as exc:
        fail(f"configuration: {exc}")


def _resolve(url: str) -> str:
    """``--url`` as the app would read it: ``{instance}`` and a relative
    SQLite path under the app's instance folder (so the command and the app
    use one file whatever the current directory). Without an app such a URL
    is refused, with the fix, rather than guessed from the current directory."""
    try:
        return resolve_database_url(url, None, key="--url")
    except ConfigError:
        app = find_app()
        try:
            return resolve_database_url(url, app.instance_path if app is not None else None, key="--url")
        except ConfigError as exc:
            fail(f"{exc.path}: {exc.problem} Fix: {exc.fix}")


def _target(url: str | None, table: str | None) -> tuple[str, str]:
    if url:
        return _resolve(url), table or DEFAULT_TABLE
    settings = _app_settings()
    if settings is not None and settings.database_url:
        return settings.database_url, table or settings.database_table
    raise click.UsageError("No audit database: pass --url (a SQLAlchemy URL) or configure a "
                           "{\"type\": \"sqlalchemy\", \"url\": ...} entry in logging.destinations.")


def _existing(url: str) -> None:
    """Reading commands never create a database: a SQLite file that is not
    there is named (a second, empty audit database next to the real one is
    how a wrong current directory used to go unnoticed)."""
    path = sqlite_file(url)
    if path is not None and not os.path.exists(path):
        fail(f"audit database {mask_url(url)}: the SQLite file {path} does not exist. Fix: run `flask ccsso audit init-db` "
             "(with the same --app or --url), or correct the URL; a relative SQLite path is relative to the "
             "app's instance folder.")


@contextmanager
def _engine(url: str, table: str) -> Iterator[Any]:
    """A SQLAlchemy engine for ``url``, disposed of when the command is done;
    a database error inside ends the command with one line (:func:`database_errors`)."""
    with database_errors(url, table=table):
        from ..audit.sinks.sqlalchemy import make_engine

        engine = make_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


_url = click.option("--url", envvar="CCSSO_AUDIT_URL", help="SQLAlchemy URL of the audit database.")
_table = click.option("--table", default=None, help=f"Audit table (default {DEFAULT_TABLE}).")


@click.group("audit")
def audit() -> None:
    """Audit trail: create the table, show recent events, verify the hash chain."""


@audit.command("init-db")
@_url
@_table
def init_db(url: str | None, table: str | None) -> None:
    """Create the audit table if it does not exist."""
    from ..audit.sinks.sqlalchemy import create_table

    url, table = _target(url, table)
    with _engine(url, table) as engine:
        create_table(engine, table)
    click.echo(f"audit table {table!r} is ready.")


@audit.command("tail")
@click.option("-n", "count", default=20, show_default=True, type=click.IntRange(1, 100_000),
              help="How many events.")
@_url
@_table
def tail_cmd(count: int, url: str | None, table: str | None) -> None:
    """Print the latest events as JSON lines, oldest first."""
    from ..audit.sinks.sqlalchemy import tail

    url, table = _target(url, table)
    _existing(url)
    with _engine(url, table) as engine:
        rows = tail(engine, table, count)
        for row in rows:
            click.echo(json.dumps(row, sort_keys=True, ensure_ascii=False))


@audit.command("verify")
@_url
@_table
def verify(url: str | None, table: str | None) -> None:
    """Check the hash chain. Exit code 0 when intact, 1 naming the first broken event."""
    from ..audit.sinks.sqlalchemy import verify_chain

    url, table = _target(url, table)
    _existing(url)
    with _engine(url, table) as engine:
        ok, broken = verify_chain(engine, table)
    if ok:
        click.echo(f"audit chain in {table!r} is intact.")
        return
    click.echo(f"audit chain in {table!r} is BROKEN at event {broken}.", err=True)
    raise SystemExit(1)

