"""Enveloped XML signatures checked by xmlsec1 against keys *we* choose.

Used where pysaml2 does not verify for us: XML-signed SAML logout responses
(HTTP-POST binding) and signed IdP metadata. The caller pre-scans the
document first (:func:`check_root_signature`): exactly the shape SAML allows
(one enveloped signature, a direct child of the root, referencing the root's
``ID``, exclusive c14n, no other transform), so what xmlsec1 verifies is the
element we go on to read, and no XSLT / XPath / remote reference ever
reaches it.

xmlsec1 runs through :func:`.saml_xmlsec.run` (wall-clock timeout, CPU and
address-space limits, no network) with same-document references only, keys
only from the certificate file we pass (a ``KeyInfo`` in the document is
never read), ``--node-xpath`` naming the root's own ``ds:Signature``, one
certificate at a time. Nothing here implements signature checking itself.
"""

from __future__ import annotations

import base64
import binascii
import os
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..exceptions import AuthenticationFailed
from .saml_xml import DS, _check_signature, check_ids, refuse
from .saml_xmlsec import MEMORY_BASE, MEMORY_PER_BYTE, XmlsecTimeout, run

#: xmlsec1 may take this long for one verification (the documents are small
#: and pre-scanned; a hung or looping process is killed, never waited for)
XMLSEC_TIMEOUT = 10.0


class SignatureInvalid(ValueError):
    """xmlsec1 did not verify the signature with any of the given certificates."""


def check_root_signature(root: ET.Element) -> str:
    """The root carries the document's first ``ds:Signature`` as a direct
    child, in the one shape SAML allows; returns the root's ``ID``.

    xmlsec1 verifies the first signature it finds below its start node
    (depth first), so a signature placed earlier -- inside an embedded,
    genuinely signed element -- could otherwise be the one verified while the
    root we read is unsigned. IDs must be unique and none may sit in a foreign
    namespace (:func:`.saml_xml.check_ids`), so ``#ID`` is the root for
    xmlsec1 too."""
    try:
        # IDs unique, none in a foreign namespace: ``#ID`` names the root for
        # xmlsec1 exactly as it does here (metadata is not otherwise pre-scanned)
        check_ids(root)
    except AuthenticationFailed as exc:
        raise SignatureInvalid(str(exc.description).rstrip(".").lower()) from None
    first = next(root.iter(f"{{{DS}}}Signature"), None)
    if first is None:
        raise SignatureInvalid("the document is not signed")
    if not any(child is first for child in root):
        raise SignatureInvalid("the first signature does not belong to the root element")
    try:
        _check_signature(first, root)  # one Reference to #ID, exc-c14n, allowed algorithms
    except AuthenticationFailed as exc:
        raise SignatureInvalid(str(exc.description).rstrip(".").lower()) from None
    return root.get("ID") or ""


def cert_to_pem(cert: str | bytes) -> bytes:
    """A certificate as PEM: from PEM text, or base64 DER as metadata writes it."""
    data = cert.encode("ascii") if isinstance(cert, str) else cert
    try:
        if b"-----BEGIN" in data:
            parsed = x509.load_pem_x509_certificate(data.replace(b"\\n", b"\n"))
        else:
            parsed = x509.load_der_x509_certificate(base64.b64decode(b"".join(data.split()), validate=True))
    except (ValueError, binascii.Error):
        raise SignatureInvalid("a configured certificate is not usable") from None
    return parsed.public_bytes(serialization.Encoding.PEM)


def verify_enveloped(xmlsec: str, document: bytes, certs: Iterable[str | bytes], *, node: str,
                     timeout: float = XMLSEC_TIMEOUT) -> None:
    """Verify the enveloped signature that is a direct child of the root
    element ``node`` (``{ns}local`` or ``ns:local``; its ``ID`` attribute is
    what the Reference may point at) against each certificate in turn; raise
    :class:`SignatureInvalid` unless one verifies it."""
    if node.startswith("{"):
        ns, _, local = node[1:].partition("}")
    else:
        ns, _, local = node.rpartition(":")
    node = f"{ns}:{local}"
    # the root's own signature, by position: never one xmlsec1 finds elsewhere
    xpath = (f"/*[local-name()='{local}' and namespace-uri()='{ns}']"
             f"/*[local-name()='Signature' and namespace-uri()='{DS}']")
    pems = [cert_to_pem(c) for c in certs]
    if not pems:
        raise SignatureInvalid("no certificate to verify with")
    with tempfile.TemporaryDirectory(prefix="ccsso-xmlsec-") as tmp:
        doc = os.path.join(tmp, "doc.xml")
        with open(doc, "wb") as fh:
            fh.write(document)
        for i, pem in enumerate(pems):
            cert = os.path.join(tmp, f"cert{i}.pem")
            with open(cert, "wb") as fh:
                fh.write(pem)
            cmd = [xmlsec, "--verify", "--enabled-reference-uris", "same-doc", "--enabled-key-data",
                   "raw-x509-cert", "--pubkey-cert-pem", cert, "--id-attr:ID", node, "--node-xpath", xpath, doc]
            try:
                done = run(cmd, timeout=timeout, memory=MEMORY_BASE + MEMORY_PER_BYTE * len(document))
            except XmlsecTimeout:
                raise SignatureInvalid("xmlsec1 did not finish in time") from None
            except OSError:
                raise SignatureInvalid("xmlsec1 could not be run") from None
            lines = done.stderr.decode("utf-8", "replace").splitlines()
            if done.returncode == 0 and ("OK" in lines or "Verification status: OK" in lines):
                return
    raise SignatureInvalid("the signature does not verify with the trusted certificate")


def refuse_unless_verified(xmlsec: str, document: bytes, root: ET.Element, certs: Iterable[str | bytes],
                           what: str) -> None:
    """:func:`check_root_signature` + :func:`verify_enveloped` for a SAML
    protocol message: any failure is a refusal (400) naming ``what``."""
    try:
        check_root_signature(root)
        verify_enveloped(xmlsec, document, certs, node=str(root.tag))
    except SignatureInvalid as exc:
        raise refuse(f"The {what} signature is not valid ({exc}).") from None
