"""The console's sessions section: the list, and ending one session or all of a person's, confirmed and audited."""

from __future__ import annotations

import html
import re
from typing import Any

import sqlalchemy as sa

from flask_ccsso import signals
from flask_ccsso.sessions.record import MAX_USER_AGENT, SESSION_KEY, load
from flask_ccsso.testing import csrf_token_in, listen_to
from tests.support.console import CONSOLE, OPERATOR, browser, confirm_and_post, listed
from tests.support.waiting import wait_for

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
CHROME = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/537.36 Chrome/126.0 Safari/537.36"


def _alice(app: Any, op: Any, ip: str = "203.0.113.7", ua: str = FIREFOX) -> Any:
    return browser(app, op, subject="u-alice", email="alice@example.com", ip=ip, ua=ua)


def _page(client: Any, path: str = "/sessions", **kw: Any) -> str:
    resp = client.get(CONSOLE + path, **kw)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_data(as_text=True)


def _signed_in(client: Any) -> bool:
    return client.get("/me", headers={"Accept": "application/json"}).status_code == 200


def _fingerprints(page: str, user: str = "op:u-alice") -> list[str]:
    return [fp for fp, who in listed(page) if who == user]


def test_the_list_shows_provider_address_browser_and_times(console_app: Any, op: Any) -> None:
    app = console_app()
    _alice(app, op)
    page = _page(app.test_client(identity=OPERATOR))
    (fp,) = _fingerprints(page)
    row = page[page.index(f'<tr data-session="{fp}"'):]
    row = row[:row.index("</tr>")]
    assert "alice@example.com" in row and "<td>op</td>" in row
    assert '<td data-field="ip">203.0.113.7</td>' in row
    assert html.escape(FIREFOX) in row
    assert row.count("<time datetime=") == 3  # signed in, last activity, expires
    assert "<caption>" in page


def test_the_sign_in_keeps_address_and_a_clean_bounded_user_agent(console_app: Any, op: Any) -> None:
    app = console_app()
    hostile = "Evil\x00Bot/1.0\r\n<script>x</script>" + "A" * 500
    client = _alice(app, op, ua=hostile)
    stored = app.session_interface.read_sid(client.get_cookie("ccsso_session").value)
    record = load(stored[SESSION_KEY])
    assert record.client["ip"] == "203.0.113.7"
    ua = record.client["ua"]
    assert len(ua) <= MAX_USER_AGENT and ua.startswith("Evil Bot/1.0 <script>")
    assert not any(ord(c) < 32 for c in ua)


def test_an_old_record_without_the_client_field_still_loads(console_app: Any, op: Any) -> None:
    block = {"v": 1, "rev": 0, "identity": {"subject": "s", "provider": "op"}, "tokens": None, "logout": {},
             "created": 1.0, "last_seen": 2.0}
    record = load(block)
    assert record is not None and record.client is None
    assert "client" not in record.to_json()
    assert load({**block, "client": "odd"}).client is None  # an odd one is dropped, nobody is signed out


def test_hostile_user_agent_and_email_are_escaped(console_app: Any, op: Any) -> None:
    app = console_app()
    browser(app, op, subject="u-eve", email='eve"<img src=x onerror=alert(1)>@example.com', ip="198.51.100.9",
            ua='<script>alert("ua")</script>')
    page = _page(app.test_client(identity=OPERATOR))
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&#34;ua&#34;)&lt;/script&gt;" in page
    assert "eve&#34;&lt;img src=x onerror=alert(1)&gt;@example.com" in page


def test_filter_by_person_email_or_provider_subject(console_app: Any, op: Any) -> None:
    app = console_app()
    _alice(app, op)
    browser(app, op, subject="u-bob", email="bob@example.com", ip="198.51.100.2", ua=CHROME)
    operator = app.test_client(identity=OPERATOR)
    for who in ("alice@example.com", "ALICE@example.com", "op:u-alice"):
        assert {u for _, u in listed(_page(operator, query_string={"user": who}))} == {"op:u-alice"}
    page = _page(operator, query_string={"user": "nobody@example.com"})
    assert listed(page) == [] and 'id="no-sessions"' in page


def test_the_list_is_capped_and_says_so(console_app: Any, op: Any, monkeypatch: Any) -> None:
    from flask_ccsso.console import sessions as section

    monkeypatch.setattr(section, "MAX_ROWS", 2)
    app = console_app()
    for n in range(3):
        app.test_client().sign_in({"subject": f"p{n}", "email": f"p{n}@example.com"})
    page = _page(app.test_client(identity=OPERATOR))
    assert len(listed(page)) == 2 and 'id="capped"' in page
    assert "(2 of more than 2, the first read), most recently active first" in page  # not "of all"
    assert "not the most recently\n  active of all" in page


def test_revoking_one_session_ends_exactly_that_one(console_app: Any, op: Any) -> None:
    app = console_app()
    laptop, phone = _alice(app, op), _alice(app, op, ip="198.51.100.4", ua=CHROME)
    operator = app.test_client(identity=OPERATOR)
    page = _page(operator, query_string={"user": "alice@example.com"})
    phone_fp = next(fp for fp in _fingerprints(page) if f'<tr data-session="{fp}"' in page and
                    "198.51.100.4" in page[page.index(f'<tr data-session="{fp}"'):].split("</tr>")[0])
    with listen_to(signals.console_action) as actions:
        resp = confirm_and_post(operator, f"{CONSOLE}/sessions/revoke?user=op:u-alice&session={phone_fp}")
    assert resp.status_code == 303
    assert "revoked" not in resp.headers["Location"]  # the notice rides in the session, not the URL
    assert 'id="notice"' in _page(operator, resp.headers["Location"].removeprefix(CONSOLE))
    assert not _signed_in(phone)
    assert _signed_in(laptop)
    (action,) = actions
    assert action.kwargs["action"] == "revoke_session" and action.kwargs["count"] == 1
    assert action.kwargs["identity"].email == OPERATOR["email"] and phone_fp in action.kwargs["target"]
    after = _page(operator, query_string={"user": "alice@example.com"})
    assert phone_fp not in _fingerprints(after) and len(_fingerprints(after)) == 1


def test_revoke_all_ends_every_session_on_another_host_and_is_audited(console_host: Any, op: Any,
                                                                       audit_url: str) -> None:
    host_a, host_b = console_host(), console_host()
    laptop = _alice(host_a, op)
    phone = browser(host_b, op, subject="u-alice", email="alice@example.com", ip="198.51.100.4", ua=CHROME)
    bob = browser(host_b, op, subject="u-bob", email="bob@example.com", ip="198.51.100.2", ua=CHROME)
    laptop_on_b = host_b.test_client()
    laptop_on_b.set_cookie("ccsso_session", laptop.get_cookie("ccsso_session").value)
    assert _signed_in(laptop_on_b) and _signed_in(phone)
    operator = host_a.test_client(identity=OPERATOR)
    assert len(_fingerprints(_page(operator))) == 2  # host A lists the session started on host B
    confirm = _page(operator, "/sessions/revoke-all", query_string={"user": "alice@example.com"})
    assert "End all 2 sessions" in confirm
    resp = confirm_and_post(operator, f"{CONSOLE}/sessions/revoke-all?user=alice@example.com")
    assert resp.status_code == 303
    # the sessions end on host B, which took no part in the revocation
    assert not _signed_in(laptop_on_b) and not _signed_in(phone)
    assert _signed_in(bob)
    engine = sa.create_engine(audit_url)
    try:
        def audited() -> Any:
            if not sa.inspect(engine).has_table("ccsso_audit_events"):  # the writer makes it on its first event
                return None
            with engine.connect() as conn:
                return conn.execute(sa.text("SELECT actor_email, event FROM ccsso_audit_events "
                                            "WHERE type = 'console.action'")).fetchall()
        (row,) = wait_for(audited, what="the console.action audit row")
    finally:
        engine.dispose()
    assert row[0] == OPERATOR["email"]
    assert '"revoke_user"' in row[1] and '"count":2' in row[1].replace(" ", "")


def test_the_confirmation_page_changes_nothing_and_says_what_happens(console_app: Any, op: Any) -> None:
    app = console_app()
    alice = _alice(app, op)
    operator = app.test_client(identity=OPERATOR)
    (fp,) = _fingerprints(_page(operator))
    with listen_to(signals.console_action) as actions:
        one = _page(operator, "/sessions/revoke", query_string={"user": "op:u-alice", "session": fp})
        every = _page(operator, "/sessions/revoke-all", query_string={"user": "alice@example.com"})
    assert actions == [] and _signed_in(alice)
    assert f"This ends session <code>{fp}</code>" in one and "Their other sessions keep working" in one
    assert 'id="confirm-revoke"' in one and csrf_token_in(one)
    assert "every</strong> live session" in every and 'id="own-session-warning"' not in every


def test_revoking_ones_own_session_is_warned_and_allowed(console_app: Any) -> None:
    app = console_app()
    operator = app.test_client(identity=OPERATOR)
    page = _page(operator)
    (mine,) = [fp for fp, who in listed(page) if who == "op:olivia"]
    assert "data-own-session" in page
    confirm = _page(operator, "/sessions/revoke", query_string={"user": "op:olivia", "session": mine})
    assert 'id="own-session-warning"' in confirm
    resp = confirm_and_post(operator, f"{CONSOLE}/sessions/revoke?user=op:olivia&session={mine}")
    assert resp.status_code == 303
    assert operator.get(CONSOLE + "/sessions", headers={"Accept": "text/html"}).status_code == 302  # signed out


def test_a_post_without_or_with_a_wrong_csrf_token_is_refused_and_changes_nothing(console_app: Any, op: Any) -> None:
    app = console_app()
    alice = _alice(app, op)
    operator = app.test_client(identity=OPERATOR)
    (fp,) = _fingerprints(_page(operator))
    attempts = [
        ("/sessions/revoke", {"user": "op:u-alice", "session": fp}),
        ("/sessions/revoke", {"user": "op:u-alice", "session": fp, "csrf_token": "x" * 43}),
        ("/sessions/revoke-all", {"user": "alice@example.com"}),
        ("/sessions/revoke-all", {"user": "alice@example.com", "csrf_token": "wrong"}),
    ]
    for path, form in attempts:
        with listen_to(signals.permission_denied) as denied, listen_to(signals.console_action) as actions:
            resp = operator.post(CONSOLE + path, data=form, headers={"Accept": "text/html"})
        assert resp.status_code == 400, (path, form)
        assert denied and denied[0].kwargs["reason"] == "csrf_failed"
        assert actions == []
    assert _signed_in(alice)


def test_the_session_id_never_appears_in_a_page(console_app: Any, op: Any) -> None:
    app = console_app()
    alice = _alice(app, op)
    operator = app.test_client(identity=OPERATOR)
    secrets_ = {alice.get_cookie("ccsso_session").value, operator.get_cookie("ccsso_session").value}
    secrets_ |= {app.session_interface.handle_of(s) for s in set(secrets_)}
    (fp,) = _fingerprints(_page(operator))
    pages = [_page(operator), _page(operator, query_string={"user": "op:u-alice"}),
             _page(operator, "/sessions/revoke", query_string={"user": "op:u-alice", "session": fp}),
             _page(operator, "/sessions/revoke-all", query_string={"user": "alice@example.com"})]
    for page in pages:
        for secret in secrets_:
            assert secret not in page


def test_an_unknown_fingerprint_or_person_is_a_clean_404(console_app: Any, op: Any) -> None:
    app = console_app()
    alice = _alice(app, op)
    operator = app.test_client(identity=OPERATOR)
    for path, query in [("/sessions/revoke", {"user": "op:u-alice", "session": "0123456789ab"}),
                        ("/sessions/revoke", {"user": "op:u-alice", "session": "<script>"}),
                        ("/sessions/revoke", {"user": "alice@example.com", "session": "0123456789ab"}),
                        ("/sessions/revoke-all", {"user": "nobody@example.com"}),
                        ("/sessions/revoke-all", {})]:
        resp = operator.get(CONSOLE + path, query_string=query)
        assert resp.status_code == 404, (path, query)
        body = resp.get_data(as_text=True)
        assert 'id="not-found"' in body and "<script>" not in body and "Traceback" not in body
    token = csrf_token_in(_page(operator, "/sessions/revoke-all", query_string={"user": "alice@example.com"}))
    resp = operator.post(CONSOLE + "/sessions/revoke", data={"user": "op:u-alice", "session": "0123456789ab",
                                                             "csrf_token": token})
    assert resp.status_code == 404 and _signed_in(alice)


def test_the_overview_counts_live_sessions(console_app: Any, op: Any) -> None:
    app = console_app()
    _alice(app, op)
    _alice(app, op, ip="198.51.100.4", ua=CHROME)
    page = _page(app.test_client(identity=OPERATOR), "/")
    assert re.search(r'id="count-sessions"><span class="number">3</span>\s*live sessions of 2 people', page)


def test_a_filter_that_names_nobody_sensible_is_a_clear_400(console_app: Any) -> None:
    operator = console_app().test_client(identity=OPERATOR)
    for bad in ("a" * 400 + "@example.com", "alice@example.com\nX-Injected: 1"):
        resp = operator.get(CONSOLE + "/sessions", query_string={"user": bad})
        assert resp.status_code == 400
        assert "not an email or provider:subject" in resp.get_data(as_text=True)


def _row_link(page: str, fp: str) -> str:
    """The href of the row's "End all of this person" link."""
    return html.unescape(page.split(f'id="revoke-all-{fp}"', 1)[1].split('href="', 1)[1].split('"', 1)[0])


def test_end_all_of_this_person_on_a_row_ends_that_identity_only(console_app: Any, op: Any) -> None:
    """An email is a claim any provider's user can make: the row's action names ``provider:subject``."""
    app = console_app()
    alice = _alice(app, op)
    mallory = browser(app, op, subject="u-mallory", email="alice@example.com", ip="198.51.100.9", ua=CHROME)
    operator = app.test_client(identity=OPERATOR)
    page = _page(operator)
    (fp,) = _fingerprints(page, "op:u-mallory")
    link = _row_link(page, fp)
    assert "user=op:u-mallory" in link and "alice%40example.com" not in link and "alice@example.com" not in link
    confirm = _page(operator, link.removeprefix(CONSOLE))
    assert "the identity <strong>op:u-mallory</strong> (alice@example.com, through provider op)" in confirm
    assert [i for i in re.findall(r'data-identity="([^"]+)"', confirm)] == ["op:u-mallory"]
    with listen_to(signals.console_action) as actions:
        resp = confirm_and_post(operator, link)
    assert resp.status_code == 303
    assert not _signed_in(mallory) and _signed_in(alice)
    assert actions[0].kwargs["target"] == "op:u-mallory" and actions[0].kwargs["count"] == 1


def _post_confirmed(client: Any, confirm: str, **override: Any) -> Any:
    """Post the confirmation form as a browser does: every hidden field, repeated names included."""
    fields = re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', confirm)
    data: dict[str, list[str]] = {}
    for name, value in fields:
        data.setdefault(name, []).append(html.unescape(value))
    data.update(override)
    return client.post(CONSOLE + "/sessions/revoke-all", data=data)


def test_ending_every_session_of_an_email_lists_and_ends_exactly_the_identities_shown(console_app: Any,
                                                                                     op: Any) -> None:
    app = console_app()
    alice = _alice(app, op)
    mallory = browser(app, op, subject="u-mallory", email="alice@example.com", ip="198.51.100.9", ua=CHROME)
    bob = browser(app, op, subject="u-bob", email="bob@example.com", ip="198.51.100.2", ua=CHROME)
    operator = app.test_client(identity=OPERATOR)
    listing = _page(operator, query_string={"user": "alice@example.com"})
    assert "End every session of alice@example.com (every identity with this email)" in listing
    confirm = _page(operator, "/sessions/revoke-all", query_string={"user": "alice@example.com"})
    assert "every identity with the email alice@example.com" in confirm
    assert re.findall(r'data-identity="([^"]+)"', confirm) == ["op:u-alice", "op:u-mallory"]
    assert re.findall(r'name="identity" value="([^"]+)"', confirm) == ["op:u-alice", "op:u-mallory"]
    # an identity the operator never saw is not ended, even if it names itself in the post
    late = browser(app, op, subject="u-late", email="alice@example.com", ip="198.51.100.10", ua=CHROME)
    with listen_to(signals.console_action) as actions:
        resp = _post_confirmed(operator, confirm)
    assert resp.status_code == 303
    assert not _signed_in(alice) and not _signed_in(mallory)
    assert _signed_in(late) and _signed_in(bob)
    assert actions[0].kwargs["count"] == 2 and "op:u-alice, op:u-mallory" in actions[0].kwargs["target"]
    notice = _page(operator, resp.headers["Location"].removeprefix(CONSOLE))
    assert "Ended 2 sessions of alice@example.com (op:u-alice, op:u-mallory)." in notice
    # a post naming identities that do not carry the email ends nothing
    resp = _post_confirmed(operator, confirm, identity=["op:u-bob"])
    assert resp.status_code == 404 and _signed_in(bob)


def test_a_link_cannot_show_a_revocation_notice(console_app: Any, op: Any) -> None:
    app = console_app()
    _alice(app, op)
    operator = app.test_client(identity=OPERATOR)
    forged = _page(operator, query_string={"user": "intruder@example.com", "revoked": "3"})
    assert 'id="notice"' not in forged and "Ended 3" not in forged
    (fp,) = _fingerprints(_page(operator))
    resp = confirm_and_post(operator, f"{CONSOLE}/sessions/revoke?user=op:u-alice&session={fp}")
    back = resp.headers["Location"].removeprefix(CONSOLE)
    first = _page(operator, back)
    assert '<div class="notice" id="notice" role="status">Ended 1 session of op:u-alice.</div>' in first
    assert 'id="notice"' not in _page(operator, back)  # read once
