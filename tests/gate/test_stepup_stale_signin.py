"""Review: a step-up round trip in which the IdP hands back the old sign-in.

With ``maxAuthAge`` at or below ``clockSkew`` the time checks alone cannot
tell an unchanged ``auth_time`` from a fresh one (the leeway swallows the
window). The ``auth_time`` of the session that asked is kept with the pending
sign-in and the answer must carry a newer one -- on the IdP's own clock.
"""

from __future__ import annotations

import pytest

from flask_ccsso import reasons, signals
from flask_ccsso.testing import listen_to
from tests.support.skills import add_skill_routes, sign_in, skills_config


def _to_idp(client, location):
    resp = client.get(location)
    assert resp.status_code == 302
    return resp.headers["Location"]


def test_unchanged_auth_time_does_not_satisfy_step_up(make_app, op, clock):
    app = add_skill_routes(make_app(skills_config(op, clockSkew=120)))
    client = app.test_client()
    t0 = int(clock.now)
    sign_in(client, op, clock, groups=["devops-engineers"], auth_time=t0)
    clock.advance(90)  # "quick" needs a sign-in within 60 s; the leeway is 120 s
    resp = client.get("/s/quick")
    assert resp.status_code == 302 and "stepup=quick" in resp.headers["Location"]
    url = _to_idp(client, resp.headers["Location"])
    with listen_to(signals.stepup_satisfied) as satisfied, listen_to(signals.login_failed) as failed:
        sign_in(client, op, clock, url=url, groups=["devops-engineers"], auth_time=t0, expect=400)
    assert satisfied == [] and failed[-1].kwargs["reason"] == reasons.STEPUP_NOT_SATISFIED
    # a real re-authentication (newer auth_time, even one far behind our clock) works
    resp = client.get("/s/quick")
    url = _to_idp(client, resp.headers["Location"])
    sign_in(client, op, clock, url=url, groups=["devops-engineers"], auth_time=t0 + 1)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), "123", True])
def test_identity_never_keeps_a_non_finite_auth_time(bad):
    from flask_ccsso.gate.freshness import auth_age
    from flask_ccsso.identity import Identity

    ident = Identity(subject="s", provider="p", auth_time=bad)
    assert ident.auth_time is None
    assert Identity.from_dict({"subject": "s", "provider": "p", "auth_time": bad}).auth_time is None
    assert auth_age(ident, lambda: 1000.0) is None


def test_stored_identity_with_a_string_for_groups_is_not_split_into_letters():
    from flask_ccsso.identity import Identity

    ident = Identity.from_dict({"subject": "s", "provider": "p", "groups": "database-admins", "scopes": ["a", 1]})
    assert ident.groups == frozenset() and ident.scopes == frozenset({"a"})
