"""Flask's context proxies, typed: the one place that unwraps them.

Flask types ``current_app``, ``request``, ``session`` and ``g`` as the objects
they stand for, so ``_get_current_object()`` is unknown to the type checker.
Signal senders, threads and hot loops need the object itself (the proxy looks
the context up again on every attribute): they unwrap it here.

Part of the vocabulary layer: it imports nothing of the package, so every
layer (the session index included) can use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar, cast

from flask import Flask, current_app

if TYPE_CHECKING:
    from werkzeug.local import LocalProxy

_T = TypeVar("_T")


def unproxied(proxy: _T) -> _T:
    """The object behind one of Flask's context proxies (``current_app``,
    ``request``, ``session``, ``g``)."""
    return cast("LocalProxy[_T]", proxy)._get_current_object()


def current_flask_app() -> Flask:
    """The app of the active context (the real object, not the proxy)."""
    return unproxied(current_app)


__all__ = ["current_flask_app", "unproxied"]
