"""The session record: what flask-ccsso keeps of a signed-in browser.

It lives in the server-side session under :data:`SESSION_KEY` as a JSON
object of schema version :data:`SCHEMA_VERSION`::

    {"v": 1, "rev": 0, "identity": {...}, "tokens": {...} | null,
     "logout": {...}, "created": <epoch s>, "last_seen": <epoch s>,
     "client": {"ip": ..., "ua": ...}}

(``client``, the browser that signed in, is optional: records written
before it existed load without it, see :func:`client_of`)

or, once revoked or ended by a failed refresh, as a *tombstone*
``{"ended": <reason>, "identity": {...}}`` that tells the browser's next
request why it was signed out.

Every reader goes through :func:`load` and gets a typed value back
(:class:`SessionRecord`, :class:`Ended` or ``None``). A record of another
shape or schema version (an upgrade, a rollback, a hand-edited store) raises
:class:`InvalidRecord`: it signs the browser out, never turns a request into
a 500.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from ..identity import Identity, identity_from_stored

#: key of flask-ccsso's record inside the session
SESSION_KEY = "_ccsso"
#: per-browser value binding pending OIDC sign-ins to this browser
BINDING_KEY = "_ccsso_bind"
#: the session record's schema version (``"v"``)
SCHEMA_VERSION = 1
#: the most of a browser's ``User-Agent`` a record keeps (enough to tell browsers apart)
MAX_USER_AGENT = 200
#: the longest client address kept (an IPv6 address with a zone id fits)
MAX_ADDRESS = 64
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


class InvalidRecord(ValueError):
    """A record of another shape or schema version."""


def finite(value: object) -> bool:
    """A JSON number that is a real, finite number (not a bool, NaN or inf)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _clean(value: object, limit: int) -> str | None:
    """One line of printable text, at most ``limit`` characters (``None`` when nothing is left)."""
    if not isinstance(value, str):
        return None
    text = _CONTROL.sub(" ", value).strip()[:limit].strip()
    return text or None


def client_of(address: object, user_agent: object) -> dict[str, str] | None:
    """The ``client`` block of a record: the address (``request.remote_addr``,
    after ``ProxyFix``) and ``User-Agent`` a browser signed in from, so an
    operator can tell its sessions apart. Both are what the browser or its
    network sent -- shown, never trusted -- so they are cut to a bounded
    length and control characters are dropped; ``None`` when neither is known."""
    block = {name: text for name, value, limit in (("ip", address, MAX_ADDRESS), ("ua", user_agent, MAX_USER_AGENT))
             if (text := _clean(value, limit)) is not None}
    return block or None


def revision(block: Mapping[str, Any]) -> int:
    """The record's ``rev`` (0 when missing or not an integer): how many
    refreshes wrote new tokens into it."""
    rev = block.get("rev", 0)
    return rev if isinstance(rev, int) and not isinstance(rev, bool) else 0


@dataclass(frozen=True)
class Ended:
    """A tombstone: the session was ended (``reason``) on another request or worker."""

    reason: str
    identity: Identity | None = None


@dataclass(frozen=True)
class SessionRecord:
    """A signed-in session (schema version 1)."""

    identity: dict[str, Any]
    created: float
    last_seen: float | None = None
    rev: int = 0
    tokens: dict[str, Any] | None = None
    logout: dict[str, Any] = field(default_factory=dict)
    #: the browser that signed in (:func:`client_of`); ``None`` in records written before it was kept
    client: dict[str, str] | None = None

    def person(self) -> Identity:
        """The signed-in :class:`~flask_ccsso.identity.Identity` (raises
        ``KeyError``/``TypeError``/``ValueError`` on a damaged identity)."""
        return identity_from_stored(self.identity)

    @property
    def provider(self) -> str | None:
        value = self.identity.get("provider")
        return value if isinstance(value, str) else None

    @property
    def auth_time(self) -> float | None:
        value = self.identity.get("auth_time")
        return float(value) if isinstance(value, (int, float)) and finite(value) else None

    @property
    def active_at(self) -> float:
        """The last *recorded* activity (sign-in if none was recorded yet)."""
        return self.last_seen if self.last_seen is not None else self.created

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"v": SCHEMA_VERSION, "rev": self.rev, "identity": self.identity,
                               "tokens": self.tokens, "logout": self.logout, "created": self.created}
        if self.last_seen is not None:
            out["last_seen"] = self.last_seen
        if self.client:
            out["client"] = self.client
        return out

    def put(self, session: MutableMapping[str, Any]) -> None:
        """Store this record in ``session`` (marks it modified)."""
        session[SESSION_KEY] = self.to_json()


def _parse_record(block: Mapping[str, Any]) -> SessionRecord:
    if block.get("v", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise InvalidRecord("schema version")
    identity, created, last_seen = block.get("identity"), block.get("created"), block.get("last_seen")
    if not isinstance(identity, dict) or not isinstance(created, (int, float)) or not finite(created):
        raise InvalidRecord("identity or created")
    if last_seen is not None and not (isinstance(last_seen, (int, float)) and finite(last_seen)) \
            or "last_seen" in block and last_seen is None:
        raise InvalidRecord("last_seen")
    rev = block.get("rev", 0)
    if not isinstance(rev, int) or isinstance(rev, bool):
        raise InvalidRecord("rev")
    tokens, logout = block.get("tokens"), block.get("logout")
    if tokens is not None and not isinstance(tokens, dict):
        raise InvalidRecord("tokens")
    return SessionRecord(identity=identity, created=float(created), rev=rev, tokens=tokens,
                         last_seen=float(last_seen) if last_seen is not None else None,
                         logout=logout if isinstance(logout, dict) else {},
                         client=_stored_client(block.get("client")))


def _stored_client(block: object) -> dict[str, str] | None:
    """The ``client`` block as stored (cleaned when written by :func:`client_of`):
    informative only, so an odd one is dropped, never signs anyone out. Every
    request reads the record, so this only checks types and bounds."""
    if not isinstance(block, dict):
        return None
    out = {name: value[:limit] for name, limit in (("ip", MAX_ADDRESS), ("ua", MAX_USER_AGENT))
           if isinstance(value := block.get(name), str)}
    return out or None


def _ended(block: Mapping[str, Any]) -> Ended:
    ident = block.get("identity")
    try:
        identity = Identity.from_dict(ident) if isinstance(ident, dict) else None
    except (KeyError, TypeError, ValueError):
        identity = None
    return Ended(str(block["ended"]), identity)


def load(block: object) -> SessionRecord | Ended | None:
    """The record in ``block`` (the value under :data:`SESSION_KEY`).

    ``None`` when nobody is signed in (no record, or a pre-sign-in session);
    :class:`Ended` for a tombstone; raises :class:`InvalidRecord` for a
    record of another shape or schema version."""
    if not isinstance(block, dict):
        return None
    if block.get("ended"):
        return _ended(block)
    if "identity" not in block:
        return None
    return _parse_record(block)


def load_live(block: object) -> SessionRecord | None:
    """The live record in ``block``: ``None`` for none, a tombstone or a
    record of another shape (readers that only act on a live session)."""
    try:
        record = load(block)
    except InvalidRecord:
        return None
    return record if isinstance(record, SessionRecord) else None


def in_session(session: Mapping[str, Any]) -> object:
    """The raw record block of a Flask session (or a stored session dict)."""
    return session.get(SESSION_KEY) if isinstance(session, Mapping) else None


def tombstone(reason: str, identity: dict[str, Any]) -> dict[str, Any]:
    """The JSON of a tombstone naming ``reason``."""
    return {"ended": reason, "identity": identity}
