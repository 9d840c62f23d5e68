"""The storage layer: one small interface (:class:`SharedStore`), one module
per backend. ``flask_ccsso.stores.X`` is public: pass a store to
``CCSSO(store=...)`` or subclass :class:`SharedStore` for another backend.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .base import Change, SharedStore
from .memory import MemoryStore
from .redis import RedisStore
from .sql import SQLStore

if TYPE_CHECKING:
    from ..config import StoreSettings

__all__ = ["Change", "MemoryStore", "RedisStore", "SQLStore", "SharedStore", "open_store"]


def open_store(settings: StoreSettings, instance_path: str, *, key_prefix: str | None = None,
               clock: Callable[[], float] = time.time) -> SharedStore:
    """The store ``session.store`` describes; keys under ``key_prefix``
    (default: ``session.store.keyPrefix``). The embedded default is a SQLite
    file in ``session.store.path`` or the instance folder."""
    prefix = settings.key_prefix if key_prefix is None else key_prefix
    if settings.type == "redis":
        return RedisStore.from_url(settings.url or "", prefix=prefix)
    if settings.type == "sqlalchemy":
        return SQLStore.from_url(settings.url or "", clock=clock, key_prefix=prefix)
    return SQLStore.embedded(settings.path or instance_path, clock=clock, key_prefix=prefix)
