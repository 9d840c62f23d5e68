"""With SCIM on, a bearer request reads every deprovision marker of its person in ONE store round trip.

A token names up to three markers (its email, a subject that is an email,
``provider:subject``); they used to be read one ``GET`` at a time. Counted on
the wire of a real Redis.
"""

from __future__ import annotations

from typing import Any

from tests.support.scim import create, okta_active, okta_user, scim_headers
from tests.support.skills import access_token, bearer
from tests.support.wire import count_round_trips


def test_a_bearer_request_reads_all_markers_in_one_round_trip(host: Any, op: Any, clock: Any) -> None:
    app = host()
    api = app.test_client()
    # a subject that is an email too: three markers (email, subject-as-email, provider:subject)
    token = access_token(op, clock, sub="Alice.Alias@example.com", email="alice@example.com")
    assert api.get("/me", headers=bearer(token)).status_code == 200
    wire = count_round_trips(app.extensions["ccsso"].store)
    assert api.get("/me", headers=bearer(token)).status_code == 200  # opens a counted connection
    wire.sends.clear()
    assert api.get("/me", headers=bearer(token)).status_code == 200
    assert wire.commands() == [["MGET"]], wire.sends

    idp = app.test_client()
    user = create(idp, okta_user("alice.alias@example.com"))
    assert idp.patch(f"/scim/v2/Users/{user['id']}", headers=scim_headers(),
                     json=okta_active(False)).status_code == 200
    wire.sends.clear()
    denied = api.get("/me", headers=bearer(token))
    assert denied.status_code == 401 and denied.get_json()["error"] == "deprovisioned"
    assert wire.commands()[0] == ["MGET"], wire.sends  # found by the subject-as-email marker, in the one read
