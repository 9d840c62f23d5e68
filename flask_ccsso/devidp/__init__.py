"""A development-only OpenID Connect provider for flask-ccsso.

**Never use it in production.** It signs anyone in as anyone. It refuses to
start unless ``enabled=True`` is passed *and* ``CCSSO_DEVIDP_ENABLED=1`` is set,
and it answers only requests whose TCP peer is a loopback address unless
``CCSSO_DEVIDP_ALLOW_REMOTE=1`` (or ``allow_remote=True``) opens it up.

::

    from flask_ccsso.devidp import DevClient, DevIdP

    DevIdP(app, issuer="http://127.0.0.1:5000/devidp", enabled=True, clients=[
        DevClient("portal", "dev-secret", ["http://127.0.0.1:5000/sso/dev/callback"]),
    ])

Sign-out needs no registration: the extension's own ``/sso/logged-out`` on
the origin of a client's redirect URIs is always an accepted
``post_logout_redirect_uri``. See ``docs/devidp.md``.
"""

from __future__ import annotations

from .models import ACR_LOA1, ACR_MFA, DEFAULT_AUDIENCE, DEFAULT_USERS, DevClient, DevUser, default_users
from .server import ALLOW_REMOTE_ENV_VAR, COOKIE_NAME, ENABLE_ENV_VAR, DevIdP, create_devidp_blueprint

__all__ = [
    "ACR_LOA1",
    "ACR_MFA",
    "ALLOW_REMOTE_ENV_VAR",
    "COOKIE_NAME",
    "DEFAULT_AUDIENCE",
    "DEFAULT_USERS",
    "ENABLE_ENV_VAR",
    "DevClient",
    "DevIdP",
    "DevUser",
    "create_devidp_blueprint",
    "default_users",
]
