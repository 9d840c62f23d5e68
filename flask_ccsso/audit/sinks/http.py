"""The HTTP sink: POST batches to a collector in one of three formats.

``json``
    ``Content-Type: application/json``, body a JSON array of events;
    ``Authorization: Bearer <token>`` when ``token`` is set.
``splunk-hec``
    Splunk HTTP Event Collector: one ``{"time": <epoch>, "sourcetype":
    "ccsso:audit", "event": {...}}`` object per line, ``Authorization: Splunk
    <token>``. ``url`` is the collector's ``/services/collector/event``.
``azure-monitor``
    Azure Monitor Logs Ingestion API: ``POST {endpoint}/dataCollectionRules/
    {dcrImmutableId}/streams/{streamName}?api-version=2023-01-01`` with a JSON
    array of records (the event fields plus ``TimeGenerated``) and a bearer
    token obtained with the OAuth 2.0 client-credentials grant from
    ``tokenUrl`` (scope ``https://monitor.azure.com/.default``), cached until
    a minute before it expires.

Answers: 2xx is success. Timeouts, connection errors, 5xx, 408 and 429 are
transient (retried with backoff, then spooled; ``Retry-After`` is honoured).
401 and 403 mean the *sink's* credentials or role assignment are wrong, not
the events, so they are also treated as transient (spooled, logged as errors)
rather than throwing good events away. Any other 4xx means the collector
refused the content: the batch is split to isolate the refused events, which
are moved to the dead-letter file and never retried.

Nothing from a request or an answer body is logged (a collector may echo the
token back); only the status code.

The client is urllib3 itself (one keep-alive connection per collector host, no
retries or redirects of its own: the sink's backoff decides), not ``requests``:
a batch is one ``urlopen`` on a reused connection. Certificates are checked
against ``verify`` (a CA bundle path), or with ``verify: true`` against certifi's
bundle as ``requests`` did; environment proxy variables are ignored.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error

from ..events import AuditEvent
from .base import PoisonBatchError, Sink, TransientSinkError

log = logging.getLogger("flask_ccsso.audit")

_RETRYABLE = {401, 403, 408, 425, 429}
_USER_AGENT = "flask-ccsso-audit/1"
_SPLITTABLE = {400, 413, 422}


def _retry_after(resp: Any) -> float | None:
    value = resp.headers.get("Retry-After")
    if value and value.strip().isdigit():
        return min(float(value), 3600.0)
    return None


def _pool_options(verify: bool | str) -> dict[str, Any]:
    if verify is False:
        return {"cert_reqs": "CERT_NONE"}
    if isinstance(verify, str):
        return {"cert_reqs": "CERT_REQUIRED", "ca_certs": verify}
    try:
        import certifi
    except ImportError:  # pragma: no cover - requests (a dependency) brings certifi
        return {"cert_reqs": "CERT_REQUIRED"}
    return {"cert_reqs": "CERT_REQUIRED", "ca_certs": certifi.where()}


class HTTPSink(Sink):
    pool: urllib3.PoolManager | None = None

    def after_fork(self) -> None:
        self.pool = None  # a new connection pool in this process (the parent's sockets are its own)

    def open(self) -> None:
        if self.pool is None:
            self.pool = urllib3.PoolManager(num_pools=4, maxsize=1, block=False, retries=False,
                                            **_pool_options(self.settings.verify))
        self._timeout = urllib3.Timeout(connect=self.settings.connect_timeout, read=self.settings.read_timeout)
        self._static_headers: dict[str, str] | None = None
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lock = threading.Lock()

    # -- encodings --------------------------------------------------------------------

    def _encode_one(self, event: AuditEvent) -> bytes:
        """One event in the sink's format, reusing the event's canonical JSON (built once per event)."""
        fmt = self.settings.format
        body = event.to_json_bytes()
        if fmt == "splunk-hec":
            head = {"time": round(event.timestamp, 6), "sourcetype": self.settings.sourcetype}
            for key in ("index", "source", "host"):
                value = getattr(self.settings, key)
                if value:
                    head[key] = value
            prefix = json.dumps(head, separators=(",", ":"), ensure_ascii=False)[:-1] + ',"event":'
            return prefix.encode() + body + b"}"
        if fmt == "azure-monitor":
            return b'{"TimeGenerated":' + json.dumps(event.time).encode() + b"," + body[1:]
        return body

    def _bodies(self, events: Sequence[AuditEvent]) -> list[tuple[bytes, int]]:
        """Encode, cutting the batch so no body exceeds ``maxBatchBytes`` (Azure: 1 MB per call)."""
        limit = self.settings.max_batch_bytes
        parts = [self._encode_one(e) for e in events]
        chunks: list[list[bytes]] = [[]]
        size = 0
        for part in parts:
            if chunks[-1] and size + len(part) + 2 > limit:
                chunks.append([])
                size = 0
            chunks[-1].append(part)
            size += len(part) + 1
        bodies = []
        for chunk in chunks:
            if self.settings.format == "splunk-hec":
                bodies.append((b"\n".join(chunk), len(chunk)))
            else:
                bodies.append((b"[" + b",".join(chunk) + b"]", len(chunk)))
        return bodies

    # -- auth -------------------------------------------------------------------------------

    def _azure_token(self, force: bool = False) -> str:
        azure = self.settings.azure
        assert azure is not None
        with self._token_lock:
            if not force and self._token and time.monotonic() < self._token_expires:
                return self._token
            form = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": azure.client_id,
                                           "client_secret": azure.client_secret, "scope": azure.scope})
            try:
                resp = self._request(azure.token_url, form.encode(),
                                     {"Content-Type": "application/x-www-form-urlencoded",
                                      "Accept": "application/json", "User-Agent": _USER_AGENT})
            except Urllib3Error as exc:
                raise TransientSinkError(f"token endpoint unreachable ({type(exc).__name__})") from exc
            if resp.status != 200:
                if 400 <= resp.status < 500 and resp.status not in (408, 429):
                    log.error("audit sink %r: the token endpoint refused the client credentials (HTTP %d); "
                              "check logging.azureMonitor clientId/clientSecret/tenantId", self.name,
                              resp.status)
                raise TransientSinkError(f"token endpoint answered HTTP {resp.status}",
                                         retry_after=_retry_after(resp))
            try:
                body = json.loads(resp.data)
                token = body["access_token"]
                expires_in = float(body.get("expires_in", 3600))
            except (ValueError, KeyError, TypeError) as exc:
                raise TransientSinkError("token endpoint answered without an access_token") from exc
            self._token = str(token)
            self._token_expires = time.monotonic() + max(expires_in - 60.0, 0.0)
            return self._token

    def _headers(self, force_token: bool = False) -> Mapping[str, str]:
        fmt = self.settings.format
        if fmt != "azure-monitor" and self._static_headers is not None:
            return self._static_headers  # the same for every batch: built once
        headers = {"User-Agent": _USER_AGENT, "Content-Type": "application/json"}
        if fmt == "splunk-hec":
            headers["Authorization"] = f"Splunk {self.settings.token}"
        elif fmt == "azure-monitor":
            headers["Authorization"] = f"Bearer {self._azure_token(force_token)}"
        elif self.settings.token:
            headers["Authorization"] = f"Bearer {self.settings.token}"
        headers.update(self.settings.headers)
        if fmt != "azure-monitor":
            self._static_headers = headers
        return headers

    def _request(self, url: str, body: bytes, headers: Mapping[str, str]) -> Any:
        """One POST on the pooled keep-alive connection; the answer read in full (so the
        connection goes back to the pool). urllib3 errors propagate."""
        assert self.pool is not None
        return self.pool.urlopen("POST", url, body=body, headers=dict(headers), redirect=False, retries=False,
                                 timeout=self._timeout, preload_content=True)

    # -- delivery -----------------------------------------------------------------------------

    def _post(self, body: bytes) -> None:
        assert self.pool is not None and self.settings.url is not None
        for attempt in (1, 2):
            headers = self._headers(force_token=attempt == 2)
            try:
                resp = self._request(self.settings.url, body, headers)
            except Urllib3Error as exc:
                raise TransientSinkError(f"collector unreachable ({type(exc).__name__})") from exc
            status = resp.status
            if 200 <= status < 300:
                return
            if status == 401 and self.settings.format == "azure-monitor" and attempt == 1:
                continue  # the cached token may have been revoked: get a new one once
            if status >= 500 or status in _RETRYABLE:
                if status in (401, 403):
                    log.error("audit sink %r: the collector refused our credentials (HTTP %d); events are "
                              "spooled until this is fixed", self.name, status)
                raise TransientSinkError(f"collector answered HTTP {status}", retry_after=_retry_after(resp))
            if 400 <= status < 500:
                raise PoisonBatchError(f"collector refused the batch with HTTP {status}",
                                       splittable=status in _SPLITTABLE)
            raise TransientSinkError(f"collector answered HTTP {status}")  # 1xx/3xx: misconfigured

    def write_batch(self, events: Sequence[AuditEvent]) -> None:
        for body, _count in self._bodies(events):
            self._post(body)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.clear()
            self.pool = None


__all__ = ["HTTPSink"]
