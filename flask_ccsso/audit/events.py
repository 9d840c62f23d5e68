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
U+2028/U+2029, the bidi overrides and lone surrogates become the six literal characters
``\\uXXXX`` -- and is cut to ``max_field_length`` characters, so an event can
be written as one log line and cannot forge another.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import msgspec

SCHEMA_VERSION = 1

#: signal name -> outcome
OUTCOMES: dict[str, str] = {
    "auth.login": "success",
    "auth.logout": "info",
    "auth.login_failed": "failure",
    "auth.logout_failed": "failure",
    "auth.failure_threshold": "alert",
    "auth.fallback_used": "info",
    "auth.backchannel_logout": "info",
    "permission.denied": "denied",
    "skill.invoked": "success",
    "session.expired": "info",
    "session.revoked": "info",
    "stepup.required": "info",
    "stepup.satisfied": "success",
    "token.refreshed": "success",
    "user.deprovisioned": "info",
    "console.action": "info",
}

#: Events that are never silently dropped when the in-memory queue is full
#: (they are written to the durable spool instead).
SECURITY_PREFIXES = ("auth.", "session.", "stepup.")
SECURITY_TYPES = frozenset({"permission.denied", "user.deprovisioned", "console.action"})

#: Top-level fields a signal keyword may fill (besides ``identity``).
TOP_FIELDS = ("reason", "provider", "skill", "via", "detail")

#: Type-specific keywords copied into ``data``. Anything else is ignored.
#: ``auth.backchannel_logout``'s ``sid`` is deliberately not recorded.
DATA_FIELDS: dict[str, tuple[str, ...]] = {
    "auth.login": ("method", "step_up"),
    "auth.logout": ("idp_logout",),
    "auth.login_failed": (),
    "auth.logout_failed": (),
    "auth.failure_threshold": ("key_type", "key", "count", "window"),
    "auth.fallback_used": ("primary", "method"),
    "auth.backchannel_logout": ("count",),
    "session.expired": (),
    "session.revoked": ("count",),
    "token.refreshed": ("expires_at",),
    "skill.invoked": ("skills", "endpoint"),
    "permission.denied": ("skills", "condition", "endpoint"),
    "stepup.required": ("max_age", "acr_values"),
    "stepup.satisfied": (),
    "user.deprovisioned": ("scim_id", "count"),
    "console.action": ("action", "target", "count"),
}

#: Claim names never copied from ``Identity.claims`` even with
#: ``includeUserClaims`` (defence in depth: providers should not keep them).
_SECRET_HINTS = re.compile(r"token|secret|password|passwd|assertion|cookie|code|credential|key|sid|nonce",
                           re.IGNORECASE)

GENESIS_HASH = "0" * 64

# C0, DEL, C1, line/paragraph separators, bidi embeddings/overrides/isolates, and lone
# surrogates (no UTF-8 form: an event holding one could be neither encoded nor hashed)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_TRUNCATED = "...[truncated]"


def is_security_event(event_type: str) -> bool:
    """``auth.*``, ``session.*``, ``stepup.*`` and ``permission.denied``."""
    return event_type.startswith(SECURITY_PREFIXES) or event_type in SECURITY_TYPES


def clean_str(value: str, limit: int = 1024) -> str:
    """Cut to ``limit`` characters, then escape control characters as ``\\uXXXX``.

    Always a plain ``str`` (a subclass's own methods never run again downstream)."""
    if type(value) is not str:
        value = str.__str__(value)
    if len(value) > limit:
        value = value[: max(limit - len(_TRUNCATED), 0)] + _TRUNCATED
    if value.isprintable():  # fast path: every character escaped below is non-printable
        return value
    return _CONTROL.sub(_escape, value)


def _escape(m: re.Match[str]) -> str:
    return f"\\u{ord(m.group()):04x}"


def _scalar(value: Any, limit: int) -> Any:
    t = type(value)
    if t is str:
        return clean_str(value, limit)
    if value is None or t is bool or t is int:
        return value
    if t is float:
        return _float(value)
    # subclasses (enums and the like) become the plain type: no custom method runs later
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return clean_str(value, limit)
    if isinstance(value, int):
        return int.__index__(value)
    if isinstance(value, float):
        return _float(float.__float__(value))
    return _DROP


class ExponentFloat(float):
    """A float that ``repr`` writes with an exponent (``1e+16``, ``1e-05``): outside
    ``[1e-4, 1e16)``. msgspec writes those another way (``1e16``), so it refuses this
    type and the event's canonical JSON falls back to ``json.dumps``: same bytes."""

    __slots__ = ()


def _float(value: float) -> float | None:
    if not math.isfinite(value):
        return None
    if value == 0.0 or 1e-4 <= abs(value) < 1e16:
        return value
    return ExponentFloat(value)


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

_MS_MASK = (1 << 48) - 1
_VARIANT = 0b10 << 62
#: per process (drawn again in a forked child): 12 random bits, then a counter that starts at a
#: random 61-bit value under the variant bits (2**61 ids before it could reach them)
_id_rand_a = "000"
_id_counter = itertools.count()
#: the latest millisecond used and its id prefix, so a clock stepped back never makes an id
#: sort before older ones (and the prefix is formatted once per millisecond)
_id_last: tuple[int, str] = (0, "")


def _seed_ids() -> None:
    global _id_rand_a, _id_counter, _id_last
    r = int.from_bytes(os.urandom(10), "big")
    _id_rand_a = f"{(r >> 68) & 0xFFF:03x}"
    _id_counter = itertools.count(_VARIANT | (r & ((1 << 61) - 1)))
    _id_last = (0, "")


_seed_ids()
if hasattr(os, "register_at_fork"):  # a forked worker must not repeat its parent's ids
    os.register_at_fork(after_in_child=_seed_ids)


def new_event_id(now: float | None = None) -> str:
    """A time-ordered id: 32 hex digits laid out like a UUIDv7 (RFC 9562).

    48 bits of Unix milliseconds, the version and variant bits, and 74 bits
    that are random per process: 12 fixed ones, then a counter started at a
    random 61-bit value. So ids made in one process are unique and, within a
    millisecond, sort (as strings) in the order they were made; across
    processes they sort by time to the millisecond. No lock and no system
    call: the request thread takes one for each event it records.
    """
    global _id_last
    ms = int((time.time() if now is None else now) * 1000) & _MS_MASK
    last_ms, prefix = _id_last  # one tuple, swapped whole: safe across threads
    if ms != last_ms:
        if ms < last_ms:
            ms = last_ms
        else:
            prefix = f"{ms:012x}7{_id_rand_a}"
            _id_last = (ms, prefix)
    return f"{prefix}{next(_id_counter):016x}"


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

#: The fields of an event, in the order :meth:`AuditEvent.to_dict` writes them.
EVENT_FIELDS = ("schema_version", "id", "time", "type", "outcome", "reason", "actor", "provider", "skill", "via",
                "request_id", "client_ip", "user_agent", "detail", "data", "claims", "groups")

#: What the request thread keeps of one signal (:func:`capture`): plain values and
#: references, nothing encoded, nothing copied, nothing secret by name::
#:
#:     (type, now, id,                                  # str, float (epoch seconds), str (new_event_id)
#:      request_id, client_ip, user_agent,               # str | None
#:      subject, email, provider, via,                   # from the kwargs, else the identity
#:      values,        # {name: value}: the allow-listed kwargs the signal passed (TOP_FIELDS + DATA_FIELDS)
#:      claims,        # None, or {name: value}: the identity's claims minus secret-looking names
#:      groups)        # None, or the identity's effective groups (a frozenset)
#:
#: Every value is what the sender passed (not yet cleaned, cut or escaped: that is the
#: writer's job, :meth:`AuditEvent.materialize`). The id is fixed here, so an event
#: recovered from a copy of this tuple (a crash journal) keeps it and sinks can
#: de-duplicate. The tuple is msgpack/JSON-encodable when the signal's kwargs are plain
#: values, as flask-ccsso's own signals' are (:func:`captured_from_plain` reads it back).
Captured = tuple[Any, ...]

_CAPTURE_NAMES: dict[str, tuple[str, ...]] = {}


def _names_for(event_type: str) -> tuple[str, ...]:
    names = _CAPTURE_NAMES.get(event_type)
    if names is None:
        names = _CAPTURE_NAMES[event_type] = TOP_FIELDS + DATA_FIELDS.get(event_type, ())
    return names


#: identity -> (identity, its claims for the audit): built once per identity object,
#: so the request thread only looks them up (identities are frozen, and the session
#: layer hands out one object per stored identity)
_CLAIM_VIEWS: dict[int, tuple[Any, dict[str, Any]]] = {}
_VIEW_CACHE_SIZE = 4096


def _claim_shape(value: Any) -> Any:
    """The part of a claim value an event can ever hold (:func:`clean_value`): a scalar, or a
    list of the scalars among a list's first 200 items; anything else is ``_DROP``. Shaped, not
    cleaned (the writer does that, to the same result): a nested object -- a token inside a
    distributed claim, say -- is never referenced by the captured tuple, so it never reaches the
    crash journal on disk either, only what a sink could receive does."""
    if value is None or isinstance(value, (str, int, float)):  # bool is an int
        return value
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else list(value)
        return [v for v in items[:200] if v is None or isinstance(v, (str, int, float))]
    return _DROP


def _claims_of(identity: Any) -> dict[str, Any]:
    """The identity's claims an event may carry: ``claims`` minus secret-looking names, plus
    ``name``, ``tenant``, ``acr``, ``auth_time`` and ``amr``. Values are not cleaned here."""
    hit = _CLAIM_VIEWS.get(id(identity))
    if hit is not None and hit[0] is identity:
        return hit[1]
    raw = getattr(identity, "claims", None) or {}
    view = {k: shaped for k, v in list(raw.items())[:200]
            if isinstance(k, str) and not _SECRET_HINTS.search(k) and (shaped := _claim_shape(v)) is not _DROP}
    for name in ("name", "tenant", "acr", "auth_time"):
        value = getattr(identity, name, None)
        if value is not None:
            view.setdefault(name, value)
    amr = getattr(identity, "amr", ())
    if amr:
        view.setdefault("amr", list(amr))
    if len(_CLAIM_VIEWS) >= _VIEW_CACHE_SIZE:
        _CLAIM_VIEWS.clear()
    _CLAIM_VIEWS[id(identity)] = (identity, view)  # the reference keeps id(identity) from being reused
    return view


def capture(
    event_type: str,
    fields: Mapping[str, Any],
    request: tuple[str | None, str | None, str | None] | None,
    now: float,
    *,
    include_claims: bool = False,
    include_groups: bool = False,
) -> Captured:
    """What the request thread keeps of a signal: see :data:`Captured`.

    Reads only allow-listed names (so a token passed by mistake is never even
    referenced) and the identity's few attributes; no cleaning, encoding or
    hashing happens here. ``request`` is ``(request_id, client_ip, user_agent)``.
    """
    get = fields.get
    identity = get("identity")
    subject = get("subject")
    email = get("email")
    provider = get("provider")
    via = get("via")
    claims = groups = None
    if identity is not None:
        if subject is None:
            subject = getattr(identity, "subject", None)
        if email is None:
            email = getattr(identity, "email", None)
        if provider is None:
            provider = getattr(identity, "provider", None)
        if via is None:
            via = getattr(identity, "via", None)
        if getattr(identity, "subject", None) is not None:
            if include_claims:
                claims = _claims_of(identity)
            if include_groups:
                groups = getattr(identity, "effective_groups", None) or getattr(identity, "groups", None) or ()
    values = {name: fields[name] for name in _names_for(event_type) if name in fields}
    rid, ip, ua = request if request is not None else (None, None, None)
    return (event_type, now, new_event_id(now), rid, ip, ua, subject, email, provider, via, values, claims, groups)


def captured_from_plain(data: Any) -> Captured | None:
    """A :data:`Captured` tuple read back from its plain (msgpack/JSON) form, or ``None``
    when ``data`` does not have its shape (a damaged copy is never built into an event)."""
    if not isinstance(data, (list, tuple)) or len(data) != 13:
        return None
    event_type, now, event_id = data[0], data[1], data[2]
    if not (isinstance(event_type, str) and event_type and isinstance(event_id, str) and _ID.fullmatch(event_id)):
        return None
    if isinstance(now, bool) or not isinstance(now, (int, float)) or not math.isfinite(now):
        return None
    if not all(v is None or isinstance(v, str) for v in data[3:10]):
        return None
    values, claims, groups = data[10], data[11], data[12]
    if not isinstance(values, dict) or not (claims is None or isinstance(claims, dict)):
        return None
    if not (groups is None or isinstance(groups, (list, tuple, set, frozenset))):
        return None
    return (event_type, float(now), *data[2:10], values, claims,
            frozenset(g for g in groups if isinstance(g, str)) if groups is not None else None)


_ID = re.compile(r"[0-9a-f]{32}")


class AuditEvent:
    """One audit record (schema version 1, see the module docstring).

    Two ways in: :func:`build_event` / :meth:`from_dict` give every field at once;
    :meth:`from_capture` keeps only the :data:`Captured` tuple, and the fields are
    worked out on first access (:meth:`materialize`) -- by the sink's writer
    thread, not the request that sent the signal. Either way the fields never
    change afterwards; :meth:`to_json` (the canonical JSON every sink, the spool
    and the hash chain use) is computed once.
    """

    # the fields (no class-level values: a lazy event's are found by __getattr__ on first read)
    id: str
    time: str
    type: str
    outcome: str
    reason: str | None
    actor: Mapping[str, Any] | None
    provider: str | None
    skill: str | None
    via: str | None
    request_id: str | None
    client_ip: str | None
    user_agent: str | None
    detail: str | None
    data: Mapping[str, Any]
    claims: Mapping[str, Any] | None
    groups: tuple[str, ...] | None
    schema_version: int
    #: epoch seconds (not serialised separately: ``time`` carries it)
    timestamp: float

    def __init__(self, id: str, time: str, type: str, outcome: str, reason: str | None = None,
                 actor: Mapping[str, Any] | None = None, provider: str | None = None, skill: str | None = None,
                 via: str | None = None, request_id: str | None = None, client_ip: str | None = None,
                 user_agent: str | None = None, detail: str | None = None, data: Mapping[str, Any] | None = None,
                 claims: Mapping[str, Any] | None = None, groups: tuple[str, ...] | None = None,
                 schema_version: int = SCHEMA_VERSION, timestamp: float = 0.0) -> None:
        d = self.__dict__
        d.update(id=id, time=time, type=type, outcome=outcome, reason=reason, actor=actor, provider=provider,
                 skill=skill, via=via, request_id=request_id, client_ip=client_ip, user_agent=user_agent,
                 detail=detail, data=data if data is not None else {}, claims=claims, groups=groups,
                 schema_version=schema_version, timestamp=timestamp)

    @classmethod
    def from_capture(cls, captured: Captured, max_field_length: int = 1024) -> AuditEvent:
        """An event whose fields are worked out from ``captured`` when first read."""
        self = cls.__new__(cls)
        d = self.__dict__
        d["_captured"] = captured
        d["_limit"] = max_field_length
        return self

    @property
    def captured(self) -> Captured | None:
        """The :data:`Captured` tuple this event was made from (``None`` for an eagerly built one)."""
        return self.__dict__.get("_captured")

    @property
    def security(self) -> bool:
        captured = self.__dict__.get("_captured")
        return is_security_event(captured[0] if captured is not None else self.type)

    def __getattr__(self, name: str) -> Any:
        # only called for a name not set yet: a lazy event's fields
        d = self.__dict__
        if "_captured" in d and not name.startswith("__") and name in _LAZY_NAMES:
            self.materialize()
            return d[name]
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"AuditEvent is immutable (cannot set {name!r})")

    def materialize(self) -> AuditEvent:
        """Work out every field from the captured tuple (no-op for a built event).

        Safe from several writer threads at once: the first result stored wins, and
        every thread reads that one, so all sinks see the same id and the same JSON.
        """
        d = self.__dict__
        if "outcome" in d:
            return self
        built = _build_fields(d["_captured"], d["_limit"])
        winner = d.setdefault("_built", built)
        d.update(winner)
        d["timestamp"] = d["_captured"][1]
        return self

    def to_dict(self) -> dict[str, Any]:
        self.materialize()
        actor = self.actor
        claims = self.claims
        groups = self.groups
        return {
            "schema_version": self.schema_version,
            "id": self.id,
            "time": self.time,
            "type": self.type,
            "outcome": self.outcome,
            "reason": self.reason,
            "actor": dict(actor) if actor is not None else None,
            "provider": self.provider,
            "skill": self.skill,
            "via": self.via,
            "request_id": self.request_id,
            "client_ip": self.client_ip,
            "user_agent": self.user_agent,
            "detail": self.detail,
            "data": dict(self.data),
            "claims": dict(claims) if claims is not None else None,
            "groups": list(groups) if groups is not None else None,
        }

    def to_json(self) -> str:
        """The canonical JSON (computed once, shared by every sink and the spool)."""
        d = self.__dict__
        text = d.get("_json")
        if text is None:
            text = d.setdefault("_json", self.to_json_bytes().decode())
        return text  # type: ignore[no-any-return]

    def to_json_bytes(self) -> bytes:
        """:meth:`to_json` as UTF-8 bytes (what the hash is computed over; what the sinks send)."""
        d = self.__dict__
        raw = d.get("_json_bytes")
        if raw is None:
            if "_captured" in d:
                # built here: every float went through _scalar (an exponent one is an ExponentFloat,
                # which msgspec refuses), so msgspec's bytes are json.dumps's whenever it succeeds
                self.materialize()
                try:
                    raw = _msgspec_encode(d["_built"])
                except (TypeError, ValueError, OverflowError, msgspec.EncodeError):
                    raw = canonical_json(self.to_dict()).encode()
            else:
                raw = canonical_json_bytes(self.to_dict())
            raw = d.setdefault("_json_bytes", raw)
        return raw  # type: ignore[no-any-return]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AuditEvent):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        d = self.__dict__
        if "outcome" not in d:
            return f"<AuditEvent {d['_captured'][0]!r} (not built yet)>"
        return f"<AuditEvent {self.type!r} {self.id} {self.outcome}>"

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


_LAZY_NAMES = frozenset(EVENT_FIELDS) | {"timestamp"}

#: writer-side caches of cleaned claims and groups, by the object they were cleaned from
#: (the same identity's claims view / groups set recur event after event)
_CLEANED: dict[tuple[int, int], tuple[Any, Any]] = {}


def _cleaned(obj: Any, limit: int, clean: Callable[[Any, int], Any]) -> Any:
    key = (id(obj), limit)
    hit = _CLEANED.get(key)
    if hit is not None and hit[0] is obj:
        return hit[1]
    value = clean(obj, limit)
    if len(_CLEANED) >= _VIEW_CACHE_SIZE:
        _CLEANED.clear()
    _CLEANED[key] = (obj, value)  # the reference keeps id(obj) from being reused
    return value


def _clean_claims(claims: Mapping[str, Any], limit: int) -> dict[str, Any]:
    return clean_mapping(claims, limit, drop_secret_names=True)


def _clean_groups(groups: Any, limit: int) -> tuple[str, ...]:
    return tuple(clean_str(g, limit) for g in sorted(g for g in groups if isinstance(g, str)))


def _s(value: Any, limit: int) -> str | None:
    """``clean_str`` for a value that should be a string (anything else: ``None``)."""
    if type(value) is str and len(value) <= limit and value.isprintable():
        return value  # the common case, without a second call
    return clean_str(value, limit) if isinstance(value, str) else None


def _build_fields(captured: Captured, limit: int) -> dict[str, Any]:
    """The fields of an event from its captured tuple: cleaned, cut, escaped (writer thread).
    Exactly the keys of :data:`EVENT_FIELDS`, in order: the dict is the event's JSON form."""
    (event_type, now, event_id, rid, ip, ua, subject, email, provider, via, values, claims, groups) = captured
    actor = None
    if subject is not None or email is not None:
        actor = {"subject": _s(subject, limit), "email": _s(email, limit)}
    data: dict[str, Any] = {}
    for name in DATA_FIELDS.get(event_type, ()):
        if name in values:
            value = clean_value(values[name], limit)
            if value is not _DROP:
                data[name] = value
    get = values.get
    return {
        "schema_version": SCHEMA_VERSION,
        "id": event_id,
        "time": iso_time(now),
        "type": _s(event_type, 128),
        "outcome": OUTCOMES.get(event_type, "info"),
        "reason": _s(get("reason"), 128),
        "actor": actor,
        "provider": _s(provider, 256),
        "skill": _s(get("skill"), 256),
        "via": _s(via, 32),
        "request_id": _s(rid, 128),
        "client_ip": _s(ip, 64),
        "user_agent": _s(ua, 512),
        "detail": _s(get("detail"), 512),
        "data": data,
        "claims": _cleaned(claims, limit, _clean_claims) if claims is not None else None,
        "groups": _cleaned(groups, limit, _clean_groups) if groups is not None else None,
    }


# -- canonical JSON ---------------------------------------------------------------

_msgspec_encode = msgspec.json.Encoder(order="sorted").encode


def canonical_json(data: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 kept: the form the hash chain is computed over.

    This is the definition (Python's ``json.dumps`` with these options);
    :func:`canonical_json_bytes` produces the same bytes faster.
    """
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_json_bytes(data: Any) -> bytes:
    """``canonical_json(data).encode()``, through msgspec when that gives the same bytes.

    msgspec sorts keys by code point and escapes strings exactly as ``json.dumps``
    does with ``ensure_ascii=False``; it writes floats outside ``[1e-4, 1e16)`` in
    another exponent form (``1e16`` for ``1e+16``), so a value holding such a
    float -- or anything msgspec cannot encode -- takes the ``json.dumps`` path.
    Old chains stay verifiable either way: the bytes are the same.
    """
    if _msgspec_safe(data, 0):
        try:
            return _msgspec_encode(data)
        except (TypeError, ValueError, OverflowError, UnicodeEncodeError, msgspec.EncodeError):
            pass
    return canonical_json(data).encode()


def _msgspec_safe(value: Any, depth: int) -> bool:
    """Whether every float in ``value`` prints the same through msgspec as through ``repr``."""
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return True
    if t is float:
        a: float = abs(value)
        return a == 0.0 or 1e-4 <= a < 1e16
    if depth > 32:
        return False
    if t is dict:
        return all(type(k) is str and _msgspec_safe(v, depth + 1) for k, v in value.items())
    if t is list or t is tuple:
        return all(_msgspec_safe(v, depth + 1) for v in value)
    return False  # anything else: let json.dumps decide (and refuse)


def chain_hash(event_json: str | bytes, prev_hash: str) -> str:
    """``sha256(prev_hash + "\\n" + canonical_json(event))`` as hex."""
    raw = event_json if isinstance(event_json, bytes) else event_json.encode()
    return hashlib.sha256(prev_hash.encode() + b"\n" + raw).hexdigest()


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
    """Turn a signal's keyword arguments into an event, reading only allow-listed names.

    Builds it straight away (the pipeline instead captures on the request thread
    and builds on the writer: :func:`capture`, :meth:`AuditEvent.from_capture`).
    """
    req = (request.request_id, request.client_ip, request.user_agent) if request is not None else None
    captured = capture(event_type, fields, req, clock(), include_claims=include_claims,
                       include_groups=include_groups)
    return AuditEvent.from_capture(captured, max_field_length).materialize()


def events_to_json_lines(events: Iterable[AuditEvent]) -> str:
    return "".join(e.to_json() + "\n" for e in events)


__all__ = [
    "DATA_FIELDS",
    "GENESIS_HASH",
    "OUTCOMES",
    "SCHEMA_VERSION",
    "AuditEvent",
    "Captured",
    "RequestInfo",
    "build_event",
    "canonical_json",
    "canonical_json_bytes",
    "capture",
    "captured_from_plain",
    "chain_hash",
    "clean_str",
    "is_security_event",
    "new_event_id",
]
