"""Who is making the request: :class:`Identity` (the vocabulary).

An identity is built once, at sign-in (or when a bearer token is accepted),
from validated claims, and stored server-side as plain JSON. It is frozen:
access decisions read it, nothing edits it in place.

This module imports nothing of the package: the request gate resolves the
identity of a request (``current_identity`` lives in
:mod:`flask_ccsso.gate.current`). :func:`auth_time_problem` is the one
freshness rule: the providers (at a step-up round trip), the session helpers
and the skill policy all ask it, so they cannot disagree.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, NoReturn

import msgspec

#: the leeway for an ``auth_time`` slightly in the future when no provider's
#: ``clockSkew`` is at hand (the default ``clockSkew``)
DEFAULT_CLOCK_SKEW = 60.0
#: what :func:`auth_time_problem` answers
UNKNOWN, FUTURE, STALE = "unknown", "future", "stale"


def finite_time(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` (bools, strings, NaN, inf)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        f = float(value)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def auth_time_problem(auth_time: Any, *, now: float, max_age: float | None,
                      skew: float = DEFAULT_CLOCK_SKEW) -> str | None:
    """The one freshness rule: why a sign-in at ``auth_time`` is not fresh
    enough, or ``None`` when it is.

    * :data:`UNKNOWN` -- no finite number: the IdP did not say when the person
      authenticated, which is never read as "just now";
    * :data:`FUTURE` -- later than ``now + skew``: clocks drift by at most the
      provider's ``clockSkew``; beyond that the time is not believable (it
      would otherwise stay "fresh" for as long as it lies ahead);
    * :data:`STALE` -- older than ``max_age`` seconds (``None``: age not asked).

    Every caller passes its own ``now`` (the extension's clock) and the
    provider's ``clockSkew``; a caller that compares two clocks (the step-up
    round trip: the IdP's ``auth_time`` against our clock) widens ``max_age``
    by the skew itself.
    """
    t = finite_time(auth_time)
    if t is None:
        return UNKNOWN
    if t > now + skew:
        return FUTURE
    if max_age is not None and now - t > max_age:
        return STALE
    return None


def _read_only(self: object, *args: object, **kwargs: object) -> NoReturn:
    raise TypeError(f"{type(self).__name__} is read-only: identities are shared between requests "
                    "(copy it first: .copy(), dict(...), list(...))")


class ReadOnlyDict(dict[str, Any]):
    """A ``dict`` that refuses every change (``TypeError``).

    :attr:`Identity.claims` is one: the identity of a session is built once
    per stored record and shared by every request of that session, in every
    thread (:func:`identity_from_stored`), so an edit would leak into later
    requests. A ``dict`` subclass rather than a ``MappingProxyType``: reading
    costs exactly what it did, and ``json``, ``msgspec``, ``jsonify`` and
    ``isinstance(..., dict)`` see the plain JSON object it came from.
    ``.copy()`` (or ``dict(...)``) gives a mutable copy.
    """

    __slots__ = ()

    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __reduce__(self) -> tuple[Any, ...]:
        # copy/deepcopy/pickle rebuild it through __init__ (the default refills it item by item)
        return (type(self), (dict(self),))


class ReadOnlyList(list[Any]):
    """A ``list`` that refuses every change (``TypeError``): the arrays inside
    :attr:`Identity.claims` (see :class:`ReadOnlyDict`). Equal to the plain
    list it came from; ``.copy()`` (or ``list(...)``) gives a mutable copy."""

    __slots__ = ()

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _read_only
    append = extend = insert = pop = remove = clear = sort = reverse = _read_only

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (list(self),))


def read_only(value: Any) -> Any:
    """``value`` with every JSON object and array in it made read-only
    (:class:`ReadOnlyDict`, :class:`ReadOnlyList`; sets become frozensets),
    always as new containers: whoever handed ``value`` in keeps theirs to
    change. Scalars and other objects are returned as they are."""
    if isinstance(value, Mapping):
        return ReadOnlyDict((k, read_only(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ReadOnlyList(read_only(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return frozenset(value)
    return value


def plain(value: Any) -> Any:
    """The plain JSON form of a :func:`read_only` value (new ``dict`` and ``list``)."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    return value


_NO_CLAIMS = ReadOnlyDict()


@dataclass(frozen=True)
class Identity:
    """A signed-in person (or a bearer-token caller)."""

    #: stable subject at the IdP (OIDC ``sub``, SAML NameID)
    subject: str
    #: configured provider name that authenticated them
    provider: str
    email: str | None = None
    name: str | None = None
    groups: frozenset[str] = field(default_factory=frozenset)
    scopes: frozenset[str] = field(default_factory=frozenset)
    #: Azure AD app roles (they count as groups for ``allowedGroups``)
    roles: frozenset[str] = field(default_factory=frozenset)
    #: epoch seconds of the authentication event (``auth_time`` / AuthnInstant)
    auth_time: float | None = None
    amr: tuple[str, ...] = ()
    acr: str | None = None
    #: ``False`` when the IdP truncated the group list and it could not be
    #: completed; a truncated list is never read as "no groups".
    groups_complete: bool = True
    #: ``"session"`` (browser) or ``"bearer"`` (API token)
    via: str = "session"
    #: OIDC ``sid`` / SAML SessionIndex, for logout
    session_index: str | None = None
    #: Azure AD ``tid`` and similar provider-specific facts
    tenant: str | None = None
    #: selected extra claims (only those the provider is configured to keep);
    #: read-only (:class:`ReadOnlyDict`, arrays in it :class:`ReadOnlyList`):
    #: an identity is shared by the requests of its session
    claims: Mapping[str, Any] = field(default_factory=lambda: _NO_CLAIMS)

    is_authenticated: bool = field(default=True, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # NaN compares false with everything, so a NaN auth_time would pass
        # every freshness check; whatever built this identity, a non-finite
        # or non-numeric auth_time means "unknown" (which is never fresh)
        t = self.auth_time
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t)):
            object.__setattr__(self, "auth_time", None)
        # frozen means frozen all the way down: one identity serves every request of a session
        # (identity_from_stored), so what it holds is made read-only here, once, not per request
        # (a stored non-object raises here, as dict() always made it)
        claims: Any = self.claims
        if claims and not isinstance(claims, Mapping):
            claims = dict(claims)
        object.__setattr__(self, "claims", read_only(claims) if claims else _NO_CLAIMS)

    @property
    def id(self) -> str:
        """``provider:subject`` -- unique across providers."""
        return f"{self.provider}:{self.subject}"

    @functools.cached_property
    def effective_groups(self) -> frozenset[str]:
        """Groups and app roles together, as ``allowedGroups`` sees them
        (computed once per identity: the fields are frozen)."""
        return self.groups | self.roles if self.roles else self.groups

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form for the server-side session (no pickle)."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        for key in ("groups", "scopes", "roles"):
            data[key] = sorted(data[key])
        data["amr"] = list(self.amr)
        data["claims"] = plain(self.claims)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Identity:
        return cls(
            subject=str(data["subject"]),
            provider=str(data["provider"]),
            email=data.get("email"),
            name=data.get("name"),
            groups=_names(data.get("groups")),
            scopes=_names(data.get("scopes")),
            roles=_names(data.get("roles")),
            auth_time=data.get("auth_time"),
            amr=tuple(data.get("amr") or ()),
            acr=data.get("acr"),
            groups_complete=bool(data.get("groups_complete", True)),
            via=data.get("via", "session"),
            session_index=data.get("session_index"),
            tenant=data.get("tenant"),
            claims=data.get("claims") or _NO_CLAIMS,
        )


#: identities rebuilt from stored session data, by the data's JSON encoding
IDENTITY_CACHE_SIZE = 2048
_encode_json = msgspec.json.Encoder().encode


@functools.lru_cache(maxsize=IDENTITY_CACHE_SIZE)
def _identity_from_json(raw: bytes) -> Identity:
    return Identity.from_dict(msgspec.json.decode(raw))


def identity_from_stored(data: Mapping[str, Any]) -> Identity:
    """``Identity.from_dict`` for the identity a session stores, cached.

    Every request of a session decodes the same stored identity again; the
    :class:`Identity` built from it is frozen, so one instance can serve each
    request whose stored data is the same, in any thread -- and nothing of it
    can be edited (its ``claims`` are read-only all the way down; an edit
    raises ``TypeError``), so no request sees what another did to it. The
    cache key is the data's JSON encoding (bytes: nothing can change it
    afterwards), so any change to the stored identity -- a refresh, a new
    sign-in -- builds a new one. Data
    that is not plain JSON is built directly. Raises what ``from_dict``
    raises (``KeyError``, ``TypeError``, ``ValueError``).
    """
    try:
        raw = _encode_json(data)
    except (TypeError, ValueError, msgspec.EncodeError):
        return Identity.from_dict(data)
    return _identity_from_json(raw)


def _names(value: Any) -> frozenset[str]:
    """A stored list of names; anything else (a lone string would become its
    characters) is read as none."""
    if isinstance(value, (list, tuple, set, frozenset)):
        return frozenset(v for v in value if isinstance(v, str))
    return frozenset()


class AnonymousIdentity:
    """Stands in for nobody: falsy, no groups, no scopes."""

    is_authenticated = False
    subject = None
    provider = None
    email = None
    name = None
    groups: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    effective_groups: frozenset[str] = frozenset()
    auth_time = None
    amr: tuple[str, ...] = ()
    acr = None
    via = None
    groups_complete = True

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "<AnonymousIdentity>"


ANONYMOUS = AnonymousIdentity()
