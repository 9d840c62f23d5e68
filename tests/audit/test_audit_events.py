"""The event schema: allow-listed fields only, escaped, truncated, versioned."""

from __future__ import annotations

import json
import uuid

from flask_ccsso.audit.events import (
    SCHEMA_VERSION,
    AuditEvent,
    RequestInfo,
    build_event,
    clean_str,
    is_security_event,
    new_event_id,
)
from flask_ccsso.identity import Identity
from tests.support.audit import SECRETS, secret_free

IDENT = Identity(subject="00u-ada", provider="okta", email="ada@example.com", name="Ada",
                 groups=frozenset({"staff", "db-admins"}), roles=frozenset({"Reader"}), acr="mfa",
                 claims={"department": "ops", "access_token": SECRETS["access_token"],
                         "nested": {"refresh_token": SECRETS["refresh_token"]}})
KEYS = ["schema_version", "id", "time", "type", "outcome", "reason", "actor", "provider", "skill", "via",
        "request_id", "client_ip", "user_agent", "detail", "data", "claims", "groups"]


def test_schema_shape_and_outcomes():
    e = build_event("auth.login", {"identity": IDENT, "provider": "okta", "method": "oidc", "step_up": False},
                    request=RequestInfo("rid-1", "203.0.113.9", "UA/1"))
    d = e.to_dict()
    assert list(d) == KEYS
    assert d["schema_version"] == SCHEMA_VERSION == 1
    assert d["outcome"] == "success" and d["type"] == "auth.login"
    assert d["actor"] == {"subject": "00u-ada", "email": "ada@example.com"}
    assert d["data"] == {"method": "oidc", "step_up": False}
    assert (d["request_id"], d["client_ip"], d["user_agent"]) == ("rid-1", "203.0.113.9", "UA/1")
    assert d["time"].endswith("Z") and "T" in d["time"]
    assert d["claims"] is None and d["groups"] is None  # not configured
    expected = {"auth.logout": "info", "auth.login_failed": "failure", "permission.denied": "denied",
                "skill.invoked": "success", "session.expired": "info", "session.revoked": "info",
                "stepup.required": "info", "stepup.satisfied": "success", "token.refreshed": "success",
                "auth.failure_threshold": "alert"}
    for kind, outcome in expected.items():
        assert build_event(kind, {}).outcome == outcome


def test_claims_and_groups_only_when_configured_and_never_secret_claims():
    e = build_event("skill.invoked", {"identity": IDENT, "skill": "db"}, include_claims=True, include_groups=True)
    assert e.groups == ("Reader", "db-admins", "staff")
    assert e.claims["department"] == "ops" and e.claims["acr"] == "mfa" and e.claims["name"] == "Ada"
    assert "access_token" not in e.claims and "nested" not in e.claims
    assert not secret_free(e.to_json())
    only_groups = build_event("skill.invoked", {"identity": IDENT}, include_groups=True)
    assert only_groups.claims is None and only_groups.groups


def test_secrets_in_kwargs_are_never_recorded():
    kwargs = {"identity": IDENT, "provider": "okta", "reason": "invalid_token", "detail": "bad signature",
              "headers": {"Authorization": "Bearer " + SECRETS["token"]}, **SECRETS}
    for kind in ("auth.login", "auth.login_failed", "token.refreshed", "permission.denied", "made.up"):
        text = build_event(kind, kwargs, include_claims=True, include_groups=True).to_json()
        assert secret_free(text) == [], kind


def test_objects_are_never_stringified():
    class Leaky:
        def __str__(self) -> str:
            return SECRETS["token"]

    e = build_event("permission.denied", {"skill": Leaky(), "skills": [Leaky(), "ok"], "endpoint": Leaky(),
                                          "reason": Leaky()})
    assert e.skill is None and e.reason is None and e.data == {"skills": ["ok"]}
    assert not secret_free(e.to_json())


def test_control_characters_escaped_everywhere():
    evil = "ok\r\nFAKE 2024 auth.login success\x1b[2J\x00\x7f\x85\u2028\u202e"
    ident = Identity(subject=evil, provider=evil, email=evil, groups=frozenset({evil}), claims={evil: evil})
    e = build_event("permission.denied", {"identity": ident, "skill": evil, "skills": [evil], "reason": evil,
                                          "condition": evil, "endpoint": evil, "via": evil},
                    request=RequestInfo(evil, evil, evil), include_claims=True, include_groups=True)
    text = e.to_json()
    for ch in "\r\n\x1b\x00\x7f\x85\u2028\u202e":
        assert ch not in text
    assert "\\u000d\\u000a" in e.skill and "\\u001b" in e.skill and "\\u202e" in e.skill
    decoded = json.loads(text)
    assert all("\n" not in v for v in decoded["claims"])  # keys too
    assert "\n" not in text.strip()


def test_long_strings_truncated():
    e = build_event("permission.denied", {"skill": "s" * 10_000, "detail": "d" * 10_000},
                    request=RequestInfo(user_agent="u" * 10_000), max_field_length=300)
    assert len(e.skill) <= 256 and e.skill.endswith("...[truncated]")
    assert len(e.detail) <= 512 and len(e.user_agent) <= 512
    assert len(clean_str("x" * 5000, 100)) == 100


def test_ids_are_unique_and_sortable():
    ids = [new_event_id() for _ in range(5000)]
    assert len(set(ids)) == 5000 and ids == sorted(ids) and all(len(i) == 32 for i in ids)
    assert all(uuid.UUID(i).version == 7 for i in ids[:10])


def test_round_trip_and_security_classes():
    e = build_event("stepup.required", {"identity": IDENT, "skill": "db", "max_age": 300, "acr_values": ("mfa",)})
    again = AuditEvent.from_dict(json.loads(e.to_json()))
    assert again.to_json() == e.to_json()
    assert e.data == {"max_age": 300, "acr_values": ["mfa"]}
    assert all(is_security_event(t) for t in ("auth.login", "auth.login_failed", "permission.denied",
                                              "session.expired", "stepup.required", "auth.failure_threshold"))
    assert not is_security_event("skill.invoked") and not is_security_event("token.refreshed")
