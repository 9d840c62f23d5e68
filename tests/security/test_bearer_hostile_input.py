"""Hostile bearer tokens: a clean 401, never a traceback in the log.

A token whose JOSE header or payload is deeply nested JSON (``[[[[...`` a
few thousand deep, well within the 16 KiB token limit) made the unverified
peek at ``typ`` / ``iss`` raise ``RecursionError``, which only the catch-all
turned into a 401 -- after logging a full ERROR traceback. Anyone could make
the server write one traceback per request. The class: everything the
unverified peek can raise on attacker input is "malformed" (401
``invalid_token``), logged at most as the ``login_failed`` signal.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest

from flask_ccsso import reasons, signals
from flask_ccsso.testing import listen_to


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


def _part(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


DEEP = b"[" * 5000 + b"]" * 5000
HEADER = _part(json.dumps({"alg": "RS256", "typ": "at+jwt"}).encode())
IN_CLAIM = _part(b'{"iss": ' + DEEP + b"}")


@pytest.mark.parametrize("token", [
    f"{_part(DEEP)}.{_part(b'{}')}.c2ln",                      # nested header
    f"{HEADER}.{_part(DEEP)}.c2ln",                             # nested payload
    f"{HEADER}.{IN_CLAIM}.c2ln",                                # nested inside a claim
], ids=["header", "payload", "claim"])
def test_deeply_nested_jwt_is_a_clean_401(client: Any, caplog: Any, token: str) -> None:
    assert len(token) < 16384
    caplog.set_level(logging.DEBUG, logger="flask_ccsso")
    with listen_to(signals.login_failed) as failed:
        resp = client.get("/me", headers=bearer(token))
    assert resp.status_code == 401
    assert resp.get_json()["error"] == reasons.INVALID_TOKEN
    assert "malformed" in resp.get_json()["error_description"]
    assert [f.kwargs["reason"] for f in failed] == [reasons.INVALID_TOKEN]
    # no traceback: nothing at ERROR, nothing with exc_info
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
