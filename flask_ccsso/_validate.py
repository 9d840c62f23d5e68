"""Small helpers for validating config blocks with errors that name the key.

Every check raises :class:`~flask_ccsso.exceptions.ConfigError` carrying the
dotted path and a fix, so a bad config fails at start-up with a message a
person can act on.

Two classes of input are checked here, once, for every block (``auth``,
``session``, ``skills``, ``logging``), so that a key added later is covered
without anyone remembering to:

* **numbers** -- every number read through :func:`expect` must be finite
  (JSON's ``NaN``/``Infinity`` parse to floats Python happily compares: an
  ``idleTimeout`` of ``NaN`` never expires), not negative, and at most the
  key's limit in :data:`LIMITS` (a year for an unknown duration, a billion for
  an unknown count), because absurd values break arithmetic further on;
* **URLs** -- every string whose key names a URL (``*Url``, ``*Uri``, ``url``,
  ``endpoint``, ``issuer``, ``authority``) must parse: ``urlsplit`` raising on
  ``https://[x`` or a port of 99999 would otherwise escape as a raw
  ``ValueError`` at start-up or, worse, on the first request.

Error texts never carry a secret: values of keys that look like secrets are
never echoed, and URLs are shown with their password masked.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, field, fields, is_dataclass
from functools import cache
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import SplitResult, urlsplit, urlunsplit

from .exceptions import ConfigError

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               list: "a list", dict: "an object"}

MINUTE, HOUR, DAY = 60, 3600, 86400
#: the longest duration any setting may have
YEAR = 366 * DAY
#: the largest count/size a key without its own limit may have
MAX_COUNT = 1_000_000_000

#: Upper bounds by key name (seconds for durations). One table, so a key means
#: the same wherever it appears. Keys not listed get :data:`YEAR` when their
#: name says they are a duration, else :data:`MAX_COUNT`.
LIMITS: dict[str, float] = {
    # a leeway wider than this turns "expired" into "valid" for no good reason
    "clockSkew": 10 * MINUTE,
    # network and lock timeouts: a worker must not hang longer than this
    "timeout": 5 * MINUTE, "connectTimeout": 5 * MINUTE, "readTimeout": 5 * MINUTE,
    "refreshLockTimeout": 5 * MINUTE,
    # caches of keys and metadata: rotation must be noticed within a week
    "discoveryTtl": 7 * DAY, "jwksTtl": 7 * DAY, "metadataRefresh": 7 * DAY, "jwksRefreshCooldown": HOUR,
    "loginStateTtl": DAY,
    # sessions
    "absoluteTimeout": YEAR, "idleTimeout": YEAR, "maxAuthAge": YEAR, "refreshWindow": DAY,
    "slidingWriteInterval": DAY, "outageGrace": 7 * DAY,
    # audit pipeline
    "flushInterval": HOUR, "retryBackoff": HOUR, "maxBackoff": DAY, "window": DAY,
    "queueSize": 10_000_000, "batchSize": 100_000, "retryAttempts": 100, "count": 1_000_000,
    "maxFieldLength": 1024 * 1024, "maxBatchBytes": 100 * 1024 * 1024,
    # request sizes: the body is held in memory while it is checked
    "maxResponseSize": 64 * 1024 * 1024,
}
_DURATION = re.compile(r"(timeout|ttl|interval|age|skew|leeway|backoff|window|cooldown|refresh|delay|period|"
                       r"duration|seconds|lifetime)$", re.IGNORECASE)

#: keys whose *values* are never echoed in an error (broader than the
#: must-be-``${VAR}`` rule in :mod:`flask_ccsso.config`: hiding too much here costs nothing)
_SECRET_NAME = re.compile(r"secret|passw|pwd|token|credential|private|api.?key|authorization|cookie|^key$|"
                          r"signature|assertion", re.IGNORECASE)
#: query parameters whose values are masked when a URL is echoed
_SECRET_QUERY = re.compile(_SECRET_NAME.pattern + r"|^(sig|code|key|access_token|id_token|apikey)$", re.IGNORECASE)
#: keys whose string values are URLs and are parsed here
_URL_NAME = re.compile(r"(url|uri|endpoint)$|^(issuer|authority)$", re.IGNORECASE)
#: schemes whose URLs must name a host and may hold no spaces
_NETWORK_SCHEMES = ("http", "https", "redis", "rediss")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def join(path: str, key: str | int) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else str(key))


def is_secret_key(key: Any) -> bool:
    """Whether the value under ``key`` must never appear in a message."""
    return isinstance(key, str) and bool(_SECRET_NAME.search(key))


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------- secret-free echoes

#: the metadata mark of a secret settings field (see :func:`secret_field`); a
#: field without a default spells ``field(repr=False, metadata=SECRET)``
#: itself, since type checkers only see a default-less ``field(...)`` call
SECRET: Mapping[str, bool] = MappingProxyType({"secret": True})


def secret_field(**kwargs: Any) -> Any:
    """A settings field that holds a secret: left out of ``repr()`` (tracebacks,
    debuggers, log lines) and shown as ``***`` by ``flask ccsso check-config``
    (which reads the ``secret`` mark). One mark, so a secret added later is
    hidden everywhere at once."""
    return field(repr=False, metadata=SECRET, **kwargs)


def url_field(**kwargs: Any) -> Any:
    """A settings field holding a URL that may embed a password: left out of
    ``repr()``; check-config shows it with the password masked."""
    return field(repr=False, **kwargs)


def mask_url(url: str) -> str:
    """``scheme://user:secret@host`` -> ``scheme://user:***@host`` (and secret query values -> ``***``).

    A URL that does not even parse is not echoed at all: where its userinfo
    ends is exactly what cannot be known.
    """
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable URL>"
    if "@" in parts.netloc:
        # a lone user name is a credential too (https://<token>@host)
        user, _, host = parts.netloc.rpartition("@")
        shown = f"{user.split(':', 1)[0]}:***" if password is not None else "***"
        parts = parts._replace(netloc=f"{shown}@{host}")
    if parts.query:
        # webhook and SAS URLs carry their credential in the query string
        parts = parts._replace(query="&".join(
            f"{name}=***" if _SECRET_QUERY.search(name) else f"{name}{sep}{val}"
            for name, sep, val in (item.partition("=") for item in parts.query.split("&"))))
    scheme, _, rest = url.partition(":")
    if not rest.startswith("//"):
        return urlunsplit(parts)
    # by hand: urlunsplit drops an empty authority (sqlite:////var/audit.db -> sqlite://var/audit.db)
    return (f"{scheme}://{parts.netloc}{parts.path}" + (f"?{parts.query}" if parts.query else "")
            + (f"#{parts.fragment}" if parts.fragment else ""))


def show(key: Any, value: Any, width: int = 40) -> str:
    """``value`` as it may appear in an error about ``key``: secrets hidden, URLs masked."""
    if is_secret_key(key):
        return "<hidden>"
    if isinstance(value, str):
        text = repr(mask_url(value) if "@" in value or "://" in value else value)
    elif value is None or isinstance(value, (bool, int, float)):
        text = repr(value) if not isinstance(value, int) or abs(value) < 10**15 else "a huge number"
    else:
        # a list or object may hold anything, a URL with its password included
        return f"a {type(value).__name__}"
    return text if len(text) <= width else text[: width - 3] + "..."


def _number_text(value: float) -> str:
    try:
        return f"{float(value):g}"
    except OverflowError:
        return "a number with more than 300 digits"


# --------------------------------------------------------------------------- numbers and URLs

def limit_for(key: str) -> float:
    """The upper bound of the number under ``key`` (see :data:`LIMITS`)."""
    if key in LIMITS:
        return LIMITS[key]
    return YEAR if _DURATION.search(key) else MAX_COUNT


def check_number(value: float, key: str, path: str) -> float:
    """Refuse NaN, ±Infinity, negatives and values beyond the key's limit."""
    where = join(path, key)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(where, f"must be a finite number, not {value}.",
                          f"write '{key}' as a plain number (JSON has no NaN or Infinity).")
    if value < 0:
        raise ConfigError(where, f"must not be negative ({_number_text(value)}).",
                          f"give '{key}' a value of 0 or more.")
    top = limit_for(key)
    if value > top:
        unit = " seconds" if _DURATION.search(key) else ""
        raise ConfigError(where, f"is {_number_text(value)}, more than the limit of {top:g}{unit}.",
                          f"give '{key}' a value of at most {top:g}{unit}.")
    return value


def check_url(value: str, path: str, *, http: bool = False, https_unless_loopback: bool = True) -> str:
    """A URL that parses, names its host and port correctly, and holds no control characters.

    With ``http`` it must also be an absolute ``http(s)`` URL without a
    fragment, and ``https`` unless it points at a loopback host. The URL is
    echoed only with its password masked.
    """
    shown = mask_url(value)
    if _CONTROL.search(value):
        raise ConfigError(path, "contains a control character (a stray newline from an environment variable?).",
                          "remove it.")
    try:
        parts = urlsplit(value)
        hosts = parts.netloc.rpartition("@")[2]
        if ("," in hosts and parts.scheme.lower().startswith("postgres")) or parts.scheme.lower().endswith(
                ("+sentinel", "+cluster")):
            # libpq's multi-host form, postgresql://h1:5432,h2:5432/db, and Redis's sentinels or cluster
            # nodes, redis+sentinel://h1:26379,h2:26379/mymaster: each host:port checked on its own
            for item in hosts.split(","):
                _check_host_port(urlsplit(f"//{item}"))
            host: str | None = hosts
        else:
            host = _check_host_port(parts)
    except ValueError as exc:
        raise ConfigError(path, f"is not a valid URL ({_url_problem(exc)}).",
                          "check the host (IPv6 addresses go in [brackets]) and the port (1-65535).") from None
    scheme = parts.scheme.lower()
    if not scheme:
        # not echoed: a value without a scheme may be anything, a pasted secret included
        raise ConfigError(path, "is not an absolute URL (it has no scheme://).",
                          "write the full URL, e.g. https://host/...")
    if scheme in _NETWORK_SCHEMES and (" " in value or "\t" in value):
        raise ConfigError(path, "contains a space.", "remove it (spaces in a path are written %20).")
    if http:
        if scheme not in ("https", "http") or not host:
            raise ConfigError(path, f"{shown!r} is not an absolute http(s) URL." if "://" in value
                              else "is not an absolute http(s) URL.",
                              "write the full URL, e.g. https://idp.example.com/...")
        if https_unless_loopback and scheme != "https" and not is_loopback_host(host):
            raise ConfigError(path, f"{shown!r} uses http on a non-loopback host; tokens would travel in clear text.",
                              "use https:// (plain http is allowed only for localhost / 127.0.0.1 in development).")
        if parts.fragment:
            raise ConfigError(path, "must not contain a #fragment.", "remove the fragment.")
    elif scheme in ("http", "https") and not host:
        raise ConfigError(path, f"{shown!r} names no host.", "write the full URL, e.g. https://host/...")
    return value


def _check_host_port(parts: SplitResult) -> str | None:
    """The host of ``parts``; ``ValueError`` for a bad port or a bracketed non-IPv6 host."""
    host = parts.hostname
    if host and "[" in parts.netloc and not _is_ipv6(host):  # urlsplit checks this only from 3.11.4 on
        raise ValueError("the host in [brackets] is not an IPv6 address")
    if parts.port == 0:  # .port itself raises on 99999 or "abc"
        raise ValueError("Port out of range 1-65535")
    return host


def _is_ipv6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def _url_problem(exc: ValueError) -> str:
    """urllib's message, minus anything copied from the URL itself (it may be a password)."""
    text = str(exc)
    if "Port" in text:
        return "the port is not a number from 1 to 65535"
    if "IPv6" in text or "IPv4" in text or "bracket" in text.lower():
        return "the host in [brackets] is not an IPv6 address"
    return "it does not parse"


# --------------------------------------------------------------------------- reading keys

def check_keys(raw: Mapping[str, Any], allowed: Iterable[str], path: str) -> None:
    """Refuse keys that are not in ``allowed``, suggesting the closest one."""
    allowed = list(allowed)
    for key in raw:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
            fix = f"did you mean '{close[0]}'?" if close else f"allowed keys here: {', '.join(sorted(allowed))}."
            raise ConfigError(join(path, str(key)), "unknown key.", fix)


def expect(raw: Mapping[str, Any], key: str, kind: type | tuple[type, ...], path: str, default: Any = None,
           *, required: bool = False, fix: str | None = None) -> Any:
    """Return ``raw[key]`` if it has the right type, ``default`` if absent.

    Numbers pass :func:`check_number` and URL-named strings :func:`check_url`
    here, whatever the caller asked for, so no block can forget them.
    """
    if key not in raw or raw[key] is None:
        if required:
            raise ConfigError(join(path, key), "is required.", fix or f"set '{key}'.")
        return default
    value = raw[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int in Python; a config that says true for a number is wrong
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if not ok and float in kinds and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        want = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
        shown = "" if is_secret_key(key) or isinstance(value, (list, dict)) else f" ({show(key, value)})"
        raise ConfigError(join(path, key), f"must be {want}, not {type(value).__name__}{shown}.",
                          fix or f"write '{key}' as {want}.")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        check_number(value, key, path)
    elif isinstance(value, str) and _URL_NAME.search(key) and value:
        check_url(value, join(path, key))
    return value


def expect_str_list(raw: Mapping[str, Any], key: str, path: str, default: tuple[str, ...] = (),
                    *, required: bool = False) -> tuple[str, ...]:
    """A list of strings (a single string is refused: it is nearly always a typo)."""
    value = expect(raw, key, list, path, None, required=required,
                   fix=f"write '{key}' as a JSON list of strings, e.g. [\"a\", \"b\"].")
    if value is None:
        return default
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ConfigError(join(join(path, key), i), f"must be a string, not {type(item).__name__}.",
                              "list only strings here.")
    return tuple(value)


def expect_positive(raw: Mapping[str, Any], key: str, path: str, default: Any, *, allow_zero: bool = False) -> Any:
    """A duration in seconds: finite, within the key's limit, more than (or with
    ``allow_zero`` at least) zero. ``default`` is returned as is when the key is absent."""
    value = expect(raw, key, (int, float), path, None)
    if value is None:
        return default
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(join(path, key), f"must be {'zero or more' if allow_zero else 'more than zero'} (seconds), "
                          f"not {_number_text(value)}.", f"give '{key}' a positive number of seconds.")
    return value


def expect_int(raw: Mapping[str, Any], key: str, path: str, default: int, *, minimum: int = 1) -> int:
    """A whole number of at least ``minimum`` (and at most the key's limit).

    ``262144.0`` counts as whole; ``1.5`` does not.
    """
    value = expect(raw, key, (int, float), path, None)
    if value is None:
        return default
    if isinstance(value, float) and not value.is_integer():
        raise ConfigError(join(path, key), f"must be a whole number, not {_number_text(value)}.",
                          f"write '{key}' without a fraction.")
    if value < minimum:
        raise ConfigError(join(path, key), f"must be at least {minimum}, not {_number_text(value)}.",
                          f"set '{key}' to {minimum} or more.")
    return int(value)


def setting_number(config: Mapping[str, Any], key: str, default: float, *, minimum: float, maximum: float,
                   whole: bool = False) -> float:
    """A number among the Flask settings (``app.config["CCSSO_..."]``): an int,
    a float or a string of digits (from the environment), finite and from
    ``minimum`` to ``maximum`` -- else a ConfigError naming the setting.

    The one rule for every ``CCSSO_*`` number, as :func:`check_number` is for
    the config blocks: ``int(value)`` on ``"abc"``, ``NaN`` or ``Infinity``
    would escape as a raw ``ValueError`` / ``OverflowError``.
    """
    value = config.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]{1,9}(\.[0-9]{1,9})?\s*", value):
        value = float(value)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and isinstance(value, float):
        ok = math.isfinite(value) and (not whole or value.is_integer())
    if not ok or not minimum <= value <= maximum:
        kind = "whole number" if whole else "number"
        raise ConfigError(key, f"must be a {kind} from {minimum:g} to {maximum:g}, not {show(key, value)}.",
                          f"set app.config[{key!r}] to a number such as {default:g}.")
    return int(value) if whole else float(value)


def setting_int(config: Mapping[str, Any], key: str, default: int, *, minimum: int = 0, maximum: int) -> int:
    """A whole-number Flask setting (``CCSSO_TRUSTED_PROXIES``); see :func:`setting_number`.
    ``False`` stands for ``0``/off here, as it always has."""
    if config.get(key) is False:
        return default
    return int(setting_number(config, key, default, minimum=minimum, maximum=maximum, whole=True))


# --------------------------------------------------------------------------- settings declared once

#: reads one key: ``(raw, key, path, default, field metadata) -> value``
Reader = Callable[[Mapping[str, Any], str, str, Any, Mapping[str, Any]], Any]
_T = TypeVar("_T")


def setting(key: str, default: Any = MISSING, *, default_factory: Any = MISSING, fix: str | None = None,
            secret: bool = False, url: bool = False, allow_zero: bool = False, minimum: int | None = None,
            read: Reader | None = None) -> Any:
    """A settings field read from the config key ``key``.

    The field is the one place its key, type (the annotation), default,
    limits and marks are written; :func:`read_settings` reads every such field
    the same way, so a default cannot drift between the struct, the parser and
    ``check-config``. A field without a default is required (``fix`` says how
    to set it). ``secret`` hides the value from ``repr()`` and check-config
    (the :data:`SECRET` mark); ``url`` keeps a URL that may embed a password
    out of ``repr()``. ``allow_zero`` lets a duration be ``0``; ``minimum``
    bounds a whole number from below. ``read`` replaces the reader chosen from
    the annotation, for the few keys with a shape of their own.
    """
    meta: dict[str, Any] = {"key": key}
    for name, value in (("secret", secret), ("fix", fix), ("allow_zero", allow_zero), ("minimum", minimum),
                        ("read", read)):
        if value is not None and value is not False:
            meta[name] = value
    kwargs: dict[str, Any] = {"repr": not (secret or url), "metadata": MappingProxyType(meta)}
    if default is not MISSING:
        kwargs["default"] = default
    if default_factory is not MISSING:
        kwargs["default_factory"] = default_factory
    return field(**kwargs)


def redefault(base: type, name: str, default: Any) -> Any:
    """The field ``name`` of the settings struct ``base`` with another default.

    For a subtype whose default differs (Entra ID's ``rolesClaim`` is
    ``roles``): its key, marks and limits are not written a second time.
    """
    old = next(f for f in fields(base) if f.name == name)
    return field(default=default, repr=old.repr, metadata=old.metadata)


def _read_str(raw: Mapping[str, Any], key: str, path: str, default: Any, meta: Mapping[str, Any]) -> Any:
    value = expect(raw, key, str, path, default)
    # an optional string set to "" (an empty ${VAR:-}) is unset
    return None if value == "" and default is None else value


def _read_bool(raw: Mapping[str, Any], key: str, path: str, default: Any, meta: Mapping[str, Any]) -> Any:
    return expect(raw, key, bool, path, default)


def _read_seconds(raw: Mapping[str, Any], key: str, path: str, default: Any, meta: Mapping[str, Any]) -> Any:
    return expect_positive(raw, key, path, default, allow_zero=meta.get("allow_zero", False))


def _read_whole(raw: Mapping[str, Any], key: str, path: str, default: Any, meta: Mapping[str, Any]) -> Any:
    return expect_int(raw, key, path, default, minimum=meta.get("minimum", 1))


def _read_strs(raw: Mapping[str, Any], key: str, path: str, default: Any, meta: Mapping[str, Any]) -> Any:
    return expect_str_list(raw, key, path, default)


def _read_object(raw: Mapping[str, Any], key: str, path: str, default: Any, meta: Mapping[str, Any]) -> Any:
    return dict(expect(raw, key, dict, path, default))


def _reader_for(hint: Any, where: str) -> Reader:
    """The reader for a field's annotation (``X | None`` reads as ``X``)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0] if len(args) == 1 else hint
    origin = typing.get_origin(hint) or hint
    readers: dict[Any, Reader] = {str: _read_str, bool: _read_bool, float: _read_seconds, int: _read_whole,
                                  tuple: _read_strs, dict: _read_object, Mapping: _read_object}
    if origin not in readers:
        raise TypeError(f"{where}: no reader for {hint!r}; pass setting(read=...).")
    return readers[origin]


@cache
def _plan(cls: type) -> tuple[tuple[str, str, Reader, Any], ...]:
    """``(field name, key, reader, field)`` for every keyed field of ``cls``, in declaration order."""
    hints = typing.get_type_hints(cls)
    return tuple((f.name, f.metadata["key"], f.metadata.get("read") or _reader_for(hints[f.name], f"{cls.__name__}.{f.name}"), f)
                 for f in fields(cls) if "key" in f.metadata)


def config_keys(cls: type) -> tuple[str, ...]:
    """The config keys the settings struct ``cls`` declares."""
    return tuple(key for _, key, _, _ in _plan(cls))


def field_default(f: Any) -> Any:
    """A dataclass field's default (``MISSING`` when it has none)."""
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def setting_defaults(cls: type) -> dict[str, Any]:
    """Config key -> default, for every keyed field of ``cls`` that has one."""
    return {key: d for _, key, _, f in _plan(cls) if (d := field_default(f)) is not MISSING}


def read_settings(cls: type, raw: Mapping[str, Any], path: str, *, only: Iterable[str] | None = None) -> dict[str, Any]:
    """Read every keyed field of the settings struct ``cls`` (or those named in
    ``only``) from ``raw``: field name -> value, the field's own default where
    the key is absent.

    Each value passes the checks of its kind (:func:`expect`: type, number
    limits, URL parsing), so a key added to a struct is checked without anyone
    remembering to. Cross-key rules stay with the struct that owns the keys.
    """
    assert is_dataclass(cls)
    wanted = None if only is None else set(only)
    values: dict[str, Any] = {}
    for name, key, reader, f in _plan(cls):
        if wanted is not None and name not in wanted:
            continue
        default = field_default(f)
        if default is MISSING:
            if raw.get(key) is None:
                raise ConfigError(join(path, key), "is required.", f.metadata.get("fix") or f"set '{key}'.")
            default = None
        values[name] = reader(raw, key, path, default, f.metadata)
    return values


def parse_struct(cls: type[_T], raw: Mapping[str, Any], path: str, **given: Any) -> _T:
    """Refuse unknown keys, read every keyed field of ``cls`` and build it
    (``given`` supplies the fields that are not config keys)."""
    check_keys(raw, config_keys(cls), path)
    return cls(**read_settings(cls, raw, path), **given)
