"""Small helpers for validating config blocks with errors that name the key.

Every check raises :class:`~flask_ccsso.exceptions.ConfigError` carrying the
dotted path and a fix, so a bad config fails at start-up with a message a
person can act on.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from .exceptions import ConfigError

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               list: "a list", dict: "an object"}


def join(path: str, key: str | int) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else str(key))


def check_keys(raw: Mapping[str, Any], allowed: Iterable[str], path: str) -> None:
    """Refuse keys that are not in ``allowed``, suggesting the closest one."""
    allowed = list(allowed)
    for key in raw:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
            fix = f"did you mean '{close[0]}'?" if close else f"allowed keys here: {', '.join(sorted(allowed))}."
            raise ConfigError(join(path, key), "unknown key.", fix)


def expect(raw: Mapping[str, Any], key: str, kind: type | tuple[type, ...], path: str, default: Any = None,
           *, required: bool = False, fix: str | None = None) -> Any:
    """Return ``raw[key]`` if it has the right type, ``default`` if absent."""
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
        raise ConfigError(join(path, key), f"must be {want}, not {type(value).__name__} ({value!r:.40}).",
                          fix or f"write '{key}' as {want}.")
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


def expect_positive(raw: Mapping[str, Any], key: str, path: str, default: float, *, allow_zero: bool = False) -> float:
    value = expect(raw, key, (int, float), path, default)
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(join(path, key), f"must be {'zero or more' if allow_zero else 'more than zero'} (seconds), "
                          f"not {value}.", f"give '{key}' a positive number of seconds.")
    return value
