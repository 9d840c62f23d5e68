"""Identity providers: each speaks its protocol and knows no routes or access
decisions. Looked up by type through :data:`PROVIDER_CLASSES`."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import Provider

#: provider type -> "module:Class"; SAML is imported only when configured
#: (pysaml2 is the optional ``saml`` extra)
PROVIDER_CLASSES = {
    "oidc": "flask_ccsso.providers.oidc:OIDCProvider",
    "okta": "flask_ccsso.providers.oidc:OktaProvider",
    "azure-ad": "flask_ccsso.providers.azure:AzureADProvider",
    "saml": "flask_ccsso.providers.saml:SAMLProvider",
}


def provider_class(ptype: str) -> type[Provider]:
    module, _, cls = PROVIDER_CLASSES[ptype].partition(":")
    return getattr(import_module(module), cls)  # type: ignore[no-any-return]
