"""SCIM in the example portal: the IdP's provisioning app deactivates a person who is signed in.

``CCSSO_EXAMPLE_SCIM_TOKEN`` switches SCIM on in the example (docs/example-app.md);
the person signs in through the portal's development IdP over real HTTP, and
the SCIM call ends their session before it answers.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

from flask_ccsso import signals
from flask_ccsso.testing import listen_to
from tests.support.example import Portal, follow_sign_in, sign_in

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="scim2-models needs Python 3.11")

TOKEN = "example-scim-secret-" + "y" * 32


@pytest.fixture
def scim_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCSSO_EXAMPLE_SCIM_TOKEN", TOKEN)


def test_deactivating_a_signed_in_person_ends_their_session_and_refuses_sign_in(scim_on: None,
                                                                                  example_portal: Portal) -> None:
    from tests.support.scim import okta_active, okta_user, scim_headers

    erin = sign_in(example_portal, "erin", "/access")
    assert erin.get("/access").status_code == 200
    idp = example_portal.client()
    # Okta's documented body, as its provisioning app sends it
    made = idp.post("/scim/v2/Users", headers=scim_headers(TOKEN), json=okta_user("erin@example.com"))
    assert made.status_code == 201, made.get_data(as_text=True)
    created = made.get_json()
    with listen_to(signals.user_deprovisioned) as gone:
        resp = idp.patch(f"/scim/v2/Users/{created['id']}", headers=scim_headers(TOKEN), json=okta_active(False))
    assert resp.status_code == 200 and resp.get_json()["active"] is False
    assert gone and gone[0].kwargs["count"] == 1
    ended = erin.get("/access", headers={"Accept": "text/html"})
    assert ended.status_code in (302, 401) and ended.status_code != 200
    again: Any = example_portal.client()
    with listen_to(signals.login_failed) as failed:
        start = again.get("/sso/dev/login?next=/access")
        with pytest.raises(AssertionError):
            follow_sign_in(again, start, "erin")
    assert failed and failed[0].kwargs["reason"] == "deprovisioned"


def test_scim_needs_its_secret(scim_on: None, example_portal: Portal) -> None:
    resp = example_portal.client().get("/scim/v2/Users", headers={"Authorization": "Bearer wrong"})
    assert resp.status_code == 401
