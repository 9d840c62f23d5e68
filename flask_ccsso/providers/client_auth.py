"""How an OIDC client proves who it is at the token endpoint (``tokenEndpointAuthMethod``).

* ``client_secret_basic`` (RFC 6749 2.3.1) and ``client_secret_post``: the
  shared secret, in the ``Authorization`` header or the form.
* ``private_key_jwt`` (RFC 7523, OIDC Core 9): a short-lived JWT signed with
  the client's private key -- Okta's "Public key / private key", Entra ID's
  certificate credentials. No secret exists that could leak from a config,
  a log or a proxy; the IdP holds only the public key.
* ``none``: a public client sends its ``client_id`` only.

The request is encoded by Authlib's client-authentication classes
(:class:`authlib.oauth2.auth.ClientAuth`, :class:`authlib.oauth2.rfc7523.PrivateKeyJWT`)
and the assertion signed by joserfc; nothing here builds a JWT by hand.

The assertion carries ``iss`` = ``sub`` = the client id, ``aud`` = the token
endpoint (OIDC Core 9 says so for every endpoint the client authenticates
at), a fresh random ``jti``, ``iat`` / ``nbf`` now and ``exp``
:data:`ASSERTION_LIFETIME` seconds later: an assertion seen by a proxy is
useless elsewhere, used again, or a few minutes later.

Key rotation without restart: a key (and certificate) given as a file is
looked at again at most every :data:`KEY_RECHECK_SECONDS`; when the file
changed, the new key is used from the next request on. A file that does not
parse (half-written, wrong passphrase, key and certificate not matching yet)
keeps the previous key in use and is logged -- a rotation never takes sign-in
down. At start-up the same problems are a :class:`~flask_ccsso.exceptions.ConfigError`
naming the key.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from authlib.oauth2.auth import ClientAuth
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey, RSAKey, import_key
from joserfc.util import urlsafe_b64encode

from ..exceptions import ConfigError
from .keys import loads_strict

log = logging.getLogger("flask_ccsso")

#: seconds an assertion is valid (Entra ID: "5-10 minutes at most"; Okta: at most an hour)
ASSERTION_LIFETIME = 120
#: a key file is looked at (``stat``) at most this often, in seconds
KEY_RECHECK_SECONDS = 30.0
#: the signature algorithms of an assertion, by key type
ALGORITHMS_BY_KTY = {"RSA": ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
                     "EC": ("ES256", "ES384", "ES512"), "OKP": ("EdDSA",)}
_EC_ALG = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.DOTALL)
_MIN_RSA_BITS = 2048
#: what base64 key text looks like (no file name is a long run of base64 without a dot)
_KEY_TEXT = re.compile(r"[A-Za-z0-9+/=_\-\s]{60,}")

AssertionKey = RSAKey | ECKey | OKPKey


@dataclass(frozen=True)
class SigningKey:
    """One loaded assertion key: the joserfc key, its algorithm and the JWS header members naming it."""

    key: AssertionKey
    alg: str
    header: Mapping[str, str]
    #: the certificate's end of validity (a POSIX time), when a certificate is configured
    not_after: float | None = None


class KeyProblem(ValueError):
    """A key or certificate that cannot be used; ``key`` is the config key at fault."""

    def __init__(self, key: str, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.key, self.problem, self.fix = key, problem, fix


def _pem_blocks(data: bytes) -> list[tuple[str, bytes]]:
    return [(m.group(1).decode("ascii"), m.group(0)) for m in _PEM_BLOCK.finditer(data)]


def _private_key(data: bytes) -> tuple[AssertionKey, str | None, list[bytes]]:
    """The private key in ``data`` (PEM, or a JWK as JSON), the JWK's own ``kid``, and any certificate PEM blocks."""
    text = data.strip()
    if text.startswith(b"{"):
        try:
            jwk = loads_strict(text)
        except ValueError:
            raise KeyProblem("clientAssertionKey", "is not valid JSON (a JWK was expected).",
                             "give a PEM private key or a private JWK (with \"d\").") from None
        if not isinstance(jwk, dict) or "d" not in jwk:
            raise KeyProblem("clientAssertionKey", "is a JWK without its private part (\"d\").",
                             "give the private JWK; the IdP gets the public one.")
        try:
            imported = import_key(jwk)
        except (JoseError, ValueError, TypeError, KeyError):
            raise KeyProblem("clientAssertionKey", "is not a usable JWK.", "export the private key as a JWK again.") \
                from None
        if not isinstance(imported, (RSAKey, ECKey, OKPKey)):
            raise KeyProblem("clientAssertionKey", f"is a {type(imported).__name__}, not an RSA, EC or Ed25519 key.",
                             "private_key_jwt signs with an asymmetric key.")
        kid = jwk.get("kid")
        return imported, kid if isinstance(kid, str) and kid else None, []
    blocks = _pem_blocks(data)
    certs = [b for label, b in blocks if label == "CERTIFICATE"]
    if any(label == "ENCRYPTED PRIVATE KEY" for label, _ in blocks):
        raise KeyProblem("clientAssertionKey", "is encrypted with a passphrase.",
                         "export it without one (openssl pkey -in key.pem -out plain.pem) and protect the file "
                         "with its permissions instead.")
    keys = [b for label, b in blocks if label.endswith("PRIVATE KEY")]
    if len(keys) != 1:
        raise KeyProblem("clientAssertionKey", "holds no PEM private key" if not keys else "holds several private keys.",
                         "give exactly one PEM private key (or a private JWK), as a file path or from ${VAR}.")
    try:
        loaded = serialization.load_pem_private_key(keys[0], password=None)
    except (ValueError, TypeError):
        raise KeyProblem("clientAssertionKey", "is not a readable PEM private key.",
                         "export the key as unencrypted PEM (PKCS#8).") from None
    key: AssertionKey
    if isinstance(loaded, rsa.RSAPrivateKey):
        key = RSAKey.import_key(loaded)
    elif isinstance(loaded, ec.EllipticCurvePrivateKey):
        key = ECKey.import_key(loaded)
    elif isinstance(loaded, ed25519.Ed25519PrivateKey):
        key = OKPKey.import_key(loaded)
    else:
        raise KeyProblem("clientAssertionKey", f"is a {type(loaded).__name__}, not an RSA, EC or Ed25519 key.",
                         "use an RSA (2048 bits or more), EC P-256/384/521 or Ed25519 key.")
    return key, None, certs


def _algorithm(key: AssertionKey, configured: str | None, rsa_default: str) -> str:
    kty = key.key_type
    if kty == "RSA" and isinstance(key, RSAKey):
        size = key.private_key.key_size if key.private_key is not None else 0
        if size < _MIN_RSA_BITS:
            raise KeyProblem("clientAssertionKey", f"is a {size}-bit RSA key.", "use an RSA key of 2048 bits or more.")
        default = rsa_default
    elif kty == "EC":
        # RFC 7518 3.4: each ES algorithm signs with one curve only; anything else fails at signing time
        curve = str(getattr(getattr(key.private_key, "curve", None), "name", ""))
        if curve not in _EC_ALG:
            raise KeyProblem("clientAssertionKey", f"is an EC key on the {curve or 'unknown'} curve.",
                             "use an EC key on P-256, P-384 or P-521 (or an RSA or Ed25519 key).")
        default = _EC_ALG[curve]
        if configured and configured in ALGORITHMS_BY_KTY["EC"] and configured != default:
            raise KeyProblem("clientAssertionAlgorithm", f"{configured!r} cannot sign with the {curve} key in "
                             "clientAssertionKey.", f"use {default}, or leave it unset.")
    else:
        default = "EdDSA"
    alg = configured or default
    if alg not in ALGORITHMS_BY_KTY.get(kty, ()):
        raise KeyProblem("clientAssertionAlgorithm", f"{alg!r} cannot be used with the {kty} key in clientAssertionKey.",
                         f"use one of {', '.join(ALGORITHMS_BY_KTY.get(kty, ()))}, or leave it unset.")
    return alg


def _spki(public_key: Any) -> bytes:
    return bytes(public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


def build_signing_key(key_data: bytes, cert_data: bytes | None, *, key_id: str | None, algorithm: str | None,
                      rsa_default: str = "RS256", need_certificate: bool = False) -> SigningKey:
    """Parse the key (and certificate: its own file, or a ``CERTIFICATE`` block
    beside the key) into a :class:`SigningKey`; raise :class:`KeyProblem`."""
    key, jwk_kid, certs = _private_key(key_data)
    alg = _algorithm(key, algorithm, rsa_default)
    header: dict[str, str] = {"typ": "JWT"}
    kid = key_id or jwk_kid
    if kid:
        header["kid"] = kid
    not_after = None
    cert_key = "clientAssertionCertificate" if cert_data is not None else "clientAssertionKey"
    if cert_data is not None:
        certs = [b for label, b in _pem_blocks(cert_data) if label == "CERTIFICATE"]
        if not certs:
            raise KeyProblem("clientAssertionCertificate", "holds no PEM certificate.",
                             "give the certificate uploaded to the IdP, as PEM (-----BEGIN CERTIFICATE-----).")
    if certs:
        try:
            cert = x509.load_pem_x509_certificate(certs[0])
        except ValueError:
            raise KeyProblem(cert_key, "holds a certificate that cannot be read.", "export it as PEM again.") from None
        if _spki(cert.public_key()) != _spki(key.private_key.public_key()):  # type: ignore[union-attr]
            raise KeyProblem(cert_key, "holds a certificate for another key than clientAssertionKey.",
                             "give the certificate made from this private key (the one uploaded to the IdP).")
        der = cert.public_bytes(serialization.Encoding.DER)
        # Entra ID finds the certificate by thumbprint: x5t (SHA-1, the long-standing one)
        # and x5t#S256 (SHA-256, what its current documentation asks for)
        header["x5t"] = urlsafe_b64encode(hashlib.sha1(der).digest()).decode("ascii")  # a thumbprint, not a security hash
        header["x5t#S256"] = urlsafe_b64encode(hashlib.sha256(der).digest()).decode("ascii")
        not_after = cert.not_valid_after_utc.timestamp()
    elif need_certificate:
        raise KeyProblem("clientAssertionCertificate", "is required: Entra ID identifies the key by its certificate.",
                         "set clientAssertionCertificate to the certificate uploaded to the app registration "
                         "(or put its PEM block in the clientAssertionKey file).")
    return SigningKey(key=key, alg=alg, header=header, not_after=not_after)


class AssertionKeySource:
    """The current :class:`SigningKey`, re-read when its file changes (see the module docstring)."""

    def __init__(self, *, key: str, certificate: str | None, key_id: str | None, algorithm: str | None,
                 path: str, clock: Callable[[], float], root: str | None, rsa_default: str = "RS256",
                 need_certificate: bool = False, recheck: float = KEY_RECHECK_SECONDS) -> None:
        self._path = path
        self._clock = clock
        self.recheck = recheck
        self._key_id, self._algorithm = key_id, algorithm
        self._rsa_default, self._need_certificate = rsa_default, need_certificate
        self._key_file = self._file(key, root)
        self._cert_file = self._file(certificate, root) if certificate else None
        self._key_text = key.encode() if self._key_file is None else None
        self._cert_text = certificate.encode() if certificate and self._cert_file is None else None
        #: each file's configured value (an error names the file only when that is not key text)
        self._given = {name: value for name, value in ((self._key_file, key), (self._cert_file, certificate))
                       if name is not None and value is not None}
        self._lock = threading.Lock()
        self._seen: tuple[Any, ...] | None = None
        self._checked_at = 0.0
        self._rejected: tuple[Any, ...] | None = None
        self.current_key = self._load(startup=True)

    @staticmethod
    def _file(value: str, root: str | None) -> str | None:
        """A path, or ``None`` for PEM / JWK text given inline (from ``${VAR}``)."""
        if "-----BEGIN" in value or value.lstrip().startswith("{"):
            return None
        if os.path.isabs(value):
            return value
        return os.path.join(root, value) if root else os.path.abspath(value)

    @property
    def reloadable(self) -> bool:
        return self._key_file is not None or self._cert_file is not None

    def _stat(self) -> tuple[Any, ...]:
        out: list[Any] = []
        for name in (self._key_file, self._cert_file):
            if name is None:
                out.append(None)
                continue
            try:
                st = os.stat(name)
            except OSError:
                out.append("missing")
                continue
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(out)

    def _read(self, name: str | None, text: bytes | None, key: str) -> bytes | None:
        if name is None:
            return text
        try:
            with open(name, "rb") as fh:
                return fh.read(1 << 20)
        except OSError as exc:
            # key text that is neither PEM nor JWK (base64 DER from ${VAR}) is taken for a path: never print it
            shown = "the file given (not shown: it looks like key text)" if _KEY_TEXT.fullmatch(
                self._given.get(name, "")) else repr(name)
            raise KeyProblem(key, f"cannot read {shown} ({exc.strerror or type(exc).__name__}).",
                             "give a readable PEM / JWK file path (relative to the app root) or the key text "
                             "from ${VAR}.") from None

    def _load(self, *, startup: bool = False) -> SigningKey:
        seen = self._stat()
        try:
            key_data = self._read(self._key_file, self._key_text, "clientAssertionKey") or b""
            cert_data = self._read(self._cert_file, self._cert_text, "clientAssertionCertificate")
            loaded = build_signing_key(key_data, cert_data, key_id=self._key_id, algorithm=self._algorithm,
                                       rsa_default=self._rsa_default, need_certificate=self._need_certificate)
        except KeyProblem as exc:
            if startup:
                raise ConfigError(f"{self._path}.{exc.key}", exc.problem, exc.fix) from None
            raise
        self._seen = seen
        self._checked_at = self._clock()
        self._warn_if_others_can_read()
        return loaded

    def _warn_if_others_can_read(self) -> None:
        """A private key file that other accounts on the host can read is a
        credential they can use: said once per load, as a warning rather than
        a refusal (Kubernetes mounts secrets 0644 unless told ``defaultMode``)."""
        if self._key_file is None or os.name != "posix":
            return
        try:
            mode = os.stat(self._key_file).st_mode
        except OSError:
            return
        if mode & 0o077:
            log.warning("flask-ccsso: %s.clientAssertionKey: the key file is readable by other users "
                        "(mode %s). Fix: chmod 600 it (Kubernetes: defaultMode 0400 on the secret volume).",
                        self._path, oct(mode & 0o777))

    def current(self) -> SigningKey:
        """The key to sign with now; at most every :attr:`recheck` seconds the
        files are looked at, and a changed one is read again."""
        if not self.reloadable:
            return self.current_key
        now = self._clock()
        if now - self._checked_at < self.recheck:
            return self.current_key
        with self._lock:
            if now - self._checked_at < self.recheck:
                return self.current_key
            self._checked_at = now
            seen = self._stat()
            if seen == self._seen or seen == self._rejected:
                return self.current_key
            try:
                self.current_key = self._load()
            except KeyProblem as exc:
                # logged once per change of the files; the previous key stays in use
                self._rejected = seen
                log.warning("flask-ccsso: %s.%s changed and %s The previous key stays in use until it is fixed "
                            "(%s).", self._path, exc.key, exc.problem, exc.fix)
            else:
                self._rejected = None
                log.info("flask-ccsso: %s.clientAssertionKey reloaded (alg %s%s).", self._path,
                         self.current_key.alg, f", kid {self.current_key.header['kid']}"
                         if "kid" in self.current_key.header else "")
        return self.current_key


class ClientAuthenticator:
    """Adds the client's credentials to a token-endpoint request, by ``tokenEndpointAuthMethod``."""

    def __init__(self, *, method: str, client_id: str, client_secret: str | None,
                 keys: AssertionKeySource | None, clock: Callable[[], float]) -> None:
        self.method = method
        self.client_id = client_id
        self._secret = client_secret
        self.keys = keys
        self._clock = clock

    def _auth(self, token_endpoint: str) -> ClientAuth:
        if self.method == "client_secret_basic":
            # RFC 6749 2.3.1: client id and secret are form-encoded before Basic
            return ClientAuth(quote(self.client_id, safe=""), quote(self._secret or "", safe=""), self.method)
        if self.method == "client_secret_post":
            return ClientAuth(self.client_id, self._secret, self.method)
        if self.method == "private_key_jwt":
            assert self.keys is not None  # the settings guarantee a key for this method
            current = self.keys.current()
            now = int(self._clock())
            # a new method object per request: Authlib keeps (and would reuse) the claims it is given
            claims = {"iat": now, "nbf": now, "exp": now + ASSERTION_LIFETIME, "jti": secrets.token_urlsafe(32)}
            return ClientAuth(self.client_id, current.key,
                              PrivateKeyJWT(token_endpoint, claims=claims, headers=dict(current.header), alg=current.alg))
        return ClientAuth(self.client_id, None, "none")

    def prepare(self, uri: str, form: Mapping[str, str], *, token_endpoint: str) -> tuple[dict[str, str], str]:
        """Headers and urlencoded body of a POST of ``form`` to ``uri`` (the token
        endpoint, or another endpoint of the IdP: the assertion's ``aud`` is the
        token endpoint either way, OIDC Core 9)."""
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        body = urlencode(list(form.items()))
        _, headers, body = self._auth(token_endpoint).prepare("POST", uri, headers, body)
        return headers, body


__all__ = ["ASSERTION_LIFETIME", "KEY_RECHECK_SECONDS", "AssertionKeySource", "ClientAuthenticator",
           "SigningKey", "build_signing_key"]
