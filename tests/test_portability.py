"""Code whose standard-library spelling differs between the supported Pythons.

``bash scripts/matrix`` runs the unit suite, this module included, on every
supported Python (pyproject's classifiers). Each test here pins a behaviour
that once held on one Python only:

* SAML instants: ``datetime.fromisoformat`` refuses ``Z`` on 3.10 (every SAML
  sign-in failed there) and accepts non-xs:dateTime forms from 3.11 on.
* Sealed session records: ``binascii.a2b_base64(strict_mode=...)`` is 3.11+.
* The audit spool: ``BaseException.add_note`` and ``sqlite3.Error.sqlite_errorname``
  are 3.11+.
* Nested JSON in tokens: ``json`` gives up (``RecursionError``) at about 1,000
  levels on 3.10/3.11 but parses 5,000 on 3.13, so the limit is our own.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import sys
from pathlib import Path

import pytest

from flask_ccsso.audit.spool import _finish, describe_io_error
from flask_ccsso.exceptions import AuthenticationFailed
from flask_ccsso.providers.oidc import MAX_JSON_DEPTH, peek_jwt
from flask_ccsso.providers.saml_xml import parse_instant
from flask_ccsso.sessions.keys import SessionKeys

NEW_YEAR_2026 = 1767225600.0


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-01-01T00:00:00Z", NEW_YEAR_2026),  # what IdPs send; 3.10's fromisoformat refused it
    ("2026-01-01T00:00:00.000Z", NEW_YEAR_2026),  # Google, Okta
    ("2026-01-01T00:00:00.5Z", NEW_YEAR_2026 + 0.5),  # 1 digit: 3.10 refused any count but 3 and 6
    ("2026-01-01T00:00:00.1234567Z", NEW_YEAR_2026 + 0.123456),  # ADFS: 7 digits, truncated
    ("2026-01-01T00:00:00", NEW_YEAR_2026),  # no zone: UTC (SAML core 1.3.3)
    ("2026-01-01T02:00:00+02:00", NEW_YEAR_2026),  # metadata validUntil may carry an offset
    ("2025-12-31T23:30:00-00:30", NEW_YEAR_2026),
    (" 2026-01-01T00:00:00Z\n", NEW_YEAR_2026),  # xs:dateTime collapses whitespace
])
def test_xs_datetime_is_read_the_same_on_every_python(text: str, expected: float) -> None:
    assert parse_instant(text) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("text", [
    "2026-01-01",  # a date alone: fromisoformat accepts it from 3.11 on
    "2026-01-01 00:00:00Z",  # a space for the T
    "20260101T000000Z",  # ISO 8601 basic format
    "2026-W01-4T00:00:00Z",  # a week date
    "2026-01-01T00Z",  # hours alone
    "2026-01-01T00:00Z",  # no seconds
    "2026-01-01T00:00:00,5Z",  # a comma before the fraction
    "2026-01-01T00:00:00.Z",
    "2026-01-01T00:00:00ZZ",
    "2026-01-01T00:00:00+0100",  # an offset without its colon
    "2026-01-01T00:00:00+15:00",  # beyond xs:dateTime's +-14:00
    "2026-01-01T00:00:00+01:60",
    "2026-02-30T00:00:00Z",
    "2026-01-01T24:00:00Z",
    "2026-01-01T00:00:60Z",
    "\u0662\u0660\u0662\u0666-01-01T00:00:00Z",  # Arabic-Indic digits: \d and int() take them
    "+2026-01-01T00:00:00Z",
    "12026-01-01T00:00:00Z",
])
def test_other_iso_8601_forms_are_refused_on_every_python(text: str) -> None:
    with pytest.raises(AuthenticationFailed, match="malformed timestamp"):
        parse_instant(text)


def test_sealed_record_opens_and_bad_base64_does_not_raise() -> None:
    keys = SessionKeys(["a session key of at least thirty-two bytes"])
    sealed = keys.seal(b'{"user": "alice"}', "store-id")
    assert keys.open(sealed, "store-id") == b'{"user": "alice"}'
    body = sealed[len("v1."):]
    for bad in (f"v1.{body}!", f"v1.{body[:8]}={body[8:]}", f"v1.{body[:-1]}", f"v1.{body}\u00e9", "v1. " + body):
        assert keys.open(bad, "store-id") is None


def _interrupting(db: sqlite3.Connection) -> sqlite3.Connection:
    """Every statement ``db`` runs from now on is interrupted: a real failing ROLLBACK."""
    db.set_progress_handler(lambda: 1, 1)
    return db


def test_a_failing_rollback_never_replaces_the_first_error(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "spool.sqlite3", isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    db.execute("CREATE TABLE events (body TEXT)")
    first = sqlite3.OperationalError("database or disk is full")
    _finish(_interrupting(db), first)  # raised AttributeError (no add_note) on 3.10
    if sys.version_info >= (3, 11):
        assert first.__notes__ == ["(the rollback failed too: SQLITE_INTERRUPT (interrupted))"]
    db.close()


def test_sqlite_errors_are_named_by_their_code_on_every_python(tmp_path: Path) -> None:
    path = tmp_path / "not-a-spool.sqlite3"
    path.write_bytes(b"\x00" * 4096)
    db = sqlite3.connect(path)
    with pytest.raises(sqlite3.DatabaseError) as info:
        db.execute("SELECT * FROM sqlite_master")
    db.close()  # 3.13 warns (ResourceWarning) about a connection left to the garbage collector
    assert describe_io_error(info.value) == "SQLITE_NOTADB (file is not a database)"


def _part(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _jws(header: bytes, payload: bytes) -> str:
    return f"{_part(header)}.{_part(payload)}.c2ln"


HEADER = json.dumps({"alg": "RS256", "kid": "k"}).encode()


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 900, 5000])
def test_deeply_nested_token_json_is_malformed_on_every_python(depth: int) -> None:
    nested = b"[" * depth + b"]" * depth
    for header, payload in ((HEADER, b'{"iss": ' + nested + b"}"), (HEADER, b'{"a": {"b": ' + nested + b"}}"),
                            (b'{"alg": "RS256", "x": ' + nested + b"}", b"{}")):
        with pytest.raises(AuthenticationFailed, match="malformed"):
            peek_jwt(_jws(header, payload))


def test_ordinary_nesting_still_reads() -> None:
    claims = {"iss": "https://idp", "address": {"country": "NL"}, "_claim_sources": {"src1": {"endpoint": "x"}}}
    assert peek_jwt(_jws(HEADER, json.dumps(claims).encode()))[1] == claims
