"""Shared state of the development IdP in one small SQLite file.

Authorization codes, refresh tokens, access-token records and sign-in sessions
must be visible to every process serving the IdP (``gunicorn -w 4``), so they
live in SQLite (stdlib, WAL mode) rather than in memory. Each call opens its
own short connection; writes that must be atomic ("use this code once",
"rotate this refresh token once") are single ``UPDATE ... WHERE used = 0``
statements whose row count says who won.

Codes and refresh tokens are stored as SHA-256 digests: a copy of the file
does not hand out working credentials.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    sid TEXT PRIMARY KEY, username TEXT NOT NULL, auth_time INTEGER NOT NULL,
    acr TEXT NOT NULL, amr TEXT NOT NULL, expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS codes (
    code_hash TEXT PRIMARY KEY, client_id TEXT NOT NULL, redirect_uri TEXT, scope TEXT NOT NULL,
    username TEXT NOT NULL, nonce TEXT, code_challenge TEXT, code_challenge_method TEXT,
    auth_time INTEGER NOT NULL, acr TEXT NOT NULL, amr TEXT NOT NULL, sid TEXT NOT NULL,
    expires_at INTEGER NOT NULL, used INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS codes_nonce ON codes (client_id, nonce);
CREATE TABLE IF NOT EXISTS tokens (
    jti TEXT PRIMARY KEY, refresh_hash TEXT UNIQUE, family TEXT NOT NULL, origin_code TEXT,
    client_id TEXT NOT NULL, username TEXT NOT NULL, scope TEXT NOT NULL,
    auth_time INTEGER NOT NULL, acr TEXT NOT NULL, amr TEXT NOT NULL, sid TEXT NOT NULL,
    issued_at INTEGER NOT NULL, access_expires_at INTEGER NOT NULL, refresh_expires_at INTEGER,
    access_revoked INTEGER NOT NULL DEFAULT 0, refresh_revoked INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS tokens_family ON tokens (family);
CREATE INDEX IF NOT EXISTS tokens_sid ON tokens (sid);
"""


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass
class AuthContext:
    """How and when a person signed in; travels from session to code to token."""

    username: str
    auth_time: int
    acr: str
    amr: list[str]
    sid: str


@dataclass
class CodeRecord:
    """An authorization code row (Authlib's ``AuthorizationCodeMixin``)."""

    client_id: str
    redirect_uri: str | None
    scope: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    context: AuthContext
    code_hash: str

    def get_redirect_uri(self) -> str | None:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.context.auth_time

    def get_acr(self) -> str:
        return self.context.acr

    def get_amr(self) -> list[str]:
        return self.context.amr


@dataclass
class TokenRecord:
    """One issued token pair (Authlib's ``TokenMixin``).

    ``kind`` says which half the caller presented, so ``is_expired`` and
    ``is_revoked`` answer for that half.
    """

    jti: str
    family: str
    client_id: str
    scope: str
    context: AuthContext
    issued_at: int
    access_expires_at: int
    refresh_expires_at: int | None
    access_revoked: bool
    refresh_revoked: bool
    now: int
    kind: str = "access_token"

    def check_client(self, client: Any) -> bool:
        return bool(self.client_id == client.get_client_id())

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.access_expires_at - self.issued_at

    def is_expired(self) -> bool:
        if self.kind == "refresh_token":
            return self.refresh_expires_at is not None and self.refresh_expires_at <= self.now
        return self.access_expires_at <= self.now

    def is_revoked(self) -> bool:
        return self.refresh_revoked if self.kind == "refresh_token" else self.access_revoked


class DevStore:
    """All persistent state of one development IdP."""

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
        try:
            os.chmod(path, 0o600)
        except OSError:  # pragma: no cover - e.g. a file owned by someone else
            pass

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            yield db
        finally:
            db.close()

    # -- meta -----------------------------------------------------------------
    def secret(self, name: str) -> str:
        """A random secret generated once and shared by every process."""
        with self._connect() as db:
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (name, secrets.token_urlsafe(32)))
            row = db.execute("SELECT value FROM meta WHERE key = ?", (name,)).fetchone()
        return str(row["value"])

    # -- sign-in sessions -----------------------------------------------------
    def create_session(self, username: str, auth_time: int, acr: str, amr: list[str], expires_at: int) -> str:
        sid = secrets.token_urlsafe(24)
        with self._connect() as db:
            db.execute(
                "INSERT INTO sessions (sid, username, auth_time, acr, amr, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                (sid, username, auth_time, acr, json.dumps(amr), expires_at),
            )
        return sid

    def get_session(self, sid: str, now: int) -> AuthContext | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM sessions WHERE sid = ? AND expires_at > ?", (sid, now)).fetchone()
        if row is None:
            return None
        return AuthContext(row["username"], row["auth_time"], row["acr"], json.loads(row["amr"]), row["sid"])

    def delete_session(self, sid: str) -> bool:
        with self._connect() as db:
            return db.execute("DELETE FROM sessions WHERE sid = ?", (sid,)).rowcount > 0

    def clients_of_session(self, sid: str) -> list[tuple[str, str]]:
        """(client_id, username) pairs that received tokens in this session."""
        with self._connect() as db:
            rows = db.execute("SELECT DISTINCT client_id, username FROM tokens WHERE sid = ?", (sid,)).fetchall()
        return [(r["client_id"], r["username"]) for r in rows]

    # -- authorization codes --------------------------------------------------
    def save_code(
        self,
        code: str,
        *,
        client_id: str,
        redirect_uri: str | None,
        scope: str,
        nonce: str | None,
        code_challenge: str | None,
        code_challenge_method: str | None,
        context: AuthContext,
        expires_at: int,
    ) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT INTO codes (code_hash, client_id, redirect_uri, scope, username, nonce, code_challenge,"
                " code_challenge_method, auth_time, acr, amr, sid, expires_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    digest(code),
                    client_id,
                    redirect_uri,
                    scope,
                    context.username,
                    nonce,
                    code_challenge,
                    code_challenge_method,
                    context.auth_time,
                    context.acr,
                    json.dumps(context.amr),
                    context.sid,
                    expires_at,
                ),
            )

    def consume_code(self, code: str, client_id: str, now: int) -> CodeRecord | None:
        """Mark the code used and return it, or ``None`` if it is unknown, expired,
        issued to another client or already used.

        RFC 6749 §4.1.2: "If an authorization code is used more than once, the
        authorization server MUST deny the request and SHOULD revoke (when
        possible) all tokens previously issued based on that authorization code."
        The second attempt therefore also revokes what the first one obtained.
        """
        code_hash = digest(code)
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT * FROM codes WHERE code_hash = ? AND client_id = ?", (code_hash, client_id)
                ).fetchone()
                if row is None:
                    db.execute("COMMIT")
                    return None
                if row["used"]:
                    db.execute(
                        "UPDATE tokens SET access_revoked = 1, refresh_revoked = 1 WHERE origin_code = ?",
                        (code_hash,),
                    )
                    db.execute("COMMIT")
                    return None
                db.execute("UPDATE codes SET used = 1 WHERE code_hash = ?", (code_hash,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        if row["expires_at"] <= now:
            return None
        context = AuthContext(row["username"], row["auth_time"], row["acr"], json.loads(row["amr"]), row["sid"])
        return CodeRecord(
            client_id=row["client_id"],
            redirect_uri=row["redirect_uri"],
            scope=row["scope"],
            nonce=row["nonce"],
            code_challenge=row["code_challenge"],
            code_challenge_method=row["code_challenge_method"],
            context=context,
            code_hash=code_hash,
        )

    def nonce_used(self, client_id: str, nonce: str) -> bool:
        with self._connect() as db:
            row = db.execute("SELECT 1 FROM codes WHERE client_id = ? AND nonce = ?", (client_id, nonce)).fetchone()
        return row is not None

    def purge(self, now: int) -> None:
        """Forget codes, sessions and token records well past their expiry."""
        horizon = now - 86400
        with self._connect() as db:
            db.execute("DELETE FROM codes WHERE expires_at < ?", (horizon,))
            db.execute("DELETE FROM sessions WHERE expires_at < ?", (horizon,))
            db.execute(
                "DELETE FROM tokens WHERE access_expires_at < ? AND (refresh_expires_at IS NULL OR refresh_expires_at < ?)",
                (horizon, horizon),
            )

    # -- tokens ---------------------------------------------------------------
    def save_token(
        self,
        *,
        jti: str,
        refresh_token: str | None,
        family: str,
        origin_code: str | None,
        client_id: str,
        scope: str,
        context: AuthContext,
        issued_at: int,
        access_expires_at: int,
        refresh_expires_at: int | None,
    ) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT INTO tokens (jti, refresh_hash, family, origin_code, client_id, username, scope, auth_time,"
                " acr, amr, sid, issued_at, access_expires_at, refresh_expires_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    jti,
                    digest(refresh_token) if refresh_token else None,
                    family,
                    origin_code,
                    client_id,
                    context.username,
                    scope,
                    context.auth_time,
                    context.acr,
                    json.dumps(context.amr),
                    context.sid,
                    issued_at,
                    access_expires_at,
                    refresh_expires_at,
                ),
            )

    def _token(self, row: sqlite3.Row | None, now: int, kind: str) -> TokenRecord | None:
        if row is None:
            return None
        context = AuthContext(row["username"], row["auth_time"], row["acr"], json.loads(row["amr"]), row["sid"])
        return TokenRecord(
            jti=row["jti"],
            family=row["family"],
            client_id=row["client_id"],
            scope=row["scope"],
            context=context,
            issued_at=row["issued_at"],
            access_expires_at=row["access_expires_at"],
            refresh_expires_at=row["refresh_expires_at"],
            access_revoked=bool(row["access_revoked"]),
            refresh_revoked=bool(row["refresh_revoked"]),
            now=now,
            kind=kind,
        )

    def token_by_jti(self, jti: str, now: int) -> TokenRecord | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM tokens WHERE jti = ?", (jti,)).fetchone()
        return self._token(row, now, "access_token")

    def token_by_refresh(self, refresh_token: str, now: int) -> TokenRecord | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM tokens WHERE refresh_hash = ?", (digest(refresh_token),)).fetchone()
        return self._token(row, now, "refresh_token")

    def rotate_refresh(self, refresh_token: str, client_id: str, now: int) -> TokenRecord | None:
        """Atomically retire a refresh token and return its record.

        A refresh token presented after it was already rotated is a sign that it
        leaked (RFC 9700 §4.14.2): the whole family of tokens descending from the
        same sign-in is revoked and ``None`` returned.
        """
        refresh_hash = digest(refresh_token)
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT * FROM tokens WHERE refresh_hash = ? AND client_id = ?", (refresh_hash, client_id)
                ).fetchone()
                if row is None:
                    db.execute("COMMIT")
                    return None
                if row["refresh_revoked"]:
                    db.execute(
                        "UPDATE tokens SET access_revoked = 1, refresh_revoked = 1 WHERE family = ?", (row["family"],)
                    )
                    db.execute("COMMIT")
                    return None
                if row["refresh_expires_at"] is not None and row["refresh_expires_at"] <= now:
                    db.execute("COMMIT")
                    return None
                db.execute("UPDATE tokens SET refresh_revoked = 1 WHERE refresh_hash = ?", (refresh_hash,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return self._token(row, now, "refresh_token")

    def revoke(self, record: TokenRecord) -> None:
        """RFC 7009 §2.1: revoking a refresh token also revokes the access tokens
        of the same grant; revoking an access token leaves the refresh token."""
        with self._connect() as db:
            if record.kind == "refresh_token":
                db.execute(
                    "UPDATE tokens SET access_revoked = 1, refresh_revoked = 1 WHERE family = ?", (record.family,)
                )
            else:
                db.execute("UPDATE tokens SET access_revoked = 1 WHERE jti = ?", (record.jti,))
