"""The audit event schema (one schema, versioned by ``schema_version``).

An :class:`AuditEvent` is built from a signal's keyword arguments through an
explicit allow-list: a field is recorded only when it is named here, and only
when its value is a plain scalar (or a list of scalars). Nothing is ever dumped
wholesale, so a token, a cookie or a secret that some caller passes by mistake
never reaches a sink.

Schema version 1 (every key always present, ``null`` when not known)::

    {
      "schema_version": 1,
      "id":          "0194b6c1e2f57a3c8d2e4f60718293a4",  # UUIDv7 layout, hex: sorts by time
      "time":        "2025-01-31T09:15:02.123456Z", # UTC, ISO 8601
      "type":        "auth.login",                  # the signal name
      "outcome":     "success",   # success | failure | denied | info | alert
      "reason":      null,        # a code from flask_ccsso.reasons
      "actor":       {"subject": "00u1", "email": "ada@example.com"},  # or null
      "provider":    "okta",
      "skill":       null,
      "via":         "session",   # session | bearer
      "request_id":  "3f0c...",
      "client_ip":   "203.0.113.9",
      "user_agent":  "Mozilla/5.0 ...",
      "detail":      null,        # short, secret-free text (auth.login_failed)
      "data":        {...},       # type-specific allow-listed fields, see DATA_FIELDS
      "claims":      null,        # {...} only with includeUserClaims
      "groups":      null         # [...] only with includeGroupMemberships
    }

Every string (keys included) has control characters escaped -- C0, DEL, C1,
U+2028/U+2029 and the bidi overrides become the six literal characters
``\\uXXXX`` -- and is cut to ``max_field_length`` characters, so an event can
be written as one log line and cannot forge another.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from typing import Any

SCHEMA_VERSION = 1

#: signal name -> outcome
OUTCOMES: dict[str, str] = {
    "auth.login": "success",
    "auth.logout": "info",
    "auth.login_failed": "failure",
    "auth.failure_threshold": "alert",
    "auth.backchannel_logout": "info",
    "permission.denied": "denied",
    "skill.invoked": "success",
    "session.expired": "info",
    "session.revoked": "info",
    "stepup.required": "info",
    "stepup.satisfied": "success",
    "token.refreshed": "success",
}

#: Events that are never silently dropped when the in-memory queue is full
#: (they are written to the durable spool instead).
SECURITY_PREFIXES = ("auth.", "session.", "stepup.")
SECURITY_TYPES = frozenset({"permission.denied"})

#: Top-level fields a signal keyword may fill (besides ``identity``).
TOP_FIELDS = ("reason", "provider", "skill", "via", "detail")

#: Type-specific keywords copied into ``data``. Anything else is ignored.
#: ``auth.backchannel_logout``'s ``sid`` is deliberately not recorded.
DATA_FIELDS: dict[str, tuple[str, ...]] = {
    "auth.login": ("method", "step_up"),
    "auth.logout": ("idp_logout",),
    "auth.login_failed": (),
    "auth.failure_threshold": ("key_type", "key", "count", "window"),
    "auth.backchannel_logout": ("count",),
    "session.expired": (),
    "session.revoked": ("count",),
    "token.refreshed": ("expires_at",),
    "skill.invoked": ("skills", "endpoint"),
    "permission.denied": ("skills", "condition", "endpoint"),
    "stepup.required": ("max_age", "acr_values"),
    "stepup.satisfied": (),
}

#: Claim names never copied from ``Identity.claims`` even with
#: ``includeUserClaims`` (defence in depth: providers should not keep them).
_SECRET_HINTS = re.compile(r"token|secret|password|passwd|assertion|cookie|code|credential|key|sid|nonce",
                           re.IGNORECASE)

GENESIS_HASH = "0" * 64

# C0, DEL, C1, line/paragraph separators, bidi embeddings/overrides/isolates
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_TRUNCATED = "...[truncated]"


def is_security_event(event_type: str) -> bool:
    """``auth.*``, ``session.*``, ``stepup.*`` and ``permission.denied``."""
    return event_type.startswith(SECURITY_PREFIXES) or event_type in SECURITY_TYPES


def clean_str(value: str, limit: int = 1024) -> str:
    """Cut to ``limit`` characters, then escape control characters as ``\\uXXXX``."""
    if len(value) > limit:
        value = value[: max(limit - len(_TRUNCATED), 0)] + _TRUNCATED
    if value.isprintable():  # fast path: every character escaped below is non-printable
        return value
    return _CONTROL.sub(_escape, value)


def _escape(m: re.Match[str]) -> str:
    return f"\\u{ord(m.group()):04x}"


def _scalar(value: Any, limit: int) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return clean_str(value, limit)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return _DROP


_DROP = object()


def clean_value(value: Any, limit: int = 1024) -> Any:
    """A JSON-safe copy of a scalar or a list of scalars; anything else is dropped.

    Objects are never ``str()``-ed: their text could carry anything.
    """
    out = _scalar(value, limit)
    if out is not _DROP:
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else list(value)
        cleaned = [_scalar(v, limit) for v in items[:200]]
        return [v for v in cleaned if v is not _DROP]
    return _DROP


def clean_mapping(data: Mapping[Any, Any], limit: int = 1024, *, drop_secret_names: bool = False) -> dict[str, Any]:
    """Clean a flat mapping of scalars (nested values are reduced to scalars/lists or dropped)."""
    out: dict[str, Any] = {}
    for key, value in list(data.items())[:200]:
        if not isinstance(key, str) or (drop_secret_names and _SECRET_HINTS.search(key)):
            continue
        cleaned = clean_value(value, limit)
        if cleaned is not _DROP:
            out[clean_str(key, 128)] = cleaned
    return out


# -- ids and times -----------------------------------------------------------

_id_lock = threading.Lock()
_last_id: list[int] = [0, 0]
_RAND_BITS = 74


def new_event_id(now: float | None = None) -> str:
    """A time-ordered id: 32 hex digits laid out like a UUIDv7 (RFC 9562).

    48 bits of Unix milliseconds, the version and variant bits, and 74 random
    bits. Within one millisecond the random part is incremented, so ids made in
    one process are strictly increasing and sort (as strings) in the order they
    were made; across processes they sort by time to the millisecond.
    """
    ms = int((time.time() if now is None else now) * 1000) & ((1 << 48) - 1)
    with _id_lock:
        if ms <= _last_id[0]:
            ms = _last_id[0]
            rand = (_last_id[1] + 1) & ((1 << _RAND_BITS) - 1)
        else:
            rand = int.from_bytes(os.urandom(10), "big") >> (80 - _RAND_BITS + 1)  # top bit clear: room to count
        _last_id[0], _last_id[1] = ms, rand
    value = (ms << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
    return f"{value:032x}"


_iso_last: tuple[int, str] = (-1, "")


def iso_time(epoch: float) -> str:
    """``2025-01-31T09:15:02.123456Z`` (UTC)."""
    global _iso_last
    sec = int(epoch)
    micros = round((epoch - sec) * 1_000_000)
    if micros >= 1_000_000:
        sec, micros = sec + 1, micros - 1_000_000
    cached = _iso_last  # one tuple, swapped atomically: safe across threads
    if cached[0] == sec:
        prefix = cached[1]
    else:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _iso_last = (sec, prefix)
    return f"{prefix}.{micros:06d}Z"


# -- the event ----------------------------------------------------------------

@dataclass(frozen=True)
class AuditEvent:
    """One audit record. Build it with :func:`build_event`; serialise with :meth:`to_dict`."""

    id: str
    time: str
    type: str
    outcome: str
    reason: str | None = None
    actor: Mapping[str, Any] | None = None
    provider: str | None = None
    skill: str | None = None
    via: str | None = None
    request_id: str | None = None
    client_ip: str | None = None
    user_agent: str | None = None
    detail: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    claims: Mapping[str, Any] | None = None
    groups: tuple[str, ...] | None = None
    schema_version: int = SCHEMA_VERSION
    #: epoch seconds (not serialised separately: ``time`` carries it)
    timestamp: float = field(default=0.0, compare=False, repr=False)

    @property
    def security(self) -> bool:
        return is_security_event(self.type)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "id": self.id,
            "time": self.time,
            "type": self.type,
            "outcome": self.outcome,
            "reason": self.reason,
            "actor": dict(self.actor) if self.actor is not None else None,
            "provider": self.provider,
            "skill": self.skill,
            "via": self.via,
            "request_id": self.request_id,
            "client_ip": self.client_ip,
            "user_agent": self.user_agent,
            "detail": self.detail,
            "data": dict(self.data),
            "claims": dict(self.claims) if self.claims is not None else None,
            "groups": list(self.groups) if self.groups is not None else None,
        }

    @cached_property
    def _json(self) -> str:
        return canonical_json(self.to_dict())

    def to_json(self) -> str:
        """The canonical JSON (computed once, shared by every sink and the spool)."""
        return self._json

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditEvent:
        """Rebuild an event read back from a spool or a sink (trusted input)."""
        try:
            ts = datetime.strptime(data["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()
        except (KeyError, ValueError):
            ts = 0.0
        groups = data.get("groups")
        return cls(
            id=data["id"], time=data["time"], type=data["type"], outcome=data["outcome"],
            reason=data.get("reason"), actor=data.get("actor"), provider=data.get("provider"),
            skill=data.get("skill"), via=data.get("via"), request_id=data.get("request_id"),
            client_ip=data.get("client_ip"), user_agent=data.get("user_agent"), detail=data.get("detail"),
            data=data.get("data") or {}, claims=data.get("claims"),
            groups=tuple(groups) if groups is not None else None,
            schema_version=int(data.get("schema_version", SCHEMA_VERSION)), timestamp=ts,
        )


def canonical_json(data: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 kept: the form the hash chain is computed over."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def chain_hash(event_json: str, prev_hash: str) -> str:
    """``sha256(prev_hash + "\\n" + canonical_json(event))`` as hex."""
    return hashlib.sha256(f"{prev_hash}\n{event_json}".encode()).hexdigest()


@dataclass(frozen=True)
class RequestInfo:
    request_id: str | None = None
    client_ip: str | None = None
    user_agent: str | None = None


def build_event(
    event_type: str,
    fields: Mapping[str, Any],
    *,
    request: RequestInfo | None = None,
    include_claims: bool = False,
    include_groups: bool = False,
    max_field_length: int = 1024,
    clock: Callable[[], float] = time.time,
) -> AuditEvent:
    """Turn a signal's keyword arguments into an event, reading only allow-listed names."""
    limit = max_field_length

    def s(value: Any, lim: int = limit) -> str | None:
        return clean_str(value, lim) if isinstance(value, str) else None

    now = clock()
    identity = fields.get("identity")
    subject = getattr(identity, "subject", None) if identity is not None else None
    email = getattr(identity, "email", None) if identity is not None else None
    if subject is None:
        subject = fields.get("subject")
    if email is None:
        email = fields.get("email")
    actor = None
    if subject is not None or email is not None:
        actor = {"subject": s(subject), "email": s(email)}

    provider = fields.get("provider")
    if provider is None and identity is not None:
        provider = getattr(identity, "provider", None)
    via = fields.get("via")
    if via is None and identity is not None:
        via = getattr(identity, "via", None)

    data: dict[str, Any] = {}
    for name in DATA_FIELDS.get(event_type, ()):
        if name in fields:
            value = clean_value(fields[name], limit)
            if value is not _DROP:
                data[name] = value

    claims = None
    groups = None
    if include_claims and identity is not None and getattr(identity, "subject", None) is not None:
        raw_claims = dict(getattr(identity, "claims", None) or {})
        for name in ("name", "tenant", "acr", "auth_time"):
            value = getattr(identity, name, None)
            if value is not None:
                raw_claims.setdefault(name, value)
        amr = getattr(identity, "amr", ())
        if amr:
            raw_claims.setdefault("amr", list(amr))
        claims = clean_mapping(raw_claims, limit, drop_secret_names=True)
    if include_groups and identity is not None and getattr(identity, "subject", None) is not None:
        eff = getattr(identity, "effective_groups", None) or getattr(identity, "groups", None) or ()
        groups = tuple(clean_str(g, limit) for g in sorted(g for g in eff if isinstance(g, str)))

    req = request or RequestInfo()
    return AuditEvent(
        id=new_event_id(now),
        time=iso_time(now),
        type=clean_str(event_type, 128),
        outcome=OUTCOMES.get(event_type, "info"),
        reason=s(fields.get("reason"), 128),
        actor=actor,
        provider=s(provider, 256),
        skill=s(fields.get("skill"), 256),
        via=s(via, 32),
        request_id=s(req.request_id, 128),
        client_ip=s(req.client_ip, 64),
        user_agent=s(req.user_agent, 512),
        detail=s(fields.get("detail"), 512),
        data=data,
        claims=claims,
        groups=groups,
        timestamp=now,
    )


def events_to_json_lines(events: Iterable[AuditEvent]) -> str:
    return "".join(e.to_json() + "\n" for e in events)


__all__ = [
    "DATA_FIELDS",
    "GENESIS_HASH",
    "OUTCOMES",
    "SCHEMA_VERSION",
    "AuditEvent",
    "RequestInfo",
    "build_event",
    "canonical_json",
    "chain_hash",
    "clean_str",
    "is_security_event",
    "new_event_id",
]
