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
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from joserfc.jwk import KeySet

from .._validate import mask_url
from ..exceptions import IdPUnavailable, exception_chain
from .availability import FetchStatus

log = logging.getLogger("flask_ccsso")

#: the most we read from any IdP answer (discovery, JWKS, token, introspection,
#: Graph, SAML metadata): a hostile or broken IdP cannot fill our memory
MAX_IDP_RESPONSE_BYTES = 1024 * 1024


class ResponseTooLarge(ValueError):
    """The IdP's answer is larger than :data:`MAX_IDP_RESPONSE_BYTES` (or too slow)."""

    def __init__(self, message: str, *, slow: bool = False) -> None:
        super().__init__(message)
        #: the answer came too slowly rather than too big
        self.slow = slow


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
                raise ResponseTooLarge("the answer took too long", slow=True)
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




# --------------------------------------------------------------------------- why an IdP could not be reached

@dataclass(frozen=True)
class HTTPFailure:
    """What went wrong talking to an IdP, in words an operator can act on.

    ``kind`` is a short code (``dns``, ``refused``, ``tls_untrusted``,
    ``tls``, ``connect_timeout``, ``timeout``, ``proxy``, ``connection``,
    ``too_large``); ``problem`` says what failed and ``check`` what to look
    at. Neither quotes the exception's text, so both may be shown to anyone.
    """

    kind: str
    problem: str
    check: str


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what requests and urllib3 wrap in it (``reason``, ``args``)."""
    return exception_chain(exc, links=("reason",), args=True, limit=32)


def _where(url: str) -> str:
    """``host:port`` of ``url`` (the port the scheme implies when none is given)."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "the host in the URL"
    host = parts.hostname or "?"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def classify_http_failure(exc: BaseException, url: str, timeout: float | None = None) -> HTTPFailure:
    """Name the failure behind ``exc`` (a requests / urllib3 / socket error,
    or :class:`ResponseTooLarge`) for a request to ``url``.

    The most specific cause wins: a DNS failure or a refused connection is
    wrapped three deep by requests, a TLS failure is one ``SSLError`` whether
    the certificate is untrusted or the port does not speak TLS at all.
    """
    where = _where(url)
    host = where.rpartition(":")[0].strip("[]")
    within = f" within {timeout:g} s" if timeout else ""
    chain = list(_causes(exc))

    def has(*types: type[BaseException]) -> bool:
        return any(isinstance(e, types) for e in chain)

    too_large = next((e for e in chain if isinstance(e, ResponseTooLarge)), None)
    if too_large is not None:
        if too_large.slow:
            return HTTPFailure("timeout", f"the answer did not arrive{within} (timeout)",
                               "the identity provider's health and the network in between")
        return HTTPFailure("too_large", str(too_large),  # our own text: "the answer is larger than N bytes"
                           "that the URL points at the identity provider's endpoint, not some other page")
    if has(socket.gaierror, urllib3.exceptions.NameResolutionError):
        return HTTPFailure("dns", f"the host name {host!r} could not be resolved (DNS)",
                           "the host name in the configured URL and this server's DNS resolver")
    if has(requests.exceptions.ProxyError, urllib3.exceptions.ProxyError):
        return HTTPFailure("proxy", "the HTTP proxy could not be reached or refused the connection",
                           "the HTTPS_PROXY / HTTP_PROXY / NO_PROXY environment variables")
    if has(ssl.SSLCertVerificationError):
        return HTTPFailure("tls_untrusted", f"the TLS certificate of {where} is not trusted",
                           "that the certificate is valid for that host name, not expired, and issued by a CA "
                           "this server trusts (a private CA: point REQUESTS_CA_BUNDLE at its certificate)")
    if has(requests.exceptions.SSLError, ssl.SSLError, urllib3.exceptions.SSLError):
        return HTTPFailure("tls", f"the TLS handshake with {where} failed",
                           "that the URL's scheme and port are right (https:// to a port that speaks plain "
                           "http fails like this) and that the server's TLS set-up is sound")
    if has(ConnectionRefusedError):
        return HTTPFailure("refused", f"the connection to {where} was refused",
                           "that the identity provider is running and listening on that host and port, "
                           "and that no firewall rejects the connection")
    # (urllib3's NewConnectionError subclasses ConnectTimeoutError: only the exact type is a timeout)
    if has(requests.exceptions.ConnectTimeout) or any(type(e) is urllib3.exceptions.ConnectTimeoutError
                                                      for e in chain):
        return HTTPFailure("connect_timeout", f"no connection to {where} could be made{within} (timeout)",
                           "firewalls, proxies and the network route to that host and port")
    if has(requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError, TimeoutError):
        return HTTPFailure("timeout", f"{where} accepted the connection but did not answer{within} (timeout)",
                           "the identity provider's health and load, or a proxy in between that holds requests")
    if has(ConnectionResetError, urllib3.exceptions.ProtocolError):
        return HTTPFailure("connection", f"{where} closed the connection without a proper HTTP answer",
                           "that the URL's scheme and port are right and the identity provider is healthy")
    return HTTPFailure("connection", f"the connection to {where} failed",
                       "that the identity provider is reachable from this server at that URL")


#: one ERROR line per URL and kind of failure in this many seconds; the repeats go to DEBUG
#: (an outage, or anyone starting sign-ins during one, must not flood the log)
LOG_REPEAT_SECONDS = 10.0
_last_logged: dict[tuple[str, str], float] = {}
_last_logged_lock = threading.Lock()


def _level_for(url: str, kind: str) -> int:
    now = time.monotonic()
    with _last_logged_lock:
        last = _last_logged.get((url, kind))
        if last is not None and now - last < LOG_REPEAT_SECONDS:
            return logging.DEBUG
        if len(_last_logged) > 1000:
            _last_logged.clear()
        _last_logged[(url, kind)] = now
    return logging.ERROR


def _cause_text(exc: BaseException) -> str:
    """The exception chain for the log: every type, and the text of the
    outermost and innermost (the ones between repeat them)."""
    chain = list(_causes(exc))
    return " <- ".join(f"{type(e).__name__}: {e}" if i in (0, len(chain) - 1) else type(e).__name__
                       for i, e in enumerate(chain))


def unreachable(exc: BaseException, url: str, what: str, *, timeout: float | None = None,
                **extra: Any) -> IdPUnavailable:
    """The :class:`IdPUnavailable` for a failed request to an IdP endpoint.

    The operator's log gets everything (URL, the classified failure, the
    exception chain's own text); the page and the JSON body get the URL, what
    failed and what to check, never the exception's text. ``what`` names the
    endpoint ("discovery document", "token endpoint").
    """
    failure = classify_http_failure(exc, url, timeout)
    shown = mask_url(url)
    log.log(_level_for(shown, failure.kind),
            "flask-ccsso: cannot reach the identity provider's %s at %s: %s [%s]. Check %s. Cause: %s",
            what, shown, failure.problem, failure.kind, failure.check, _cause_text(exc))
    lead = "Could not use the answer of" if failure.kind == "too_large" else "Could not reach"
    return IdPUnavailable(f"{lead} the identity provider's {what} at {shown}: {failure.problem}. "
                          f"Check {failure.check}.", failure=failure.kind, **extra)


def bad_answer(url: str, what: str, problem: str, **extra: Any) -> IdPUnavailable:
    """The :class:`IdPUnavailable` for an IdP endpoint that answered, but not
    usefully (an HTTP error status, not JSON): logged with the URL."""
    shown = mask_url(url)
    log.error("flask-ccsso: the identity provider's %s at %s %s", what, shown, problem)
    return IdPUnavailable(f"The identity provider's {what} at {shown} {problem}.", failure="bad_answer", **extra)


def fetch_json(http: requests.Session, url: str, timeout: float, what: str) -> dict[str, Any]:
    """GET ``url`` and return its JSON object; map every failure to IdPUnavailable
    (:func:`unreachable`: the URL, what failed and what to check)."""
    try:
        resp = http.get(url, timeout=timeout, headers={"Accept": "application/json"}, stream=True)
    except requests.RequestException as exc:
        raise unreachable(exc, url, what, timeout=timeout) from exc
    if resp.status_code != 200:
        resp.close()
        raise bad_answer(url, what, f"answered HTTP {resp.status_code}")
    try:
        data = loads_strict(read_capped(resp, timeout))
    except (ResponseTooLarge, requests.RequestException) as exc:
        raise unreachable(exc, url, what, timeout=timeout) from exc
    except (ValueError, RecursionError) as exc:
        raise bad_answer(url, what, "is not JSON") from exc
    if not isinstance(data, dict):
        raise bad_answer(url, what, "is not a JSON object")
    return data


class TTLDocument:
    """One JSON document fetched on demand and kept for ``ttl`` seconds.

    A failed refresh keeps serving the last good copy (and retries after
    ``retry_after`` seconds) instead of failing every sign-in while the IdP
    blips; with no copy at all it raises :class:`IdPUnavailable`. One fetch
    at a time: callers that waited on the lock while a fetch failed get that
    failure at once instead of fetching again -- otherwise an IdP that
    accepts connections but never answers would make each of them wait its
    full timeout in turn, queued behind the one before. A caller arriving
    after a failed fetch ended tries again (the views decide when a provider
    known to be down is worth trying: :func:`~flask_ccsso.views._known_outage`).
    """

    def __init__(self, loader: Callable[[], dict[str, Any]], ttl: float, clock: Callable[[], float],
                 retry_after: float = 30.0, *, status: FetchStatus | None = None, what: str = "document") -> None:
        self._loader = loader
        self._ttl = ttl
        self._clock = clock
        self._retry_after = retry_after
        #: where each fetch's outcome is reported (the provider's availability), as ``what``
        self._status = status
        self._what = what
        self._value: dict[str, Any] | None = None
        self._fresh_until = 0.0
        #: fetches ended so far, and the failure of the last one while no copy was held (``None``: it succeeded)
        self._ended = 0
        self._failure: IdPUnavailable | None = None
        self._lock = threading.Lock()

    def get(self) -> dict[str, Any]:
        now = self._clock()
        if self._value is not None and now < self._fresh_until:
            return self._value
        ended = self._ended
        with self._lock:
            if self._value is not None and self._clock() < self._fresh_until:
                return self._value
            failure = self._failure
            if failure is not None and self._ended != ended:
                # the fetch this caller waited for failed: its answer, a new exception (one object
                # must not be raised in several threads at once), not another wait
                raise IdPUnavailable(failure.description, reason=failure.reason, **failure.extra)
            try:
                self._value = self._loader()
                self._fresh_until = self._clock() + self._ttl
                self._failure = None
            except IdPUnavailable as exc:
                if self._status is not None:
                    self._status.failed(self._what, exc.description, cached=self._value is not None,
                                        failure=exc.extra.get("failure"))
                if self._value is None:
                    self._failure = exc
                    raise
                self._fresh_until = self._clock() + self._retry_after
            else:
                if self._status is not None:
                    self._status.succeeded(self._what)
            finally:
                self._ended += 1
            return self._value

    def invalidate(self) -> None:
        self._fresh_until = 0.0


class JWKSCache:
    """The IdP's signing keys, with TTL and a cooldown on forced refetches."""

    def __init__(self, loader: Callable[[], dict[str, Any]], ttl: float, cooldown: float,
                 clock: Callable[[], float], *, status: FetchStatus | None = None) -> None:
        def counted() -> dict[str, Any]:
            self.fetches += 1
            doc = loader()
            # a malformed answer is a failed fetch: the last good keys stay
            if not isinstance(doc.get("keys"), list):
                raise IdPUnavailable("The identity provider's signing keys (JWKS) have no 'keys' list.")
            return doc

        self._doc = TTLDocument(counted, ttl, clock, status=status, what="signing keys (JWKS)")
        self._cooldown = cooldown
        self._clock = clock
        self._last_forced = float("-inf")
        self._keyset: KeySet | None = None
        #: per (kid, key type, alg): the keys :meth:`signing_keys` picked from ``_keyset``
        self._picked: dict[tuple[str | None, str | None, str], list[Any]] = {}
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
            self._picked = {}
            self._source = doc
        assert self._keyset is not None
        return self._keyset

    def candidates(self, kid: str | None) -> list[Any]:
        """Keys a token with ``kid`` may have been signed with: every key with
        that ``kid`` (an IdP may publish the same kid twice during a rollover),
        or every key when the token names none."""
        ks = self.keyset()
        return [k for k in ks.keys if kid is None or k.kid == kid]

    #: at most this many (kid, type, alg) picks are remembered per JWKS document
    MAX_PICKED = 64

    def signing_keys(self, kid: str | None, kty: str | None, alg: str) -> list[Any]:
        """:meth:`candidates` of key type ``kty`` that are not pinned to another
        algorithm than ``alg`` (a key's own ``alg`` must match the token's).
        Picked once per JWKS document: a token verification does not rescan
        (and re-read the members of) every key."""
        self.keyset()  # a new document resets the picks
        picked = self._picked
        key = (kid, kty, alg)
        keys = picked.get(key)
        if keys is None:
            keys = [k for k in self.candidates(kid) if k.key_type == kty and k.get("alg") in (None, alg)]
            if len(picked) < self.MAX_PICKED:
                picked[key] = keys
        return keys

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
