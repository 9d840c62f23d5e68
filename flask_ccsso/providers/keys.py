"""Caches for what an IdP publishes: OIDC discovery documents and JWKS.

Authlib caches discovery forever and refetches the JWKS on every unknown
``kid``. Here both have a time-to-live, the last good copy is kept while the
IdP is unreachable, and an unknown ``kid`` triggers at most one refetch per
``cooldown`` seconds: key rotation works without a restart, and an attacker
sending made-up ``kid`` values cannot make us fetch once per request.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import requests
import urllib3
from joserfc.jwk import KeySet

from ..exceptions import IdPUnavailable

log = logging.getLogger("flask_ccsso")

#: the most we read from any IdP answer (discovery, JWKS, token, introspection,
#: Graph, SAML metadata): a hostile or broken IdP cannot fill our memory
MAX_IDP_RESPONSE_BYTES = 1024 * 1024


class ResponseTooLarge(ValueError):
    """The IdP's answer is larger than :data:`MAX_IDP_RESPONSE_BYTES` (or too slow)."""


def read_capped(resp: requests.Response, timeout: float, limit: int = MAX_IDP_RESPONSE_BYTES) -> bytes:
    """The body of a ``stream=True`` response, at most ``limit`` bytes and
    within ``timeout`` seconds *in total* (requests' own timeout restarts
    with every chunk, so an IdP dripping one byte a second would never end)."""
    try:
        declared = int(resp.headers.get("Content-Length") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        resp.close()
        raise ResponseTooLarge(f"the answer is larger than {limit} bytes")
    deadline = time.monotonic() + max(timeout, 0.001) * 2
    buf = bytearray()
    raw = resp.raw
    try:
        while True:
            # read1: whatever one socket read brings (iter_content would block
            # until a whole chunk arrived, so a one-byte drip never hit the deadline)
            chunk = raw.read1(65536, decode_content=True) if hasattr(raw, "read1") else raw.read(65536)
            if not chunk:
                break
            buf += chunk
            if len(buf) > limit:
                raise ResponseTooLarge(f"the answer is larger than {limit} bytes")
            if time.monotonic() > deadline:
                raise ResponseTooLarge("the answer took too long")
    except (OSError, ValueError, urllib3.exceptions.HTTPError) as exc:  # read timeouts / protocol errors
        if isinstance(exc, ResponseTooLarge):
            raise
        raise requests.ConnectionError(str(exc)) from exc
    finally:
        resp.close()
    return bytes(buf)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads_strict(raw: bytes | str) -> Any:
    """JSON as RFC 8259 defines it: no ``NaN`` / ``Infinity`` (Python's json
    module accepts them, and a NaN compares false with everything)."""
    return json.loads(raw, parse_constant=_no_constants)




def fetch_json(http: requests.Session, url: str, timeout: float, what: str) -> dict[str, Any]:
    """GET ``url`` and return its JSON object; map every failure to IdPUnavailable."""
    try:
        resp = http.get(url, timeout=timeout, headers={"Accept": "application/json"}, stream=True)
    except requests.RequestException as exc:
        raise IdPUnavailable(f"Could not reach the identity provider ({what}).") from exc
    if resp.status_code != 200:
        resp.close()
        raise IdPUnavailable(f"The identity provider answered {resp.status_code} for its {what}.")
    try:
        data = loads_strict(read_capped(resp, timeout))
    except ResponseTooLarge as exc:
        raise IdPUnavailable(f"The identity provider's {what} is too large or too slow ({exc}).") from exc
    except requests.RequestException as exc:
        raise IdPUnavailable(f"Could not read the identity provider's {what}.") from exc
    except (ValueError, RecursionError) as exc:
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
            doc = loader()
            # a malformed answer is a failed fetch: the last good keys stay
            if not isinstance(doc.get("keys"), list):
                raise IdPUnavailable("The identity provider's signing keys (JWKS) have no 'keys' list.")
            return doc

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
            raw = doc.get("keys")
            if not isinstance(raw, list):
                raise IdPUnavailable("The identity provider's signing keys (JWKS) have no 'keys' list.")
            keys = []
            skipped = 0
            for k in raw:
                if not isinstance(k, dict) or k.get("use", "sig") != "sig":
                    continue
                # one key of a type we cannot read (a new curve, a certificate-
                # only entry ...) must not take every other key down with it
                try:
                    keys.extend(KeySet.import_key_set({"keys": [k]}).keys)
                except Exception:  # noqa: BLE001 - joserfc raises several types for bad keys
                    skipped += 1
            if skipped:
                log.warning("flask-ccsso: ignored %d signing key(s) in the JWKS that could not be read", skipped)
            if not keys and raw:
                raise IdPUnavailable("The identity provider published keys that could not be read.")
            self._keyset = KeySet(keys)
            self._source = doc
        assert self._keyset is not None
        return self._keyset

    def candidates(self, kid: str | None) -> list[Any]:
        """Keys a token with ``kid`` may have been signed with: every key with
        that ``kid`` (an IdP may publish the same kid twice during a rollover),
        or every key when the token names none."""
        ks = self.keyset()
        return [k for k in ks.keys if kid is None or k.kid == kid]

    def keyset(self) -> KeySet:
        return self._build(self._doc.get())

    def has_kid(self, kid: str | None) -> bool:
        return bool(self.candidates(kid))

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
