"""The IdP's SAML metadata: read from a file or fetched from a URL, cached.

URL metadata is kept in memory and refreshed on a schedule that honours the
document's own ``cacheDuration`` (default ``metadataRefresh``) and never
outlives its ``validUntil``. While the URL is unreachable the last good copy
keeps serving (retrying every ``retry_after`` seconds) until its
``validUntil`` passes; a new signing certificate (IdP key rollover) is picked
up at the next refresh, or sooner when a response names a certificate the
cached copy does not know (at most once per ``cooldown``), without a restart.

Only the one ``EntityDescriptor`` this provider trusts (``idpEntityId``, or
the only IdP in the document) is ever handed to pysaml2, so its key lookup
by issuer can find no other entity's keys.

The metadata decides which keys sign in anyone, so how it is fetched and
what is accepted are strict:

* a URL is fetched without following redirects blindly: each hop (at most
  :data:`MAX_REDIRECTS`) must stay on the configured host and on https (plain
  http only where the configured URL itself is http, which the config allows
  for loopback hosts only);
* with ``idpMetadataCertificate`` set, the document's root
  (``EntityDescriptor`` or ``EntitiesDescriptor``) must carry an enveloped
  signature that xmlsec1 verifies with that certificate;
* ``validUntil`` (on the EntitiesDescriptor, the EntityDescriptor or its
  IDPSSODescriptor, the earliest wins) is honoured: expired metadata is
  refused, a malformed date too.

A refused refresh (unreachable, unsigned, expired ...) is logged and keeps
the last good copy until that copy's own ``validUntil``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests

from ..exceptions import AuthenticationFailed, IdPUnavailable
from .availability import FetchStatus
from .keys import ResponseTooLarge, read_capped, unreachable
from .saml_verify import SignatureInvalid, check_root_signature, verify_enveloped
from .saml_xml import DS, MD, parse_instant, parse_xml, serialize

log = logging.getLogger("flask_ccsso")

REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
#: redirects followed when fetching metadata (each hop re-checked)
MAX_REDIRECTS = 3
#: the most a metadata document may be (file or URL)
MAX_METADATA_BYTES = 4 * 1024 * 1024
_DURATION = re.compile(r"^(-)?P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


class MetadataError(ValueError):
    """The metadata document is unusable (message says why)."""


def parse_duration(value: str | None) -> float | None:
    """xs:duration (``PT1H``, ``P1D`` ...) → seconds (months = 30 days, years = 365)."""
    if not value:
        return None
    m = _DURATION.match(value.strip())
    if not m or value.strip() in ("P", "PT"):
        raise MetadataError(f"cacheDuration {value!r} is not an xs:duration")
    sign, y, mo, d, h, mi, s = m.groups()
    secs = (int(y or 0) * 365 + int(mo or 0) * 30 + int(d or 0)) * 86400 + int(h or 0) * 3600 + int(mi or 0) * 60 \
        + float(s or 0)
    return -secs if sign else secs


@dataclass(frozen=True)
class IdPMetadata:
    """What flask-ccsso uses from the IdP's metadata."""

    #: the single EntityDescriptor, serialised (what pysaml2 is given)
    xml: str
    entity_id: str
    #: base64 DER signing certificates (whitespace removed)
    signing_certs: tuple[str, ...]
    sso_redirect: str | None
    slo_redirect: str | None
    slo_redirect_response: str | None
    valid_until: float | None
    cache_duration: float | None
    #: bumps each time a different document is loaded (client caches key on it)
    version: int = 0


def _q(tag: str, ns: str = MD) -> str:
    return f"{{{ns}}}{tag}"


def _valid_until(el: ET.Element | None) -> float | None:
    """``validUntil`` of a metadata element; malformed is unusable, not absent."""
    value = el.get("validUntil") if el is not None else None
    if not value:
        return None
    try:
        return parse_instant(value)
    except AuthenticationFailed:
        raise MetadataError(f"validUntil {value[:40]!r} is not an xs:dateTime") from None


def verify_metadata_signature(data: bytes, certificate: str | bytes, xmlsec: str) -> None:
    """The root ``EntityDescriptor`` / ``EntitiesDescriptor`` carries an
    enveloped signature that xmlsec1 verifies with ``certificate`` (PEM, or
    base64 DER); anything else raises :class:`MetadataError`."""
    try:
        root = parse_xml(data)
    except AuthenticationFailed as exc:
        raise MetadataError(f"not usable XML ({exc.description})") from None
    if root.tag not in (_q("EntityDescriptor"), _q("EntitiesDescriptor")):
        raise MetadataError("the document is not SAML metadata (no EntityDescriptor)")
    try:
        check_root_signature(root)
        verify_enveloped(xmlsec, data, [certificate], node=str(root.tag))
    except SignatureInvalid as exc:
        raise MetadataError(f"its signature is not valid ({exc})") from None


def parse_idp_metadata(data: bytes, *, entity_id: str | None, now: float, version: int = 0) -> IdPMetadata:
    try:
        root = parse_xml(data)
    except AuthenticationFailed as exc:
        raise MetadataError(f"not usable XML ({exc.description})") from None
    candidates: list[ET.Element]
    valid_until = cache = None
    if root.tag == _q("EntitiesDescriptor"):
        valid_until = _valid_until(root)
        cache = parse_duration(root.get("cacheDuration"))
        candidates = list(root.iter(_q("EntityDescriptor")))
    elif root.tag == _q("EntityDescriptor"):
        candidates = [root]
    else:
        raise MetadataError("the document is not SAML metadata (no EntityDescriptor)")
    idps = [e for e in candidates if e.find(_q("IDPSSODescriptor")) is not None]
    if entity_id:
        idps = [e for e in idps if e.get("entityID") == entity_id]
        if not idps:
            raise MetadataError(f"it describes no identity provider with entityID {entity_id!r}")
    if len(idps) != 1:
        raise MetadataError("it describes several identity providers; set idpEntityId to choose one"
                            if idps else "it describes no identity provider (IDPSSODescriptor)")
    ed = idps[0]
    for el in (ed, ed.find(_q("IDPSSODescriptor"))):
        vu = _valid_until(el)
        if vu is not None and (valid_until is None or vu < valid_until):
            valid_until = vu
    if ed.get("cacheDuration"):
        cd = parse_duration(ed.get("cacheDuration"))
        cache = cd if cache is None or (cd is not None and cd < cache) else cache
    if valid_until is not None and valid_until <= now:
        raise MetadataError("it has expired (validUntil is in the past)")
    idp = ed.find(_q("IDPSSODescriptor"))
    assert idp is not None
    certs = []
    for kd in idp.findall(_q("KeyDescriptor")):
        if kd.get("use", "signing") != "signing":
            continue
        for c in kd.iter(f"{{{DS}}}X509Certificate"):
            if c.text and c.text.strip():
                certs.append("".join(c.text.split()))
    if not certs:
        raise MetadataError("it publishes no signing certificate (KeyDescriptor use=\"signing\")")

    def endpoint(tag: str, binding: str, attr: str = "Location") -> str | None:
        for e in idp.findall(_q(tag)):
            if e.get("Binding") == binding:
                return e.get(attr) or (e.get("Location") if attr != "Location" else None)
        return None

    sso = endpoint("SingleSignOnService", REDIRECT)
    if not sso:
        raise MetadataError("it has no SingleSignOnService with the HTTP-Redirect binding")
    # hand pysaml2 this one entity only, with the namespaces it needs
    if ed is not root:
        ed = ET.fromstring(serialize(ed))
    return IdPMetadata(xml=serialize(ed), entity_id=ed.get("entityID") or "", signing_certs=tuple(certs),
                       sso_redirect=sso, slo_redirect=endpoint("SingleLogoutService", REDIRECT),
                       slo_redirect_response=endpoint("SingleLogoutService", REDIRECT, "ResponseLocation"),
                       valid_until=valid_until, cache_duration=cache, version=version)


class MetadataSource:
    """The IdP metadata for one provider: a file (read once) or a URL (cached)."""

    def __init__(self, location: str, *, entity_id: str | None, refresh: float, timeout: float,
                 http: requests.Session, clock: Callable[[], float], root_path: Callable[[], str | None],
                 retry_after: float = 30.0, cooldown: float = 60.0, signing_cert: str | None = None,
                 xmlsec: str | None = None, status: FetchStatus | None = None) -> None:
        self.location = location
        #: where each load's outcome is reported (the provider's availability)
        self.status = status
        #: PEM text or a file path (relative to the app root): the metadata must be signed by it
        self.signing_cert = signing_cert
        self.xmlsec = xmlsec
        self.is_url = location.startswith(("https://", "http://"))
        self.entity_id = entity_id
        self.refresh = refresh
        self.timeout = timeout
        self.http = http
        self.clock = clock
        self._root_path = root_path
        self.retry_after = retry_after
        self.cooldown = cooldown
        self._value: IdPMetadata | None = None
        self._raw: bytes | None = None
        self._fresh_until = 0.0
        #: loads ended so far, and the failure of the last one while no usable copy was held: callers
        #: that waited on the lock meanwhile get it at once (as in :class:`~flask_ccsso.providers.keys.TTLDocument`)
        self._ended = 0
        self._failure: IdPUnavailable | None = None
        self._last_forced = float("-inf")
        self._lock = threading.Lock()
        self._version = 0
        #: how many times the URL was fetched (tests and metrics)
        self.fetches = 0

    # -- loading ---------------------------------------------------------------------
    def path(self) -> str:
        if os.path.isabs(self.location):
            return self.location
        root = self._root_path()
        return os.path.join(root, self.location) if root else os.path.abspath(self.location)

    def _read(self) -> bytes:
        if not self.is_url:
            try:
                with open(self.path(), "rb") as fh:
                    return fh.read(MAX_METADATA_BYTES)
            except OSError as exc:
                raise MetadataError(f"cannot read {self.path()!r} ({exc.strerror})") from None
        self.fetches += 1
        url = self.location
        try:
            for _hop in range(MAX_REDIRECTS + 1):
                resp = self.http.get(url, timeout=self.timeout, stream=True, allow_redirects=False,
                                     headers={"Accept": "application/samlmetadata+xml, application/xml"})
                if resp.is_redirect:
                    resp.close()
                    url = self._next_hop(url, resp.headers.get("Location", ""))
                    continue
                if resp.status_code != 200:
                    resp.close()
                    raise IdPUnavailable(f"The identity provider answered {resp.status_code} for its SAML metadata.")
                # the same 4 MiB bound as a metadata file
                return read_capped(resp, self.timeout, MAX_METADATA_BYTES)
            raise IdPUnavailable("The identity provider's SAML metadata URL redirects too often.")
        except (ResponseTooLarge, requests.RequestException) as exc:
            raise unreachable(exc, url, "SAML metadata", timeout=self.timeout) from exc

    def fetch_afresh(self) -> None:
        """Fetch the URL, bypassing (and leaving alone) the cached copy: whether
        the IdP answers now (:meth:`~flask_ccsso.providers.base.Provider.probe`)."""
        self._read()

    def _next_hop(self, current: str, location: str) -> str:
        """A redirect is followed only to the configured host, over https
        (http only when the configured URL is itself http: a loopback host,
        as the config allows). Anything else is refused, not fetched: a
        redirect must not lead the metadata -- the trust anchor of every
        sign-in -- to another server or off TLS."""
        target = urljoin(current, location)
        want, got = urlsplit(self.location), urlsplit(target)
        allowed_schemes = ("https",) if want.scheme == "https" else ("https", "http")
        if not location or got.scheme not in allowed_schemes or (got.hostname or "") != (want.hostname or ""):
            log.warning("flask-ccsso: refused a redirect of the SAML metadata URL %s to another host or scheme",
                        self.location)
            raise IdPUnavailable("The identity provider's SAML metadata URL redirects to another host or scheme.")
        if got.port != want.port and not (got.scheme == "https" and got.port in (None, 443)):
            log.warning("flask-ccsso: refused a redirect of the SAML metadata URL %s to another port", self.location)
            raise IdPUnavailable("The identity provider's SAML metadata URL redirects to another port.")
        return target

    def _certificate(self) -> bytes:
        """``idpMetadataCertificate``: PEM text, or a file (relative to the app root)."""
        value = self.signing_cert or ""
        if "-----BEGIN" in value:
            return value.replace("\\n", "\n").encode("ascii")
        path = value if os.path.isabs(value) else os.path.join(self._root_path() or os.getcwd(), value)
        try:
            with open(path, "rb") as fh:
                return fh.read(1024 * 1024)
        except OSError as exc:
            raise MetadataError(f"cannot read idpMetadataCertificate {value!r} ({exc.strerror})") from None

    def _load(self) -> None:
        raw = self._read()
        now = self.clock()
        if raw == self._raw and self._value is not None:
            value = self._value
            if value.valid_until is not None and value.valid_until <= now:
                raise MetadataError("it has expired (validUntil is in the past)")
        else:
            if self.signing_cert:
                verify_metadata_signature(raw, self._certificate(), self.xmlsec or "xmlsec1")
            self._version += 1
            value = parse_idp_metadata(raw, entity_id=self.entity_id, now=now, version=self._version)
            if self._value is not None and value.entity_id != self._value.entity_id and not self.entity_id:
                raise MetadataError("the metadata now names another identity provider; set idpEntityId")
        ttl = value.cache_duration if value.cache_duration and value.cache_duration > 0 else self.refresh
        fresh_until = now + ttl
        if value.valid_until is not None:
            fresh_until = min(fresh_until, value.valid_until)
        self._value, self._raw = value, raw
        self._fresh_until = fresh_until if self.is_url else float("inf")

    def get(self) -> IdPMetadata:
        value = self._value
        if value is not None and self.clock() < self._fresh_until:
            return value
        ended = self._ended
        with self._lock:
            now = self.clock()
            if self._value is not None and now < self._fresh_until:
                return self._value
            failure = self._failure
            if failure is not None and self._ended != ended:
                # the load this caller waited for failed: its answer (a new exception), not another wait
                raise IdPUnavailable(failure.description, reason=failure.reason, **failure.extra)
            try:
                self._load()
            except (IdPUnavailable, MetadataError) as exc:
                old = self._value
                problem = exc.description if isinstance(exc, IdPUnavailable) else str(exc)
                if self.status is not None:
                    served = old is not None and (old.valid_until is None or old.valid_until > now)
                    if isinstance(exc, IdPUnavailable):
                        self.status.failed("SAML metadata", problem, cached=served, failure=exc.extra.get("failure"))
                    else:
                        self.status.failed("SAML metadata", f"The identity provider's SAML metadata is not usable: "
                                           f"{exc}", cached=served, failure="bad_answer")
                if old is None or (old.valid_until is not None and old.valid_until <= now):
                    log.warning("flask-ccsso: the SAML metadata %s was refused: %s", self.location, problem)
                    failure = exc if isinstance(exc, IdPUnavailable) else IdPUnavailable(
                        f"The identity provider's SAML metadata is not usable: {exc}")
                    self._failure = failure
                    if failure is exc:
                        raise
                    raise failure from None
                log.warning("flask-ccsso: the SAML metadata %s was refused (%s); keeping the last good copy",
                            self.location, problem)
                # keep the last good copy while the IdP is unreachable (or serves something unusable)
                self._fresh_until = now + self.retry_after
                if old.valid_until is not None:
                    self._fresh_until = min(self._fresh_until, old.valid_until)
            else:
                self._failure = None
                if self.status is not None:
                    self.status.succeeded("SAML metadata")
            finally:
                self._ended += 1
            assert self._value is not None
            return self._value

    def refresh_for_unknown_cert(self) -> bool:
        """A response named a certificate we do not know: refetch (URL only),
        at most once per cooldown. ``True`` if a fetch happened."""
        if not self.is_url:
            return False
        with self._lock:
            now = self.clock()
            if now - self._last_forced < self.cooldown:
                return False
            self._last_forced = now
            self._fresh_until = 0.0
        self.get()
        return True
