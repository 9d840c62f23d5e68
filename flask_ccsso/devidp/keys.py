"""The development IdP's signing key: RSA 2048, made once, kept on disk.

Keeping the key means a restart (or a second gunicorn worker) signs with the
same key, so tokens already handed out stay valid and the JWKS relying parties
cached stays right.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import TYPE_CHECKING

from joserfc.jwk import KeySet, RSAKey

if TYPE_CHECKING:
    from joserfc.jwk import KeySetSerialization

ALG = "RS256"


def load_or_create_key(path: str) -> RSAKey:
    """Read the private JWK at ``path``, creating it (mode 0600) if missing.

    Creation is race-free between processes: the key is written to a private
    temporary file and then hard-linked into place, which fails if another
    process got there first; the loser then reads the winner's key.
    """
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    key = RSAKey.generate_key(2048, private=True)
    data = key.as_dict(private=True)
    data.update(kid=key.thumbprint(), use="sig", alg=ALG)
    fd, tmp = tempfile.mkstemp(prefix=".ccsso-devidp-key-", dir=folder)  # mkstemp creates the file 0600
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
    return _read(path)


def _read(path: str) -> RSAKey:
    with open(path) as fh:
        data = json.load(fh)
    key = RSAKey.import_key(data)
    if not key.is_private:
        raise RuntimeError(f"The development IdP key at {path} holds no private key; delete it to make a new one.")
    return key


def public_jwks(key: RSAKey) -> KeySetSerialization:
    """The JWKS document: the public half only, with ``kid``, ``use`` and ``alg``."""
    return {"keys": [dict(key.as_dict(private=False))]}


def verification_keys(key: RSAKey) -> KeySet:
    return KeySet.import_key_set(public_jwks(key))
