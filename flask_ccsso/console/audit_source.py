"""Which audit table the console reads, and a short-lived engine for it.

The audit explorer and the charts read the table of one ``sqlalchemy`` audit
destination: the one ``console.auditDestination`` names, else the first one in
``logging.destinations``. Its URL and table come from the app's validated
audit settings (:attr:`~flask_ccsso.state.CCSSOState.audit_settings`, SQLite
paths already resolved against the instance folder), never from a request.

Each console request opens its own engine and disposes of it when done
(:func:`reading`): the console is a handful of operators, and the sink's own
engine (its timeouts, its two pooled connections) is the writer's. On
PostgreSQL every statement of it ends within :data:`STATEMENT_TIMEOUT_MS`, so
nothing an operator runs holds a connection for long; SQLite is in WAL mode
(:func:`~flask_ccsso.audit.sinks.sqlalchemy.make_engine`), so reading never
holds off the audit writers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa

from .._validate import mask_url
from ..audit.settings import AuditSettings
from ..stores.database import sqlite_file

#: where the docs explain the ``sqlalchemy`` destination
DOCS = "docs/audit.md"
#: PostgreSQL ``statement_timeout`` of the console's reads (a page, a chart, one export or verification chunk)
STATEMENT_TIMEOUT_MS = 30_000


@dataclass(frozen=True)
class AuditSource:
    """One ``sqlalchemy`` audit destination: its ``name``, database ``url`` and ``table``."""

    name: str
    url: str
    table: str

    def describe(self) -> str:
        """Where the events are, password masked (the pages show it)."""
        return f"table {self.table} in {mask_url(self.url)} (destination {self.name!r})"


class SourceUnavailable(Exception):
    """No table to read: no ``sqlalchemy`` destination, a name that is not one, or no database yet.

    ``problem`` and ``fix`` are shown to the operator as they are (no secrets in them).
    """

    def __init__(self, problem: str, fix: str, *, configured: bool) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix
        #: whether a destination is configured (the table only does not exist yet)
        self.configured = configured


def find_source(settings: AuditSettings, wanted: str | None) -> AuditSource:
    """The destination the console reads (``console.auditDestination``, else the first ``sqlalchemy`` one).

    :raises SourceUnavailable: there is none, or ``wanted`` names no ``sqlalchemy`` destination.
    """
    sql = [s for s in settings.destinations if s.type == "sqlalchemy" and s.url]
    if wanted is not None:
        chosen = next((s for s in settings.destinations if s.name == wanted), None)
        if chosen is None or chosen not in sql:
            names = ", ".join(repr(s.name) for s in sql) or "none"
            what = "is not a sqlalchemy destination" if chosen is not None else "names no destination"
            raise SourceUnavailable(
                f"console.auditDestination {what} ({wanted!r}); sqlalchemy destinations: {names}.",
                "set console.auditDestination to the name of a {\"type\": \"sqlalchemy\"} entry of "
                f"logging.destinations, or remove it to read the first one (see {DOCS}).", configured=False)
        sql = [chosen]
    if not sql:
        raise SourceUnavailable(
            "No SQL audit destination is configured, so there is no audit table to explore.",
            "add a destination to the logging block, e.g. "
            "\"destinations\": [{\"type\": \"sqlalchemy\", \"name\": \"audit-db\", "
            "\"url\": \"postgresql+psycopg://audit@db/audit\"}] (or a SQLite file: \"sqlite:///audit.sqlite\"), "
            f"then restart; {DOCS} (\"Sinks\") explains the table, its hash chain and `flask ccsso audit init-db`.",
            configured=False)
    sink = sql[0]
    assert sink.url is not None
    return AuditSource(name=sink.name, url=sink.url, table=sink.table)


@contextmanager
def reading(source: AuditSource) -> Iterator[sa.Engine]:
    """An engine on ``source`` for one request, disposed of afterwards.

    A SQLite file that does not exist yet is not created (reading never makes a
    second, empty audit database): :class:`SourceUnavailable` says so.
    """
    from ..audit.sinks.sqlalchemy import make_engine

    path = sqlite_file(source.url)
    if path is not None and not os.path.exists(path):
        raise SourceUnavailable(
            f"The audit database {mask_url(source.url)} does not exist yet: no event has been written to it.",
            "it is created with the first event (or run `flask ccsso audit init-db`).", configured=True)
    engine = make_engine(source.url, statement_timeout_ms=STATEMENT_TIMEOUT_MS)
    try:
        yield engine
    finally:
        engine.dispose()


__all__ = ["AuditSource", "SourceUnavailable", "find_source", "reading"]
