"""The blinker signals flask-ccsso sends.

Every access decision and every sign-in event is announced here, so that apps
(and the audit pipeline in :mod:`flask_ccsso.audit`) can listen without
reaching into the request gate or the providers.

Each signal is sent with the real application object as sender
(``current_app._get_current_object()``), never the proxy, as Flask's own
signals are. Keyword arguments are listed on each signal; ``identity`` is a
:class:`flask_ccsso.identity.Identity` (or ``None`` when nobody is signed in),
``provider`` is the configured provider *name*, ``reason`` a machine-readable
string from :mod:`flask_ccsso.reasons`. Tokens and secrets are never passed.
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: ``auth.login`` -- a person signed in. kwargs: ``identity``, ``provider``,
#: ``method`` (``"oidc"`` or ``"saml"``), ``step_up`` (bool: this sign-in
#: satisfied a step-up request).
user_logged_in = _signals.signal("auth.login")

#: ``auth.fallback_used`` -- a person signed in through a fallback provider
#: because the provider they came for could not be reached (its discovery,
#: JWKS or SAML metadata; see the ``fallback`` provider key). Sent after
#: ``auth.login`` for the same sign-in, once; :data:`failure_threshold` is sent
#: too (``key_type="idp_fallback"``), so the hook that pages for repeated
#: failures pages for this. kwargs: ``identity``, ``provider`` (the fallback
#: that signed them in), ``primary`` (the unreachable provider), ``method``.
fallback_used = _signals.signal("auth.fallback_used")

#: ``auth.logout`` -- a session ended at the person's request. kwargs:
#: ``identity``, ``provider``, ``idp_logout`` (bool: the IdP session is being
#: ended too).
user_logged_out = _signals.signal("auth.logout")

#: ``auth.login_failed`` -- a sign-in attempt was refused. kwargs:
#: ``provider`` (may be ``None`` when it could not be told), ``reason``,
#: ``detail`` (a short, secret-free description), ``subject`` and ``email``
#: when known (e.g. a valid token for a disallowed tenant), else ``None``.
login_failed = _signals.signal("auth.login_failed")

#: ``auth.logout_failed`` -- a sign-out could not end the session (the session
#: store was unreachable): nothing changed, the person is still signed in and
#: the session stays listed and revocable. Its own type, so a store outage at
#: sign-out never reads as a failed sign-in (nor counts toward
#: ``auth.failure_threshold``). kwargs: ``identity``, ``provider``,
#: ``reason``, ``detail``.
logout_failed = _signals.signal("auth.logout_failed")

#: ``auth.failure_threshold`` -- too many failed sign-ins for one user or one
#: address within the configured window. kwargs: ``key_type``
#: (``"user"``/``"address"``), ``key``, ``count``, ``window``. Also sent with
#: ``key_type="audit_sink"`` (``key`` the sink name, ``count`` events lost)
#: when an audit sink lost events, and with ``key_type="idp_fallback"``
#: (``key`` the person, ``count`` 1, ``window`` 0) for every sign-in through a
#: fallback provider (:data:`fallback_used`; see docs/audit.md).
failure_threshold = _signals.signal("auth.failure_threshold")

#: ``session.expired`` -- a session was found past a deadline and cleared.
#: kwargs: ``identity``, ``provider``, ``reason`` (``"idle_timeout"``,
#: ``"absolute_timeout"``, ``"refresh_failed"``).
session_expired = _signals.signal("session.expired")

#: ``session.revoked`` -- sessions were revoked by an operator, an API call or
#: a back-channel logout. kwargs: ``subject``, ``provider``, ``count``,
#: ``reason`` (``"operator"``, ``"backchannel_logout"``, ``"api"``).
session_revoked = _signals.signal("session.revoked")

#: ``auth.backchannel_logout`` -- a valid OIDC back-channel logout token was
#: received. kwargs: ``provider``, ``subject``, ``sid``, ``count``.
backchannel_logout = _signals.signal("auth.backchannel_logout")

#: ``token.refreshed`` -- an access token was renewed with the refresh token.
#: kwargs: ``identity``, ``provider``, ``expires_at``.
token_refreshed = _signals.signal("token.refreshed")

#: ``skill.invoked`` -- a protected view was allowed. kwargs: ``identity``,
#: ``skill`` (the skill that granted access), ``skills`` (all named),
#: ``via`` (``"session"`` or ``"bearer"``), ``endpoint``.
skill_invoked = _signals.signal("skill.invoked")

#: ``permission.denied`` -- a protected view was refused. kwargs:
#: ``identity`` (``None`` when not signed in), ``skill`` (the first skill that
#: was checked, or ``None``), ``skills``, ``reason``, ``condition``, ``via``,
#: ``endpoint``.
permission_denied = _signals.signal("permission.denied")

#: ``stepup.required`` -- a sensitive skill asked for fresher authentication.
#: kwargs: ``identity``, ``skill``, ``max_age``, ``acr_values``, ``via``.
stepup_required = _signals.signal("stepup.required")

#: ``stepup.satisfied`` -- the person re-authenticated and the returned
#: ``auth_time`` (and ``acr`` when asked for) was verified. kwargs:
#: ``identity``, ``skill``, ``provider``.
stepup_satisfied = _signals.signal("stepup.satisfied")

#: ``user.deprovisioned`` -- the directory (SCIM: ``active: false`` or
#: ``DELETE``) deprovisioned a person: every session of theirs was ended
#: before this was sent, and their bearer tokens and sign-ins are refused
#: until SCIM re-activates them. kwargs: ``subject`` (the SCIM
#: ``externalId``, else ``None``), ``email`` (the SCIM ``userName``),
#: ``scim_id``, ``count`` (sessions ended), ``reason`` (``"deactivated"`` or
#: ``"deleted"``).
user_deprovisioned = _signals.signal("user.deprovisioned")

#: ``console.action`` -- an operator changed something through the operator
#: console (:mod:`flask_ccsso.console`), after confirming it. kwargs:
#: ``identity`` (the operator), ``action`` (e.g. ``"revoke_session"``,
#: ``"revoke_user"``), ``target`` (whom or what it acted on: an email,
#: ``provider:subject`` or a session fingerprint, never a session id),
#: ``count`` (how many things it changed).
console_action = _signals.signal("console.action")

__all__ = [
    "backchannel_logout",
    "console_action",
    "failure_threshold",
    "fallback_used",
    "login_failed",
    "logout_failed",
    "permission_denied",
    "session_expired",
    "session_revoked",
    "skill_invoked",
    "stepup_required",
    "stepup_satisfied",
    "token_refreshed",
    "user_deprovisioned",
    "user_logged_in",
    "user_logged_out",
]
