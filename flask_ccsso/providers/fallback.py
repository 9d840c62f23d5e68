"""Which providers stand in for which: the ``fallback`` and ``fallbackOnly`` rules, in one place.

A provider may name ``fallback`` providers to offer while its IdP cannot be
reached; a ``fallbackOnly`` provider (a break-glass IdP) serves only then.
*Offering* a fallback reads what each provider records of its own fetches
(:meth:`~flask_ccsso.providers.base.Provider.availability`): no network I/O.
*Unlocking* a ``fallbackOnly`` provider (:func:`down_now`) cannot trust a
cached "up" -- a worker that fetched the documents once keeps serving them
through a whole outage -- nor an old "down" -- the primary may be back -- so
it then asks the provider's active probe (at most one fetch per
``RECHECK_AFTER`` seconds per worker).
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


def down_now(primary: Provider) -> bool:
    """Whether ``primary`` is down, to unlock a ``fallbackOnly`` provider: found
    unavailable within ``RECHECK_AFTER`` seconds (no network I/O), else by its
    active probe (:meth:`~flask_ccsso.providers.base.Provider.probe_down`)."""
    if primary.availability().down_within(primary.clock()):
        return True
    return primary.probe_down()


def refused_as_not_needed(providers: Mapping[str, Provider], prov: Provider) -> bool:
    """A ``fallbackOnly`` provider while every provider listing it can be reached
    (:func:`down_now`): its sign-ins and its bearer tokens are refused
    (``fallback_not_needed``). Other providers: never, and no network I/O."""
    if not prov.settings.fallback_only:
        return False
    return not any(down_now(p) for p in listing(providers, prov))


__all__ = ["down_now", "listing", "needed", "refused_as_not_needed"]
