"""The cheap gate in front of pysaml2 and xmlsec1: a pre-scan of every SAML
message before anything expensive (signature verification, decryption,
schema validation) runs.

pysaml2 parses with defusedxml and checks the shape of each signature it
verifies, but several attacks are about what it does *not* look at, or look
at too late (see docs/saml.md, "What pysaml2 leaves to the caller"):

* **Size**: ``maxResponseSize`` is enforced on the encoded form, before
  base64 decoding, and again on the decoded bytes.
* **DTDs and entities** (XXE, billion laughs): any ``<!DOCTYPE`` or
  ``<!ENTITY`` is refused by a byte search before a parser sees the document;
  non-UTF-8 encodings (which could hide them from the byte search) are
  refused too; and the parse itself is defusedxml's with ``forbid_dtd``.
* **Signature wrapping (XSW)**: exactly one assertion, as a direct child of
  the Response, nowhere else; every ``ID`` unique in the document, and no
  ID-named attribute in another namespace (xmlsec1 would take ``x:ID`` as
  the element's ID, :func:`check_ids`); every
  ``ds:Signature`` enveloped in the element it signs (single Reference whose
  URI is ``#`` + the parent's ID), at most one per element, no
  ``ds:Object``; only the enveloped-signature and (exclusive) c14n
  transforms, so XSLT / XPath transforms never reach xmlsec1.
* **Canonicalization cost**: at most :data:`MAX_DEPTH` levels,
  :data:`MAX_NAMESPACES_IN_SCOPE` namespace declarations in scope and
  :data:`MAX_INCLUSIVE_PREFIXES` PrefixList prefixes, enforced while parsing,
  so no document makes xmlsec1's c14n burn seconds before it can tell a
  forged signature from a real one.
* **Comment truncation** (CVE-2017-11427 family): a NameID such as
  ``admin@corp.example<!---->.evil.example`` canonicalises (without comments)
  to the signed value while some parsers read only the first text node. The
  NameID's text with comments excluded is compared with its first text node
  and the message refused when they differ; comments and processing
  instructions anywhere else inside the message are refused as well (no IdP
  sends them, and exclusive c14n does not sign them).
* **Issuer**: the Response and Assertion ``Issuer`` must be the entity id in
  *this* provider's metadata, checked before any key is looked up.
"""

from __future__ import annotations

import base64
import binascii
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

from .. import reasons
from ..exceptions import AuthenticationFailed

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
XENC = "http://www.w3.org/2001/04/xmlenc#"
XENC11 = "http://www.w3.org/2009/xmlenc11#"
#: libxml2 (so xmlsec1) treats ``xml:id`` as an ID: it counts as one here too
XML_ID = "{http://www.w3.org/XML/1998/namespace}id"
MD = "urn:oasis:names:tc:SAML:2.0:metadata"

ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
#: Exclusive c14n only: the SAML core spec says SHOULD, and pysaml2 (7.x)
#: refuses any other canonicalization after xmlsec1 has run; refusing it
#: here says why, and saves the xmlsec1 process.
C14N_ALGORITHMS = frozenset({EXC_C14N, EXC_C14N + "WithComments"})
INCLUSIVE_C14N = frozenset({
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments",
    "http://www.w3.org/2006/12/xml-c14n11",
    "http://www.w3.org/2006/12/xml-c14n11#WithComments",
})
ALLOWED_TRANSFORMS = C14N_ALGORITHMS | {ENVELOPED}
#: SHA-1 is refused: collisions are practical, and every current IdP (Google
#: Workspace included) signs with SHA-256.
SIGNATURE_ALGORITHMS = frozenset({
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512",
})
DIGEST_ALGORITHMS = frozenset({
    "http://www.w3.org/2001/04/xmlenc#sha256",
    "http://www.w3.org/2001/04/xmldsig-more#sha384",
    "http://www.w3.org/2001/04/xmlenc#sha512",
})

#: EncryptedData algorithms (XML Encryption 1.1). AES-GCM is preferred; the CBC
#: modes are what ADFS, Okta and pysaml2 still send.
DATA_ENCRYPTION_ALGORITHMS = frozenset({
    XENC11 + "aes128-gcm", XENC11 + "aes192-gcm", XENC11 + "aes256-gcm",
    XENC + "aes128-cbc", XENC + "aes192-cbc", XENC + "aes256-cbc", XENC + "tripledes-cbc",
})
#: EncryptedKey algorithms: RSA-OAEP only (RSA PKCS#1 v1.5 is Bleichenbacher-prone)
KEY_TRANSPORT_ALGORITHMS = frozenset({XENC + "rsa-oaep-mgf1p", XENC11 + "rsa-oaep"})
OAEP_DIGESTS = frozenset({DS + "sha1"}) | DIGEST_ALGORITHMS
OAEP_MGFS = frozenset(XENC11 + f"mgf1sha{n}" for n in (1, 224, 256, 384, 512))
#: elements that carry encrypted content; outside the one allow-listed
#: EncryptedAssertion none of them is accepted (nothing else is ever decrypted)
ENCRYPTED_TAGS = frozenset({f"{{{SAML}}}EncryptedID", f"{{{SAML}}}EncryptedAttribute",
                            f"{{{SAML}}}EncryptedAssertion", f"{{{SAMLP}}}NewEncryptedID"})
_BASE64 = re.compile(r"^[A-Za-z0-9+/=\s]+$")

_DOCTYPE = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_XML_DECL_ENCODING = re.compile(rb"^<\?xml[^>]*encoding\s*=\s*[\"']([A-Za-z0-9._-]+)[\"']")


def _q(ns: str, tag: str) -> str:
    return f"{{{ns}}}{tag}"


def refuse(description: str, reason: str = reasons.INVALID_RESPONSE) -> AuthenticationFailed:
    return AuthenticationFailed(description, reason=reason)


def decode_b64(value: str, max_size: int, what: str = "SAML message") -> bytes:
    """Base64 → bytes, refusing oversized input before decoding it."""
    if not isinstance(value, str) or not value:
        raise refuse(f"The {what} is missing.", reasons.BAD_REQUEST)
    # 4 encoded characters per 3 bytes, plus line breaks some IdPs insert
    if len(value) > (max_size * 4) // 3 + 4 + max_size // 32:
        raise refuse(f"The {what} is too large.")
    compact = "".join(value.split())
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise refuse(f"The {what} is not valid base64.") from None
    if len(data) > max_size:
        raise refuse(f"The {what} is too large.")
    return data


#: Structural bounds on every SAML message and metadata document. xmlsec1
#: canonicalizes before it can tell a forged signature from a real one, and
#: libxml2's exclusive c14n looks up each inclusive prefix (and each element's
#: own) through every ancestor's namespace declarations: a 130 KiB response
#: with 10,000 ``PrefixList`` prefixes and 200-deep nesting -- or 5,000
#: declarations on one element above 15,000 empty ones -- kept one xmlsec1
#: run busy past its 5 s kill, for every metadata certificate, on every post
#: that named one outstanding InResponseTo. Real messages stay far inside these
#: (depth under 12, a handful of declarations in scope, PrefixList of 1-5).
MAX_DEPTH = 32
#: namespace declarations in scope at any element (its own and its ancestors')
MAX_NAMESPACES_IN_SCOPE = 48
#: prefixes in one exclusive-c14n ``InclusiveNamespaces/@PrefixList``
MAX_INCLUSIVE_PREFIXES = 16


class _TooComplex(ValueError):
    """The document is outside the structural bounds (message says which)."""


class _BoundedTreeBuilder(ET.TreeBuilder):
    """An ElementTree builder that refuses documents nested deeper than
    :data:`MAX_DEPTH` or with more than :data:`MAX_NAMESPACES_IN_SCOPE`
    namespace declarations in scope, while they are parsed."""

    def __init__(self) -> None:
        super().__init__(insert_comments=True, insert_pis=True)
        self._pending_ns = 0
        #: declarations in scope, one entry per open element
        self._scopes: list[int] = []

    def start_ns(self, prefix: str, uri: str) -> None:
        self._pending_ns += 1

    def start(self, tag: str, attrs: dict[str, str]) -> ET.Element:
        in_scope = (self._scopes[-1] if self._scopes else 0) + self._pending_ns
        self._pending_ns = 0
        self._scopes.append(in_scope)
        if len(self._scopes) > MAX_DEPTH:
            raise _TooComplex(f"is nested more than {MAX_DEPTH} levels deep")
        if in_scope > MAX_NAMESPACES_IN_SCOPE:
            raise _TooComplex(f"has more than {MAX_NAMESPACES_IN_SCOPE} namespace declarations in scope")
        return super().start(tag, attrs)

    def end(self, tag: str) -> ET.Element:
        self._scopes.pop()
        return super().end(tag)


def parse_xml(data: bytes) -> ET.Element:
    """Parse untrusted XML: UTF-8 only, no DTD, comments kept (to be refused),
    at most :data:`MAX_DEPTH` deep and :data:`MAX_NAMESPACES_IN_SCOPE`
    namespace declarations in scope."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00", b"\xef\xbb\xbf\x00")) or b"\x00" in data[:64]:
        raise refuse("The SAML message uses an unsupported encoding.")
    m = _XML_DECL_ENCODING.match(data.lstrip())
    if m and m.group(1).lower() not in (b"utf-8", b"utf8", b"us-ascii"):
        raise refuse("The SAML message uses an unsupported encoding.")
    if _DOCTYPE.search(data):
        raise refuse("The SAML message contains a DOCTYPE or entity declaration.")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise refuse("The SAML message is not UTF-8.") from None
    builder = _BoundedTreeBuilder()
    parser = DefusedXMLParser(target=builder, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    try:
        parser.feed(data)
        root: ET.Element = parser.close()  # the tree builder's root (defusedxml is untyped)
        return root
    except (DefusedXmlException, ET.ParseError):
        raise refuse("The SAML message is not well-formed XML.") from None
    except _TooComplex as exc:
        raise refuse(f"The SAML message {exc}.") from None
    except ValueError:
        raise refuse("The SAML message is not well-formed XML.") from None


# xs:dateTime (XML Schema part 2, 3.2.7.1) with a four-digit year: the only form SAML and metadata use.
_XS_DATETIME = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
    r"T(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})(?:\.(?P<fraction>[0-9]+))?"
    r"(?:(?P<utc>Z)|(?P<sign>[+-])(?P<zone_hour>[0-9]{2}):(?P<zone_minute>[0-9]{2}))?"
)


def parse_instant(value: str | None) -> float | None:
    """xs:dateTime → epoch seconds; no zone means UTC (SAML core 1.3.3).

    Read against the XML Schema lexical form, not with ``datetime.fromisoformat``:
    that refuses ``Z`` and fractions other than 3 or 6 digits on Python 3.10 (every
    SAML sign-in failed there), and from 3.11 accepts other ISO 8601 forms (a date
    alone, week dates, a space for ``T``), so the same message was read differently
    by each Python. Fractions beyond microseconds are truncated.
    """
    if not value:
        return None
    m = _XS_DATETIME.fullmatch(value.strip())
    if m is None:
        raise refuse("The SAML message has a malformed timestamp.")
    zone = timezone.utc
    if m["sign"]:
        offset = timedelta(hours=int(m["zone_hour"]), minutes=int(m["zone_minute"]))
        if int(m["zone_minute"]) > 59 or offset > timedelta(hours=14):
            raise refuse("The SAML message has a malformed timestamp.")
        zone = timezone(-offset if m["sign"] == "-" else offset)
    try:
        dt = datetime(int(m["year"]), int(m["month"]), int(m["day"]), int(m["hour"]), int(m["minute"]),
                      int(m["second"]), int((m["fraction"] or "")[:6].ljust(6, "0")), tzinfo=zone)
    except ValueError:  # month 13, February 30th, hour 24, second 60 ...
        raise refuse("The SAML message has a malformed timestamp.") from None
    return dt.timestamp()


def _is_comment_or_pi(el: ET.Element) -> bool:
    tag: object = el.tag  # typed str, but the factory function for these two
    return tag is ET.Comment or tag is ET.ProcessingInstruction


def text_without_comments(el: ET.Element) -> str:
    parts = [el.text or ""]
    for child in el:
        if _is_comment_or_pi(child):
            parts.append(child.tail or "")
    return "".join(parts)


@dataclass
class Scan:
    """What the pre-scan learned (nothing here is trusted yet)."""

    root: ET.Element
    kind: str
    id: str | None
    in_response_to: str | None
    destination: str | None
    issuer: str | None
    response_signed: bool = False
    assertion_id: str | None = None
    assertion_issuer: str | None = None
    assertion_signed: bool = False
    encrypted: bool = False
    #: base64 certificates named in KeyInfo (to notice an IdP key rollover)
    key_info_certs: set[str] = field(default_factory=set)
    name_id: str | None = None
    #: audiences of each AudienceRestriction (plaintext assertion only)
    audiences: list[list[str]] | None = None
    #: the Response carries an Assertion or EncryptedAssertion
    has_assertion: bool = False
    #: the top-level StatusCode value (untrusted until a signature covers it)
    status: str | None = None


_PREFIX = re.compile(r"^(#default|[A-Za-z_][\w.-]*)$")


def _inclusive_namespaces_only(el: ET.Element) -> bool:
    """``el`` has no children, or exactly one exc-c14n ``InclusiveNamespaces``
    with a plain PrefixList and nothing else in it."""
    children = list(el)
    if not children:
        return not (el.text or "").strip()
    if len(children) != 1:
        return False
    inc = children[0]
    if inc.tag != _q(EXC_C14N, "InclusiveNamespaces") or len(inc) or (inc.text or "").strip():
        return False
    if set(inc.attrib) != {"PrefixList"} or (el.text or "").strip() or (inc.tail or "").strip():
        return False
    prefixes = inc.get("PrefixList", "").split()
    # every listed prefix is looked up through each element's ancestors (MAX_INCLUSIVE_PREFIXES)
    return len(prefixes) <= MAX_INCLUSIVE_PREFIXES and all(_PREFIX.match(p) for p in prefixes)


def _check_signature(sig: ET.Element, parent: ET.Element) -> set[str]:
    """Shape of one ds:Signature (SAML core 5.4, and our algorithm allow-list)."""
    parent_id = parent.get("ID")
    if not parent_id:
        raise refuse("A signed element has no ID.")
    si = sig.find(_q(DS, "SignedInfo"))
    if si is None:
        raise refuse("A signature has no SignedInfo.")
    c14n = si.find(_q(DS, "CanonicalizationMethod"))
    if c14n is not None and c14n.get("Algorithm") in INCLUSIVE_C14N:
        raise refuse("A signature uses inclusive canonicalization; the identity provider must sign with "
                     "exclusive c14n (http://www.w3.org/2001/10/xml-exc-c14n#).")
    if c14n is None or c14n.get("Algorithm") not in C14N_ALGORITHMS or not _inclusive_namespaces_only(c14n):
        raise refuse("A signature uses a canonicalization method that is not allowed.")
    sm = si.find(_q(DS, "SignatureMethod"))
    if sm is None or sm.get("Algorithm") not in SIGNATURE_ALGORITHMS:
        raise refuse("A signature uses an algorithm that is not allowed.")
    refs = si.findall(_q(DS, "Reference"))
    if len(refs) != 1 or refs[0].get("URI") != f"#{parent_id}":
        raise refuse("A signature does not cover the element it is attached to.")
    transforms = refs[0].findall(f"{_q(DS, 'Transforms')}/{_q(DS, 'Transform')}")
    algs = [t.get("Algorithm") for t in transforms]
    if not 1 <= len(algs) <= 2 or ENVELOPED not in algs or any(a not in ALLOWED_TRANSFORMS for a in algs):
        raise refuse("A signature uses a transform that is not allowed.")
    if any(a in INCLUSIVE_C14N for a in algs):
        raise refuse("A signature uses inclusive canonicalization; the identity provider must sign with "
                     "exclusive c14n (http://www.w3.org/2001/10/xml-exc-c14n#).")
    for t in transforms:
        # Okta and Shibboleth write <ec:InclusiveNamespaces PrefixList="xs"/> in the
        # exclusive c14n transform (it only adds namespace declarations to what is signed)
        if len(t) and not (t.get("Algorithm", "").startswith(EXC_C14N) and _inclusive_namespaces_only(t)):
            raise refuse("A signature uses a transform that is not allowed.")
    dm = refs[0].find(_q(DS, "DigestMethod"))
    if dm is None or dm.get("Algorithm") not in DIGEST_ALGORITHMS:
        raise refuse("A signature uses a digest algorithm that is not allowed.")
    if sig.find(_q(DS, "Object")) is not None:
        raise refuse("A signature carries a ds:Object.")
    certs = set()
    for c in sig.iter(_q(DS, "X509Certificate")):
        if c.text:
            certs.add("".join(c.text.split()))
    return certs


def _issuer_of(el: ET.Element) -> str | None:
    iss = el.find(_q(SAML, "Issuer"))
    if iss is None:
        return None
    fmt = iss.get("Format")
    if fmt and fmt != "urn:oasis:names:tc:SAML:2.0:nameid-format:entity":
        raise refuse("The issuer is not an entity id.", reasons.ISSUER_MISMATCH)
    return (iss.text or "").strip()


def _bad_encryption(what: str) -> AuthenticationFailed:
    return refuse(f"The encrypted assertion is not of an allowed shape ({what}).")


def _only(el: ET.Element, attrs: frozenset[str], what: str) -> list[ET.Element]:
    """``el``'s element children, after refusing unknown attributes and text."""
    if set(el.attrib) - attrs:
        raise _bad_encryption(f"unexpected attribute on {what}")
    if (el.text or "").strip() or any((c.tail or "").strip() for c in el):
        raise _bad_encryption(f"text in {what}")
    return list(el)


def _leaf(el: ET.Element, attrs: frozenset[str], what: str) -> None:
    if set(el.attrib) - attrs or len(el):
        raise _bad_encryption(what)


def _cipher_data(el: ET.Element, what: str) -> None:
    """CipherData holds one CipherValue (base64) -- never a CipherReference."""
    children = _only(el, frozenset(), what)
    if len(children) != 1 or children[0].tag != _q(XENC, "CipherValue"):
        raise _bad_encryption(f"{what} must hold a CipherValue")
    cv = children[0]
    if cv.attrib or len(cv) or not _BASE64.match(cv.text or ""):
        raise _bad_encryption(f"{what} CipherValue must be base64")


def _key_method(el: ET.Element) -> None:
    if el.get("Algorithm") not in KEY_TRANSPORT_ALGORITHMS:
        raise _bad_encryption("key transport algorithm")
    for c in _only(el, frozenset({"Algorithm"}), "EncryptedKey EncryptionMethod"):
        if c.tag == _q(DS, "DigestMethod") and c.get("Algorithm") in OAEP_DIGESTS:
            _leaf(c, frozenset({"Algorithm"}), "OAEP DigestMethod")
        elif c.tag == _q(XENC11, "MGF") and c.get("Algorithm") in OAEP_MGFS:
            _leaf(c, frozenset({"Algorithm"}), "OAEP MGF")
        else:
            raise _bad_encryption("EncryptedKey EncryptionMethod parameters")


_X509_CHILDREN = frozenset({_q(DS, "X509Certificate"), _q(DS, "X509IssuerSerial"), _q(DS, "X509SubjectName"),
                            _q(DS, "X509SKI")})


def _recipient_key_info(el: ET.Element) -> None:
    """The EncryptedKey's own KeyInfo may name the SP key (X509Data, KeyName);
    xmlsec1 reads none of it (``--enabled-key-data enc-key``)."""
    for c in _only(el, frozenset({"Id"}), "EncryptedKey KeyInfo"):
        if c.tag == _q(DS, "KeyName"):
            _leaf(c, frozenset(), "KeyName")
        elif c.tag == _q(DS, "X509Data"):
            for x in _only(c, frozenset(), "X509Data"):
                if x.tag not in _X509_CHILDREN:
                    raise _bad_encryption("X509Data content")
                if x.tag == _q(DS, "X509IssuerSerial"):
                    if any(y.tag not in (_q(DS, "X509IssuerName"), _q(DS, "X509SerialNumber")) or len(y)
                           for y in _only(x, frozenset(), "X509IssuerSerial")):
                        raise _bad_encryption("X509IssuerSerial content")
                elif x.attrib or len(x):
                    raise _bad_encryption("X509Data content")
        else:
            raise _bad_encryption("EncryptedKey KeyInfo may hold only X509Data or KeyName")


def _encrypted_key(el: ET.Element) -> None:
    children = _only(el, frozenset({"Id", "Recipient"}), "EncryptedKey")
    tags = [c.tag for c in children]
    if tags not in ([_q(XENC, "EncryptionMethod"), _q(XENC, "CipherData")],
                    [_q(XENC, "EncryptionMethod"), _q(DS, "KeyInfo"), _q(XENC, "CipherData")]):
        raise _bad_encryption("EncryptedKey must hold EncryptionMethod, KeyInfo and CipherData only")
    _key_method(children[0])
    if len(children) == 3:
        _recipient_key_info(children[1])
    _cipher_data(children[-1], "EncryptedKey CipherData")


def check_encrypted_assertion(ea: ET.Element) -> None:
    """Allow-list the shape of an EncryptedAssertion before xmlsec1 sees it.

    Exactly: ``EncryptedAssertion/EncryptedData(Type=Element)`` with an
    allowed ``EncryptionMethod``, a ``KeyInfo`` holding one inline
    ``EncryptedKey`` (RSA-OAEP, ``CipherValue``), and a ``CipherValue``.
    Refused by construction: CipherReference (a URL or file xmlsec1 would
    read), RetrievalMethod, Transforms (XPath/XSLT CPU bombs), EncryptedKey
    outside KeyInfo, nested EncryptedData/EncryptedKey, EncryptionProperties,
    RSA PKCS#1 v1.5.
    """
    children = _only(ea, frozenset(), "EncryptedAssertion")
    if [c.tag for c in children] != [_q(XENC, "EncryptedData")]:
        raise _bad_encryption("EncryptedAssertion must hold one EncryptedData and nothing else")
    ed = children[0]
    if ed.get("Type") != XENC + "Element":
        raise _bad_encryption("EncryptedData Type must be Element")
    parts = _only(ed, frozenset({"Id", "Type"}), "EncryptedData")
    if [c.tag for c in parts] != [_q(XENC, "EncryptionMethod"), _q(DS, "KeyInfo"), _q(XENC, "CipherData")]:
        raise _bad_encryption("EncryptedData must hold EncryptionMethod, KeyInfo and CipherData only")
    method, key_info, cipher = parts
    if method.get("Algorithm") not in DATA_ENCRYPTION_ALGORITHMS:
        raise _bad_encryption("data encryption algorithm")
    _leaf(method, frozenset({"Algorithm"}), "EncryptedData EncryptionMethod")
    keys = _only(key_info, frozenset({"Id"}), "EncryptedData KeyInfo")
    if [c.tag for c in keys] != [_q(XENC, "EncryptedKey")]:
        raise _bad_encryption("KeyInfo must hold one EncryptedKey and nothing else")
    _encrypted_key(keys[0])
    _cipher_data(cipher, "EncryptedData CipherData")


#: attribute names xmlsec1 takes as an element's ID: ``--id-attr:ID`` (and
#: ``AssertionID``, SAML 1.1) and the ``Id`` it registers itself inside
#: ds:Signature / xenc:EncryptedData. It matches them by *local* name, in any
#: namespace, and takes the first on the element.
ID_ATTRIBUTES = ("ID", "AssertionID", "Id")


def check_ids(root: ET.Element) -> None:
    """Every ID in the document unique, and no ID-named attribute in a foreign namespace.

    xmlsec1 registers an element's ID from the *first* attribute whose local
    name is ``ID`` -- ``x:ID`` as well as ``ID`` -- while the Reference check
    here (and every reader) uses the plain ``ID``. An element carrying
    ``x:ID="decoy" ID="A"`` is therefore not what ``#A`` points at for
    xmlsec1: another element with ``ID="A"`` (a genuinely signed one, wrapped
    inside) is, and no duplicate is noticed. No SAML message or metadata needs
    such an attribute (``xml:id`` aside, which libxml2 treats as an ID, so it
    counts in the uniqueness check), so it is refused outright."""
    ids: set[str] = set()
    for el in root.iter():
        if _is_comment_or_pi(el):
            continue
        for name, value in el.attrib.items():
            if name.startswith("{") and name != XML_ID and name.rpartition("}")[2] in ID_ATTRIBUTES:
                raise refuse("The SAML message carries an ID attribute in a foreign namespace.")
            if name in ID_ATTRIBUTES or name == XML_ID:
                if value in ids:
                    raise refuse("The SAML message contains duplicate IDs.")
                ids.add(value)


def _is_encrypted(el: ET.Element) -> bool:
    tag = el.tag if isinstance(el.tag, str) else ""
    return tag in ENCRYPTED_TAGS or tag.startswith((f"{{{XENC}}}", f"{{{XENC11}}}"))


def scan(data: bytes, *, expected_issuer: str, kinds: tuple[str, ...] = ("Response",),
         decrypted: bool = False) -> Scan:
    """Check the shape of a SAML protocol message before any crypto runs."""
    root = parse_xml(data)
    kind = root.tag.rpartition("}")[2] if isinstance(root.tag, str) else ""
    if root.tag != _q(SAMLP, kind) or kind not in kinds:
        raise refuse("The SAML message is not of the expected type.")

    check_ids(root)
    parents: dict[ET.Element, ET.Element] = {}
    for el in root.iter():
        if _is_comment_or_pi(el):
            continue
        for child in el:
            parents[child] = el

    # the comment-truncation attack, named where it bites: the NameID
    for nid in root.iter(_q(SAML, "NameID")):
        if list(nid) and text_without_comments(nid) != (nid.text or ""):
            raise refuse("The NameID is split by an XML comment.")
        if any(not _is_comment_or_pi(c) for c in nid):
            raise refuse("The NameID contains markup.")
    for el in root.iter():
        if _is_comment_or_pi(el):
            raise refuse("The SAML message contains XML comments or processing instructions.")

    s = Scan(root=root, kind=kind, id=root.get("ID"), in_response_to=root.get("InResponseTo"),
             destination=root.get("Destination"), issuer=_issuer_of(root))
    if s.issuer is not None and s.issuer != expected_issuer:
        raise refuse("The SAML message was issued by another identity provider.", reasons.ISSUER_MISMATCH)

    # every signature enveloped in the element it signs; at most one each
    for sig in root.iter(_q(DS, "Signature")):
        parent = parents.get(sig)
        if parent is None:
            raise refuse("A signature is misplaced.")
        s.key_info_certs |= _check_signature(sig, parent)
        if parent is root:
            if s.response_signed:
                raise refuse("The SAML message carries two signatures.")
            s.response_signed = True
        elif parent.tag == _q(SAML, "Assertion") and (
                parents.get(parent) is root if not decrypted else
                (parents.get(parent) is not None and parents[parent].tag == _q(SAML, "EncryptedAssertion")
                 and parents.get(parents[parent]) is root)):
            if s.assertion_signed:
                raise refuse("The assertion carries two signatures.")
            s.assertion_signed = True
        else:
            raise refuse("A signature is misplaced.")

    if kind == "Response":
        all_assertions = list(root.iter(_q(SAML, "Assertion")))
        all_encrypted = list(root.iter(_q(SAML, "EncryptedAssertion")))
        direct = root.findall(_q(SAML, "Assertion"))
        direct_enc = root.findall(_q(SAML, "EncryptedAssertion"))
        if len(all_encrypted) != len(direct_enc):
            raise refuse("The SAML response contains a nested assertion.")
        if len(direct) + len(direct_enc) > 1:
            raise refuse("The SAML response contains more than one assertion.")
        if decrypted:
            # what xmlsec1 gave back: EncryptedAssertion now holds exactly the plaintext Assertion
            if direct or len(direct_enc) != 1 or [c.tag for c in direct_enc[0]] != [_q(SAML, "Assertion")]:
                raise refuse("The decrypted assertion is not a single Assertion.")
            direct = list(direct_enc[0])
            direct_enc = []
        if len(all_assertions) != len(direct):
            raise refuse("The SAML response contains a nested assertion.")
        # encrypted content is accepted in one place only: the allow-listed
        # EncryptedAssertion (and, once decrypted, nowhere -- not in Advice, not as
        # EncryptedID / EncryptedAttribute, not as a ds:Signature's stand-in)
        allowed: set[ET.Element] = set()
        if direct_enc:
            check_encrypted_assertion(direct_enc[0])
            allowed = set(direct_enc[0].iter())
        elif decrypted:
            allowed = set(root.findall(_q(SAML, "EncryptedAssertion")))
        for el in root.iter():
            if el not in allowed and _is_encrypted(el):
                raise refuse("The SAML response carries encrypted content where none is accepted.")
        s.has_assertion = bool(direct or direct_enc)
        code = root.find(f"{_q(SAMLP, 'Status')}/{_q(SAMLP, 'StatusCode')}")
        s.status = code.get("Value") if code is not None else None
        if direct:
            a = direct[0]
            s.assertion_id = a.get("ID")
            s.assertion_issuer = _issuer_of(a)
            if s.assertion_issuer != expected_issuer:
                raise refuse("The assertion was issued by another identity provider.", reasons.ISSUER_MISMATCH)
            name_el = a.find(f"{_q(SAML, 'Subject')}/{_q(SAML, 'NameID')}")
            s.name_id = (name_el.text or "").strip() if name_el is not None else None
            s.audiences = [[(x.text or "").strip() for x in ar.findall(_q(SAML, "Audience"))]
                           for ar in a.iter(_q(SAML, "AudienceRestriction"))]
        elif direct_enc:
            s.encrypted = True
    return s


def serialize(el: ET.Element) -> str:
    return ET.tostring(el, encoding="unicode")
