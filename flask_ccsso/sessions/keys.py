"""Keys that keep the session store from handing out sessions.

Two things anyone with read access to the store (a Redis replica, a backup, a
``MONITOR``, a SQL dump) must not get:

* **a usable cookie.** The store key of a session is not its cookie value but
  ``HMAC-SHA256(k_id, session id)`` (the *store handle*, 64 hex digits). The
  per-user index and every admin tool hold handles too, so nothing in the
  store can be presented as a cookie: a handle sent as a cookie is hashed
  again and finds nothing.
* **the tokens.** Each record is sealed with AES-256-GCM (``cryptography``)
  under a key derived from the app's secret, which the store never holds. The
  associated data is the record's store key, so a record copied under another
  key (one session's record planted under another's) does not open, and a
  record written by anyone without the key -- forged, or from before the
  upgrade -- reads as absent: the browser is signed out, never signed in as
  whatever the record says.

Keys are derived with HKDF-SHA256 from ``session.tokenEncryptionKey`` if set,
else from ``SECRET_KEY``. Old keys (``tokenEncryptionKeyFallbacks``, or Flask's
``SECRET_KEY_FALLBACKS``) still open records and still find a session under
the handle they gave it, so rotating the key does not sign anybody out; new
records are always sealed with the current key.

Each record gets its own AES key (HKDF-Expand of the master key with the store
key as ``info``): random 96-bit nonces then only have to be unique among one
session's writes, not among every write the deployment ever makes.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
from collections.abc import Iterable
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

#: a store handle: HMAC-SHA256 hex (cookie session ids are 43 URL-safe characters)
_HANDLE = re.compile(r"[0-9a-f]{64}")
#: envelope version prefix of a sealed record
_V1 = "v1."
_NONCE = 12
_TAG = 16
#: per-record AES keys kept derived (a miss of the opened-record cache is then one HMAC and one decrypt)
_CACHE = 4096
#: sealed records kept opened, by their exact sealed text and store key (the hot path: no decrypt)
OPENED_CACHE = 1024
#: sealed texts longer than this are opened every time (bounds the cache's memory)
OPENED_CACHE_MAX_TEXT = 16384


def is_handle(value: str) -> bool:
    """Is ``value`` a store handle (as opposed to a cookie session id)?"""
    return bool(_HANDLE.fullmatch(value))


def _ikm(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)


def _derive(secret: str | bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=SHA256(), length=32, salt=b"flask-ccsso session keys", info=purpose).derive(_ikm(secret))


class SessionKeys:
    """The current key and the old ones, each as (store-id key, record key)."""

    def __init__(self, secrets: Iterable[str | bytes]) -> None:
        unique: list[bytes] = []
        for s in secrets:
            if s and _ikm(s) not in unique:
                unique.append(_ikm(s))
        if not unique:
            raise ValueError("no key to derive the session keys from")
        self._id_keys = [_derive(s, b"store-id v1") for s in unique]
        self._record_keys = [_derive(s, b"record v1") for s in unique]
        # per instance (keys differ between apps), bounded, thread-safe
        self._aead = lru_cache(maxsize=_CACHE)(self._make_aead)
        self._opened = lru_cache(maxsize=OPENED_CACHE)(self._open)

    # -- store handles -------------------------------------------------------
    def handle(self, sid: str) -> str:
        """The store handle of cookie session id ``sid`` under the current key."""
        return hmac.digest(self._id_keys[0], sid.encode("utf-8", "surrogateescape"), "sha256").hex()

    def old_handles(self, sid: str) -> list[str]:
        """Handles ``sid`` had under the old keys (looked up only on a miss)."""
        raw = sid.encode("utf-8", "surrogateescape")
        return [hmac.digest(k, raw, "sha256").hex() for k in self._id_keys[1:]]

    # -- sealed records ------------------------------------------------------
    def _make_aead(self, index: int, store_id: bytes) -> AESGCM:
        key = HKDFExpand(algorithm=SHA256(), length=32, info=b"record " + store_id).derive(self._record_keys[index])
        return AESGCM(key)

    def seal(self, plaintext: bytes, store_id: str) -> str:
        """Encrypt and authenticate ``plaintext`` for the record at ``store_id``."""
        ad = store_id.encode("utf-8")
        nonce = os.urandom(_NONCE)
        blob = nonce + self._aead(0, ad).encrypt(nonce, plaintext, ad)
        return _V1 + binascii.b2a_base64(blob, newline=False).decode("ascii")

    def open(self, sealed: object, store_id: str) -> bytes | None:
        """The plaintext, or ``None`` if ``sealed`` was not sealed for ``store_id``
        by any of our keys (forged, tampered with, moved, or from before).

        Every request of a session opens the same stored text again until the
        record changes, so the answer is kept (bounded LRU, per instance: per
        set of keys) by the *exact* sealed text and store key. AES-GCM is
        deterministic in that sense -- the same text under the same key and
        associated data opens to the same plaintext or to nothing, every time
        -- so a hit answers exactly what the decryption would. Nothing is
        trusted for longer than that: the caller still reads the store on
        every request, and a record that was revoked, ended or rewritten is a
        different text (or none) and is opened afresh; the deadlines are
        checked against the plaintext and the clock each time."""
        if type(sealed) is not str:  # exactly str: JSON gives nothing else
            return None
        if len(sealed) > OPENED_CACHE_MAX_TEXT:
            return self._open(sealed, store_id)
        return self._opened(sealed, store_id)

    def _open(self, sealed: str, store_id: str) -> bytes | None:
        if not sealed.startswith(_V1):
            return None
        try:
            # validate=True: only the base64 alphabet, padding only at the end (binascii's
            # strict_mode says the same but is Python 3.11+; 3.10 is supported).
            blob = base64.b64decode(sealed[len(_V1):], validate=True)
        except (ValueError, binascii.Error):  # also: not ASCII
            return None
        if len(blob) < _NONCE + _TAG:
            return None
        ad = store_id.encode("utf-8")
        for index in range(len(self._record_keys)):
            try:
                return self._aead(index, ad).decrypt(blob[:_NONCE], blob[_NONCE:], ad)
            except InvalidTag:
                continue
        return None
