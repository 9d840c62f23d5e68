"""Private redis-server processes for the store tests: each on its own port, in its own temporary
directory, never the shared server on 6379 -- so a test may pause (SIGSTOP), kill or fail it over.

``wait_for`` polls a condition (no fixed sleeps); ``tls_files`` makes a CA, a server and a client
certificate with the ``cryptography`` library.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import redis

from tests.support.network import free_port

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float = 20.0, poll: float = 0.02, what: str = "condition") -> T:
    """Poll ``condition`` until it returns something truthy (exceptions count as not yet)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception as exc:  # noqa: BLE001 - not ready yet
            last = exc
        else:
            if value:
                return value
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}" + (f" (last error: {last!r})" if last else ""))


class RedisProc:
    """One redis-server of a test's own (``args`` are extra command-line options)."""

    def __init__(self, workdir: Path, *args: str, port: int | None = None, tls_port: int | None = None,
                 client: Callable[[RedisProc], Any] | None = None, conf: Path | None = None) -> None:
        self.port = port if port is not None else (0 if tls_port else free_port())
        self.tls_port = tls_port
        self.dir = workdir / f"redis-{tls_port or self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.args = list(args)
        self._client = client
        self.conf = conf
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def admin(self) -> Any:
        """A plain client to this server (short timeouts), for the test's own checks."""
        if self._client is not None:
            return self._client(self)
        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2)

    def start(self) -> RedisProc:
        argv = ["redis-server", *([str(self.conf)] if self.conf else []), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", str(self.dir / "log")]
        if self.tls_port:
            argv += ["--tls-port", str(self.tls_port)]
        self.proc = subprocess.Popen(argv + self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL)

        def ready() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log()
            c = self.admin()
            try:
                return bool(c.ping())
            finally:
                c.close()

        wait_for(ready, what=f"redis-server on {self.tls_port or self.port}")
        return self

    def log(self) -> str:
        try:
            return (self.dir / "log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def pause(self) -> None:
        """SIGSTOP: the kernel still accepts connections, nothing answers (a stall)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)  # a stopped process dies on SIGKILL too; be tidy
            except ProcessLookupError:
                pass
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


# --------------------------------------------------------------------------- TLS material

def tls_files(directory: Path, name: str = "ca") -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, all signed by
    the CA, as PEM files in ``directory``: ``{"ca", "server_cert", "server_key", "client_cert",
    "client_key"}`` -> path."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)

    def subject(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write(stem: str, key: Any, cert: x509.Certificate) -> tuple[str, str]:
        kp, cp = directory / f"{stem}.key", directory / f"{stem}.pem"
        kp.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
        cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return str(cp), str(kp)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(subject(f"{name} test CA")).issuer_name(subject(f"{name} test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    ca_path, _ = write(f"{name}-ca", ca_key, ca)

    def leaf(stem: str, cn: str, usage: Any, san: list[x509.GeneralName] | None) -> tuple[str, str]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(subject(cn)).issuer_name(ca.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                                  critical=False))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return write(stem, key, builder.sign(ca_key, hashes.SHA256()))

    server_cert, server_key = leaf(f"{name}-server", "localhost", ExtendedKeyUsageOID.SERVER_AUTH,
                                   [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    client_cert, client_key = leaf(f"{name}-client", "portal", ExtendedKeyUsageOID.CLIENT_AUTH, None)
    return {"ca": ca_path, "server_cert": server_cert, "server_key": server_key,
            "client_cert": client_cert, "client_key": client_key}
