"""SCIM test helpers: the bearer secret, headers, the IdPs' documented bodies, an audit table."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from flask_ccsso.audit.sinks.sqlalchemy import audit_table

#: the bearer secret the tests' IdP sends (from the environment, as in production)
TOKEN = "scim-test-secret-" + "x" * 32


def scim_headers(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json",
            "Accept": "application/scim+json"}


PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"


def okta_user(login: str = "alice@example.com") -> dict[str, Any]:
    """Okta's documented "Create the user" body (its login domain made a real one: see
    ``tests/scim/test_okta.py::test_okta_sample_domain_is_a_clean_400``)."""
    return {"schemas": [USER], "userName": login, "name": {"givenName": "Test", "familyName": "User"},
            "emails": [{"primary": True, "value": login, "type": "work"}], "displayName": "Test User",
            "locale": "en-US", "externalId": "00ujl29u0le5T6Aj10h7", "groups": [], "password": "1mz050nq",
            "active": True}


def okta_active(active: bool) -> dict[str, Any]:
    """Okta's documented deactivation (and re-activation) PATCH."""
    return {"schemas": [PATCH_OP], "Operations": [{"op": "replace", "value": {"active": active}}]}


def create(client: Any, body: dict[str, Any], kind: str = "Users") -> dict[str, Any]:
    resp = client.post(f"/scim/v2/{kind}", headers=scim_headers(), json=body)
    assert resp.status_code == 201, resp.get_data(as_text=True)
    assert resp.mimetype == "application/scim+json"
    assert resp.headers["Location"].endswith(f"/scim/v2/{kind}/{resp.get_json()['id']}")
    return resp.get_json()


def audit_db(tmp_path: Any) -> tuple[dict[str, Any], str]:
    """A logging block writing every event to a SQLite audit table, and the table's URL."""
    url = f"sqlite:///{tmp_path}/audit.db"
    return {"level": "audit", "destinations": [{"type": "sqlalchemy", "url": url}], "flushInterval": 0.05}, url


def audit_rows(url: str, event_type: str) -> list[dict[str, Any]]:
    """The events of ``event_type`` in the audit table, as JSON objects."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            table = audit_table()
            rows = conn.execute(sa.select(table.c.event).where(table.c.type == event_type)).all()
    except sa.exc.OperationalError:  # the table is made by the sink's first write
        return []
    finally:
        engine.dispose()
    return [json.loads(r.event) for r in rows]
