"""The operator console: what the session store and the audit trail know, and the actions operators take.

Opt-in (``console: {enabled: true, skill: "sso-operator"}``): ``init_app``
calls :func:`register_console`, which mounts the pages at
``console.urlPrefix`` (default ``/sso-console``).

Every page and action goes through one guard (:func:`_guard`), for the same
reasons as any protected view:

* the operator needs ``console.skill`` -- decided by the one skill evaluator
  the gate uses (:func:`~flask_ccsso.gate.decorators.enforce`), so a stale
  sign-in is asked to step up when the skill is ``sensitive`` (the config
  refuses a console skill that is not, unless told otherwise);
* only a browser session counts: a bearer token is refused, because the
  console's protections (CSRF token, confirmation page) are a browser's;
* a request another site started (``Sec-Fetch-Site: cross-site`` or
  ``same-site``) runs nothing, whatever its method (:func:`_other_site`):
  ``SameSite=Lax`` sends the cookie along on a top-level GET, and a sibling
  subdomain's ``<img>`` is same-site, so without this a link could make the
  operator's browser run, say, a filter that is refused and audited. A
  sub-request (an ``<img>``, a ``fetch``, a form post) is refused
  (:class:`~flask_ccsso.exceptions.CSRFError`, audited as
  ``permission.denied``, reason ``csrf_failed``); a top-level
  navigation -- a link from an alert, or the landing after signing in at an
  IdP on another site, whose redirects keep ``cross-site`` -- gets a page with
  a link to what it asked for instead (nothing run, nothing audited: the
  operator's own click then comes from this origin);
* every state-changing request carries this session's CSRF token
  (:func:`~flask_ccsso.csrf.check_csrf`), and a refusal is audited as
  ``permission.denied`` (reason ``csrf_failed``). What reads a lot or reaches
  out -- the exports, the chain verification, "Run checks" -- is a POST for
  that reason, though it changes nothing;
* every action is confirmed on a page of its own (a GET that changes
  nothing) and then audited as ``console.action`` (:func:`record_action`)
  with the operator as actor.

The pages load one script of the package's own (the chart library, served from
``static/``, never from a CDN: the console works offline), so they get their
own Content-Security-Policy (:data:`CONSOLE_CSP`): scripts and styles from
this origin only, nothing framed, no referrer.

The sections live in modules of their own, each adding its routes to the one
blueprint (``register(bp)``): :mod:`.sessions`, :mod:`.audit`,
:mod:`.charts`, :mod:`.skills`, :mod:`.providers`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response, g, request
from flask.typing import ResponseReturnValue

from .. import reasons, signals
from .._context import current_flask_app
from ..csrf import SAFE_METHODS, CSRFError, announce, check_csrf, csrf_token
from ..exceptions import SkillRequired
from ..gate.decorators import enforce
from ..responses import render_page

if TYPE_CHECKING:
    from ..config import ConsoleSettings
    from ..identity import Identity

#: the blueprint's name (endpoints are ``ccsso_console.<view>``)
BLUEPRINT = "ccsso_console"

#: what every console response carries: the package's own scripts and styles
#: only (the chart library is vendored), nothing else loads, nothing frames it
CONSOLE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
               "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
CONSOLE_HEADERS = {
    "Content-Security-Policy": CONSOLE_CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

#: (endpoint, label) of the navigation, in order
NAV: list[tuple[str, str]] = [
    ("ccsso_console.index", "Overview"),
    ("ccsso_console.sessions", "Sessions"),
    ("ccsso_console.audit", "Audit"),
    ("ccsso_console.charts", "Charts"),
    ("ccsso_console.skills", "Skills"),
    ("ccsso_console.providers", "Identity providers"),
]


def operator() -> Identity:
    """The operator of this console request (set by the guard)."""
    ident: Identity = g._ccsso_operator
    return ident


def settings() -> ConsoleSettings:
    """The ``console`` block of this app."""
    from ..state import get_state
    return get_state().config.console


def record_action(action: str, target: str, count: int = 1, *, app: Flask | None = None,
                  identity: Identity | None = None) -> None:
    """Announce a confirmed console action as ``console.action`` (the audit trail records it).

    ``app`` and ``identity`` (default: this request's) are for an action that ends after its
    request, such as an export whose client went away before its first line.
    """
    signals.console_action.send(app if app is not None else current_flask_app(),
                                identity=identity if identity is not None else operator(), action=action,
                                target=target, count=count, reason=reasons.OPERATOR)


def page(template: str, **context: Any) -> str:
    """Render a console page (``ccsso/console/<template>``) with its navigation."""
    context.setdefault("nav", [(endpoint, label) for endpoint, label in NAV])
    if "operator" not in context:  # (a page the guard answers before it knows the operator passes None)
        context["operator"] = operator()
    context.setdefault("csrf_token", csrf_token)
    return render_page(f"ccsso/console/{template}", **context)


#: ``Sec-Fetch-Site`` values of requests another site started (the browser says so; an absent
#: header -- an older browser, a script -- is left to the CSRF token, as ``none`` and ``same-origin`` are)
OTHER_SITE = frozenset({"cross-site", "same-site"})


def _other_site() -> ResponseReturnValue | None:
    """Refuse a request another site started, before anything is run or audited.

    A top-level GET navigation gets a 403 page linking to the same URL (a landing
    after an IdP sign-in is one, so it is not audited); anything else -- an
    ``<img>``, a ``fetch``, a form post -- is a :class:`CSRFError`, audited.
    """
    if request.headers.get("Sec-Fetch-Site", "").strip().lower() not in OTHER_SITE:
        return None
    navigation = (request.method in ("GET", "HEAD")
                  and request.headers.get("Sec-Fetch-Mode", "").lower() == "navigate"
                  and request.headers.get("Sec-Fetch-Dest", "").lower() == "document")
    if navigation:
        target = request.script_root + (request.full_path if request.query_string else request.path)
        # a path on this origin: never "//host/..." (which a browser reads as another host)
        return page("other_site.html", title="Open the console", nav=[], operator=None,
                    target="/" + target.lstrip("/")), 403
    exc = CSRFError("This request came from another site and was refused.", check="cross_site")
    announce(exc)
    raise exc


def _guard() -> ResponseReturnValue | None:
    """Every console request: from this origin, a browser session holding the console skill, and a CSRF
    token when it changes state."""
    if request.endpoint == f"{BLUEPRINT}.static":
        return None
    refused = _other_site()
    if refused is not None:
        return refused
    if request.headers.get("Authorization", "")[:7].lower() == "bearer ":
        signals.permission_denied.send(current_flask_app(), identity=None, skill=settings().skill, skills=[],
                                       reason=reasons.BROWSER_ONLY, condition=None, via="bearer",
                                       endpoint=request.endpoint)
        raise SkillRequired("The operator console is for signed-in browsers; bearer tokens are not accepted.",
                            skill=settings().skill or "", reason=reasons.BROWSER_ONLY)
    g._ccsso_operator = enforce(settings().skill or "")
    if request.method not in SAFE_METHODS:
        try:
            check_csrf()
        except CSRFError as exc:
            announce(exc)
            raise
    return None


def _headers(response: Response) -> Response:
    for name, value in CONSOLE_HEADERS.items():
        response.headers[name] = value
    return response


def make_blueprint() -> Blueprint:
    """The console blueprint with every section's routes."""
    from . import audit, charts, overview, providers, sessions, skills

    bp = Blueprint(BLUEPRINT, __name__, static_folder="static", static_url_path="/static")
    bp.before_request(_guard)
    bp.after_request(_headers)
    for section in (overview, sessions, audit, charts, skills, providers):
        section.register(bp)
    return bp


def register_console(app: Flask, console: ConsoleSettings) -> None:
    """Mount the console at ``console.url_prefix`` (``init_app``, when ``console.enabled``)."""
    app.register_blueprint(make_blueprint(), url_prefix=console.url_prefix)


__all__ = ["BLUEPRINT", "CONSOLE_CSP", "make_blueprint", "operator", "page", "record_action", "register_console"]
