"""The example portal: a deploy posted on a stale sign-in is not silently dropped (issue 14, item 11).

Carol's sign-in is older than ``maxAuthAge``; she presses Deploy. The post
goes to the dev IdP for step-up first (nothing is deployed: the post cannot
be replayed after the round trip); she signs in again and is back on the
deploy page, which says that nothing was deployed and she must press Deploy
again. The notice shows once. Real parts: the dev IdP's sign-in form and
its back channel over real HTTP.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask_ccsso import signals
from flask_ccsso.testing import csrf_token_in, listen_to
from tests.support.example import Portal, follow_sign_in, sign_in


def test_stale_deploy_post_comes_back_to_the_form_with_a_notice(example_portal: Portal) -> None:
    client = sign_in(example_portal, "carol")
    form = client.get("/deploy")
    assert form.status_code == 200 and 'id="resubmit"' not in form.get_data(as_text=True)
    token = csrf_token_in(form)
    example_portal.clock.advance(1000)  # older than session.maxAuthAge (900 s)
    with listen_to(signals.skill_invoked) as ran, listen_to(signals.stepup_required) as asked:
        posted = client.post("/deploy", data={"environment": "production", "csrf_token": token},
                             headers={"Referer": f"{example_portal.base}/deploy"})
    assert posted.status_code == 302 and "stepup=infrastructure-deploy" in posted.location
    assert ran == [] and [a.kwargs["skill"] for a in asked] == ["infrastructure-deploy"]
    landing = follow_sign_in(client, posted, "carol")
    assert urlsplit(landing.location).path == "/deploy"
    page = client.get("/deploy")
    body = page.get_data(as_text=True)
    assert page.status_code == 200
    assert 'id="resubmit"' in body and "Nothing was deployed yet" in body and "press Deploy again" in body
    assert 'id="deployed"' not in body  # nothing ran
    assert 'id="resubmit"' not in client.get("/deploy").get_data(as_text=True)  # shown once
    # pressing Deploy again, on the fresh sign-in, deploys
    done = client.post("/deploy", data={"environment": "production", "csrf_token": csrf_token_in(page)})
    assert done.status_code == 200 and "Deployment to production started" in done.get_data(as_text=True)


def test_stale_deploy_post_without_referer_still_comes_back_to_the_form(example_portal: Portal) -> None:
    """Browsers may send no Referer (a strict Referrer-Policy): the deploy route answers GET, so back there."""
    client = sign_in(example_portal, "carol")
    token = csrf_token_in(client.get("/deploy"))
    example_portal.clock.advance(1000)
    posted = client.post("/deploy", data={"environment": "staging", "csrf_token": token})
    landing = follow_sign_in(client, posted, "carol")
    assert urlsplit(landing.location).path == "/deploy"
    assert 'id="resubmit"' in client.get("/deploy").get_data(as_text=True)
