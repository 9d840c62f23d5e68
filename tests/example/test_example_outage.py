"""The example portal's outage demo (``CCSSO_EXAMPLE_OUTAGE_DEMO=1``): the everyday IdP is down,
the sign-in page offers the break-glass provider, and signing in there is announced."""

from __future__ import annotations

import html
import re
from urllib.parse import urlsplit

import pytest

from flask_ccsso import signals
from flask_ccsso.testing import listen_to
from tests.support.example import Portal, follow_sign_in


@pytest.fixture
def outage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCSSO_EXAMPLE_OUTAGE_DEMO", "1")


def test_the_dead_idp_offers_break_glass_and_its_use_is_announced(outage: None, example_portal: Portal) -> None:
    client = example_portal.client()
    page = client.get("/sso/corp/login?next=/access", headers={"Accept": "text/html"})
    assert page.status_code == 503
    body = page.get_data(as_text=True)
    assert "Corp SSO" in body and "unreachable" in body and "Break-glass: development IdP" in body
    link = html.unescape(re.search(r'href="(/sso/dev/login[^"]*)"', body).group(1))
    assert "fallback_for=corp" in link and "next=/access" in link

    with listen_to(signals.fallback_used) as used, listen_to(signals.failure_threshold) as alerts:
        landing = follow_sign_in(client, client.get(link), "erin")
    assert urlsplit(landing.location).path == "/access"
    assert client.get("/access").status_code == 200
    assert [(u.kwargs["provider"], u.kwargs["primary"]) for u in used] == [("dev", "corp")]
    assert [a.kwargs["key_type"] for a in alerts] == ["idp_fallback"]


def test_the_chooser_offers_break_glass_only_once_the_outage_is_known(outage: None, example_portal: Portal) -> None:
    client = example_portal.client()
    before = client.get("/sso/login?next=/", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert "/sso/corp/login" in before and "/sso/dev/login" not in before  # fallbackOnly: hidden
    assert client.get("/sso/corp/login", headers={"Accept": "text/html"}).status_code == 503
    chooser = client.get("/sso/login?next=/", headers={"Accept": "text/html"})
    assert chooser.status_code == 200
    text = chooser.get_data(as_text=True)
    assert "unreachable" in text and "/sso/dev/login" in text


def test_a_plain_sign_in_at_the_break_glass_provider_is_announced_too(outage: None, example_portal: Portal) -> None:
    """No banner link: the portal checks Corp SSO, finds it down, and the sign-in is a fallback sign-in."""
    client = example_portal.client()
    with listen_to(signals.fallback_used) as used:
        follow_sign_in(client, client.get("/sso/dev/login?next=/"), "erin")
    assert [(u.kwargs["provider"], u.kwargs["primary"]) for u in used] == [("dev", "corp")]
