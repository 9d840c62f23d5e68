"""Which providers stand in for which: the ``fallback`` and ``fallbackOnly`` rules, in one place.

A provider may name ``fallback`` providers to offer while its IdP cannot be
reached; a ``fallbackOnly`` provider (a break-glass IdP) serves only then.
"Cannot be reached" is what each provider records of its own fetches
(:meth:`~flask_ccsso.providers.base.Provider.availability`): no network I/O
here, so the sign-in views and the bearer gate can ask on every request.
"""

from __future__ import annotations

from collections.abc import Mapping

from .base import Provider


def listing(providers: Mapping[str, Provider], prov: Provider) -> list[Provider]:
    """The providers that name ``prov`` as a ``fallback`` (none for most providers)."""
    return [p for p in providers.values() if prov.name in p.settings.fallback]


def needed(providers: Mapping[str, Provider], prov: Provider) -> bool:
    """Whether ``prov`` stands in for someone now: a provider listing it is
    known to be unavailable (no network I/O)."""
    return any(p.availability().unavailable for p in listing(providers, prov))


def refused_as_not_needed(providers: Mapping[str, Provider], prov: Provider) -> bool:
    """A ``fallbackOnly`` provider while every provider listing it can be reached:
    its sign-ins and its bearer tokens are refused (``fallback_not_needed``)."""
    return bool(prov.settings.fallback_only) and not needed(providers, prov)


__all__ = ["listing", "needed", "refused_as_not_needed"]
