"""``flask ccsso sessions list|revoke``: operators' view of live sessions.

Session ids are bearer credentials, so they are never printed -- and never
stored: the per-user index holds store handles (a keyed hash of the id, see
:mod:`flask_ccsso.sessions.keys`). A session is shown by a short fingerprint
(the first 12 hex digits of the SHA-256 of its handle), enough to tell two
sessions of one person apart.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any

import click

from ..exceptions import CCSSOError
from ..sessions.index import SessionIndex
from ..sessions.interface import absolute_deadline, idle_deadline
from ..state import CCSSOState
from ._common import current_state, error_text, fail, with_app

__all__ = ["fingerprint", "session_rows", "sessions"]


@click.group("sessions")
def sessions() -> None:
    """List and revoke signed-in sessions."""


def fingerprint(sid: str) -> str:
    """A short, non-secret name for a session (12 hex digits of the SHA-256 of its handle)."""
    return hashlib.sha256(sid.encode()).hexdigest()[:12]


def _when(ts: Any) -> str:
    if not isinstance(ts, (int, float)):
        return "-"
    return datetime.fromtimestamp(float(ts), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _index(state: CCSSOState) -> SessionIndex:
    """The app's one session index (every listing and revocation goes through it)."""
    return state.sessions


def session_rows(state: CCSSOState, user: str | None = None, *, limit: int | None = None) -> list[dict[str, Any]]:
    """Live sessions (all, or of one person by email or ``provider:subject``):
    who, through which provider, since when, last activity, from which
    address and browser, and when it ends. ``limit``: stop after that many
    rows (whole people at a time are read, so a person is never half
    listed; at most ``limit`` rows are returned)."""
    s = state.config.session
    index = _index(state)
    rows: list[dict[str, Any]] = []
    for identity_id in index.identity_ids(user):
        if limit is not None and len(rows) >= limit:
            break
        for live in index.sessions_of(identity_id):
            record, client = live.record, live.record.client or {}
            rows.append({
                "session": fingerprint(live.handle), "user": live.identity_id,
                "email": record.identity.get("email"), "provider": record.provider,
                "signed_in": _when(record.created), "last_seen": _when(record.last_seen),
                "expires": _when(min(absolute_deadline(record, s), idle_deadline(record, s))),
                "ip": client.get("ip"), "user_agent": client.get("ua"),
            })
    return rows[:limit] if limit is not None else rows


@sessions.command("list")
@click.option("--user", "user", metavar="EMAIL", help="Only this person's sessions (email or provider:subject).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@with_app
def list_sessions(user: str | None, as_json: bool) -> None:
    """List live sessions."""
    try:
        rows = session_rows(current_state(), user)
    except CCSSOError as exc:
        fail(error_text(exc))
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    if not rows:
        click.echo("No live sessions.")
        return
    click.echo(f"{'SESSION':<13} {'USER':<32} {'SIGNED IN':<21} {'LAST SEEN':<21} EXPIRES")
    for r in rows:
        who = r["email"] or r["user"]
        click.echo(f"{r['session']:<13} {who:<32} {r['signed_in']:<21} {r['last_seen']:<21} {r['expires']}")


@sessions.command("revoke")
@click.option("--user", "user", metavar="EMAIL", required=True,
              help="Email (every provider) or provider:subject whose sessions to end.")
@with_app
def revoke_sessions(user: str) -> None:
    """End every session of a person on every worker and host (effective on their next request).

    Exit status: 0 sessions ended, 1 no live session matched (a mistyped
    email, or nobody signed in as that person), 2 error.
    """
    try:
        count = _index(current_state()).revoke_user(user, reason="operator")
    except CCSSOError as exc:
        fail(error_text(exc))
    if not count:
        # an off-boarding script must not read "nothing matched" as "done"
        fail(f"sessions revoke: no live session of {user}; nothing was revoked. Check the email (or use "
             "provider:subject); 'flask ccsso sessions list' shows who is signed in.", code=1)
    click.echo(f"Revoked {count} session{'s' if count != 1 else ''} of {user}.")
