"""SCIM 2.0 provisioning (RFC 7643 / 7644): the subset Okta and Entra ID send.

Opt-in (``scim: {enabled: true, token: "${SCIM_TOKEN}"}``, or instead of the
secret the IdP's OAuth access tokens: ``tokenProvider``, ``tokenClients``,
``tokenScope``, see :mod:`.auth`): ``init_app`` calls :func:`register_scim`,
which mounts the endpoint at ``scim.urlPrefix`` (default ``/scim/v2``). The schema is ``scim2-models``' (the optional extra
``flask-ccsso[scim]``), so this package is imported only when enabled.

What matters here is deprovisioning (:mod:`.directory`): ``active: false``
or ``DELETE`` ends every session of the person on every worker and host
through the session index before the response returns, marks them
deprovisioned in the shared store (their bearer tokens and sign-ins are
refused from then on) and sends :data:`~flask_ccsso.signals.user_deprovisioned`.
See docs/scim.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..exceptions import ConfigError

if TYPE_CHECKING:
    from flask import Flask

    from ..config import ScimSettings


def register_scim(app: Flask, settings: ScimSettings) -> None:
    """Mount the SCIM endpoint at ``settings.url_prefix`` (``init_app``, when ``scim.enabled``)."""
    try:
        from .views import make_blueprint
    except ImportError as exc:  # scim2-models is an optional extra
        raise ConfigError("scim.enabled", f"is true but the SCIM schema library is not installed ({exc.name}).",
                          "pip install 'flask-ccsso[scim]' (on Python 3.11 or later: scim2-models does not "
                          "support 3.10).") from exc
    app.register_blueprint(make_blueprint(settings), url_prefix=settings.url_prefix)


__all__ = ["register_scim"]
