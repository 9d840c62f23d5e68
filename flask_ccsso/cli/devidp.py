"""``flask ccsso devidp-token``: an access token from the development IdP, without a browser.

**Development only.** The command loads the app (``flask --app ...``), finds
the development IdP mounted on it and asks that IdP's own issuing code for the
access token its ``/token`` endpoint would hand out after the person signed in
just now. Only the token goes to stdout, so::

    TOKEN=$(CCSSO_DEVIDP_ENABLED=1 flask --app example_app ccsso devidp-token --user alice)
    curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:5000/api/migrations

It refuses (exit 2) unless a development IdP is mounted on the app and both of
its switches are on (``enabled=True`` in code and ``CCSSO_DEVIDP_ENABLED=1``).
"""

from __future__ import annotations

import time
from typing import NoReturn

import click
from flask import Flask

from ..devidp.server import ENABLE_ENV_VAR, WARNING_TEXT, _check_switches, _IdP
from ._common import fail, load_app, with_app

__all__ = ["devidp_token", "find_devidp"]


def find_devidp(app: Flask) -> _IdP | None:
    """The development IdP mounted on ``app`` (by ``DevIdP`` or ``create_devidp_blueprint``), or None."""
    for bp in app.blueprints.values():
        idp = getattr(bp, "ccsso_devidp", None)
        if isinstance(idp, _IdP):
            return idp
    return None


def _fail(message: str) -> NoReturn:
    fail(f"devidp-token: {message}")


def _warn_loudly() -> None:
    bar = "!" * 72
    lines = (
        bar,
        f"  {WARNING_TEXT}",
        "  This token was minted by a command line, with no password and no browser:",
        "  anyone who can run this app's CLI can be anyone. Never in production.",
        bar,
    )
    for line in lines:
        click.secho(line, fg="red", bold=True, err=True)


@click.command("devidp-token")
@click.option("--user", "username", required=True, metavar="USERNAME", help="Who the token is for (alice, bob, ...).")
@click.option(
    "--scope",
    metavar="SCOPES",
    default=None,
    help="Space-separated scopes to ask for. Default: every scope the IdP knows; "
    "custom scopes the user is not allowed are dropped, as at /authorize.",
)
@click.option(
    "--client", "client_id", metavar="ID", default=None, help="The DevClient it is issued to (default: the only one)."
)
@click.option("--mfa", is_flag=True, help="As if 'Use MFA' was ticked (acr urn:ccsso:mfa, amr pwd+otp).")
@with_app
def devidp_token(username: str, scope: str | None, client_id: str | None, mfa: bool) -> None:
    """Print an access token from the development IdP (development only).

    Only the token is printed on stdout (TOKEN=$(flask ... devidp-token --user
    alice) works); what was granted, and a warning, go to stderr. Exit 2 if
    no development IdP is enabled on the app, or the user, client or a scope is
    unknown.
    """
    idp = find_devidp(load_app())
    if idp is None:
        _fail(
            "no development IdP is mounted on this app (DevIdP(app, ..., enabled=True) or "
            "app.register_blueprint(create_devidp_blueprint(...))). This command only issues "
            "development tokens; get real ones from your IdP."
        )
    try:  # the same double switch (and loopback rule) the IdP checked when it started
        _check_switches(idp.enabled, idp.issuer, idp.allow_non_loopback)
    except RuntimeError as exc:
        _fail(str(exc))
    if client_id is None:
        if len(idp.clients) != 1:
            _fail(
                f"this development IdP has several clients; pick one with --client ({', '.join(sorted(idp.clients))})."
            )
        client_id = next(iter(idp.clients))
    try:
        token, claims, requested = idp.issue_access_token(client_id=client_id, username=username, scope=scope, mfa=mfa)
    except (LookupError, ValueError) as exc:
        _fail(str(exc.args[0]) if exc.args else str(exc))
    _warn_loudly()
    granted = str(claims["scope"]).split()
    dropped = [s for s in requested.split() if s not in granted]
    expires = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(int(claims["exp"])))
    click.echo(f"devidp-token: {ENABLE_ENV_VAR}=1, issuer {idp.issuer}", err=True)
    click.echo(f"  user:     {username} (sub {claims['sub']}, groups {', '.join(claims['groups']) or '-'})", err=True)
    click.echo(f"  client:   {client_id}, audience {claims['aud']}", err=True)
    click.echo(f"  scope:    {' '.join(granted) or '(none)'}", err=True)
    if dropped:
        click.echo(f"  dropped:  {' '.join(dropped)} (not allowed for {username})", err=True)
    click.echo(f"  acr:      {claims['acr']}; auth_time now; expires {expires}", err=True)
    click.echo(token)
