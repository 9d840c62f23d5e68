"""xmlsec1, run by flask-ccsso itself: signature verification and decryption
of SAML responses with every network and file path closed.

Why not pysaml2's own calls: pysaml2 re-reads a decrypted assertion as
"verified" without verifying it (``saml2/response.py`` ``parse_assertion``,
its second decryption pass), and it starts ``xmlsec1 --decrypt`` with no URI
or key-data restrictions, no timeout and no memory limit. A signature counts
here only when *this* module ran xmlsec1 on it, with a certificate taken from
the IdP metadata and nothing else:

* ``--verify`` gets ``--pubkey-cert-pem`` (one metadata certificate per run),
  ``--enabled-key-data raw-x509-cert`` (so nothing in the message's
  ``KeyInfo`` -- certificates, key values, RetrievalMethod -- is read or
  trusted), ``--enabled-reference-uris same-doc`` (a Reference can only point
  into the document), ``--id-attr:ID`` for Response and Assertion only, and
  ``--node-xpath`` naming the one ``ds:Signature`` to check -- the one that is
  a direct child of the element it must cover. The pre-scan
  (:mod:`.saml_xml`) has already refused any Reference whose URI is not
  ``#`` + that element's ID, duplicate IDs and every transform but
  enveloped-signature and exclusive c14n.
* ``--decrypt`` gets the SP private key, ``--enabled-key-data enc-key`` (the
  session key can only come from the one inline EncryptedKey, decrypted with
  that private key), and ``--enabled-cipher-reference-uris`` /
  ``--enabled-retrieval-method-uris`` at their narrowest (``empty``); the
  pre-scan has refused CipherReference, RetrievalMethod and Transforms
  before xmlsec1 starts anyway.
* Every run has a wall-clock timeout (the process group is killed), a CPU
  limit, an address-space limit (``RLIMIT_AS``), no core dumps, stdin closed
  and a minimal environment. Its stderr is never logged: it can quote the
  document.
* No run loads a trust store: xmlsec1 (with OpenSSL) reads the system CA
  bundle at start-up whatever it is asked to do -- about three quarters of
  a verification's CPU -- though nothing here ever builds a certificate
  chain (keys come from the one metadata certificate). ``SSL_CERT_FILE`` and
  ``SSL_CERT_DIR`` point at ``/dev/null``, so there is none to read.

Signature verification can also run in-process (:mod:`.saml_binding`, the
``xmlsec`` binding, ``xmlsecBackend``), with each restriction above kept;
decryption always runs here.
"""

from __future__ import annotations

import base64
import logging
import math
import os
import resource
import secrets
import signal
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..exceptions import ConfigError
from .saml_binding import BindingVerifier, available
from .saml_xml import refuse

log = logging.getLogger("flask_ccsso")

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"

#: wall-clock seconds one xmlsec1 run may take (a real one takes ~10 ms)
TIMEOUT = 5.0
#: address space of one xmlsec1 run, plus ``MEMORY_PER_BYTE`` times the input
MEMORY_BASE = 256 * 1024 * 1024
MEMORY_PER_BYTE = 32


def _el(ns: str, name: str) -> str:
    return f"*[local-name()='{name}' and namespace-uri()='{ns}']"


#: the Response's own signature (a direct child of the root)
RESPONSE_SIGNATURE = f"/{_el(SAMLP, 'Response')}/{_el(DS, 'Signature')}"
#: the signature of the one assertion, in a plain response
ASSERTION_SIGNATURE = f"/{_el(SAMLP, 'Response')}/{_el(SAML, 'Assertion')}/{_el(DS, 'Signature')}"
#: the signature of the one assertion after decryption (it sits inside EncryptedAssertion)
DECRYPTED_ASSERTION_SIGNATURE = (f"/{_el(SAMLP, 'Response')}/{_el(SAML, 'EncryptedAssertion')}/"
                                 f"{_el(SAML, 'Assertion')}/{_el(DS, 'Signature')}")
#: the one EncryptedData the allow-list admitted
ENCRYPTED_DATA = (f"/{_el(SAMLP, 'Response')}/{_el(SAML, 'EncryptedAssertion')}/"
                  f"{_el('http://www.w3.org/2001/04/xmlenc#', 'EncryptedData')}")

#: xmlsec1 (1.2.37) applies ``--enabled-cipher-reference-uris`` to the
#: EncryptedData but not to an EncryptedKey's own CipherReference, which it
#: fetches through libxml2's HTTP client. The allow-list refuses that shape
#: before xmlsec1 starts; as a second wall, libxml2's HTTP/FTP client is sent
#: to a proxy that cannot answer (loopback port 1), so no request leaves.
_DEAD_PROXY = "http://127.0.0.1:1/"
#: ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``: no CA bundle is loaded (nothing here verifies a chain)
_ENV = {"PATH": os.defpath, "LC_ALL": "C", "http_proxy": _DEAD_PROXY, "HTTP_PROXY": _DEAD_PROXY,
        "ftp_proxy": _DEAD_PROXY, "FTP_PROXY": _DEAD_PROXY, "no_proxy": "", "NO_PROXY": "",
        "SSL_CERT_FILE": os.devnull, "SSL_CERT_DIR": os.devnull}

_ID_ATTRS = ("--id-attr:ID", f"{SAMLP}:Response", "--id-attr:ID", f"{SAML}:Assertion")


class XmlsecTimeout(Exception):
    """xmlsec1 ran longer than allowed and was killed."""


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: bytes
    stderr: bytes


def _limits(cpu_seconds: int, memory: int) -> Callable[[], None]:
    def apply() -> None:  # runs in the child, between fork and exec
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def run(argv: Sequence[str], *, timeout: float = TIMEOUT, memory: int = MEMORY_BASE) -> Result:
    """Run one (xmlsec1) process under a wall-clock timeout, a CPU limit and an
    address-space limit. On timeout the whole process group is killed and
    :class:`XmlsecTimeout` raised: a hostile document must not hold a worker."""
    proc = subprocess.Popen(  # argv is built by this module, never by a shell
        list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True,
        start_new_session=True, env=_ENV,
        preexec_fn=_limits(max(1, math.ceil(timeout)), memory),  # noqa: PLW1509
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # pragma: no cover - it ended in between
            pass
        proc.communicate()
        raise XmlsecTimeout(f"{os.path.basename(argv[0])} was killed after {timeout:g} s") from None
    return Result(proc.returncode, out, err)


def in_process_verifier(backend: str, setting: str = "xmlsecBackend") -> BindingVerifier | None:
    """The in-process verifier ``backend`` (an ``xmlsecBackend`` value) asks
    for, or None for the xmlsec1 program. ``auto`` falls back to the program
    when the binding cannot be loaded, and says so in one log line;
    ``binding`` then is a :class:`ConfigError` naming ``setting``."""
    if backend == "xmlsec1":
        return None
    reason = available()
    if reason is None:
        return BindingVerifier()
    if backend == "binding":
        raise ConfigError(setting, f"is binding, but {reason}.",
                          "pip install 'flask-ccsso[saml-fast]' (xmlsec and a matching lxml), "
                          "or set xmlsecBackend to auto or xmlsec1.")
    log.info("flask-ccsso: SAML signatures are verified by the xmlsec1 program (%s; "
             "pip install 'flask-ccsso[saml-fast]' verifies in-process)", reason)
    return None


class Xmlsec:
    """One provider's xmlsec1: binary, private work directory, limits -- and,
    when ``binding`` is given, signatures verified in-process by it instead."""

    def __init__(self, binary: str, workdir: str, *, max_input: int, timeout: float = TIMEOUT,
                 backend: str = "xmlsec1", setting: str = "xmlsecBackend") -> None:
        self.binary = binary
        self.workdir = workdir
        self.timeout = timeout
        self.memory = MEMORY_BASE + MEMORY_PER_BYTE * max_input
        self._cert_files: dict[str, str] = {}
        #: the in-process verifier (:mod:`.saml_binding`), None: the xmlsec1 program verifies
        self.binding = in_process_verifier(backend, setting)

    @property
    def backend(self) -> str:
        """Who verifies signatures: ``binding`` or ``xmlsec1``."""
        return "xmlsec1" if self.binding is None else "binding"

    # -- files ----------------------------------------------------------------------------
    def _write(self, data: bytes, suffix: str) -> str:
        path = os.path.join(self.workdir, f"{secrets.token_hex(12)}{suffix}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return path

    def cert_file(self, cert_b64: str) -> str:
        """A PEM file for one metadata certificate (base64 DER), written once."""
        path = self._cert_files.get(cert_b64)
        if path is None or not os.path.exists(path):
            der = base64.b64decode(cert_b64)
            body = base64.encodebytes(der).decode("ascii")
            pem = f"-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\n".encode("ascii")
            path = self._cert_files[cert_b64] = self._write(pem, ".crt")
        return path

    def _run(self, args: Sequence[str], document: bytes) -> Result:
        path = self._write(document, ".xml")
        try:
            return run([self.binary, *args, path], timeout=self.timeout, memory=self.memory)
        except XmlsecTimeout:
            log.warning("flask-ccsso: xmlsec1 exceeded %g s on a SAML response and was killed", self.timeout)
            raise refuse("The SAML response took too long to process.") from None
        except OSError:
            raise refuse("The SAML response could not be processed.") from None
        finally:
            os.unlink(path)

    # -- operations -------------------------------------------------------------------------
    def verify(self, document: bytes, signature_xpath: str, certs: Sequence[str]) -> bool:
        """True when the ds:Signature at ``signature_xpath`` verifies with one of
        ``certs`` (metadata certificates, base64 DER), tried in order."""
        if self.binding is not None:
            return self.binding.verify(document, signature_xpath, certs)
        for cert in certs:
            res = self._run(["--verify", "--pubkey-cert-pem", self.cert_file(cert),
                             "--enabled-key-data", "raw-x509-cert", "--enabled-reference-uris", "same-doc",
                             *_ID_ATTRS, "--node-xpath", signature_xpath], document)
            lines = res.stderr.decode("ascii", "replace").splitlines()
            if res.returncode == 0 and "OK" in lines and "SignedInfo References (ok/all): 1/1" in lines:
                return True
        return False

    def decrypt(self, document: bytes, private_key_file: str) -> bytes:
        """The document with its one EncryptedData replaced by the plaintext."""
        res = self._run(["--decrypt", "--privkey-pem", private_key_file, "--enabled-key-data", "enc-key",
                         "--enabled-cipher-reference-uris", "empty", "--enabled-retrieval-method-uris", "empty",
                         "--node-xpath", ENCRYPTED_DATA], document)
        if res.returncode != 0 or not res.stdout:
            raise refuse("The SAML assertion could not be decrypted.")
        return res.stdout
