"""The console's identity-providers section: what each IdP published, how fetching it went, and
when its certificates end.

Showing the page does no network I/O: it reads what the providers already
keep (:func:`provider_view`, the one adapter over the providers' internals):

* :meth:`Provider.availability() <flask_ccsso.providers.base.Provider.availability>`
  -- the last successful fetch of a published document (discovery, JWKS,
  SAML metadata), the last error and whether a sign-in there fails now;
* the cached documents themselves -- the OIDC discovery document and JWKS
  (:class:`~flask_ccsso.providers.keys.TTLDocument` inside the provider), the
  SAML metadata (:class:`~flask_ccsso.providers.saml_metadata.MetadataSource`)
  -- for the issuer / IdP entity id and the certificates in them: the SAML
  IdP's signing certificates, the OIDC keys that carry an ``x5c`` chain;
* the app's own certificates: the SAML SP certificate and the OIDC client
  assertion certificate (``private_key_jwt``), read from the configuration.

A document nobody has needed yet (no sign-in since start) is "not fetched
yet". Certificate dates are read with ``cryptography``; one ending within
:data:`WARN_DAYS` is a warning, within :data:`URGENT_DAYS` an urgent one,
past its end an error (an expired IdP signing certificate stops every
sign-in: the classic SAML outage).

``flask ccsso check-config`` (:func:`~flask_ccsso.cli.check.run_checks`)
reaches every IdP, so it runs only when the operator asks ("Run checks": a
POST with the CSRF token, though it changes nothing, so no other site can make
the console reach out), with each provider's short ``timeout``.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography import x509
from flask import Blueprint, request

from .._context import current_flask_app
from .._validate import mask_url
from ..cli.check import Report, run_checks
from ..state import get_state
from . import page

log = logging.getLogger("flask_ccsso")

#: a certificate ending within this many days is a warning ...
WARN_DAYS = 30
#: ... and within this many an urgent one
URGENT_DAYS = 7

#: certificate levels, worst first (``Certificate.level``)
EXPIRED, URGENT, WARNING, OK = "expired", "urgent", "warning", "ok"
_RANK = {EXPIRED: 0, URGENT: 1, WARNING: 2, OK: 3}


@dataclass(frozen=True)
class Certificate:
    """One certificate's end of validity, as the page shows it."""

    #: what it is ("IdP signing certificate 1", "SP certificate", "JWKS key k1")
    label: str
    subject: str
    not_after: dt.datetime
    days_left: float

    @property
    def level(self) -> str:
        if self.days_left < 0:
            return EXPIRED
        if self.days_left < URGENT_DAYS:
            return URGENT
        return WARNING if self.days_left < WARN_DAYS else OK


@dataclass(frozen=True)
class Document:
    """One document the IdP publishes: where, and whether a good copy is cached."""

    what: str
    location: str
    cached: bool
    #: the document's own end (SAML metadata ``validUntil``), when it has one
    valid_until: float | None = None


@dataclass(frozen=True)
class ProviderView:
    """What the page shows of one provider (nothing secret)."""

    name: str
    type: str
    protocol: str
    #: the OIDC issuer or the SAML IdP's entity id (configured, else from the cached metadata)
    issuer: str | None
    documents: tuple[Document, ...]
    certificates: tuple[Certificate, ...]
    #: the provider's availability (``None``: this provider type does not track it)
    last_success: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    unavailable: bool = False
    down: tuple[str, ...] = ()
    #: certificates that could not be read (label: why)
    unreadable: tuple[str, ...] = field(default_factory=tuple)
    tracked: bool = True

    @property
    def worst(self) -> str:
        return min((c.level for c in self.certificates), key=_RANK.__getitem__, default=OK)


def certificate(label: str, data: bytes, now: float, *, pem: bool = False) -> Certificate:
    """A certificate's subject and end, read with ``cryptography`` (DER, or PEM with ``pem``)."""
    cert = x509.load_pem_x509_certificate(data) if pem else x509.load_der_x509_certificate(data)
    not_after = cert.not_valid_after_utc
    return Certificate(label, cert.subject.rfc4514_string(), not_after, (not_after.timestamp() - now) / 86400)


def _cached(document: Any) -> Any:
    """The last good copy a provider's document cache holds (``None``: not fetched yet). No I/O."""
    return getattr(document, "_value", None)


def _saml(prov: Any, now: float, certs: list[Certificate], unreadable: list[str]) -> tuple[str | None, list[Document]]:
    s = prov.settings
    meta = _cached(prov.metadata)
    for i, der in enumerate(getattr(meta, "signing_certs", ()) or (), start=1):
        try:
            certs.append(certificate(f"IdP signing certificate {i}", base64.b64decode(der), now))
        except ValueError:
            unreadable.append(f"IdP signing certificate {i}: not a certificate")
    if s.sp_certificate:
        try:
            if "-----BEGIN" in s.sp_certificate:
                pem = s.sp_certificate.replace("\\n", "\n").encode("ascii")
            else:
                with open(prov._resolve(s.sp_certificate), "rb") as fh:
                    pem = fh.read(1024 * 1024)
            certs.append(certificate("SP certificate (this app)", pem, now, pem=True))
        except (OSError, ValueError):
            unreadable.append("SP certificate (this app): cannot be read")
    location = mask_url(s.idp_metadata) if prov.metadata.is_url else f"file {s.idp_metadata}"
    docs = [Document("SAML metadata", location, meta is not None, getattr(meta, "valid_until", None))]
    return s.idp_entity_id or getattr(meta, "entity_id", None), docs


def _oidc(prov: Any, now: float, certs: list[Certificate], unreadable: list[str]) -> tuple[str | None, list[Document]]:
    s = prov.settings
    discovery = _cached(getattr(prov, "discovery", None))
    jwks = _cached(getattr(getattr(prov, "jwks", None), "_doc", None))
    for key in (jwks or {}).get("keys", []) if isinstance(jwks, dict) else []:
        chain = key.get("x5c") if isinstance(key, dict) else None
        if not isinstance(chain, list) or not chain or not isinstance(chain[0], str):
            continue
        label = f"JWKS key {key.get('kid') or '(no kid)'}"
        try:
            certs.append(certificate(label, base64.b64decode(chain[0]), now))
        except ValueError:
            unreadable.append(f"{label}: its x5c is not a certificate")
    keys = getattr(getattr(prov, "client_auth", None), "keys", None)
    if keys is not None:
        try:
            signing = keys.current()
        except Exception:  # noqa: BLE001 - a key file being rotated: the sign-in reports it
            unreadable.append("client assertion key: cannot be read now")
        else:
            if signing.not_after is not None:
                end = dt.datetime.fromtimestamp(signing.not_after, tz=dt.timezone.utc)
                certs.append(Certificate("client assertion certificate (this app)", "", end,
                                         (signing.not_after - now) / 86400))
    jwks_uri = discovery.get("jwks_uri") if isinstance(discovery, dict) else None
    docs = [Document("discovery document", mask_url(getattr(s, "discovery_url", "") or ""), discovery is not None),
            Document("signing keys (JWKS)", mask_url(jwks_uri) if isinstance(jwks_uri, str) else "from discovery",
                     jwks is not None)]
    return getattr(s, "issuer", None), docs


def provider_view(prov: Any, now: float) -> ProviderView:
    """The adapter: one provider's state, read from what it keeps (no network I/O)."""
    certs: list[Certificate] = []
    unreadable: list[str] = []
    if prov.protocol == "saml":
        issuer, docs = _saml(prov, now, certs, unreadable)
    else:
        issuer, docs = _oidc(prov, now, certs, unreadable)
    status = prov.availability() if callable(getattr(prov, "availability", None)) else None
    certs.sort(key=lambda c: c.not_after)
    view = ProviderView(prov.name, prov.type, prov.protocol, issuer, tuple(docs), tuple(certs),
                        unreadable=tuple(unreadable), tracked=status is not None)
    if status is None:
        return view
    return replace(view, last_success=status.last_success, last_error=status.last_error,
                   last_error_at=status.last_error_at, unavailable=status.unavailable, down=status.documents)


def provider_views() -> list[ProviderView]:
    """Every configured provider's view (the overview counts from these too)."""
    state = get_state()
    now = state.clock()
    return [provider_view(prov, now) for prov in state.providers.values()]


def expiring(views: list[ProviderView]) -> list[tuple[ProviderView, Certificate]]:
    """Certificates past or near their end, worst first."""
    found = [(v, c) for v in views for c in v.certificates if c.level != OK]
    return sorted(found, key=lambda vc: (_RANK[vc[1].level], vc[1].not_after))


def utc(ts: float) -> str:
    """An epoch time as ``2026-11-30 08:00 UTC``."""
    return dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def ago(seconds: float | None) -> str:
    """``"3 min ago"``: how long ago, for people."""
    if seconds is None:
        return "never"
    s = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s // size} {unit} ago"
    return f"{s} s ago"


def register(bp: Blueprint) -> None:
    """Add this section's routes to the console blueprint."""

    @bp.route("/providers", endpoint="providers", methods=["GET", "POST"])
    def providers_page() -> str:
        state = get_state()
        findings: list[tuple[str, str]] | None = None
        if request.method == "POST":  # "Run checks" (the guard checked its CSRF token)
            report = Report(lambda _line: None)
            run_checks(report, current_flask_app(), state)
            findings = report.findings
        views = provider_views()  # after the checks: they may have fetched documents
        return page("providers.html", title="Identity providers", views=views, expiring=expiring(views),
                    findings=findings, now=state.clock(), ago=ago, utc=utc, warn_days=WARN_DAYS, urgent_days=URGENT_DAYS)
