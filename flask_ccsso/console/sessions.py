"""The console's sessions section: who is signed in, and ending sessions.

What it shows is :func:`~flask_ccsso.cli.sessions.session_rows` -- the rows
``flask ccsso sessions list`` prints -- and what it does goes through the one
session index (:attr:`~flask_ccsso.state.CCSSOState.sessions`), like every
other way sessions end, so a revocation holds on every worker and host.

A session is named by its fingerprint (:func:`~flask_ccsso.cli.sessions.fingerprint`:
12 hex digits of the SHA-256 of its store handle) and its person, in URLs and
forms alike. The fingerprint is mapped back to the session by listing that
person's sessions: neither a cookie session id nor a store handle ever
reaches a page.

Each action is a GET confirmation page that changes nothing and says exactly
what will happen, then a POST carrying the CSRF token (the console's guard
checks it), then ``console.action`` with the operator as actor, then a
redirect back to the list, which shows a notice of what was ended. The notice
travels in the operator's server-side session and is read once: a link can
carry no "Ended 3 sessions" of its own.

"Every session of this person" on a row names that one identity
(``provider:subject``): an email is only a claim, and any provider's user can
claim anyone's. Ending every identity that carries an email is the filter's
own action, and its confirmation page lists each identity and provider; the
post ends exactly those (the ones that still carry the email), never one that
appeared after the operator looked.

Listing walks the store's index of people (``SCAN`` on Redis) and reads each
session: an operator's page, capped at :data:`MAX_ROWS` sessions, never
something a request path should do.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, redirect, request, session, url_for
from werkzeug.wrappers import Response

from ..cli.sessions import fingerprint, session_rows
from ..sessions.index import LiveSession, names_email
from ..sessions.interface import SESSION_NAMESPACE, current_session
from ..state import get_state
from . import page, record_action

#: the most sessions the list shows (a filter by person narrows it)
MAX_ROWS = 500
#: the longest person filter accepted (an email is at most 254 characters)
MAX_PERSON = 320
_FINGERPRINT = re.compile(r"[0-9a-f]{12}")
#: where the notice of the last action waits for the list (read once)
NOTICE_KEY = "_ccsso_console_notice"


def person_arg(source: Any) -> str:
    """The person a request names (``user``: email or ``provider:subject``),
    one line, bounded; ``""`` when none."""
    value = source.get("user", "")
    text = value.strip() if isinstance(value, str) else ""
    return "" if len(text) > MAX_PERSON or any(ord(c) < 32 or ord(c) == 127 for c in text) else text


def own_fingerprint() -> str | None:
    """The fingerprint of the operator's own session (to warn before ending it)."""
    sess = current_session()
    if not sess.sid:
        return None
    key = sess.store_key or get_state().sessions.sessions.store_key(sess.sid)
    return fingerprint(key[len(SESSION_NAMESPACE):])


def find_session(identity_id: str, print_: str) -> LiveSession | None:
    """The live session of ``identity_id`` whose fingerprint is ``print_``."""
    if not identity_id or names_email(identity_id) or not _FINGERPRINT.fullmatch(print_):
        return None
    for live in get_state().sessions.sessions_of(identity_id):
        if fingerprint(live.handle) == print_:
            return live
    return None


def _row(live: LiveSession) -> dict[str, Any]:
    """The list's row of one session (the same fields)."""
    found = [r for r in session_rows(get_state(), live.identity_id) if r["session"] == fingerprint(live.handle)]
    return found[0] if found else {"session": fingerprint(live.handle), "user": live.identity_id}


def _not_found(message: str) -> tuple[str, int]:
    return page("not_found.html", title="Not found", message=message,
                back=url_for("ccsso_console.sessions")), 404


def _back(user: str, count: int, of: str) -> Response:
    """Back to the list (filtered by ``user``), leaving the notice of what was
    ended in the operator's session: ``count`` sessions of ``of``."""
    session[NOTICE_KEY] = (f"Ended {count} session{'s' if count != 1 else ''} of {of}." if count
                           else "No live session was left to end: it had already ended.")
    return redirect(url_for("ccsso_console.sessions", user=user or None), code=303)


def take_notice() -> str | None:
    """The notice :func:`_back` left, removed as it is read (flash-style)."""
    if NOTICE_KEY not in session:
        return None
    notice = session.pop(NOTICE_KEY, None)
    return notice if isinstance(notice, str) else None


def _identities(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each identity (``provider:subject``) of ``rows``: its email, provider
    and how many of the rows are its sessions, in order of id."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        entry = out.setdefault(r["user"], {"user": r["user"], "email": r["email"], "provider": r["provider"],
                                           "sessions": 0})
        entry["sessions"] += 1
    return [out[k] for k in sorted(out)]


def _by_activity(row: dict[str, Any]) -> str:
    return str(row["last_seen"] if row["last_seen"] != "-" else row["signed_in"])


def register(bp: Blueprint) -> None:
    """Add this section's routes to the console blueprint."""

    @bp.get("/sessions", endpoint="sessions")
    def sessions_page() -> str | tuple[str, int]:
        user = person_arg(request.args)
        if not user and request.args.get("user", "").strip():
            return page("not_found.html", title="Not a person", message="That is not an email or provider:subject "
                        f"(one line, at most {MAX_PERSON} characters).", back=url_for("ccsso_console.sessions")), 400
        # capped on reading (each row is a store read): sorting every live session first would read them all
        rows = session_rows(get_state(), user or None, limit=MAX_ROWS + 1)
        capped = len(rows) > MAX_ROWS
        rows = sorted(rows[:MAX_ROWS], key=_by_activity, reverse=True)
        return page("sessions.html", title="Sessions", rows=rows, user=user, capped=capped, max_rows=MAX_ROWS,
                    mine=own_fingerprint(), notice=take_notice(), by_email=bool(user) and names_email(user))

    @bp.get("/sessions/revoke", endpoint="confirm_revoke_session")
    def confirm_revoke_session() -> str | tuple[str, int]:
        user, print_ = person_arg(request.args), request.args.get("session", "")
        live = find_session(user, print_)
        if live is None:
            return _not_found("No live session with that fingerprint: it may have ended already.")
        return page("session_confirm.html", title="End one session", action="revoke_session",
                    user=user, session=print_, rows=[_row(live)], own=print_ == own_fingerprint(),
                    form_action=url_for("ccsso_console.revoke_session"))

    @bp.post("/sessions/revoke")
    def revoke_session() -> Response | tuple[str, int]:
        user, print_ = person_arg(request.form), request.form.get("session", "")
        live = find_session(user, print_)
        if live is None:
            return _not_found("No live session with that fingerprint: it may have ended already.")
        index = get_state().sessions
        count = index.revoke_sids([live.handle])
        try:
            index.forget_session(live.record.person(), live.handle)
        except (KeyError, TypeError, ValueError):
            pass  # a damaged identity: the index entry names a tombstone, which listing skips
        record_action("revoke_session", f"{user} session {print_}", count)
        return _back(user, count, user)

    @bp.get("/sessions/revoke-all", endpoint="confirm_revoke_user")
    def confirm_revoke_user() -> str | tuple[str, int]:
        user = person_arg(request.args)
        rows = session_rows(get_state(), user, limit=MAX_ROWS) if user else []
        if not rows:
            return _not_found(f"No live session of {user or 'that person'}: nothing to end.")
        mine = own_fingerprint()
        by_email = names_email(user)
        return page("session_confirm.html", title="End every session of " + ("an email" if by_email else "a person"),
                    action="revoke_user", user=user, session=None, rows=rows, by_email=by_email,
                    identities=_identities(rows), own=any(r["session"] == mine for r in rows),
                    form_action=url_for("ccsso_console.revoke_user"))

    @bp.post("/sessions/revoke-all")
    def revoke_user() -> Response | tuple[str, int]:
        user = person_arg(request.form)
        if not user:
            return _not_found("No person was named: nothing to end.")
        index = get_state().sessions
        if not names_email(user):
            count = index.revoke_identity(user, reason="operator")
            record_action("revoke_user", user, count)
            return _back(user, count, user)
        # by email: exactly the identities the confirmation page listed, if they still carry it
        confirmed = set(request.form.getlist("identity")) & set(index.identity_ids(user))
        if not confirmed:
            return _not_found(f"None of the identities confirmed still carries {user}: nothing to end.")
        count = sum(index.revoke_identity(i, reason="operator") for i in sorted(confirmed))
        record_action("revoke_user", f"{user} ({', '.join(sorted(confirmed))})", count)
        return _back(user, count, f"{user} ({', '.join(sorted(confirmed))})")
