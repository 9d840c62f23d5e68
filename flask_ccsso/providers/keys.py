"""Caches for what an IdP publishes: OIDC discovery documents and JWKS.

Authlib caches discovery forever and refetches the JWKS on every unknown
``kid``. Here both have a time-to-live, the last good copy is kept while the
IdP is unreachable, and an unknown ``kid`` triggers at most one refetch per
``cooldown`` seconds: key rotation works without a restart, and an attacker
sending made-up ``kid`` values cannot make us fetch once per request.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import requests
from joserfc.jwk import KeySet

from ..exceptions import IdPUnavailable


def fetch_json(http: requests.Session, url: str, timeout: float, what: str) -> dict[str, Any]:
    """GET ``url`` and return its JSON object; map every failure to IdPUnavailable."""
    try:
        resp = http.get(url, timeout=timeout, headers={"Accept": "application/json"})
    except requests.RequestException as exc:
        raise IdPUnavailable(f"Could not reach the identity provider ({what}).") from exc
    if resp.status_code != 200:
        raise IdPUnavailable(f"The identity provider answered {resp.status_code} for its {what}.")
    try:
        data = resp.json()
    except ValueError as exc:
        raise IdPUnavailable(f"The identity provider's {what} is not JSON.") from exc
    if not isinstance(data, dict):
        raise IdPUnavailable(f"The identity provider's {what} is not a JSON object.")
    return data


class TTLDocument:
    """One JSON document fetched on demand and kept for ``ttl`` seconds.

    A failed refresh keeps serving the last good copy (and retries after
    ``retry_after`` seconds) instead of failing every sign-in while the IdP
    blips; with no copy at all it raises :class:`IdPUnavailable`.
    """

    def __init__(self, loader: Callable[[], dict[str, Any]], ttl: float, clock: Callable[[], float],
                 retry_after: float = 30.0) -> None:
        self._loader = loader
        self._ttl = ttl
        self._clock = clock
        self._retry_after = retry_after
        self._value: dict[str, Any] | None = None
        self._fresh_until = 0.0
        self._lock = threading.Lock()

    def get(self) -> dict[str, Any]:
        now = self._clock()
        if self._value is not None and now < self._fresh_until:
            return self._value
        with self._lock:
            if self._value is not None and self._clock() < self._fresh_until:
                return self._value
            try:
                self._value = self._loader()
                self._fresh_until = self._clock() + self._ttl
            except IdPUnavailable:
                if self._value is None:
                    raise
                self._fresh_until = self._clock() + self._retry_after
            return self._value

    def invalidate(self) -> None:
        self._fresh_until = 0.0


class JWKSCache:
    """The IdP's signing keys, with TTL and a cooldown on forced refetches."""

    def __init__(self, loader: Callable[[], dict[str, Any]], ttl: float, cooldown: float,
                 clock: Callable[[], float]) -> None:
        def counted() -> dict[str, Any]:
            self.fetches += 1
            return loader()

        self._doc = TTLDocument(counted, ttl, clock)
        self._cooldown = cooldown
        self._clock = clock
        self._last_forced = float("-inf")
        self._keyset: KeySet | None = None
        self._source: dict[str, Any] | None = None
        self._lock = threading.Lock()
        #: how many times the JWKS was actually fetched (tests and metrics)
        self.fetches = 0

    def _build(self, doc: dict[str, Any]) -> KeySet:
        if doc is not self._source:
            keys = [k for k in doc.get("keys", []) if isinstance(k, dict) and k.get("use", "sig") == "sig"]
            try:
                self._keyset = KeySet.import_key_set({"keys": keys})
            except Exception as exc:  # joserfc raises several types for bad keys
                raise IdPUnavailable("The identity provider published keys that could not be read.") from exc
            self._source = doc
        assert self._keyset is not None
        return self._keyset

    def keyset(self) -> KeySet:
        return self._build(self._doc.get())

    def has_kid(self, kid: str | None) -> bool:
        ks = self.keyset()
        if kid is None:
            return True
        return any(k.kid == kid for k in ks.keys)

    def refresh_for_unknown_kid(self) -> bool:
        """Refetch once if the cooldown allows; ``True`` if a fetch happened."""
        with self._lock:
            now = self._clock()
            if now - self._last_forced < self._cooldown:
                return False
            self._last_forced = now
            self._doc.invalidate()
        self.keyset()
        return True
