"""``flask ccsso audit ...``: create the table, show the latest events, verify the chain.

The commands also work on their own (``--url``), with
no app at all. Without ``--url`` the database is the first ``sqlalchemy``
destination of the app's parsed ``logging`` block
(``current_app.extensions["ccsso"].audit_settings``, or the running pipeline's
settings).

The SQLAlchemy sink is imported inside the commands, not at the top: the
``flask.commands`` entry point imports this package on *every* ``flask``
invocation (``flask run`` too), and SQLAlchemy costs about 120 ms to import.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from ..audit.settings import DEFAULT_TABLE, AuditSettings
from ._common import find_app


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
    return settings if isinstance(settings, AuditSettings) else None


def _target(url: str | None, table: str | None) -> tuple[str, str]:
    if url:
        return url, table or DEFAULT_TABLE
    settings = _app_settings()
    if settings is not None and settings.database_url:
        return settings.database_url, table or settings.database_table
    raise click.UsageError("No audit database: pass --url (a SQLAlchemy URL) or configure a "
                           "{\"type\": \"sqlalchemy\", \"url\": ...} entry in logging.destinations.")


@contextmanager
def _engine(url: str) -> Iterator[Any]:
    """A SQLAlchemy engine for ``url``, disposed of when the command is done."""
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
    with _engine(url) as engine:
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
    with _engine(url) as engine:
        for row in tail(engine, table, count):
            click.echo(json.dumps(row, sort_keys=True, ensure_ascii=False))


@audit.command("verify")
@_url
@_table
def verify(url: str | None, table: str | None) -> None:
    """Check the hash chain. Exit code 0 when intact, 1 naming the first broken event."""
    from ..audit.sinks.sqlalchemy import verify_chain

    url, table = _target(url, table)
    with _engine(url) as engine:
        ok, broken = verify_chain(engine, table)
    if ok:
        click.echo(f"audit chain in {table!r} is intact.")
        return
    click.echo(f"audit chain in {table!r} is BROKEN at event {broken}.", err=True)
    raise SystemExit(1)

