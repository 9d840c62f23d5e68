"""In-process XML signature verification through the ``xmlsec`` binding
(libxmlsec1 itself, the library the ``xmlsec1`` program is built on), with the
restrictions of our hardened ``xmlsec1 --verify`` run kept one by one.

Starting ``xmlsec1`` costs a fork, an exec, the dynamic loader and OpenSSL's
start-up for every signature: about 18 ms, against a fraction of a
millisecond for the verification itself. The binding does the same
verification inside the worker. What the subprocess run is told on its
command line, this module does in code (``saml_xmlsec.Xmlsec.verify``):

* ``--pubkey-cert-pem`` (one metadata certificate per attempt): the context's
  key is set to *that* certificate's public key before verifying. libxmlsec1
  reads a ``ds:KeyInfo`` only to *find* a key when none is set, so nothing in
  the message -- certificates, key values, RetrievalMethod -- is read or
  trusted, and no keys manager or trust store exists to consult
  (``--enabled-key-data raw-x509-cert`` asks xmlsec1 for the same).
* ``--enabled-reference-uris same-doc``: the one Reference must be
  ``#`` + the ID of the element the signature sits in, checked here on the
  very tree libxmlsec1 verifies (the pre-scan checked it on its own parse).
* ``--id-attr:ID`` for the given element names only: those elements' ``ID``
  attributes are registered, and nothing else (a duplicate is an error).
  One of them carrying an ``ID`` in another namespace is refused: libxmlsec1
  (and so xmlsec1) registers the first attribute *named* ``ID``, so
  ``x:ID="decoy" ID="A"`` would let ``#A`` name a wrapped element instead
  (the pre-scan's :func:`.saml_xml.check_ids` rule, held here too).
* ``--node-xpath``: the same XPath expression, evaluated by the same libxml2
  on the same bytes; exactly one ``ds:Signature`` must match.
* transforms: only those the pre-scan allows (enveloped signature,
  exclusive c14n with or without comments, the allowed digest and signature
  algorithms) are enabled on the context; anything else fails inside
  libxmlsec1 even if the pre-scan were bypassed.
* parsing: libxml2 without DTD loading, entity substitution or network
  access; the pre-scan has refused DOCTYPEs and bounded depth, namespaces
  and PrefixList before this runs.
* the run's limits: in-process there is no wall-clock kill nor an
  address-space limit. What bounded the work of a hostile document before
  the kill ever mattered -- ``maxResponseSize`` and the pre-scan's bounds on
  nesting, namespaces in scope and PrefixList -- bounds it here
  (docs/saml.md). Operators who want the process boundary as well set
  ``xmlsecBackend: xmlsec1``.

Decryption is not done here: it stays with the hardened ``xmlsec1 --decrypt``
run (the binding cannot narrow CipherReference and RetrievalMethod URIs).

Importing the binding can fail in three ways: it is not installed, its
libxml2 differs from lxml's (the binding refuses to load: "lxml & xmlsec
libxml2 library version mismatch"), or the shared library is missing.
:func:`available` turns each into a reason; the provider then falls back to
the subprocess and says so once at start-up.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from .saml_xml import DS, SAML, SAMLP

#: the element names whose ``ID`` attribute a SAML response's signatures may
#: reference (``--id-attr:ID`` for Response and Assertion)
RESPONSE_ID_ELEMENTS: tuple[tuple[str, str], ...] = ((SAMLP, "Response"), (SAML, "Assertion"))

_ERROR: str | None = None
_xmlsec: Any = None
_etree: Any = None
_lock = threading.Lock()
_loaded = False


def _load() -> None:
    global _ERROR, _xmlsec, _etree, _loaded
    with _lock:
        if _loaded:
            return
        try:
            import xmlsec
            from lxml import etree
        except ImportError as exc:
            _ERROR = f"the xmlsec binding is not installed ({exc.name or 'xmlsec'})"
        except Exception as exc:  # noqa: BLE001 - xmlsec.Error / InternalError on a libxml2 mismatch
            detail = exc.args[-1] if exc.args and isinstance(exc.args[-1], str) else type(exc).__name__
            _ERROR = f"the xmlsec binding cannot be used ({detail})"
        else:
            _xmlsec, _etree = xmlsec, etree
        _loaded = True


def available() -> str | None:
    """None when the binding can verify; otherwise why not (one line)."""
    _load()
    return _ERROR


def _transforms(names: Iterable[str]) -> list[Any]:
    return [getattr(_xmlsec.Transform, n) for n in names]


#: what a Reference may use: the enveloped-signature transform, exclusive c14n,
#: and the digest algorithms the pre-scan allows (saml_xml.DIGEST_ALGORITHMS)
_REFERENCE_TRANSFORMS = ("ENVELOPED", "EXCL_C14N", "EXCL_C14N_COMMENTS", "SHA256", "SHA384", "SHA512")
#: what SignedInfo may use: exclusive c14n and the signature algorithms of saml_xml.SIGNATURE_ALGORITHMS
_SIGNATURE_TRANSFORMS = ("EXCL_C14N", "EXCL_C14N_COMMENTS", "RSA_SHA256", "RSA_SHA384", "RSA_SHA512",
                         "ECDSA_SHA256", "ECDSA_SHA384", "ECDSA_SHA512")


class BindingVerifier:
    """Verifies enveloped signatures in-process; keys come only from the
    certificates passed in (base64 DER, as metadata writes them), one per attempt."""

    def __init__(self) -> None:
        reason = available()
        if reason is not None:
            raise RuntimeError(reason)
        self._keys: dict[str, Any] = {}
        self._parser = _etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                                        dtd_validation=False, huge_tree=False, remove_comments=False,
                                        remove_pis=False, remove_blank_text=False)
        self._parser_lock = threading.Lock()
        self._reference = _transforms(_REFERENCE_TRANSFORMS)
        self._signature = _transforms(_SIGNATURE_TRANSFORMS)

    def _key(self, cert_b64: str) -> Any | None:
        """The public key of one metadata certificate (loaded once; None if unusable)."""
        key = self._keys.get(cert_b64)
        if key is None:
            try:
                der = base64.b64decode("".join(cert_b64.split()), validate=True)
                key = _xmlsec.Key.from_memory(der, _xmlsec.constants.KeyDataFormatCertDer)
            except (ValueError, _xmlsec.Error):
                return None
            if len(self._keys) > 64:  # metadata rollovers: keep the cache bounded
                self._keys.clear()
            self._keys[cert_b64] = key
        return key

    def _parse(self, document: bytes) -> Any:
        with self._parser_lock:  # one lxml parser object is not safe to share between threads
            return _etree.fromstring(document, self._parser)

    def verify(self, document: bytes, signature_xpath: str, certs: Sequence[str], *,
               id_elements: Sequence[tuple[str, str]] = RESPONSE_ID_ELEMENTS) -> bool:
        """True when the one ``ds:Signature`` at ``signature_xpath`` verifies
        with one of ``certs``, tried in order; False otherwise (never raises
        for a hostile document)."""
        try:
            root = self._parse(document)
        except (_etree.XMLSyntaxError, ValueError):
            return False
        tree = root.getroottree()
        try:
            found = tree.xpath(signature_xpath)
        except _etree.XPathError:
            return False
        if not isinstance(found, list) or len(found) != 1 or not isinstance(found[0], _etree._Element):
            return False
        sig = found[0]
        if sig.tag != f"{{{DS}}}Signature" or not _covers_parent_only(sig):
            return False
        # ``--id-attr:ID`` for these element names, and only these
        for ns, local in id_elements:
            for el in tree.iter(f"{{{ns}}}{local}"):
                if any(name.startswith("{") and name.endswith("}ID") for name in el.attrib):
                    # libxmlsec1 takes the first attribute *named* ID in any namespace:
                    # with ``x:ID="decoy" ID="A"`` first, ``#A`` would resolve to another
                    # (wrapped, genuinely signed) element than the one checked above
                    return False
                if el.get("ID") is None:
                    continue
                try:
                    _register(el)
                except _xmlsec.Error:
                    return False  # duplicate ID
        for cert in certs:
            key = self._key(cert)
            if key is None:
                continue
            if self._verify_with(sig, key):
                return True
        return False

    def _verify_with(self, sig: Any, key: Any) -> bool:
        ctx = _xmlsec.SignatureContext()
        ctx.key = key  # set: libxmlsec1 never looks at the message's KeyInfo
        for t in self._reference:
            ctx.enable_reference_transform(t)
        for t in self._signature:
            ctx.enable_signature_transform(t)
        try:
            verify_node(ctx, sig)
        except _xmlsec.Error:  # VerificationError is a subclass: bad signature, bad digest, disabled transform
            return False
        return True


def _register(el: Any) -> None:
    ctx = _xmlsec.SignatureContext()
    ctx.register_id(el, "ID")


def _covers_parent_only(sig: Any) -> bool:
    """The one Reference points at the element the signature sits in, by its
    ``ID`` (same document): the in-process ``--enabled-reference-uris same-doc``."""
    parent = sig.getparent()
    if parent is None:
        return False
    parent_id = parent.get("ID")
    refs = sig.findall(f"{{{DS}}}SignedInfo/{{{DS}}}Reference")
    return bool(parent_id) and len(refs) == 1 and refs[0].get("URI") == f"#{parent_id}"


def verify_node(ctx: Any, sig: Any) -> None:
    """One in-process verification (``ctx.verify``); raises ``xmlsec.Error`` when
    it fails. A module-level function so the tests can count verifications as
    they count ``xmlsec1`` runs."""
    ctx.verify(sig)
