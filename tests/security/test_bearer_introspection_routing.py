"""Issue 10 #7: opaque-token introspection fanned out to every provider.

Before: an opaque token was posted to every introspecting provider in config
order (provider A's tokens reached provider B, with B's client credentials),
nothing negative was remembered (50 random tokens: 100 IdP calls), and one
provider's 500 turned another provider's valid token into a 503.

The class: each opaque token goes to exactly one provider (its
``introspectionTokenPrefix``, else the ``introspectionDefault`` one, else the
only introspecting provider); several introspecting providers without a rule
is a ``ConfigError`` at start-up; refusals are cached briefly by token hash;
unsuccessful introspection calls are limited per client address.

Two real loopback introspection endpoints (one per provider, each expecting
its own client credentials) count every call and record what arrived.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from flask_ccsso import signals
from flask_ccsso.exceptions import ConfigError
from flask_ccsso.testing import listen_to
from tests.security.idp_endpoints import ScriptedIdP, bearer
from tests.support.local_op import CLIENT_ID, CLIENT_SECRET, LocalOP
from tests.support.skills import MORE_SKILLS, add_skill_routes

B_CLIENT, B_SECRET = "api-b", "b-secret-0123456789"
#: CCSSO_BEARER_INTROSPECTION_LIMIT for these tests (the default is 20 a minute)
INTROSPECTION_LIMIT = 10


@pytest.fixture(scope="module")
def _op_b() -> Iterator[LocalOP]:
    other = LocalOP()
    yield other
    other.close()


@pytest.fixture(scope="module")
def _idps() -> Iterator[tuple[ScriptedIdP, ScriptedIdP]]:
    a, b = ScriptedIdP(), ScriptedIdP(B_CLIENT, B_SECRET)
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def two(op, _op_b, _idps) -> tuple[LocalOP, LocalOP, ScriptedIdP, ScriptedIdP]:
    idp_a, idp_b = _idps
    idp_a.reset()
    idp_b.reset()
    _op_b.extra_metadata = {}
    _op_b.down = False
    idp_a.serve_for(op)
    idp_b.serve_for(_op_b)
    return op, _op_b, idp_a, idp_b


def config(op_a: LocalOP, op_b: LocalOP, a: dict[str, Any] | None = None, b: dict[str, Any] | None = None
           ) -> dict[str, Any]:
    # B first: config order must not matter any more
    return {"auth": {"providers": {
        "b": {"provider": "oidc", "clientId": B_CLIENT, "clientSecret": B_SECRET, "issuer": op_b.issuer, **(b or {})},
        "a": {"provider": "okta", "clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET, "issuer": op_a.issuer,
              **(a or {})},
    }}, "skills": {**MORE_SKILLS, "op-only": {"providers": ["a"]}}, "session": {"cookieSecure": False}}


def answer(clock: Any, aud: str, sub: str = "u-bob") -> dict[str, Any]:
    return {"active": True, "sub": sub, "aud": aud, "token_type": "Bearer", "scope": "migration:write",
            "exp": int(clock.now) + 600, "groups": ["database-admins"]}


ROUTED = ({"introspectionDefault": True}, {"introspectionTokenPrefix": "bt_"})


def test_several_introspecting_providers_without_a_rule_send_opaque_tokens_nowhere(make_app, two, clock, caplog):
    """Without a rule nothing says which provider an opaque token belongs to:
    the portal starts (it may take no opaque tokens at all), says so once, and
    refuses opaque tokens without sending them to any provider."""
    op_a, op_b, idp_a, idp_b = two
    with caplog.at_level("WARNING", logger="flask_ccsso"):
        client = add_skill_routes(make_app(config(op_a, op_b))).test_client()
    assert any("introspectionTokenPrefix" in r.getMessage() for r in caplog.records)
    idp_a.answers["a-token"] = answer(clock, CLIENT_ID, "u-of-a")
    resp = client.get("/me", headers=bearer("a-token"))
    assert resp.status_code == 401
    assert idp_a.calls == [] and idp_b.calls == []


@pytest.mark.parametrize(("a", "b", "key"), [
    ({"introspectionDefault": True}, {"introspectionDefault": True}, "introspectionDefault"),
    ({"introspectionTokenPrefix": "tok"}, {"introspectionTokenPrefix": "tok_b"}, "introspectionTokenPrefix"),
    ({"introspection": False, "introspectionTokenPrefix": "x"}, {}, "introspectionTokenPrefix"),
])
def test_ambiguous_or_dead_routing_rules_fail_at_start_up(make_app, two, a, b, key):
    op_a, op_b, *_ = two
    with pytest.raises(ConfigError) as err:
        make_app(config(op_a, op_b, a, b))
    assert err.value.path.endswith(key)


def test_each_token_goes_to_one_provider_with_that_providers_credentials(make_app, two, clock):
    op_a, op_b, idp_a, idp_b = two
    client = add_skill_routes(make_app(config(op_a, op_b, *ROUTED))).test_client()
    idp_a.answers["a-token"] = answer(clock, CLIENT_ID, "u-of-a")
    idp_b.answers["bt_token"] = answer(clock, B_CLIENT, "u-of-b")
    assert client.get("/me", headers=bearer("a-token")).get_json()["provider"] == "a"
    assert client.get("/me", headers=bearer("bt_token")).get_json()["provider"] == "b"
    assert client.get("/me", headers=bearer("unknown-token")).status_code == 401
    assert [c["token"] for c in idp_a.calls] == ["a-token", "unknown-token"]
    assert [c["token"] for c in idp_b.calls] == ["bt_token"]
    assert {(c["client_id"], c["client_secret"]) for c in idp_a.calls} == {(CLIENT_ID, CLIENT_SECRET)}
    assert {(c["client_id"], c["client_secret"]) for c in idp_b.calls} == {(B_CLIENT, B_SECRET)}


def test_a_token_prefix_alone_routes_and_unmatched_tokens_go_nowhere(make_app, two, clock):
    """No default: a token that matches no prefix is refused without any IdP call."""
    op_a, op_b, idp_a, idp_b = two
    client = add_skill_routes(make_app(config(op_a, op_b, {"introspectionTokenPrefix": "at_"},
                                              {"introspectionTokenPrefix": "bt_"}))).test_client()
    assert client.get("/me", headers=bearer("zz-token")).status_code == 401
    assert idp_a.calls == [] and idp_b.calls == []


def test_one_providers_outage_does_not_touch_anothers_callers(make_app, two, clock):
    op_a, op_b, idp_a, idp_b = two
    client = add_skill_routes(make_app(config(op_a, op_b, *ROUTED))).test_client()
    idp_a.answers["a-token"] = answer(clock, CLIENT_ID)
    idp_b.status = 500
    assert client.get("/s/database-migration", headers=bearer("a-token")).status_code == 200
    assert client.get("/s/database-migration", headers=bearer("bt_token")).status_code == 503
    # B's discovery down too: still only B's callers notice
    op_b.down = True
    idp_a.answers["a-token-2"] = answer(clock, CLIENT_ID)
    assert client.get("/s/database-migration", headers=bearer("a-token-2")).status_code == 200
    assert [c["token"] for c in idp_b.calls] == ["bt_token"]


def test_one_providers_outage_does_not_use_up_another_providers_limit(make_app, two, clock):
    """One address (an API gateway, a backend calling for many users) sends
    tokens of both providers. B is down: its calls fail, and each counted
    against the address's introspection limit -- so after B's outage had used
    the limit up, A's valid tokens from the same address were 429 too. The
    limit is kept per provider and address: it protects each IdP from made-up
    tokens, and one IdP's trouble stays with its own callers."""
    op_a, op_b, idp_a, idp_b = two
    client = add_skill_routes(make_app(config(op_a, op_b, *ROUTED),
                                       CCSSO_BEARER_INTROSPECTION_LIMIT=INTROSPECTION_LIMIT)).test_client()
    gateway = {"REMOTE_ADDR": "192.0.2.50"}
    idp_b.status = 500
    for i in range(INTROSPECTION_LIMIT + 3):
        assert client.get("/me", headers=bearer(f"bt_user-{i}"), environ_base=gateway).status_code in (503, 429)
    assert len(idp_b.calls) == INTROSPECTION_LIMIT  # B is still spared a flood
    idp_a.answers["a-user-token"] = answer(clock, CLIENT_ID)
    resp = client.get("/s/database-migration", headers=bearer("a-user-token"), environ_base=gateway)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    # and made-up A tokens from that address are limited on their own count
    for i in range(INTROSPECTION_LIMIT):
        client.get("/me", headers=bearer(f"made-up-{i}"), environ_base=gateway)
    assert client.get("/me", headers=bearer("made-up-x"), environ_base=gateway).status_code == 429


def test_refusals_are_cached_by_token_hash(make_app, op, clock, _idps):
    idp = _idps[0]
    idp.reset()
    idp.serve_for(op)
    from tests.support.skills import skills_config

    app = add_skill_routes(make_app(skills_config(op)))
    client = app.test_client()
    for _ in range(10):
        assert client.get("/me", headers=bearer("not-a-token")).status_code == 401
    assert len(idp.calls) == 1
    refusals = app.extensions["ccsso"].bearer_authenticator.refusals
    assert all(isinstance(k, bytes) and len(k) == 32 and b"not-a-token" not in k for k in refusals._data)
    clock.advance(31)  # refusals are remembered briefly, then asked again
    assert client.get("/me", headers=bearer("not-a-token")).status_code == 401
    assert len(idp.calls) == 2


def test_random_tokens_cost_a_bounded_number_of_idp_calls(make_app, op, clock, _idps):
    idp = _idps[0]
    idp.reset()
    idp.serve_for(op)
    from tests.support.skills import skills_config

    client = add_skill_routes(make_app(skills_config(op),
                                       CCSSO_BEARER_INTROSPECTION_LIMIT=INTROSPECTION_LIMIT)).test_client()
    attacker = {"REMOTE_ADDR": "203.0.113.9"}
    statuses = []
    with listen_to(signals.login_failed) as failed:
        for i in range(50):
            resp = client.get("/me", headers=bearer(f"random-{i}"), environ_base=attacker)
            statuses.append(resp.status_code)
    assert len(idp.calls) == INTROSPECTION_LIMIT
    assert statuses[:INTROSPECTION_LIMIT] == [401] * INTROSPECTION_LIMIT
    assert set(statuses[INTROSPECTION_LIMIT:]) == {429}
    assert {f.kwargs["reason"] for f in failed} == {"invalid_token", "rate_limited"}
    limited = client.get("/me", headers=bearer("random-x"), environ_base=attacker)
    assert limited.status_code == 429 and limited.get_json()["error"] == "rate_limited"
    # another address is not affected; an IPv6 neighbour in the same /64 is
    idp.answers["good"] = answer(clock, CLIENT_ID)
    assert client.get("/me", headers=bearer("good"), environ_base={"REMOTE_ADDR": "198.51.100.7"}).status_code == 200
    for i in range(INTROSPECTION_LIMIT):
        client.get("/me", headers=bearer(f"v6-{i}"), environ_base={"REMOTE_ADDR": f"2001:db8::{i + 1:x}"})
    assert client.get("/me", headers=bearer("v6-x"), environ_base={"REMOTE_ADDR": "2001:db8::ffff"}).status_code == 429
    # the window passes
    clock.advance(61)
    assert client.get("/me", headers=bearer("good"), environ_base=attacker).status_code == 200


def test_valid_tokens_never_use_up_the_limit(make_app, op, clock, _idps):
    idp = _idps[0]
    idp.reset()
    idp.serve_for(op)
    from tests.support.skills import skills_config

    client = add_skill_routes(make_app(skills_config(op),
                                       CCSSO_BEARER_INTROSPECTION_LIMIT=INTROSPECTION_LIMIT)).test_client()
    for i in range(INTROSPECTION_LIMIT * 2):
        idp.answers[f"good-{i}"] = answer(clock, CLIENT_ID)
        assert client.get("/me", headers=bearer(f"good-{i}")).status_code == 200
    assert len(idp.calls) == INTROSPECTION_LIMIT * 2
