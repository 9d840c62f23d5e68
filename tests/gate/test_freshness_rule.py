"""One freshness rule (issue #11): every part of the package that asks "is this
sign-in recent enough?" gives the same answer, because they all ask
:func:`flask_ccsso.identity.auth_time_problem`.

Before, an ``auth_time`` one hour in the future was fresh for
``session.is_fresh`` (now ``gate.freshness.is_fresh``; the age was clamped at zero) and stale for the skill
check (``stepup.check_freshness``).
"""

from __future__ import annotations

from typing import Any

import pytest

from flask_ccsso import AuthenticationFailed, Identity
from flask_ccsso.gate.freshness import is_fresh
from tests.support import DATA
from tests.support.skills import skills_config

MAX_AGE = 60  # the "quick" skill's maxAuthAge


def _answers(app: Any, clock: Any, auth_time: float | None) -> dict[str, bool]:
    state = app.extensions["ccsso"]
    ident = Identity(subject="s", provider="op", groups=frozenset({"devops-engineers"}), auth_time=auth_time)
    skill = state.config.skills["quick"]
    prov = state.providers["op"]
    with app.test_request_context("/"):
        policy = state.policy.evaluate(skill, ident, remote_addr=None).outcome == "allowed"
        fresh = state.policy.freshness(ident, skill).fresh
        helper = is_fresh(ident, MAX_AGE)
        with_clock = is_fresh(ident, MAX_AGE, clock)
    try:
        # the step-up round trip: the provider verifies the IdP's auth_time
        prov.check_freshness({"auth_time": auth_time}, max_age=MAX_AGE, acr_values=(), force=False,
                             started_at=None)
        provider = True
    except AuthenticationFailed:
        provider = False
    return {"policy": policy, "freshness": fresh, "is_fresh": helper, "is_fresh(clock)": with_clock,
            "provider": provider, **_saml_answer(state.providers["google"], auth_time)}


def _saml_answer(prov: Any, auth_time: float | None) -> dict[str, bool]:
    """The SAML step-up return leg (``max_age`` asked). An assertion without
    an AuthnInstant never gets this far (``_check_assertion`` refuses it)."""
    if auth_time is None:
        return {}
    try:
        prov._check_step_up({"auth_instant": auth_time}, {"max_age": MAX_AGE})
    except AuthenticationFailed:
        return {"saml provider": False}
    return {"saml provider": True}


def _config(op: Any) -> dict[str, Any]:
    cfg = skills_config(op)
    cfg["auth"]["providers"]["google"] = {"provider": "saml", "spEntityId": "https://portal.example.test",
                                          "idpMetadata": str(DATA / "saml" / "google-idp-metadata.xml")}
    return cfg


@pytest.mark.parametrize(("offset", "expected"), [
    (-3600.0, False),   # an hour in the future: not believable, never fresh
    (-30.0, True),      # within the clock skew (60 s): clocks drift
    (10.0, True),       # ten seconds ago
    (10_000.0, False),  # long ago
    (None, False),      # the IdP did not say: never read as "just now"
])
def test_every_freshness_question_gets_the_same_answer(make_app, op, clock, offset, expected):
    app = make_app(_config(op))
    answers = _answers(app, clock, None if offset is None else clock.now - offset)
    assert set(answers.values()) == {expected}, answers
