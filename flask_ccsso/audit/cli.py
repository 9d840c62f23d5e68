"""``flask ccsso audit ...``: create the table, show the latest events, verify the chain.

The extension's ``ccsso`` command group adds :data:`audit` with
``add_command(audit)``. The commands also work on their own (``--url``), with
no app at all. Without ``--url`` the database is the first ``sqlalchemy``
destination of the app's parsed ``logging`` block
(``current_app.extensions["ccsso"].audit_settings``, or the running pipeline's
settings).
"""

from __future__ import annotations

import json
from typing import Any

import click

from .settings import DEFAULT_TABLE, AuditSettings


def _app_settings() -> AuditSettings | None:
    """The app's audit settings, if an app can be found (``flask --app ...``)."""
    from flask import current_app
    from flask.cli import NoAppException, ScriptInfo

    app: Any = None
    if current_app:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
    else:
        ctx = click.get_current_context(silent=True)
        info = ctx.find_object(ScriptInfo) if ctx else None
        if info is not None:
            try:
                app = info.load_app()
            except NoAppException:
                app = None
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


def _engine(url: str) -> Any:
    from .sinks.sqlalchemy import make_engine

    return make_engine(url)


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
    from .sinks.sqlalchemy import create_table

    url, table = _target(url, table)
    engine = _engine(url)
    try:
        create_table(engine, table)
    finally:
        engine.dispose()
    click.echo(f"audit table {table!r} is ready.")


@audit.command("tail")
@click.option("-n", "count", default=20, show_default=True, type=click.IntRange(1, 100_000),
              help="How many events.")
@_url
@_table
def tail_cmd(count: int, url: str | None, table: str | None) -> None:
    """Print the latest events as JSON lines, oldest first."""
    from .sinks.sqlalchemy import tail

    url, table = _target(url, table)
    engine = _engine(url)
    try:
        for row in tail(engine, table, count):
            click.echo(json.dumps(row, sort_keys=True, ensure_ascii=False))
    finally:
        engine.dispose()


@audit.command("verify")
@_url
@_table
def verify(url: str | None, table: str | None) -> None:
    """Check the hash chain. Exit code 0 when intact, 1 naming the first broken event."""
    from .sinks.sqlalchemy import verify_chain

    url, table = _target(url, table)
    engine = _engine(url)
    try:
        ok, broken = verify_chain(engine, table)
    finally:
        engine.dispose()
    if ok:
        click.echo(f"audit chain in {table!r} is intact.")
        return
    click.echo(f"audit chain in {table!r} is BROKEN at event {broken}.", err=True)
    raise SystemExit(1)


__all__ = ["audit"]
