"""Database URLs as flask-ccsso reads them, and database errors in words an operator can act on.

Where a SQLite file lives must not depend on the directory a command happens
to run from: a relative path in a ``sqlite:///`` URL is resolved against the
app's instance folder, as Flask-SQLAlchemy does (``sqlite:///audit.sqlite``
is ``<instance>/audit.sqlite`` for ``flask run``, for gunicorn and for
``flask ccsso audit tail`` alike), and ``{instance}`` in a SQLite URL stands
for that folder. Every database URL flask-ccsso opens (audit sinks, the
``sqlalchemy`` session store, the ``audit`` commands' ``--url``) goes
through :func:`resolve_database_url`.

:func:`describe_database_error` turns a SQLAlchemy / driver / redis error
into what failed and the fix, without quoting the driver's text (it may
quote the URL, password included); URLs are shown through the one
:func:`~flask_ccsso._validate.mask_url`.

Nothing here imports SQLAlchemy: the CLI loads this module on every
``flask`` invocation.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

from .._validate import mask_url
from ..exceptions import ConfigError, exception_chain

#: stands for the app's instance folder in a SQLite URL (``sqlite:///{instance}/audit.sqlite``)
INSTANCE = "{instance}"

#: ``sqlite[+driver]:///<path>[?query]``; ``sqlite://`` (no path) is an in-memory database
_SQLITE = re.compile(r"^(sqlite(?:\+[A-Za-z0-9_]+)?:///)([^?]*)(\?.*)?$", re.DOTALL)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def _memory(path: str, query: str) -> bool:
    return path in ("", ":memory:") or "mode=memory" in query or path.endswith(":memory:")


def resolve_database_url(url: str, instance_path: str | None, *, key: str = "url") -> str:
    """``url`` with ``{instance}`` replaced and a relative SQLite path made
    absolute under ``instance_path`` (the folder is created, as
    Flask-SQLAlchemy does). Other URLs and in-memory SQLite come back as they
    are.

    ``instance_path`` is ``None`` where no app is known (an ``audit``
    command with ``--url`` and no ``--app``): a URL whose place would then
    depend on the current directory is a :class:`ConfigError` naming ``key``.
    """
    match = _SQLITE.match(url) if is_sqlite(url) else None
    if match is None:
        if INSTANCE in url:
            raise ConfigError(key, f"{mask_url(url)!r}: {INSTANCE} is only understood in a SQLite URL's path.",
                              "write the database's real address, e.g. postgresql+psycopg://user@host/db.")
        return url
    prefix, path, query = match.group(1), match.group(2), match.group(3) or ""
    if _memory(path, query):
        return url
    # sqlite:///file:relative.db?uri=true is SQLite's own URI form: the path follows "file:"
    uri = "uri=true" in query.lower() and path.startswith("file:")
    bare = path[5:] if uri else path
    if INSTANCE not in bare and os.path.isabs(bare):
        return url
    if instance_path is None:
        raise ConfigError(key, f"{mask_url(url)!r} names a SQLite file relative to the app's instance folder, but no app "
                               "was given.",
                          "run the command with the app (flask --app yourapp ccsso ...), or write an absolute "
                          "path: sqlite:////var/lib/yourapp/audit.sqlite.")
    instance_path = os.path.abspath(instance_path)
    os.makedirs(instance_path, exist_ok=True)
    if INSTANCE in bare:
        bare = bare.replace(INSTANCE, instance_path)
    if not os.path.isabs(bare):
        bare = os.path.join(instance_path, bare)
    return f"{prefix}{'file:' if uri else ''}{bare}{query}"


def multi_host_url(url: str) -> str:
    """libpq's multi-host form ``postgresql://u@h1:5432,h2:5432/db?...`` as SQLAlchemy
    reads it: ``postgresql://u@/db?host=h1:5432&host=h2:5432&...`` (psycopg then tries the
    hosts in order; add ``target_session_attrs=read-write`` to skip a standby)."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme.startswith("postgres"):
        return url
    netloc, _, tail = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if "," not in hosts:
        return url
    path, _, query = tail.partition("?")
    extra = "&".join(f"host={h}" for h in hosts.split(",") if h)
    return f"{scheme}://{userinfo}{at}/{path}?{extra}" + (f"&{query}" if query else "")


def sqlite_file(url: str) -> str | None:
    """The file a ``sqlite:///`` URL names (``None``: another database, or in memory)."""
    match = _SQLITE.match(url) if is_sqlite(url) else None
    if match is None:
        return None
    path, query = match.group(2), match.group(3) or ""
    if _memory(path, query):
        return None
    return path[5:] if path.startswith("file:") and "uri=true" in query.lower() else path


# --------------------------------------------------------------------------- what went wrong

def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps (SQLAlchemy's ``orig`` among them)."""
    return exception_chain(exc, links=("orig",), limit=16)


def _where(url: str) -> str:
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return "the server"
    if not host:
        return "the server"
    return f"{host}:{port}" if port else host


def describe_database_error(exc: BaseException, url: str, *, table: str | None = None,
                            missing_table_fix: str = "run `flask ccsso audit init-db` first.") -> tuple[str, str]:
    """``(problem, fix)`` for ``exc`` raised while using the database at ``url``.

    The driver's message is read (lower-cased) to tell the cases apart, never
    repeated: it may quote the connection string.
    """
    chain = list(_chain(exc))
    names = {type(e).__name__ for e in chain}
    text = " ".join(str(e) for e in chain).lower()
    where = _where(url)
    path = sqlite_file(url)

    missing = next((e for e in chain if isinstance(e, ModuleNotFoundError)), None)
    if missing is not None or "ImportError" in names:
        module = getattr(missing, "name", None) or "the driver"
        return (f"the database driver ({module}) is not installed",
                "install it (PostgreSQL: pip install 'flask-ccsso[postgres]') or correct the URL's scheme.")
    if "NoSuchModuleError" in names:
        return ("SQLAlchemy knows no database of this URL's scheme",
                "use e.g. postgresql+psycopg://user:password@host/db or sqlite:////absolute/path.sqlite.")
    if "ArgumentError" in names:
        return ("this is not a usable SQLAlchemy URL",
                "use e.g. postgresql+psycopg://user:password@host/db or sqlite:////absolute/path.sqlite.")
    if "connection refused" in text or any(isinstance(e, ConnectionRefusedError) for e in chain):
        return (f"the connection to {where} was refused",
                "start the server, or correct the host and port in the URL.")
    if (any(isinstance(e, socket.gaierror) for e in chain) or "could not translate host name" in text
            or "name or service not known" in text or "nodename nor servname" in text
            or "failed to resolve host" in text or "temporary failure in name resolution" in text):
        return (f"the host name in the URL ({where}) could not be resolved (DNS)",
                "correct the host name in the URL, or check this machine's DNS.")
    if "timeout expired" in text or "timed out" in text or any(isinstance(e, TimeoutError) for e in chain):
        return (f"{where} did not answer in time (timeout)",
                "check that the database server is up and that no firewall drops the connection.")
    if "authentication failed" in text or "access denied" in text or "AuthenticationError" in names:
        return ("the database refused the user name or password",
                "check the credentials in the URL (set them from ${VAR}).")
    if re.search(r"database \S+ does not exist|unknown database", text):
        return ("the database named in the URL does not exist",
                "create it (e.g. createdb) or correct the database name at the end of the URL.")
    if "no such table" in text or "undefinedtable" in text.replace("_", "") or "UndefinedTable" in names or (
            "relation" in text and "does not exist" in text) or "NoSuchTableError" in names:
        return (f"the table {table!r} does not exist" if table else "a table does not exist", missing_table_fix)
    if "no such column" in text or "UndefinedColumn" in names:
        return (f"the table {table!r} exists but is not an audit table" if table
                else "a table does not have the expected columns",
                "point --table (or the destination's 'table') at the audit table, or use a new name.")
    if "unable to open database file" in text or (path and "OperationalError" in names and "open" in text):
        folder = os.path.dirname(os.path.abspath(path)) if path else ""
        if folder and not os.path.isdir(folder):
            return (f"the SQLite file's folder {folder} does not exist",
                    "create the folder or correct the path (relative paths are under the app's instance folder).")
        return (f"the SQLite file {path} cannot be opened",
                "check the path and that this user may read and write the file and its folder.")
    if "readonly database" in text or "read-only" in text or "permission denied" in text:
        return ("the database refused the write (read-only, or no permission)",
                "give this user write access to the database (for SQLite: the file and its folder).")
    if "database is locked" in text:
        return ("the SQLite file is locked by another process",
                "try again; if it persists, find the process holding the lock.")
    kind = type(next((e for e in reversed(chain) if type(e).__module__.split(".")[0] != "builtins"), exc)).__name__
    return (f"the database operation failed ({kind})",
            "check the URL and that the database server is up; the app's log has the details.")


def database_error_line(exc: BaseException, url: str, *, what: str = "database", table: str | None = None,
                        missing_table_fix: str = "run `flask ccsso audit init-db` first.") -> str:
    """One line for an operator: which database (password masked), what failed, the fix."""
    problem, fix = describe_database_error(exc, url, table=table, missing_table_fix=missing_table_fix)
    return f"{what} {mask_url(url)}: {problem}. Fix: {fix}"


__all__ = ["INSTANCE", "database_error_line", "describe_database_error", "is_sqlite", "multi_host_url",
           "resolve_database_url", "sqlite_file"]
