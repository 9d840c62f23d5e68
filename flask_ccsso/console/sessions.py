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
redirect back to the list with a notice.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, redirect, request, url_for
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


def _back(user: str, **notice: Any) -> Response:
    return redirect(url_for("ccsso_console.sessions", user=user or None, **notice), code=303)


def register(bp: Blueprint) -> None:
    """Add this section's routes to the console blueprint."""

    @bp.get("/sessions", endpoint="sessions")
    def sessions_page() -> str | tuple[str, int]:
        user = person_arg(request.args)
        if not user and request.args.get("user", "").strip():
            return page("not_found.html", title="Not a person", message="That is not an email or provider:subject "
                        f"(one line, at most {MAX_PERSON} characters).", back=url_for("ccsso_console.sessions")), 400
        rows = session_rows(get_state(), user or None, limit=MAX_ROWS + 1)
        capped = len(rows) > MAX_ROWS
        rows = sorted(rows[:MAX_ROWS], key=lambda r: r["last_seen"] if r["last_seen"] != "-" else r["signed_in"],
                      reverse=True)
        notice = None
        if "revoked" in request.args:
            count = request.args.get("revoked", type=int) or 0
            notice = (f"Ended {count} session{'s' if count != 1 else ''}" + (f" of {user}." if user else ".")
                      if count else "No live session was left to end: it had already ended.")
        return page("sessions.html", title="Sessions", rows=rows, user=user, capped=capped, max_rows=MAX_ROWS,
                    mine=own_fingerprint(), notice=notice)

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
        return _back(user, revoked=count)

    @bp.get("/sessions/revoke-all", endpoint="confirm_revoke_user")
    def confirm_revoke_user() -> str | tuple[str, int]:
        user = person_arg(request.args)
        rows = session_rows(get_state(), user, limit=MAX_ROWS) if user else []
        if not rows:
            return _not_found(f"No live session of {user or 'that person'}: nothing to end.")
        mine = own_fingerprint()
        return page("session_confirm.html", title="End every session of a person", action="revoke_user",
                    user=user, session=None, rows=rows, own=any(r["session"] == mine for r in rows),
                    form_action=url_for("ccsso_console.revoke_user"))

    @bp.post("/sessions/revoke-all")
    def revoke_user() -> Response | tuple[str, int]:
        user = person_arg(request.form)
        if not user:
            return _not_found("No person was named: nothing to end.")
        count = get_state().sessions.revoke_user(user, reason="operator")
        record_action("revoke_user", user, count)
        return _back(user, revoked=count)
