"""``flask ccsso sessions list|revoke``: operators' view of live sessions.

Session ids are bearer credentials, so they are never printed -- and never
stored: the per-user index holds store handles (a keyed hash of the id, see
:mod:`flask_ccsso.session_keys`). A session is shown by a short fingerprint
(the first 12 hex digits of the SHA-256 of its handle), enough to tell two
sessions of one person apart.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any

import click
from flask.cli import AppGroup

from .exceptions import CCSSOError

sessions = AppGroup("sessions", help="List and revoke signed-in sessions.")


def fingerprint(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()[:12]


def _when(ts: Any) -> str:
    if not isinstance(ts, (int, float)):
        return "-"
    return datetime.fromtimestamp(float(ts), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def session_rows(state: Any, user: str | None = None) -> list[dict[str, Any]]:
    """Live sessions (all, or of one person by email or ``provider:subject``)."""
    from .session import SESSION_KEY, absolute_deadline, idle_deadline

    store = state.store
    if user is None:
        ids = sorted(k[len("user:"):] for k in store.keys("user:"))
    elif "@" in user:
        ids = sorted(store.set_members(f"email:{user.lower()}"))
    else:
        ids = [user]
    s = state.config.session
    rows = []
    for identity_id in ids:
        for sid in sorted(store.set_members(f"user:{identity_id}")):
            record = state.session_interface.read_sid(sid)
            data = record.get(SESSION_KEY) if isinstance(record, dict) else None
            if not isinstance(data, dict) or "identity" not in data or data.get("ended"):
                continue
            ident = data["identity"]
            rows.append({
                "session": fingerprint(sid), "user": identity_id, "email": ident.get("email"),
                "signed_in": _when(data.get("created")), "last_seen": _when(data.get("last_seen")),
                "expires": _when(min(absolute_deadline(data, s), idle_deadline(data, s))),
            })
    return rows


@sessions.command("list")
@click.option("--user", "user", metavar="EMAIL", help="Only this person's sessions (email or provider:subject).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_sessions(user: str | None, as_json: bool) -> None:
    """List live sessions."""
    from .extension import get_state

    try:
        rows = session_rows(get_state(), user)
    except CCSSOError as exc:
        raise click.ClickException(exc.description or "session store error") from None
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
def revoke_sessions(user: str) -> None:
    """End every session of a person on every worker and host (effective on their next request)."""
    from .extension import get_state

    try:
        count = get_state().revoke_user(user, reason="operator")
    except CCSSOError as exc:
        raise click.ClickException(exc.description or "session store error") from None
    click.echo(f"Revoked {count} session{'s' if count != 1 else ''} of {user}.")
