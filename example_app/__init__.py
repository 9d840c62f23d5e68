"""An internal portal built on flask-ccsso: the example app.

Run it on your machine with no identity-provider account (the development
IdP is mounted in the same process)::

    pip install -e '.[all]'
    CCSSO_DEVIDP_ENABLED=1 flask --app example_app run --port 5000

then open http://127.0.0.1:5000 and sign in as alice, bob, carol, dave or erin.

The same app signs in through Okta, Azure AD (Entra ID) or Google Workspace
when ``CCSSO_EXAMPLE_IDP`` is ``okta``, ``azure`` or ``google`` and the
provider's variables are set (see docs/okta.md, docs/azure-ad.md,
docs/google-workspace.md). Only the ``auth`` block changes: it comes from
``ccsso.<idp>.json``; skills, session and logging stay in ``ccsso.json``.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, abort, current_app, jsonify, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from flask_ccsso import (
    CCSSO,
    SkillRequired,
    csrf_protect,
    current_identity,
    get_state,
    login_required,
    requires_skill,
    stepup_notice,
)
from flask_ccsso.config import load_file
from flask_ccsso.gate.freshness import max_auth_age

log = logging.getLogger("example_app")

HERE = os.path.dirname(os.path.abspath(__file__))

#: ``CCSSO_EXAMPLE_IDP`` value -> file holding the ``auth`` block
IDP_FILES = {
    "dev": "ccsso.json",
    "okta": "ccsso.okta.json",
    "azure": "ccsso.azure.json",
    "google": "ccsso.google.json",
}
DEFAULT_BASE_URL = "http://127.0.0.1:5000"

#: the pages of the portal, one per skill of ccsso.json (endpoint, title)
SKILL_PAGES = {
    "database-migration": ("migrations", "Database migrations"),
    "security-audit": ("security_audit", "Security audit"),
    "infrastructure-deploy": ("deploy", "Infrastructure deploy"),
}

MIGRATIONS = [
    {"id": "2026_11_01_add_audit_index", "state": "applied", "author": "alice"},
    {"id": "2026_11_18_split_accounts_table", "state": "pending", "author": "erin"},
    {"id": "2026_11_24_drop_legacy_tokens", "state": "pending", "author": "alice"},
]


def base_url() -> str:
    """Where the portal is served (``CCSSO_EXAMPLE_BASE_URL``); the dev IdP's issuer is below it."""
    return (os.environ.get("CCSSO_EXAMPLE_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def _flask_run_address() -> str | None:
    """``http://<host>:<port>`` of a ``flask run`` that is loading this app, else None.

    ``flask --app example_app run --port 5001`` then works without also
    setting ``CCSSO_EXAMPLE_BASE_URL`` (the dev IdP's issuer and the redirect
    URI must name the port the browser uses).
    """
    try:
        import click
    except ImportError:  # pragma: no cover - Flask depends on click
        return None
    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.info_name != "run" or "port" not in ctx.params:
        return None
    host = str(ctx.params.get("host") or "127.0.0.1")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{int(ctx.params['port'])}"


def selected_idp() -> str:
    idp = os.environ.get("CCSSO_EXAMPLE_IDP", "dev").strip().lower() or "dev"
    if idp not in IDP_FILES:
        raise RuntimeError(f"CCSSO_EXAMPLE_IDP={idp!r} is not one of {', '.join(IDP_FILES)}.")
    return idp


def load_example_config(instance_path: str, idp: str) -> dict[str, Any]:
    """ccsso.json, with the ``auth`` block swapped for the chosen IdP's file.

    ``{instance}`` in an audit destination URL stands for the app's instance
    folder (a convention of this example, so the SQLite file lands there
    whatever the working directory). ``${VAR}`` is left to flask-ccsso.
    """
    data = load_file(os.path.join(HERE, "ccsso.json"))
    if idp != "dev":
        data["auth"] = load_file(os.path.join(HERE, IDP_FILES[idp]))["auth"]
    for dest in (data.get("logging") or {}).get("destinations") or []:
        if isinstance(dest.get("url"), str):
            dest["url"] = dest["url"].replace("{instance}", instance_path)
    return data


def create_app(test_config: Mapping[str, Any] | None = None, *, clock: Callable[[], float] | None = None,
               http: Any = None, store: Any = None) -> Flask:
    """The portal's app factory (``flask --app example_app run``).

    :param test_config: values put into ``app.config`` before flask-ccsso
        starts (tests: ``TESTING``, ``SERVER_NAME`` ...).
    :param clock: passed to ``CCSSO`` and to the dev IdP (tests move time).
    :param http: a ``requests.Session`` for the back channel (tests route it
        into the app in-process).
    :param store: a shared store for ``CCSSO`` (tests).
    """
    instance = (test_config or {}).get("INSTANCE_PATH") or os.environ.get("CCSSO_EXAMPLE_INSTANCE") or None
    app = Flask(__name__, instance_path=instance)
    app.config.from_mapping(
        SECRET_KEY=os.environ.get("SECRET_KEY"),
        CCSSO_TRUSTED_PROXIES=int(os.environ.get("CCSSO_TRUSTED_PROXIES", "0")),
        CCSSO_APP_NAME="Internal portal",  # "Back to Internal portal" on the library's pages
    )
    if test_config:
        app.config.from_mapping({k: v for k, v in test_config.items() if k != "INSTANCE_PATH"})
    if not app.config["SECRET_KEY"]:
        # fine on a laptop (sessions live server-side; a restart only signs people out)
        app.config["SECRET_KEY"] = secrets.token_hex(32)
        log.warning("example_app: SECRET_KEY is not set; using a random key for this process.")
    os.makedirs(app.instance_path, exist_ok=True)

    idp = app.config.get("CCSSO_EXAMPLE_IDP") or selected_idp()
    app.config["CCSSO_EXAMPLE_IDP"] = idp
    if not os.environ.get("CCSSO_EXAMPLE_BASE_URL"):
        served = _flask_run_address()
        if served and urlsplit(served).hostname in ("127.0.0.1", "localhost", "::1"):
            # ccsso.json reads ${CCSSO_EXAMPLE_BASE_URL}: make it the address flask run serves on
            os.environ["CCSSO_EXAMPLE_BASE_URL"] = served
    if idp == "dev":
        # ccsso.json reads the dev client's secret from ${CCSSO_EXAMPLE_DEV_SECRET} (a config file may not
        # hold a literal secret, not even as a :-default); the in-process dev IdP and the portal share it
        os.environ.setdefault("CCSSO_EXAMPLE_DEV_SECRET", "dev-secret")
    if app.config.get("CCSSO") is None and not app.config.get("CCSSO_CONFIG_FILE"):
        app.config["CCSSO"] = load_example_config(app.instance_path, idp)
    if isinstance(app.config.get("CCSSO"), dict):
        _apply_demo_knobs(app.config["CCSSO"])

    if idp == "dev":
        _mount_dev_idp(app, clock)

    kwargs: dict[str, Any] = {}
    if clock is not None:
        kwargs["clock"] = clock
    if http is not None:
        kwargs["http"] = http
    if store is not None:
        kwargs["store"] = store
    CCSSO(app, **kwargs)
    _start_audit_if_needed(app)
    _add_template_helpers(app)
    _add_views(app)
    return app


def _apply_demo_knobs(cfg: dict[str, Any]) -> None:
    """The example's environment knobs, each changing one block of the config:

    * ``CCSSO_EXAMPLE_MAX_AUTH_AGE`` -- how old a sign-in may be for a sensitive skill (seconds);
    * ``CCSSO_EXAMPLE_REDIS_URL`` -- keep sessions in Redis (``CCSSO_EXAMPLE_REDIS_PREFIX``, default
      ``ccsso-example:``), so several portal processes or hosts share them (and a revoke in the
      operator console ends a session on all of them);
    * ``CCSSO_EXAMPLE_SCIM_TOKEN`` -- serve SCIM 2.0 at ``/scim/v2`` with this bearer secret (≥ 32
      characters; needs ``pip install 'flask-ccsso[scim]'``, Python 3.11 or later), as an IdP's
      provisioning app would call it;
    * ``CCSSO_EXAMPLE_OUTAGE_DEMO=1`` -- an everyday IdP that is down, with a break-glass fallback
      (:func:`_add_outage_demo`).
    """
    if "CCSSO_EXAMPLE_MAX_AUTH_AGE" in os.environ:
        cfg.setdefault("session", {})["maxAuthAge"] = float(os.environ["CCSSO_EXAMPLE_MAX_AUTH_AGE"])
    if os.environ.get("CCSSO_EXAMPLE_REDIS_URL"):
        cfg.setdefault("session", {})["store"] = {
            "type": "redis", "url": "${CCSSO_EXAMPLE_REDIS_URL}",
            "keyPrefix": os.environ.get("CCSSO_EXAMPLE_REDIS_PREFIX") or "ccsso-example:"}
    if os.environ.get("CCSSO_EXAMPLE_SCIM_TOKEN"):
        cfg["scim"] = {"enabled": True, "token": "${CCSSO_EXAMPLE_SCIM_TOKEN}"}
    if os.environ.get("CCSSO_EXAMPLE_OUTAGE_DEMO") == "1" and "dev" in cfg.get("auth", {}).get("providers", {}):
        _add_outage_demo(cfg["auth"]["providers"])


#: where the outage demo's everyday IdP "lives": the discard port, where nothing answers
OUTAGE_DEMO_ISSUER = "http://127.0.0.1:9/corp"


def _add_outage_demo(providers: dict[str, Any]) -> None:
    """``CCSSO_EXAMPLE_OUTAGE_DEMO=1``: an everyday provider ``corp`` whose IdP cannot be
    reached, with the development IdP as its ``fallback`` (the break-glass provider of
    docs/production.md), marked ``fallbackOnly``: it shows only once Corp SSO is known to
    be down. Corp's sign-in answers with the fallback page; signing in at the development
    IdP records ``auth.fallback_used``."""
    dev = providers["dev"]
    dev["displayName"] = "Break-glass: development IdP"
    dev["fallbackOnly"] = True
    providers["corp"] = {**{k: v for k, v in dev.items() if k in ("provider", "clientId", "clientSecret", "scopes")},
                         "displayName": "Corp SSO", "issuer": OUTAGE_DEMO_ISSUER,
                         "redirectUri": "${CCSSO_EXAMPLE_BASE_URL:-http://127.0.0.1:5000}/sso/corp/callback",
                         "fallback": ["dev"]}


def _under_flask_command() -> bool:
    """This process is a ``flask`` command (``flask --app example_app run``,
    ``... ccsso devidp-token``) that is loading the app."""
    try:
        import click
        from flask.cli import ScriptInfo
    except ImportError:  # pragma: no cover - Flask depends on click
        return False
    ctx = click.get_current_context(silent=True)
    return ctx is not None and ctx.find_object(ScriptInfo) is not None


def dev_idp_switched_on_in_code(app: Flask) -> bool:
    """The example's *code* switch for the development IdP (``enabled=``).

    The development IdP starts only when the code says so *and*
    ``CCSSO_DEVIDP_ENABLED=1`` is set; a hard-coded ``enabled=True`` would
    leave the environment variable as the only guard. This example says so
    only in a development process: ``CCSSO_EXAMPLE_DEVIDP`` in the app's
    config when given (``python -m example_app`` sets it), else under the
    ``flask`` command, with ``--debug``, or in tests (``TESTING``). Served
    by a production WSGI server (``gunicorn 'example_app:create_app()'``)
    it stays off even if the environment variable leaked into the deployment.
    """
    explicit = app.config.get("CCSSO_EXAMPLE_DEVIDP")
    if explicit is not None:
        return bool(explicit)
    return bool(app.testing or app.debug or _under_flask_command())


def _mount_dev_idp(app: Flask, clock: Callable[[], float] | None) -> None:
    """The development IdP, in this process, at ``<base>/devidp``.

    It answers only this machine (loopback peers) unless
    ``CCSSO_DEVIDP_ALLOW_REMOTE=1`` is set; see :mod:`flask_ccsso.devidp`.
    """
    from flask_ccsso.devidp import DevClient, DevIdP

    base = base_url()
    host = urlsplit(base).hostname or ""
    kwargs: dict[str, Any] = {}
    if clock is not None:
        kwargs["clock"] = clock
    secret = os.environ.get("CCSSO_EXAMPLE_DEV_SECRET", "dev-secret")
    try:
        DevIdP(
            app,
            issuer=f"{base}/devidp",
            enabled=dev_idp_switched_on_in_code(app),
            clients=[DevClient("portal", secret, [f"{base}/sso/dev/callback"],
                               post_logout_redirect_uris=[f"{base}/sso/logged-out", f"{base}/"])],
            **kwargs,
        )
    except RuntimeError as exc:
        raise RuntimeError(
            f"{exc}\n\nThe example portal signs in through the development IdP by default, and switches it on "
            "in code only in a development process (the flask command, python -m example_app, --debug or "
            "TESTING). Start it with\n"
            "    CCSSO_DEVIDP_ENABLED=1 flask --app example_app run --port 5000\n"
            "or pick a real IdP with CCSSO_EXAMPLE_IDP=okta|azure|google (see docs/)."
        ) from None
    if host not in ("127.0.0.1", "localhost", "::1", "[::1]"):  # pragma: no cover - DevIdP refuses first
        raise RuntimeError("The development IdP only runs on a loopback address.")

    @app.before_request
    def _one_host_name() -> Response | tuple[str, int, dict[str, str]] | None:
        # the IdP's cookie and the portal's belong to the host name the browser
        # sees: keep everyone on the configured one (127.0.0.1 vs localhost)
        want = urlsplit(base)
        if request.host == want.netloc or app.testing:
            return None
        got_port = urlsplit(f"//{request.host}").port or 80
        if got_port != (want.port or 80):
            # another port: a redirect would leave this server; say what to do instead
            message = (f"This portal was started for {base} (CCSSO_EXAMPLE_BASE_URL), but you opened it at "
                       f"{request.host_url.rstrip('/')}. The development IdP's issuer and the redirect URI name "
                       f"the port, so they must match.\n\nRestart it with\n"
                       f"    CCSSO_EXAMPLE_BASE_URL=http://127.0.0.1:{got_port} CCSSO_DEVIDP_ENABLED=1 "
                       f"flask --app example_app run --port {got_port}\n")
            return message, 400, {"Content-Type": "text/plain; charset=utf-8"}
        return redirect(f"{base}{request.full_path if request.query_string else request.path}", 302)


def _start_audit_if_needed(app: Flask) -> None:
    """Start the audit pipeline when flask-ccsso has not done it itself."""
    try:
        from flask_ccsso.audit import get_pipeline, init_audit, parse_logging_block
    except ImportError:  # pragma: no cover
        return
    state = get_state(app)
    if get_pipeline(app) is not None or state.audit is not None:
        return
    settings = parse_logging_block(state.config.logging)
    if state.audit_settings is None:
        state.audit_settings = settings
    init_audit(app, settings, clock=state.clock)


# --------------------------------------------------------------------------- skills, explained

def explain_skill(name: str, identity: Any) -> dict[str, Any]:
    """Why this person has (or has not) a skill, in words.

    Uses the extension's policy (``state.policy.evaluate``: every condition,
    with an operator-facing detail) when it is there; otherwise reads the
    skill's groups and scopes from the parsed config.
    """
    state = get_state()
    skill = state.config.skills[name]
    evaluate = getattr(getattr(state, "policy", None), "evaluate", None)
    if callable(evaluate):
        decision = evaluate(skill, identity, remote_addr=request.remote_addr)
        others_pass = all(c.passed for c in decision.checks if c.condition != "maxAuthAge")
        why = []
        for c in decision.checks:
            if c.condition == "maxAuthAge":
                # how fresh the sign-in is only matters to someone who otherwise has the skill
                if others_pass:
                    why.append(_freshness_text(identity, max_auth_age(skill, state.config.session), c.passed))
                continue
            why.append(c.detail or f"{c.condition}: {'ok' if c.passed else c.reason}")
        return {"name": name, "allowed": decision.outcome in ("allowed", "step_up"), "why": why,
                "sensitive": skill.sensitive, "description": skill.description,
                "outcome": decision.outcome}
    why = []
    groups = identity.effective_groups
    ok_groups = True
    if skill.allowed_groups:
        matched = sorted(groups & set(skill.allowed_groups))
        ok_groups = bool(matched)
        why.append(f"group {', '.join(matched)} is allowed" if matched
                   else f"needs one of the groups {', '.join(skill.allowed_groups)}")
    missing = [s for s in skill.required_scopes if s not in identity.scopes]
    if skill.required_scopes:
        why.append(f"scope {', '.join(skill.required_scopes)} granted" if not missing
                   else f"scope {', '.join(missing)} not granted by the IdP")
    if skill.sensitive and ok_groups and not missing:
        why.append(_freshness_text(identity, max_auth_age(skill, state.config.session), None))
    return {"name": name, "allowed": ok_groups and not missing, "why": why, "sensitive": skill.sensitive,
            "description": skill.description, "outcome": "allowed" if ok_groups and not missing else "denied"}


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _freshness_text(identity: Any, max_age: float, fresh: bool | None) -> str:
    """"signed in 3 min ago; asks again after 15 min" for a sensitive skill."""
    auth_time = getattr(identity, "auth_time", None)
    limit = f"asks you to sign in again once your sign-in is older than {_duration(max_age)}"
    if not auth_time:
        return f"sensitive: {limit}"
    age = get_state().clock() - float(auth_time)
    if fresh is False:
        return f"signed in {_duration(age)} ago: you will be asked to sign in again ({limit.split(' once ')[1]})"
    return f"signed in {_duration(age)} ago; sensitive: {limit}"


def _has_skill_fallback(name: str) -> bool:
    if not current_identity:
        return False
    return bool(explain_skill(name, current_identity)["allowed"])


def _add_template_helpers(app: Flask) -> None:
    # ``has_skill`` is the extension's template global; older builds lack it
    app.jinja_env.globals.setdefault("has_skill", _has_skill_fallback)

    @app.context_processor
    def portal_context() -> dict[str, Any]:
        state = get_state()
        return {"current_identity": current_identity, "skill_pages": SKILL_PAGES,
                "idp_name": app.config["CCSSO_EXAMPLE_IDP"],
                "providers": list(state.providers.values())}


# --------------------------------------------------------------------------- views

def _audit_events(limit: int = 50) -> tuple[list[dict[str, Any]], str | None]:
    """Recent events from the audit database, newest first (or why there are none)."""
    state = get_state()
    settings = state.audit_settings
    if settings is None:
        from flask_ccsso.audit import get_pipeline

        pipeline = get_pipeline(current_app._get_current_object())  # type: ignore[attr-defined]
        settings = getattr(pipeline, "settings", None)
    url = getattr(settings, "database_url", None)
    if not url:
        return [], "No audit database is configured (add a sqlalchemy entry to logging.destinations)."
    from flask_ccsso.audit import get_pipeline
    from flask_ccsso.audit.sinks.sqlalchemy import make_engine, tail

    pipeline = get_pipeline(current_app._get_current_object())  # type: ignore[attr-defined]
    if pipeline is not None:
        pipeline.flush(timeout=2.0)
    engine = make_engine(url)
    try:
        rows = tail(engine, settings.database_table, limit)
    except Exception as exc:  # noqa: BLE001 - the table may not exist yet
        return [], f"The audit database could not be read yet ({type(exc).__name__})."
    finally:
        engine.dispose()
    return list(reversed(rows)), None


def _add_views(app: Flask) -> None:
    @app.errorhandler(SkillRequired)
    def skill_required(exc: SkillRequired) -> Any:
        from flask_ccsso.responses import error_response, wants_json

        if wants_json() or request.path.startswith("/api/"):
            return error_response(exc, extra={"skill": getattr(exc, "skill", None),
                                              "condition": getattr(exc, "condition", None)})
        skill = getattr(exc, "skill", None) or (exc.extra or {}).get("skill")
        return render_template("forbidden.html", skill=skill, reason=exc.reason,
                               message=exc.description), 403

    @app.get("/")
    def home() -> str:
        return render_template("home.html")

    @app.get("/access")
    @login_required
    def my_access() -> str:
        state = get_state()
        rows = [explain_skill(name, current_identity) for name in state.config.skills]
        return render_template("access.html", rows=rows)

    @app.get("/migrations")
    @requires_skill("database-migration")
    def migrations() -> str:
        return render_template("migrations.html", migrations=MIGRATIONS)

    @app.get("/security/audit")
    @requires_skill("security-audit")
    def security_audit() -> str:
        events, problem = _audit_events()
        return render_template("audit.html", events=events, problem=problem)

    @app.route("/deploy", methods=["GET", "POST"])
    @csrf_protect  # first: a post another site started is refused before anything else looks at it
    @requires_skill("infrastructure-deploy")
    def deploy() -> str:
        done = None
        if request.method == "POST":
            target = request.form.get("environment", "staging")
            if target not in ("staging", "production"):
                abort(400)
            done = target
        auth_time = getattr(current_identity, "auth_time", None)
        signed_in = None
        if auth_time:
            signed_in = {
                "at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(auth_time))),
                "ago": _duration(get_state().clock() - float(auth_time)),
                "limit": _duration(max_auth_age(get_state().config.skills["infrastructure-deploy"], get_state().config.session)),
            }
        # a deploy posted on a stale sign-in went to the IdP first and was not carried out: say so
        resubmit = stepup_notice() if request.method == "GET" else None
        return render_template("deploy.html", done=done, signed_in=signed_in, resubmit=resubmit)

    @app.get("/api/migrations")
    @requires_skill("database-migration")
    def api_migrations() -> Response:
        return jsonify(migrations=MIGRATIONS, caller=current_identity.email, via=current_identity.via)

    @app.get("/sign-in")
    def sign_in() -> Response:
        return redirect(url_for("ccsso.choose", next=request.args.get("next", "/")))
