"""The storage layer: one small interface (:class:`SharedStore`), one module
per backend. ``flask_ccsso.stores.X`` is public: pass a store to
``CCSSO(store=...)`` or subclass :class:`SharedStore` for another backend.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .base import Batch, Change, SharedStore, Write
from .database import resolve_database_url
from .memory import MemoryStore
from .redis import RedisStore
from .sql import SQLStore

if TYPE_CHECKING:
    from ..config import StoreSettings

__all__ = ["Batch", "Change", "MemoryStore", "RedisStore", "SQLStore", "SharedStore", "Write", "open_store"]


def open_store(settings: StoreSettings, instance_path: str, *, key_prefix: str | None = None,
               clock: Callable[[], float] = time.time) -> SharedStore:
    """The store ``session.store`` describes; keys under ``key_prefix``
    (default: ``session.store.keyPrefix``). The embedded default is a SQLite
    file in ``session.store.path`` or the instance folder. Relative SQLite
    paths (a ``sqlalchemy`` store's ``sqlite:///`` URL, ``{instance}``, a
    relative ``path``) are relative to the instance folder
    (:func:`~.database.resolve_database_url`), never to the current directory."""
    prefix = settings.key_prefix if key_prefix is None else key_prefix
    if settings.type == "redis":
        return RedisStore.from_url(settings.url or "", prefix=prefix, connect_timeout=settings.connect_timeout,
                                   socket_timeout=settings.socket_timeout, breaker_failures=settings.breaker_failures,
                                   breaker_cooldown=settings.breaker_cooldown, ssl_ca_certs=settings.ssl_ca_certs,
                                   ssl_certfile=settings.ssl_certfile, ssl_keyfile=settings.ssl_keyfile)
    if settings.type == "sqlalchemy":
        url = resolve_database_url(settings.url or "", instance_path, key="session.store.url")
        return SQLStore.from_url(url, clock=clock, key_prefix=prefix)
    folder = os.path.join(os.path.abspath(instance_path), settings.path) if settings.path else instance_path
    return SQLStore.embedded(folder, clock=clock, key_prefix=prefix)
