"""SAML 2.0 Web Browser SSO through pysaml2 and xmlsec1.

pysaml2 builds the AuthnRequest and the SP metadata, and parses verified
documents into its schema classes. It does *not* decide whether a response is
authentic: its second decryption pass takes a decrypted assertion as verified
without verifying it, and it runs ``xmlsec1 --decrypt`` unrestricted. So the
ACS does, in order (docs/saml.md "What is verified, step by step"):

* a cheap pre-scan (:mod:`.saml_xml`) refuses oversized messages, DTDs and
  entities, comments, signature wrapping shapes, disallowed transforms and
  any EncryptedAssertion outside its allow-listed shape *before* xmlsec1 runs;
* nothing is decrypted unless ``wantAssertionsEncrypted`` (then a plain
  assertion is refused);
* signatures are verified by our own hardened xmlsec1 runs
  (:mod:`.saml_xmlsec`) against the certificates in *this* provider's
  metadata only, the Response's on the bytes received, the Assertion's on the
  (decrypted) document; a decrypted assertion goes through the same pre-scan
  and may hold no encrypted content; ``wantAssertionsSigned`` /
  ``wantResponseSigned`` are checked against what was *verified*;
* InResponseTo (an outstanding request, consumed once from the shared store),
  Destination, Recipient, Audience, Issuer, NotBefore / NotOnOrAfter (with
  ``clockSkew`` against the provider's clock) are compared explicitly;
* seen assertion ids are kept in the shared store until they expire, so a
  replay is refused on every worker;
* every failure is an :class:`AuthenticationFailed` with a reason;
  pysaml2's loggers never write a document (:func:`quiet_pysaml2_logging`).
"""

from __future__ import annotations

import base64
import logging
import os
import re
import secrets
import shutil
import tempfile
import warnings
import weakref
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote, unquote_plus

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from .. import reasons
from ..config import SAMLSettings
from ..exceptions import AuthenticationFailed, ConfigError, IdPUnavailable
from ..identity import FUTURE, Identity, auth_time_problem
from .base import (
    CallbackRequest,
    LoginRequest,
    LoginResult,
    Provider,
    SingleLogout,
    check_reauthenticated,
    pending_step_up,
)
from .saml_metadata import IdPMetadata, MetadataSource
from .saml_verify import refuse_unless_verified
from .saml_xml import SAML, SAMLP, Scan, decode_b64, parse_instant, parse_xml, refuse, scan
from .saml_xmlsec import ASSERTION_SIGNATURE, DECRYPTED_ASSERTION_SIGNATURE, RESPONSE_SIGNATURE, Xmlsec

if TYPE_CHECKING:
    from flask import Request

log = logging.getLogger("flask_ccsso")


def _import_pysaml2() -> None:
    """Import pysaml2 once, hiding the one CryptographyDeprecationWarning its
    ``saml2.cryptography.symmetric`` triggers at import (CFB moved to
    ``decrepit``; pysaml2 never uses CFB for SAML)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="CFB has been moved", category=UserWarning)
        import saml2.client
        import saml2.cryptography.symmetric  # noqa: F401


_import_pysaml2()

from saml2.sigver import CryptoBackendXmlSec1


class _XmlSec1(CryptoBackendXmlSec1):
    """pysaml2 runs ``xmlsec1 --version`` twice per signature it verifies;
    the answer cannot change while the process lives, so ask once."""

    _versions: ClassVar[dict[str, str]] = {}

    @property
    def version(self) -> str:
        v = self._versions.get(self.xmlsec)
        if v is None:
            v = self._versions[self.xmlsec] = CryptoBackendXmlSec1.version.fget(self)
        return v

BINDING_REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
BINDING_POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
STATUS_SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
SIG_RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
DIGEST_SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
NAMEID_EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"

#: redirect-binding signature algorithms accepted on IdP-initiated logout
_REDIRECT_SIG_ALGS: dict[str, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256": hashes.SHA256,
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384": hashes.SHA384,
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512": hashes.SHA512,
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256": hashes.SHA256,
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384": hashes.SHA384,
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512": hashes.SHA512,
}

#: AuthnContextClassRef → RFC 8176 ``amr`` (so ``requireMfa`` works for SAML)
_AMR = {
    "urn:oasis:names:tc:SAML:2.0:ac:classes:Password": "pwd",
    "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport": "pwd",
    "urn:oasis:names:tc:SAML:2.0:ac:classes:X509": "sc",
    "urn:oasis:names:tc:SAML:2.0:ac:classes:Smartcard": "sc",
    "urn:oasis:names:tc:SAML:2.0:ac:classes:SmartcardPKI": "sc",
    "urn:oasis:names:tc:SAML:2.0:ac:classes:TimeSyncToken": "otp",
    "urn:oasis:names:tc:SAML:2.0:ac:classes:MobileTwoFactorContract": "mfa",
    "urn:oasis:names:tc:SAML:2.0:ac:classes:MobileTwoFactorUnregistered": "mfa",
    "https://refeds.org/profile/mfa": "mfa",
    "http://schemas.microsoft.com/claims/multipleauthn": "mfa",
}
_FALSE = {"false", "0", "no"}


class _NoUsers:
    """pysaml2's client keeps every signed-in person in an in-memory cache
    (``client.users``) that is never pruned; sessions live in our store."""

    def add_information_about_person(self, session_info: Any) -> None:
        return None


def _cleanup(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _text(el: Any) -> str | None:
    t = getattr(el, "text", None)
    return t.strip() if isinstance(t, str) else None


_ZONE_OFFSET = re.compile(r"[+-]\d\d:?\d\d$")


def _instant(value: str | None) -> float | None:
    """A SAML xs:dateTime: UTC, written with ``Z`` or no zone (SAML core 1.3.3);
    an explicit offset is refused, as pysaml2 refuses it."""
    if value is not None and "T" in value and _ZONE_OFFSET.search(value.strip().partition("T")[2]):
        raise refuse("The SAML message has a timestamp with a zone offset (SAML requires UTC).")
    return parse_instant(value)


@dataclass(frozen=True)
class _Verified:
    """A response whose signatures *we* verified (and whose assertion we decrypted)."""

    response: Any
    assertion: Any
    #: the Response's own signature was verified by our xmlsec1 run
    response_signed: bool
    #: the assertion's own signature was verified by our xmlsec1 run
    assertion_signed: bool
    #: the pre-scan of the document holding the assertion (the decrypted one, if encrypted)
    scan: Scan
    idp: IdPMetadata


_WITHHELD = "pysaml2 logged a %s record at %s:%d (text withheld: it may quote SAML documents)"


def _withhold_text(record: logging.LogRecord) -> bool:
    """A logging filter that empties a pysaml2 record in place: what it says
    becomes *that* it logged (level, module, line), and its exception goes."""
    if record.msg is not _WITHHELD:
        record.msg, record.args = _WITHHELD, (record.levelname, record.name, record.lineno)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
    return True


class _WithheldPysaml2Records(logging.Handler):
    """pysaml2 logs whole SAML documents -- decrypted assertions included, at
    ERROR -- plus tokens and attributes. Its records stop here: at WARNING and
    above one line says *that* it logged (module, line, level), never *what*."""

    def __init__(self) -> None:
        super().__init__()
        self.addFilter(_withhold_text)

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            log.log(record.levelno, "flask-ccsso: " + _WITHHELD, record.levelname, record.name, record.lineno)


def quiet_pysaml2_logging() -> None:
    """Keep the ``saml2`` logger hierarchy from writing documents anywhere.

    Child loggers (``saml2.response``, ``saml2.sigver`` ...) propagate to
    ``saml2``; there our handler replaces each record with a content-free
    line and propagation stops, so no handler of the application (root,
    caplog, a file) ever receives pysaml2's text, whatever its level.

    A handler attached to a ``saml2`` logger itself (pytest >= 9.2 attaches
    caplog's to every non-propagating logger; error trackers hook
    ``Logger.callHandlers``) would still get the record, so the record is
    emptied first: by a filter on each ``saml2`` logger that exists (filters
    run before any handler) and, for loggers pysaml2 creates later, by our
    handler, kept first on ``saml2``."""
    lg = logging.getLogger("saml2")
    for name, other in list(logging.Logger.manager.loggerDict.items()):
        if (name == "saml2" or name.startswith("saml2.")) and isinstance(other, logging.Logger) \
                and _withhold_text not in other.filters:
            other.addFilter(_withhold_text)
    ours = [h for h in lg.handlers if isinstance(h, _WithheldPysaml2Records)] or [_WithheldPysaml2Records()]
    lg.handlers = ours[:1] + [h for h in lg.handlers if h not in ours]
    lg.propagate = False
    if lg.level == logging.NOTSET:
        lg.setLevel(logging.WARNING)


def _b64_der(pem_or_der: x509.Certificate) -> str:
    return base64.b64encode(pem_or_der.public_bytes(serialization.Encoding.DER)).decode("ascii")


class SAMLProvider(Provider):
    """A SAML 2.0 identity provider (Google Workspace, or any IdP publishing metadata)."""

    type: ClassVar[str] = "saml"
    protocol: ClassVar[str] = "saml"
    settings_class = SAMLSettings
    settings: SAMLSettings

    def __init__(self, settings: SAMLSettings, **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        s = settings
        from saml2.sigver import get_xmlsec_binary

        if s.xmlsec_binary:
            if not os.access(s.xmlsec_binary, os.X_OK):
                raise ConfigError(f"{s.path}.xmlsecBinary", f"{s.xmlsec_binary!r} is not an executable.",
                                  "install xmlsec1 (apt install xmlsec1) and point xmlsecBinary at it.")
            self.xmlsec = s.xmlsec_binary
        else:
            try:
                self.xmlsec = get_xmlsec_binary()
            except Exception:  # noqa: BLE001 - pysaml2 raises a bare Exception when it is missing
                raise ConfigError(f"{s.path}.xmlsecBinary", "xmlsec1 was not found on PATH.",
                                  "install xmlsec1 (apt install xmlsec1) or set xmlsecBinary.") from None
        self._tmp = tempfile.mkdtemp(prefix="ccsso-saml-")
        os.chmod(self._tmp, 0o700)
        weakref.finalize(self, _cleanup, self._tmp)
        #: the xmlsec1 runs that decide sign-in: ours, hardened (see saml_xmlsec)
        self.xmlsec_runner = Xmlsec(self.xmlsec, self._tmp, max_input=s.max_response_size,
                                    backend=s.xmlsec_backend, setting=f"{s.path}.xmlsecBackend")
        quiet_pysaml2_logging()
        if s.want_assertions_encrypted and not (s.sp_private_key and s.sp_certificate):
            raise ConfigError(f"{s.path}.wantAssertionsEncrypted", "is true but no SP key pair is configured.",
                              "set spCertificate and spPrivateKey (the key the IdP encrypts to), "
                              "or wantAssertionsEncrypted false.")
        self._key_pair: tuple[str, str] | None | bool = False  # False: not loaded yet
        if s.sp_private_key or s.sp_certificate:
            if not (s.sp_private_key and s.sp_certificate):
                missing = "spCertificate" if not s.sp_certificate else "spPrivateKey"
                raise ConfigError(f"{s.path}.{missing}", "is needed together with the other half of the SP key pair.",
                                  "set both spCertificate and spPrivateKey (PEM text from ${VAR}, or file paths).")
            if self._is_pem(s.sp_private_key) or os.path.isabs(s.sp_private_key):
                self._load_keys(None)  # fail at start-up when we can
        elif s.sign_authn_requests:
            raise ConfigError(f"{s.path}.signAuthnRequests", "is true but no SP key pair is configured.",
                              "set spCertificate and spPrivateKey, or signAuthnRequests false.")
        self.metadata = MetadataSource(s.idp_metadata, entity_id=s.idp_entity_id, refresh=s.metadata_refresh,
                                       timeout=s.timeout, http=self.http, clock=self.clock, root_path=self._root_path,
                                       signing_cert=s.idp_metadata_certificate, xmlsec=self.xmlsec,
                                       status=self.status)
        if not self.metadata.is_url and os.path.isabs(s.idp_metadata):
            self._startup_metadata()
        self._clients: dict[tuple[int, str], Any] = {}

    def startup(self) -> None:
        """Read keys and file metadata now (inside the app context), so a
        missing or broken file fails at start-up with its key path."""
        if self.settings.sp_private_key and self.settings.sp_certificate:
            self._load_keys(None)
        if not self.metadata.is_url:
            self._startup_metadata()

    # -- files and keys -----------------------------------------------------------------
    @staticmethod
    def _root_path() -> str | None:
        from flask import current_app, has_app_context

        return current_app.root_path if has_app_context() else None

    @staticmethod
    def _is_pem(value: str | None) -> bool:
        return value is not None and "-----BEGIN" in value

    def _startup_metadata(self) -> None:
        try:
            self.metadata.get()
        except IdPUnavailable as exc:
            raise ConfigError(f"{self.settings.path}.idpMetadata", str(exc.description),
                              "download the IdP metadata XML again (Google Admin > Apps > your SAML app).") from None

    def _resolve(self, value: str) -> str:
        if os.path.isabs(value):
            return value
        root = self._root_path()
        return os.path.join(root, value) if root else os.path.abspath(value)

    def _load_keys(self, _unused: Any) -> tuple[str, str] | None:
        s = self.settings
        if not isinstance(self._key_pair, bool):  # False: not loaded yet
            return self._key_pair
        if not s.sp_private_key or not s.sp_certificate:
            self._key_pair = None
            return None

        def read(value: str, key: str) -> bytes:
            if self._is_pem(value):
                return value.replace("\\n", "\n").encode("ascii")
            try:
                with open(self._resolve(value), "rb") as fh:
                    return fh.read()
            except OSError as exc:
                raise ConfigError(f"{s.path}.{key}", f"cannot read {value!r} ({exc.strerror}).",
                                  "give a PEM file path (relative to the app root) or the PEM text from ${VAR}.") from None

        key_pem = read(s.sp_private_key, "spPrivateKey")
        cert_pem = read(s.sp_certificate, "spCertificate")
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError):
            raise ConfigError(f"{s.path}.spPrivateKey", "is not an unencrypted PEM private key.",
                              "export the key as PEM without a passphrase.") from None
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError:
            raise ConfigError(f"{s.path}.spCertificate", "is not a PEM certificate.", "give the SP certificate as PEM.") from None
        pub = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if pub != cert.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo):
            raise ConfigError(f"{s.path}.spCertificate", "does not belong to spPrivateKey.", "configure the matching pair.")
        # pysaml2 hands xmlsec1 file names: private copies, 0600, in a 0700 dir
        key_file = os.path.join(self._tmp, "sp.key")
        cert_file = os.path.join(self._tmp, "sp.crt")
        for path, data in ((key_file, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption())),
                           (cert_file, cert.public_bytes(serialization.Encoding.PEM))):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        self._key_pair = (key_file, cert_file)
        return self._key_pair

    def keys(self) -> tuple[str, str] | None:
        try:
            return self._load_keys(None)
        except ConfigError as exc:
            # a relative key path is first read at request time: a 503, not a 500
            raise IdPUnavailable(f"The SAML key pair is misconfigured: {exc.problem}") from None

    def idp(self) -> IdPMetadata:
        return self.metadata.get()

    def ensure_published(self) -> None:
        self.idp()

    def probe(self) -> str | None:
        """A fresh fetch of the metadata URL (not the cached copy); a metadata file has nothing to probe."""
        if not self.metadata.is_url:
            return None
        self.metadata.fetch_afresh()
        return "SAML metadata"

    # -- pysaml2 ---------------------------------------------------------------------------
    def _sp_config(self, acs_url: str, slo_url: str | None, idp: IdPMetadata | None) -> Any:
        from saml2.config import SPConfig

        s = self.settings
        sp: dict[str, Any] = {
            "endpoints": {"assertion_consumer_service": [(acs_url, BINDING_POST)]},
            "want_assertions_signed": s.want_assertions_signed,
            "want_response_signed": s.want_response_signed,
            "want_assertions_or_response_signed": True,
            "authn_requests_signed": s.sign_authn_requests,
            "logout_requests_signed": False,  # redirect binding: the query string is signed instead
            "allow_unsolicited": s.allow_unsolicited,
            "only_use_keys_in_metadata": True,
            "signing_algorithm": SIG_RSA_SHA256,
            "digest_algorithm": DIGEST_SHA256,
        }
        if slo_url:
            sp["endpoints"]["single_logout_service"] = [(slo_url, BINDING_REDIRECT)]
        if s.name_id_format:
            sp["name_id_format"] = [s.name_id_format]
        if idp is not None:
            sp["idp"] = [idp.entity_id]
        conf: dict[str, Any] = {
            "entityid": s.sp_entity_id,
            "xmlsec_binary": self.xmlsec,
            "accepted_time_diff": int(s.clock_skew),
            "allow_unknown_attributes": True,
            "delete_tmpfiles": True,
            "service": {"sp": sp},
        }
        if idp is not None:
            conf["metadata"] = {"inline": [idp.xml]}
        pair = self.keys()
        if pair:
            conf.update(key_file=pair[0], cert_file=pair[1])
            if s.want_assertions_encrypted:
                # only then does the SP metadata offer an encryption key to the IdP
                conf["encryption_keypairs"] = [{"key_file": pair[0], "cert_file": pair[1]}]
        cfg = SPConfig()
        cfg.load(conf)
        return cfg

    def _client(self, acs_url: str) -> Any:
        from saml2.client import Saml2Client

        idp = self.idp()
        key = (idp.version, acs_url)
        client = self._clients.get(key)
        if client is None:
            try:
                client = Saml2Client(config=self._sp_config(acs_url, None, idp))
            except (IdPUnavailable, ConfigError):
                raise
            except Exception as exc:  # pysaml2 refuses the metadata
                raise IdPUnavailable("The identity provider's SAML metadata could not be loaded.") from exc
            client.users = _NoUsers()
            if type(client.sec.crypto) is CryptoBackendXmlSec1:
                client.sec.crypto.__class__ = _XmlSec1
            # a new metadata version replaces every client built on the old one
            self._clients = {k: v for k, v in self._clients.items() if k[0] == idp.version}
            self._clients[key] = client
        return client

    def acs_url(self, redirect_uri: str) -> str:
        """The configured ``acsUrl`` wins over the route the views computed."""
        return self.settings.acs_url or redirect_uri

    # -- SP metadata ------------------------------------------------------------------------
    def metadata_xml(self, *, acs_url: str, slo_url: str | None = None) -> str:
        """This SP's metadata (SAML metadata 2.0 schema-valid), for the IdP admin."""
        from saml2.metadata import entity_descriptor

        acs = self.acs_url(acs_url)
        ed = entity_descriptor(self._sp_config(acs, slo_url, None))
        xml = str(ed)
        return xml if xml.startswith("<?xml") else '<?xml version="1.0" encoding="UTF-8"?>\n' + xml

    # -- sign-in --------------------------------------------------------------------------------
    def begin_login(self, req: LoginRequest) -> str:
        from saml2.saml import AuthnContextClassRef
        from saml2.samlp import RequestedAuthnContext

        s = self.settings
        idp = self.idp()
        acs = self.acs_url(req.redirect_uri)
        client = self._client(acs)
        relay = secrets.token_urlsafe(24)  # opaque: the next URL stays server-side
        classes = tuple(req.acr_values) or s.requested_authn_context
        kwargs: dict[str, Any] = {"assertion_consumer_service_url": acs}
        if req.force_authn:
            kwargs["force_authn"] = "true"
        if classes:
            kwargs["requested_authn_context"] = RequestedAuthnContext(
                authn_context_class_ref=[AuthnContextClassRef(text=c) for c in classes], comparison="exact")
        if s.name_id_format:
            kwargs["nameid_format"] = s.name_id_format
        try:
            reqid, info = client.prepare_for_authenticate(
                entityid=idp.entity_id, relay_state=relay, binding=BINDING_REDIRECT,
                sign=bool(s.sign_authn_requests), sigalg=SIG_RSA_SHA256 if s.sign_authn_requests else None, **kwargs)
        except (IdPUnavailable, ConfigError):
            raise
        except Exception as exc:
            raise IdPUnavailable("Could not build the SAML sign-in request.") from exc
        self._save_pending(reqid, {
            "next": req.next_url, "relay": relay, "acs": acs, "force": req.force_authn, "max_age": req.max_age,
            "classes": list(classes), "step_up_skill": req.step_up_skill, "prev_auth_time": req.previous_auth_time,
            "fallback_for": req.fallback_for,
        }, s.login_state_ttl)
        return str(dict(info["headers"])["Location"])

    def pending_key(self, req: CallbackRequest) -> str | None:
        """The response's ``InResponseTo``, unverified: only to find the
        pending sign-in it answers when the IdP's metadata (needed to check
        the response) cannot be had -- the views then read whether it was a
        step-up and where it was going; nothing of the response is trusted."""
        try:
            data = decode_b64(req.form.get("SAMLResponse") or "", self.settings.max_response_size, "SAML response")
            irt = parse_xml(data).get("InResponseTo")
        except (AuthenticationFailed, ValueError):
            return None
        return irt if isinstance(irt, str) else None

    def finish_login(self, req: CallbackRequest) -> LoginResult:
        s = self.settings
        if req.content_length is not None and req.content_length > 2 * s.max_response_size + 8192:
            raise refuse("The SAML response is too large.")
        encoded = req.form.get("SAMLResponse")
        data = decode_b64(encoded or "", s.max_response_size, "SAML response")
        idp = self.idp()
        acs = self.acs_url(req.redirect_uri)
        sc = scan(data, expected_issuer=idp.entity_id)

        # --- cheap checks, before xmlsec1 runs ------------------------------------------------
        if sc.destination is not None and sc.destination != acs:
            raise refuse("The SAML response was sent to another address (Destination).")
        if sc.response_signed and sc.destination is None:
            # SAML bindings 3.5.5.2: a signed message MUST carry Destination
            raise refuse("The signed SAML response has no Destination.")
        if not sc.has_assertion:
            if sc.status is not None and sc.status != STATUS_SUCCESS:
                raise AuthenticationFailed("The identity provider refused the sign-in.", reason=reasons.IDP_ERROR)
            raise refuse("The SAML response carries no assertion.")
        if sc.encrypted and not s.want_assertions_encrypted:
            # nothing is decrypted unless the operator asked for encrypted assertions
            raise refuse("The SAML assertion is encrypted, but this provider does not accept encrypted "
                         "assertions (wantAssertionsEncrypted is false).")
        if s.want_assertions_encrypted and not sc.encrypted:
            raise refuse("The SAML assertion is not encrypted, but this provider requires encrypted "
                         "assertions (wantAssertionsEncrypted).")
        if s.want_response_signed and not sc.response_signed:
            raise refuse("The SAML response is not signed.")
        if not sc.encrypted and not sc.assertion_signed and (s.want_assertions_signed or not sc.response_signed):
            raise refuse("The SAML assertion is not signed.")
        if sc.encrypted and not sc.response_signed and not s.want_assertions_signed:
            raise refuse("The SAML response is not signed.")
        if sc.audiences is not None and any(self.settings.sp_entity_id not in auds for auds in sc.audiences):
            raise refuse("The SAML assertion is meant for another service.", reasons.INVALID_AUDIENCE)
        for key in self._seen_keys(sc.id, sc.assertion_id):
            if self.store.get(key) is not None:
                raise refuse("This SAML response was already used.", reasons.REPLAYED)
        irt = sc.in_response_to
        if irt is None:
            if not s.allow_unsolicited:
                raise refuse("The SAML response does not answer a sign-in started here (unsolicited).",
                             reasons.UNSOLICITED)
        elif len(irt) > 512 or self.store.get(f"login:{irt}") is None:
            raise refuse("The SAML response answers a sign-in that was not started here, or was already used.",
                         reasons.STATE_MISSING)

        verified = self._verify(data, sc, idp)
        facts = self._check_assertion(verified, verified.idp, acs, irt, verified.scan)

        # --- replay: assertion (and response) ids, atomically, on every worker ----------------
        now = self.clock()
        ttl = max(1.0, facts["expires"] + s.clock_skew - now)
        for key in self._seen_keys(verified.response.id, facts["assertion_id"]):
            if not self.store.add(key, "1", ttl):
                raise refuse("This SAML response was already used.", reasons.REPLAYED)

        pending: dict[str, Any] = {}
        if irt is not None:
            pending = self._take_pending(irt, s.login_state_ttl, None, check_binding=False)
            relay = req.form.get("RelayState")
            if not isinstance(relay, str) or not secrets.compare_digest(relay, str(pending.get("relay", ""))):
                raise AuthenticationFailed("The sign-in response does not match the sign-in that was started.",
                                           reason=reasons.STATE_MISMATCH)
            if pending.get("acs") != acs:
                raise refuse("The SAML response came back to another address.")
            self._check_step_up(facts, pending)
        identity = self.build_identity(facts)
        step_up = pending_step_up(pending)
        return LoginResult(
            identity=identity, next_url=pending.get("next") or "/",
            logout_state={"name_id": facts["name_id"], "name_id_format": facts["name_id_format"],
                          "name_qualifier": facts["name_qualifier"], "sp_name_qualifier": facts["sp_name_qualifier"],
                          "session_index": facts["session_index"]},
            step_up_skill=pending.get("step_up_skill"), step_up=step_up, fallback_for=pending.get("fallback_for"),
        )

    def _seen_keys(self, response_id: str | None, assertion_id: str | None) -> list[str]:
        out = []
        if assertion_id:
            out.append(f"saml-assertion:{self.name}:{assertion_id}")
        if response_id:
            out.append(f"saml-response:{self.name}:{response_id}")
        return out

    def _signer_certs(self, idp: IdPMetadata, named: set[str]) -> tuple[IdPMetadata, list[str]]:
        """The metadata certificates to verify with, the one the signature's
        KeyInfo names first. KeyInfo only orders the list: a certificate the
        metadata does not publish is never used (an unknown one triggers one
        cooldown-limited metadata refetch, for an IdP key rollover)."""
        if named and not named & set(idp.signing_certs):
            if self.metadata.refresh_for_unknown_cert():
                idp = self.idp()
            if not named & set(idp.signing_certs):
                raise refuse("The SAML response is signed with a key this identity provider does not publish.")
        certs = list(idp.signing_certs)
        return idp, sorted(certs, key=lambda c: c not in named)

    def _verify(self, data: bytes, sc: Scan, idp: IdPMetadata) -> _Verified:
        """Signatures and decryption, by our own xmlsec1 runs, in this order:

        1. the Response signature (when present), on the bytes as received --
           it covers the EncryptedAssertion too;
        2. when the assertion is encrypted (and only when ``wantAssertionsEncrypted``
           let it get here): hardened decryption, then the *same* pre-scan on the
           decrypted document, plus "no encrypted content anywhere";
        3. the assertion's own signature (when present), on the document that
           holds the plaintext assertion;
        4. the signing policy, on what was verified -- never on what is present;
        5. pysaml2 only parses the verified document into its schema objects.
        """
        xmlsec = self.xmlsec_runner
        response_verified = False
        if sc.response_signed:
            idp, certs = self._signer_certs(idp, sc.key_info_certs)
            if not xmlsec.verify(data, RESPONSE_SIGNATURE, certs):
                raise refuse("The SAML response signature is not valid.")
            response_verified = True
        if sc.encrypted and not response_verified:
            # No signature covers the ciphertext: whatever goes wrong from decryption
            # up to the assertion's own signature answers one message, so the
            # answers do not tell "decrypts to well-formed XML" from "does not" --
            # the oracle of the Jager-Somorovsky attacks on CBC (docs/saml.md)
            try:
                return self._decrypt_and_verify(data, sc, idp, response_verified=False)
            except AuthenticationFailed as exc:
                # the step that failed stays in the server's log (our own fixed text)
                log.info("flask-ccsso: an encrypted SAML assertion was refused: %s", exc.description)
                raise refuse("The encrypted SAML assertion could not be decrypted and verified.") from None
        return self._decrypt_and_verify(data, sc, idp, response_verified=response_verified)

    def _decrypt_and_verify(self, data: bytes, sc: Scan, idp: IdPMetadata, *,
                            response_verified: bool) -> _Verified:
        """Steps 2-5 of :meth:`_verify`."""
        s = self.settings
        xmlsec = self.xmlsec_runner
        doc, asc = data, sc
        if sc.encrypted:
            pair = self.keys()
            if pair is None:  # pragma: no cover - wantAssertionsEncrypted requires the key pair
                raise IdPUnavailable("The SAML key pair is missing.")
            doc = xmlsec.decrypt(data, pair[0])
            if len(doc) > 2 * s.max_response_size + 65536:
                raise refuse("The decrypted SAML assertion is too large.")
            asc = scan(doc, expected_issuer=idp.entity_id, decrypted=True)
            if (asc.id, asc.in_response_to, asc.destination, asc.issuer, asc.response_signed) != (
                    sc.id, sc.in_response_to, sc.destination, sc.issuer, sc.response_signed):
                raise refuse("The decrypted SAML response differs from the one received.")
            if asc.audiences is not None and any(s.sp_entity_id not in auds for auds in asc.audiences):
                raise refuse("The SAML assertion is meant for another service.", reasons.INVALID_AUDIENCE)
        assertion_verified = False
        if asc.assertion_signed:
            idp, certs = self._signer_certs(idp, asc.key_info_certs - sc.key_info_certs if sc.encrypted
                                            else asc.key_info_certs)
            where = DECRYPTED_ASSERTION_SIGNATURE if sc.encrypted else ASSERTION_SIGNATURE
            if not xmlsec.verify(doc, where, certs):
                raise refuse("The SAML assertion signature is not valid.")
            assertion_verified = True
        if s.want_assertions_signed and not assertion_verified:
            raise refuse("The SAML assertion is not signed.")
        if s.want_response_signed and not response_verified:
            raise refuse("The SAML response is not signed.")
        if not (assertion_verified or response_verified):
            raise refuse("The SAML response is not signed.")
        response, assertion = self._parse_verified(doc, encrypted=sc.encrypted)
        return _Verified(response=response, assertion=assertion, response_signed=response_verified,
                         assertion_signed=assertion_verified, scan=asc, idp=idp)

    @staticmethod
    def _parse_verified(doc: bytes, *, encrypted: bool) -> tuple[Any, Any]:
        """pysaml2's schema classes for the verified document (parse and
        schema validation only: pysaml2 verifies and decrypts nothing here)."""
        from saml2 import extension_elements_to_elements, saml, samlp
        from saml2.validate import valid_instance

        try:
            r = samlp.response_from_string(doc.decode("utf-8"))
            if encrypted:
                if len(r.encrypted_assertion) != 1 or r.assertion:
                    raise refuse("The decrypted assertion is not a single Assertion.")
                found = extension_elements_to_elements(r.encrypted_assertion[0].extension_elements, [saml])
                if len(found) != 1 or not isinstance(found[0], saml.Assertion):
                    raise refuse("The decrypted assertion is not a single Assertion.")
                a = found[0]
            else:
                if len(r.assertion) != 1:
                    raise refuse("The SAML response must carry exactly one assertion.")
                a = r.assertion[0]
            valid_instance(r)
            valid_instance(a)
        except AuthenticationFailed:
            raise
        except Exception as exc:  # noqa: BLE001 - pysaml2 raises bare exceptions for schema errors
            log.info("flask-ccsso: SAML response refused by the schema check: %s", type(exc).__name__)
            raise refuse("The SAML response does not follow the SAML schema.") from None
        return r, a

    def _check_assertion(self, resp: _Verified, idp: IdPMetadata, acs: str, irt: str | None,
                         sc: Scan) -> dict[str, Any]:
        """Everything compared explicitly on the objects parsed from the verified document."""
        s = self.settings
        now, skew = self.clock(), s.clock_skew
        r = resp.response
        a = resp.assertion
        status = getattr(getattr(getattr(r, "status", None), "status_code", None), "value", None)
        if status != STATUS_SUCCESS:
            raise AuthenticationFailed("The identity provider refused the sign-in.", reason=reasons.IDP_ERROR)
        if r.version != "2.0" or a.version != "2.0":
            raise refuse("The SAML response is not SAML 2.0.")
        for instant in (r.issue_instant, a.issue_instant):
            issued = _instant(instant)
            if issued is None or abs(now - issued) > 86400 + skew:
                raise refuse("The SAML response has no plausible IssueInstant.")
        if r.issuer is not None and _text(r.issuer) != idp.entity_id:
            raise refuse("The SAML response was issued by another identity provider.", reasons.ISSUER_MISMATCH)
        if _text(a.issuer) != idp.entity_id:
            raise refuse("The assertion was issued by another identity provider.", reasons.ISSUER_MISMATCH)
        # signatures: what *we* verified must be what the settings require
        if s.want_assertions_signed and not resp.assertion_signed:
            raise refuse("The SAML assertion is not signed.")
        if s.want_response_signed and not resp.response_signed:
            raise refuse("The SAML response is not signed.")
        if not (resp.assertion_signed or resp.response_signed):
            raise refuse("The SAML response is not signed.")
        if (r.in_response_to or None) != irt:
            raise refuse("The SAML response does not answer this sign-in.", reasons.STATE_MISMATCH)
        if r.destination is not None and r.destination != acs:
            raise refuse("The SAML response was sent to another address (Destination).")
        if not a.id or a.id != sc.assertion_id:
            raise refuse("The verified assertion is not the one in the message.")

        # Conditions: audience and validity window (SAML core 2.5.1)
        cond = a.conditions
        if cond is None or not cond.audience_restriction:
            raise refuse("The SAML assertion has no audience restriction.", reasons.INVALID_AUDIENCE)
        for ar in cond.audience_restriction:
            if s.sp_entity_id not in [_text(x) for x in ar.audience]:
                raise refuse("The SAML assertion is meant for another service.", reasons.INVALID_AUDIENCE)
        not_before = _instant(cond.not_before)
        not_after = _instant(cond.not_on_or_after)
        if not_before is not None and now + skew < not_before:
            raise refuse("The SAML assertion is not valid yet.")
        if not_after is not None and now - skew >= not_after:
            raise refuse("The SAML assertion has expired.", reasons.TOKEN_EXPIRED)

        # Subject and bearer confirmation (SAML profiles 4.1.4.2)
        subj = a.subject
        nid = getattr(subj, "name_id", None)
        name_id = _text(nid)
        if not name_id:
            raise refuse("The SAML assertion names no subject.")
        if sc.name_id is not None and name_id != sc.name_id:
            raise refuse("The NameID is ambiguous.")
        failure: AuthenticationFailed | None = None
        confirmed_until = None
        for conf in subj.subject_confirmation or []:
            if conf.method != BEARER:
                continue
            d = conf.subject_confirmation_data
            if d is None:
                failure = refuse("The SAML bearer confirmation has no data.")
                continue
            if d.recipient != acs:
                failure = refuse("The SAML assertion is meant for another address (Recipient).")
                continue
            if (d.in_response_to or None) != irt:
                failure = refuse("The SAML assertion does not answer this sign-in.", reasons.STATE_MISMATCH)
                continue
            until = _instant(d.not_on_or_after)
            if until is None:
                failure = refuse("The SAML bearer confirmation has no NotOnOrAfter.")
                continue
            if now - skew >= until:
                failure = refuse("The SAML assertion has expired.", reasons.TOKEN_EXPIRED)
                continue
            if d.not_before is not None:
                failure = refuse("The SAML bearer confirmation must not carry NotBefore.")
                continue
            confirmed_until = until
            break
        if confirmed_until is None:
            raise failure or refuse("The SAML assertion has no bearer subject confirmation.")

        if not a.authn_statement:
            raise refuse("The SAML assertion has no authentication statement.")
        st = a.authn_statement[0]
        auth_instant = _instant(st.authn_instant)
        if auth_instant is None:
            raise refuse("The SAML assertion does not say when you signed in.")
        if auth_time_problem(auth_instant, now=now, max_age=None, skew=skew) == FUTURE:
            raise refuse("The sign-in time is in the future.")
        session_end = _instant(st.session_not_on_or_after)
        if session_end is not None and now - skew >= session_end:
            raise refuse("The identity provider session has already ended.", reasons.TOKEN_EXPIRED)
        class_ref = None
        if st.authn_context is not None and st.authn_context.authn_context_class_ref is not None:
            class_ref = _text(st.authn_context.authn_context_class_ref)

        attrs: dict[str, list[str]] = {}
        for stmt in a.attribute_statement or []:
            for attr in stmt.attribute or []:
                values = [v.text.strip() for v in attr.attribute_value or [] if isinstance(v.text, str)]
                for key in {attr.name, attr.friendly_name} - {None}:
                    attrs.setdefault(key, []).extend(values)
        expires = max(x for x in (not_after, confirmed_until) if x is not None)
        return {
            "assertion_id": a.id, "name_id": name_id, "name_id_format": getattr(nid, "format", None),
            "name_qualifier": getattr(nid, "name_qualifier", None),
            "sp_name_qualifier": getattr(nid, "sp_name_qualifier", None),
            "auth_instant": auth_instant, "session_index": st.session_index, "class_ref": class_ref,
            "attributes": attrs, "expires": expires,
        }

    def _check_step_up(self, facts: Mapping[str, Any], pending: Mapping[str, Any]) -> None:
        """ForceAuthn / max_age / requested class: the IdP must really have done it
        (the one step-up rule, :func:`~flask_ccsso.providers.base.check_reauthenticated`,
        on the AuthnInstant)."""
        max_age, created, prev = pending.get("max_age"), pending.get("created"), pending.get("prev_auth_time")
        check_reauthenticated(
            float(facts["auth_instant"]), now=self.clock(), skew=self.settings.clock_skew,
            max_age=None if max_age is None else float(max_age), force=bool(pending.get("force")),
            started_at=None if created is None else float(created),
            previous_auth_time=float(prev) if isinstance(prev, (int, float)) else None,
            future_reason=reasons.INVALID_RESPONSE)
        classes = pending.get("classes") or []
        if classes and facts.get("class_ref") not in classes:
            raise AuthenticationFailed("The sign-in was not strong enough (authentication context).",
                                       reason=reasons.STEPUP_NOT_SATISFIED)

    # -- identity -------------------------------------------------------------------------------
    def build_identity(self, facts: Mapping[str, Any]) -> Identity:
        s = self.settings
        m = s.attribute_mapping
        attrs: Mapping[str, list[str]] = facts["attributes"]

        def first(key: str) -> str | None:
            vals = attrs.get(m[key], []) if key in m else []
            return vals[0] if vals else None

        email = first("email")
        if email is None and facts.get("name_id_format") == NAMEID_EMAIL:
            email = facts["name_id"]
        name = first("name")
        if name is None and (first("firstName") or first("lastName")):
            name = " ".join(x for x in (first("firstName"), first("lastName")) if x)
        groups = frozenset(attrs.get(m["groups"], [])) if "groups" in m else frozenset()
        complete = True
        if s.groups_truncated_attribute:
            flag = attrs.get(s.groups_truncated_attribute)
            # present and not explicitly false: a flag ("true") or, as Entra's overage claim
            # http://schemas.microsoft.com/claims/groups.link does, a URL to fetch the rest from
            if flag is not None and (not flag or not all(v.strip().lower() in _FALSE for v in flag)):
                complete = False
        scopes: set[str] = set(attrs.get(m["scopes"], [])) if "scopes" in m else set()
        for g in groups:
            scopes.update(s.scopes_from_groups.get(g, ()))
        class_ref = facts.get("class_ref")
        amr = (_AMR[class_ref],) if class_ref in _AMR else ()
        return Identity(
            subject=facts["name_id"], provider=self.name, email=email, name=name, groups=groups,
            scopes=frozenset(scopes), auth_time=float(facts["auth_instant"]), amr=amr, acr=class_ref,
            groups_complete=complete, via="session", session_index=facts.get("session_index"),
        )

    # -- logout ---------------------------------------------------------------------------------
    def _sign_query(self, query: str) -> str:
        pair = self.keys()
        assert pair is not None
        with open(pair[0], "rb") as fh:
            key = serialization.load_pem_private_key(fh.read(), password=None)
        query += "&SigAlg=" + quote(SIG_RSA_SHA256, safe="")
        if isinstance(key, rsa.RSAPrivateKey):
            sig = key.sign(query.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
        else:  # pragma: no cover - EC SP keys
            raise IdPUnavailable("Only RSA SP keys can sign redirect-binding messages.")
        return query + "&Signature=" + quote(base64.b64encode(sig).decode("ascii"), safe="")

    def _redirect(self, endpoint: str, param: str, xml: str, relay: str | None) -> str:
        deflated = zlib.compress(xml.encode("utf-8"))[2:-4]
        query = f"{param}=" + quote(base64.b64encode(deflated).decode("ascii"), safe="")
        if relay:
            query += "&RelayState=" + quote(relay, safe="")
        if self.keys():
            query = self._sign_query(query)
        return endpoint + ("&" if "?" in endpoint else "?") + query

    def logout_url(self, logout_state: Mapping[str, Any], post_logout_redirect_uri: str) -> str | None:
        """SP-initiated single logout (HTTP-Redirect, signed when we have keys)."""
        if not self.settings.idp_logout or not logout_state.get("name_id"):
            return None
        try:
            idp = self.idp()
        except IdPUnavailable:
            return None
        if not idp.slo_redirect:
            return None
        from saml2 import time_util
        from saml2.saml import Issuer, NameID
        from saml2.samlp import LogoutRequest, SessionIndex

        req_id = "id-" + secrets.token_hex(16)
        nid = NameID(text=str(logout_state["name_id"]), format=logout_state.get("name_id_format"),
                     name_qualifier=logout_state.get("name_qualifier"),
                     sp_name_qualifier=logout_state.get("sp_name_qualifier"))
        req = LogoutRequest(id=req_id, version="2.0", issue_instant=time_util.instant(), destination=idp.slo_redirect,
                            issuer=Issuer(text=self.settings.sp_entity_id,
                                          format="urn:oasis:names:tc:SAML:2.0:nameid-format:entity"),
                            name_id=nid,
                            session_index=[SessionIndex(text=logout_state["session_index"])]
                            if logout_state.get("session_index") else [])
        relay = secrets.token_urlsafe(16)
        self.store.set(f"slo:{self.name}:{req_id}", relay, self.settings.login_state_ttl)
        return self._redirect(idp.slo_redirect, "SAMLRequest", str(req), relay)

    # -- single logout: messages from the IdP --------------------------------------------------
    def max_post_size(self) -> int:
        """The most a SAML POST (ACS or SLO) may carry: two encoded
        ``maxResponseSize`` messages plus room for RelayState. The views set it
        as the request's body limit *before* the form is parsed."""
        return 2 * self.settings.max_response_size + 8192

    @staticmethod
    def _raw_params(raw: bytes) -> dict[str, str]:
        """Split an urlencoded query or body ourselves: name -> raw value.

        The redirect binding signs the octets as sent (SAML bindings
        3.4.4.1), so the message processed must come from the very octets the
        signature covers. ``request.args`` decodes names (``SAML%52equest``
        becomes ``SAMLRequest``) and keeps repeats: a forged message could
        travel beside a genuinely signed one. Here a name must be what it
        says, once; values stay encoded until the one place that decodes them."""
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise refuse("The logout message is not URL-encoded ASCII.", reasons.BAD_REQUEST) from None
        params: dict[str, str] = {}
        for piece in text.split("&"):
            if not piece:
                continue
            name, _, value = piece.partition("=")
            if unquote_plus(name) != name:
                raise refuse("The logout message has a percent-encoded parameter name.", reasons.BAD_REQUEST)
            if name in params:
                raise refuse("The logout message repeats a parameter.", reasons.BAD_REQUEST)
            params[name] = value
        if "SAMLRequest" in params and "SAMLResponse" in params:
            raise refuse("The logout message carries both a SAMLRequest and a SAMLResponse.", reasons.BAD_REQUEST)
        return params

    def _slo_params(self, request: Request) -> dict[str, str]:
        if request.method == "GET":
            return self._raw_params(request.query_string)
        if request.mimetype != "application/x-www-form-urlencoded":
            raise refuse("The logout message must be posted as a form.", reasons.BAD_REQUEST)
        # the view bounded the body (max_post_size) before anything read it
        return self._raw_params(request.get_data(cache=True))

    def _verify_redirect_signature(self, params: Mapping[str, str], param: str, idp: IdPMetadata) -> None:
        """SAML bindings 3.4.4.1: the signature covers the raw
        ``param=...&RelayState=...&SigAlg=...`` octets, checked against the
        signing certificates in the IdP's metadata."""
        what = "logout request" if param == "SAMLRequest" else "logout response"
        if "Signature" not in params or "SigAlg" not in params:
            raise refuse(f"The {what} is not signed.")
        if param not in params:
            raise refuse(f"The {what} is malformed.", reasons.BAD_REQUEST)
        hash_cls = _REDIRECT_SIG_ALGS.get(unquote_plus(params["SigAlg"]))
        if hash_cls is None:
            raise refuse(f"The {what} uses a signature algorithm that is not allowed.")
        signed = f"{param}={params[param]}"
        if "RelayState" in params:
            signed += f"&RelayState={params['RelayState']}"
        signed += f"&SigAlg={params['SigAlg']}"
        try:
            sig = base64.b64decode(unquote_plus(params["Signature"]), validate=True)
        except ValueError:
            raise refuse(f"The {what} signature is malformed.") from None
        for b64 in idp.signing_certs:
            try:
                pub = x509.load_der_x509_certificate(base64.b64decode(b64)).public_key()
                if isinstance(pub, rsa.RSAPublicKey):
                    pub.verify(sig, signed.encode("ascii"), padding.PKCS1v15(), hash_cls())
                elif isinstance(pub, ec.EllipticCurvePublicKey):
                    pub.verify(sig, signed.encode("ascii"), ec.ECDSA(hash_cls()))
                else:
                    continue
                return
            except (InvalidSignature, ValueError):
                continue
        raise refuse(f"The {what} signature is not valid.")

    @staticmethod
    def _check_destination(sc: Any, request: Request, what: str) -> None:
        """A signed message MUST name where it was sent (SAML bindings
        3.4.5.2 / 3.5.5.2), and that must be this endpoint."""
        if sc.issuer is None:
            raise refuse(f"The {what} names no issuer.", reasons.ISSUER_MISMATCH)
        if sc.destination is None:
            raise refuse(f"The signed {what} has no Destination.")
        if sc.destination != request.base_url:
            raise refuse(f"The {what} was sent to another address (Destination).")

    def handle_slo(self, request: Request) -> SingleLogout:
        """The SLO endpoint: IdP-initiated LogoutRequests and answers to ours.

        Nothing is inflated or parsed before its signature has been verified
        over the exact octets it is decoded from. Returns what the verified
        message asks for; the view ends the sessions, announces it and
        answers (:meth:`logout_response_url`): a provider takes no access
        decisions."""
        idp = self.idp()
        params = self._slo_params(request)
        if "SAMLResponse" in params:
            self._finish_logout(request, params, idp)
            return SingleLogout(subject=None)
        if "SAMLRequest" not in params:
            raise refuse("The logout endpoint needs a SAMLRequest or SAMLResponse.", reasons.BAD_REQUEST)
        if request.method != "GET":
            raise refuse("IdP-initiated logout is accepted over the HTTP-Redirect binding only.", reasons.BAD_REQUEST)
        return self._idp_logout(request, params, idp)

    def _idp_logout(self, request: Request, params: Mapping[str, str], idp: IdPMetadata) -> SingleLogout:
        s = self.settings
        self._verify_redirect_signature(params, "SAMLRequest", idp)
        xml = self._inflate(unquote_plus(params["SAMLRequest"]), "GET")
        sc = scan(xml, expected_issuer=idp.entity_id, kinds=("LogoutRequest",))
        self._check_destination(sc, request, "logout request")
        root = sc.root
        now, skew = self.clock(), s.clock_skew
        until = parse_instant(root.get("NotOnOrAfter"))
        if until is not None and now - skew >= until:
            raise refuse("The logout request has expired.", reasons.TOKEN_EXPIRED)
        issued = parse_instant(root.get("IssueInstant"))
        if issued is None or abs(now - issued) > s.login_state_ttl + skew:
            raise refuse("The logout request is too old.", reasons.TOKEN_EXPIRED)
        nid = root.find(f"{{{SAML}}}NameID")
        name_id = (nid.text or "").strip() if nid is not None else ""
        if not name_id:
            # BaseID / EncryptedID, or an empty NameID: nobody we can match
            raise refuse("The logout request names nobody (NameID).", reasons.BAD_REQUEST)
        if not sc.id or not self.store.add(f"saml-logout:{self.name}:{sc.id}", "1", s.login_state_ttl + 2 * skew):
            raise refuse("This logout request was already used.", reasons.REPLAYED)
        indexes = [(e.text or "").strip() for e in root.findall(f"{{{SAMLP}}}SessionIndex")]
        relay = unquote_plus(params["RelayState"]) if "RelayState" in params else None
        return SingleLogout(subject=name_id, idp_sessions=tuple(i for i in indexes if i), request_id=sc.id,
                            relay_state=relay)

    def _finish_logout(self, request: Request, params: Mapping[str, str], idp: IdPMetadata) -> None:
        """A LogoutResponse to a LogoutRequest we sent: signed by the IdP
        (redirect: the query signature; POST: the XML signature, verified by
        xmlsec1 with the metadata certificates), from the IdP, to this
        endpoint, answering an outstanding request once, with a status."""
        encoded = unquote_plus(params["SAMLResponse"])
        if request.method == "GET":
            self._verify_redirect_signature(params, "SAMLResponse", idp)
            xml = self._inflate(encoded, "GET")
            sc = scan(xml, expected_issuer=idp.entity_id, kinds=("LogoutResponse",))
        else:
            xml = self._inflate(encoded, request.method)
            sc = scan(xml, expected_issuer=idp.entity_id, kinds=("LogoutResponse",))
            if not sc.response_signed:
                raise refuse("The logout response is not signed.")
            refuse_unless_verified(self.xmlsec, xml, sc.root, idp.signing_certs, "logout response")
        self._check_destination(sc, request, "logout response")
        if not sc.in_response_to or self.store.pop(f"slo:{self.name}:{sc.in_response_to}") is None:
            raise refuse("This logout response does not answer a logout started here.", reasons.STATE_MISSING)
        code = sc.root.find(f"{{{SAMLP}}}Status/{{{SAMLP}}}StatusCode")
        if code is None or code.get("Value") != STATUS_SUCCESS:
            # the local session ended at /sso/logout already; the IdP's may not have
            raise refuse("The identity provider could not end its session; sign out there too.", reasons.IDP_ERROR)

    def logout_response_url(self, in_response_to: str, relay: str | None) -> str:
        """Where to send the browser after an IdP-initiated logout: our
        signed LogoutResponse, to the IdP's SLO endpoint."""
        return self._logout_response(self.idp(), in_response_to, relay)

    def _logout_response(self, idp: IdPMetadata, in_response_to: str, relay: str | None) -> str:
        from saml2 import time_util
        from saml2.saml import Issuer
        from saml2.samlp import LogoutResponse, Status, StatusCode

        dest = idp.slo_redirect_response or idp.slo_redirect
        if not dest:
            raise refuse("The identity provider publishes no logout endpoint to answer.")
        resp = LogoutResponse(id="id-" + secrets.token_hex(16), version="2.0", issue_instant=time_util.instant(),
                              destination=dest, in_response_to=in_response_to,
                              issuer=Issuer(text=self.settings.sp_entity_id,
                                            format="urn:oasis:names:tc:SAML:2.0:nameid-format:entity"),
                              status=Status(status_code=StatusCode(value=STATUS_SUCCESS)))
        return self._redirect(dest, "SAMLResponse", str(resp), relay)

    def _inflate(self, value: str, method: str) -> bytes:
        max_size = self.settings.max_response_size
        data = decode_b64(value, max_size, "SAML logout message")
        if method != "GET":
            return data
        d = zlib.decompressobj(-15)
        try:
            out = d.decompress(data, max_size + 1)
        except zlib.error:
            raise refuse("The SAML logout message is not DEFLATE-encoded.") from None
        if len(out) > max_size or d.unconsumed_tail:
            raise refuse("The SAML logout message is too large.")
        return out

    def describe(self) -> dict[str, Any]:
        s = self.settings
        return {"name": self.name, "type": self.type, "sp_entity_id": s.sp_entity_id,
                "idp_metadata": s.idp_metadata, "idp_entity_id": s.idp_entity_id,
                "sign_authn_requests": s.sign_authn_requests, "sp_private_key": "***" if s.sp_private_key else None,
                "acs_url": s.acs_url}
