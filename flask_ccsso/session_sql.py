"""``session.store.type = "sqlalchemy"``: Flask-Session's SQLAlchemy backend,
kept apart from the application's own database code.

Flask-Session's :class:`~flask_session.sqlalchemy.SqlAlchemySessionInterface`
wants a Flask-SQLAlchemy instance registered on *an* app, and Flask-SQLAlchemy
allows one instance per app -- so borrowing the application's would clash with
``db.init_app(app)`` (whichever runs second fails) and would put the session
table into the app's metadata (``db.create_all()``, Alembic autogenerate).

Instead flask-ccsso gives the session table its own Flask-SQLAlchemy
instance, bound to a small private Flask app under its own bind key
(``ccsso_sessions``); every session query runs in that app's context. The
application's ``db``, its metadata and its migrations never see the table.
PostgreSQL (psycopg 3) and SQLite work; the URL is ``session.store.url``.

SQL has no TTL: expired rows are ignored on read (Flask-Session deletes them
then) and swept every few hundred writes, so no cron job is needed.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from flask import Flask

if TYPE_CHECKING:
    from flask_session.base import ServerSideSession

    from .config import SessionSettings

#: the Flask-SQLAlchemy bind key of the session table
BIND_KEY = "ccsso_sessions"
#: sweep expired rows once every this many writes (per process)
SWEEP_EVERY = 500


def table_name(key_prefix: str) -> str:
    """``ccsso:`` -> ``ccsso_sessions`` (letters, digits and ``_`` only)."""
    base = re.sub(r"[^A-Za-z0-9_]+", "_", key_prefix).strip("_") or "ccsso"
    return f"{base}_sessions"[:63]


def engine_options(url: str) -> dict[str, Any]:
    opts: dict[str, Any] = {"url": url, "pool_pre_ping": True}
    if url.startswith("sqlite"):
        opts["connect_args"] = {"timeout": 15, "check_same_thread": False}
    elif url.startswith("postgresql"):
        opts["connect_args"] = {"connect_timeout": 3}
    return opts



def _utcnow_naive() -> datetime:
    """UTC without tzinfo: Flask-Session's expiry column stores naive UTC."""
    return datetime.now(timezone.utc).replace(tzinfo=None)

class _SQLContextMixin:
    """Runs each Flask-Session query in the private app's context, without
    Flask-Session's retry-with-sleep (a down database answers 503 at once;
    ``pool_pre_ping`` already replaces dead pooled connections)."""

    ccsso_app: Flask
    _writes: int = 0

    def _retrieve_session_data(self, store_id: str) -> dict[str, Any] | None:
        from flask_session.sqlalchemy import SqlAlchemySessionInterface as S

        with self.ccsso_app.app_context():
            return S._retrieve_session_data.__wrapped__(self, store_id)  # type: ignore[attr-defined, no-any-return]

    def _delete_session(self, store_id: str) -> None:
        from flask_session.sqlalchemy import SqlAlchemySessionInterface as S

        with self.ccsso_app.app_context():
            S._delete_session.__wrapped__(self, store_id)  # type: ignore[attr-defined]

    def _upsert_session(self, session_lifetime: timedelta, session: ServerSideSession, store_id: str) -> None:
        from flask_session.sqlalchemy import SqlAlchemySessionInterface as S

        with self.ccsso_app.app_context():
            S._upsert_session.__wrapped__(self, session_lifetime, session, store_id)  # type: ignore[attr-defined]
            self._writes += 1
            if self._writes % SWEEP_EVERY == 0:
                S._delete_expired_sessions.__wrapped__(self)  # type: ignore[attr-defined]

    def close(self) -> None:
        """Dispose of the session engine's pool (tests, shutdown hooks)."""
        with self.ccsso_app.app_context():
            for engine in self.client.engines.values():  # type: ignore[attr-defined]
                engine.dispose()

    def purge_expired(self) -> None:
        """Delete expired rows now (``flask ccsso sessions purge``)."""
        from flask_session.sqlalchemy import SqlAlchemySessionInterface as S

        with self.ccsso_app.app_context():
            S._delete_expired_sessions.__wrapped__(self)  # type: ignore[attr-defined]


class _SQLGuardMixin:
    """The reconcile-and-write of a signed-in session as one transaction that
    holds the row's write lock (PostgreSQL: the row lock; SQLite: the database
    write lock) from the read to the commit. A revocation (tombstone) or a
    sign-out another worker writes meanwhile waits for it, then wins; it can
    never land between our read and our write and be overwritten."""

    ccsso_app: Flask

    def _guarded_upsert(self, session: ServerSideSession, store_id: str) -> bool:

        from sqlalchemy import update

        from .session import reconcile

        model = self.sql_session_model  # type: ignore[attr-defined]
        with self.ccsso_app.app_context():
            dbs = self.client.session  # type: ignore[attr-defined]
            try:
                # a no-op UPDATE takes the write lock before we read
                dbs.execute(update(model).where(model.session_id == store_id).values(session_id=model.session_id))
                record = dbs.query(model).filter_by(session_id=store_id).populate_existing().first()
                stored = None
                if record is not None and record.expiry is not None and record.expiry > _utcnow_naive():
                    stored = self._decode_stored(store_id, record.data)  # type: ignore[attr-defined]
                if not reconcile(session, stored):
                    dbs.rollback()
                    return False
                expiry = _utcnow_naive() + timedelta(seconds=self._ttl_for(session))  # type: ignore[attr-defined]
                data = self._encode_sealed(session, store_id)  # type: ignore[attr-defined]
                if record is not None:
                    record.data = data
                    record.expiry = expiry
                else:
                    dbs.add(model(session_id=store_id, data=data, expiry=expiry))
                dbs.commit()
                return True
            except Exception:
                dbs.rollback()
                raise


def make_sqlalchemy_interface(app: Flask, settings: SessionSettings, mixin: type, common: dict[str, Any]) -> Any:
    """Build the SQLAlchemy session interface for ``app`` (see the module doc)."""
    from flask_session.sqlalchemy import SqlAlchemySessionInterface
    from flask_sqlalchemy import SQLAlchemy

    store = settings.store
    url = store.url or ""
    private = Flask(f"{app.import_name}.ccsso_sessions", root_path=app.root_path)
    private.config.update(SQLALCHEMY_BINDS={BIND_KEY: engine_options(url)}, SQLALCHEMY_TRACK_MODIFICATIONS=False)
    db = SQLAlchemy(private)
    cls = type("CCSSOSQLSessionInterface", (_SQLGuardMixin, mixin, _SQLContextMixin, SqlAlchemySessionInterface), {})
    # Flask-Session's own cleanup (a before_request hook or a CLI command)
    # lands on the private app, which serves no requests: _SQLContextMixin
    # sweeps on writes instead
    iface = cls(private, client=db, table=table_name(store.key_prefix), bind_key=BIND_KEY,
                cleanup_n_requests=0, **common)
    iface.ccsso_app = private
    iface.app = app
    return iface
