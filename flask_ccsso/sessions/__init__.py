"""Server-side sessions: the typed record (:mod:`.record`), the store keys and
seals (:mod:`.keys`), the Flask session interface (:mod:`.interface`) and the
one session index that does all revocation (:mod:`.index`)."""

from __future__ import annotations

from .index import SessionIndex
from .interface import CCSSOSession, CCSSOSessionInterface, make_session_interface
from .record import SESSION_KEY, Ended, InvalidRecord, SessionRecord, load

__all__ = ["SESSION_KEY", "CCSSOSession", "CCSSOSessionInterface", "Ended", "InvalidRecord", "SessionIndex",
           "SessionRecord", "load", "make_session_interface"]
