"""Identity providers: each speaks its protocol and knows no routes or access
decisions. Looked up by type through :func:`provider_class`.

A provider type is a :class:`~flask_ccsso.providers.base.Provider` subclass
that names its settings struct (``settings_class``, a
:class:`~flask_ccsso.config.ProviderSettings` subclass whose fields declare the
type's config keys). The built-in types are below; a distribution adds more,
as Flask-Multipass providers are added, through the ``flask_ccsso.providers``
entry point group::

    [project.entry-points."flask_ccsso.providers"]
    acme = "acme_sso:AcmeProvider"

after which ``{"provider": "acme", ...}`` is configured like any other type.
A built-in type cannot be replaced this way.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, cast

from ..config import ENTRY_POINT_GROUP, known_provider_types, plugin_provider

if TYPE_CHECKING:
    from .base import Provider

#: built-in provider type -> "module:Class", imported only when configured
#: (pysaml2 is the optional ``saml`` extra)
BUILTIN_PROVIDERS = {
    "oidc": "flask_ccsso.providers.oidc:OIDCProvider",
    "okta": "flask_ccsso.providers.oidc:OktaProvider",
    "azure-ad": "flask_ccsso.providers.azure:AzureADProvider",
    "saml": "flask_ccsso.providers.saml:SAMLProvider",
}
#: the name this table had before entry points
PROVIDER_CLASSES = BUILTIN_PROVIDERS


def provider_class(ptype: str) -> type[Provider]:
    """The provider class of the type ``ptype``: a built-in, else the class an
    installed distribution registers in the ``flask_ccsso.providers`` entry
    point group; a :class:`~flask_ccsso.exceptions.ConfigError` listing the
    known types when there is none."""
    target = BUILTIN_PROVIDERS.get(ptype)
    if target is None:
        return cast("type[Provider]", plugin_provider(ptype))
    module, _, name = target.partition(":")
    return cast("type[Provider]", getattr(import_module(module), name))


__all__ = ["BUILTIN_PROVIDERS", "ENTRY_POINT_GROUP", "known_provider_types", "provider_class"]
