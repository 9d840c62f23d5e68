"""The composition root: everything flask-ccsso knows about one app.

``init_app`` builds one :class:`CCSSOState` per app, explicitly, and keeps it
in ``app.extensions["ccsso"]``; everything below the face reads it through
:func:`get_state`. Every collaborator is a named, typed field: the request
gate, the views and the CLI never reach for a slot filled later by some
module's hook.

This module sits below the gate in the import graph (the gate reads the state
at request time), so the gate's types are imported for annotations only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from flask import Flask

from ._context import current_flask_app
from .config import CCSSOConfig
from .identity import AnonymousIdentity, Identity
from .providers.base import Provider
from .sessions.index import SessionIndex
from .sessions.interface import CCSSOSessionInterface
from .stores import SharedStore

if TYPE_CHECKING:
    from .audit.dispatcher import AuditPipeline
    from .audit.settings import AuditSettings
    from .gate.bearer import BearerAuthenticator, DeprovisionedCheck
    from .gate.policy import SkillPolicy
    from .gate.session import SessionGate

#: ``app.extensions`` key of the state
EXTENSION_KEY = "ccsso"

#: the session refresher's shape: ``(state, identity) -> identity``
Refresher = Callable[["CCSSOState", Identity], "Identity | AnonymousIdentity"]


@dataclass(eq=False)
class CCSSOState:
    """Everything flask-ccsso knows about one app (``app.extensions["ccsso"]``).

    Built whole by ``init_app`` and not reassigned afterwards: each field is
    the one collaborator of its kind for this app.
    """

    app_name: str
    config: CCSSOConfig
    #: configured name -> provider (protocol only: no access decisions)
    providers: dict[str, Provider]
    store: SharedStore
    #: the Flask session interface (server-side sessions)
    session_interface: CCSSOSessionInterface
    #: the session index: every revocation goes through it
    sessions: SessionIndex
    #: the timeout gate: session -> identity, idle/absolute deadlines
    gate: SessionGate
    clock: Callable[[], float]
    url_prefix: str
    #: ``Authorization: Bearer`` -> Identity
    bearer_authenticator: BearerAuthenticator
    #: single-flight token refresh inside ``session.refreshWindow``
    refresher: Refresher
    #: the one skill evaluator (decorators, ``has_skill``, ``flask ccsso explain``)
    policy: SkillPolicy
    #: the validated ``logging`` block
    audit_settings: AuditSettings
    #: the running audit pipeline (``None`` when ``logging.level`` is ``off``)
    audit: AuditPipeline | None = None
    #: whether SCIM deprovisioned a person (``None`` unless ``scim.enabled``): the bearer path and sign-in ask it
    deprovisioned: DeprovisionedCheck | None = None

    # -- revocation: the session index's, here for convenience -------------------------
    def forget_session(self, identity: Identity, sid: str) -> None:
        """:meth:`SessionIndex.forget_session <flask_ccsso.sessions.index.SessionIndex.forget_session>`."""
        self.sessions.forget_session(identity, sid)

    def revoke_sids(self, sids: Iterable[str]) -> int:
        """:meth:`SessionIndex.revoke_sids <flask_ccsso.sessions.index.SessionIndex.revoke_sids>`."""
        return self.sessions.revoke_sids(sids)

    def revoke_identity(self, identity_id: str, *, reason: str = "api") -> int:
        """:meth:`SessionIndex.revoke_identity <flask_ccsso.sessions.index.SessionIndex.revoke_identity>`."""
        return self.sessions.revoke_identity(identity_id, reason=reason)

    def revoke_user(self, email_or_id: str, *, reason: str = "operator") -> int:
        """:meth:`SessionIndex.revoke_user <flask_ccsso.sessions.index.SessionIndex.revoke_user>`."""
        return self.sessions.revoke_user(email_or_id, reason=reason)


def get_state(app: Flask | None = None) -> CCSSOState:
    """The state of ``app`` (default: the current app).

    :raises RuntimeError: flask-ccsso is not initialised on that app.
    """
    target = app if app is not None else current_flask_app()
    state = target.extensions.get(EXTENSION_KEY)
    if state is None:
        raise RuntimeError("flask-ccsso is not initialised on this app: call CCSSO(app) or sso.init_app(app).")
    return cast("CCSSOState", state)


__all__ = ["EXTENSION_KEY", "CCSSOState", "Refresher", "get_state"]
