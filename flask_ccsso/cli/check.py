"""``flask ccsso check-config`` and ``flask ccsso sp-metadata``.

``check-config`` answers "will sign-in work, and is it safe?" before the
first user tries: it validates the configuration, prints it resolved (secrets
masked), reaches every IdP, and checks redirect URLs, clock skew, cookies and
certificates. Exit codes:

* ``0`` -- no problem found;
* ``1`` -- warnings: the app runs, but something is unsafe or likely wrong
  (plain-http cookies, a proxy without ``CCSSO_TRUSTED_PROXIES``, a
  certificate close to expiry, a clock a few seconds off ...);
* ``2`` -- errors: the config is invalid (a ``ConfigError``), an IdP cannot
  be reached or answers wrongly, a certificate has expired, the clock is off
  by more than the accepted skew -- and, with ``--strict``, any warning.

``sp-metadata <provider>`` prints a SAML provider's SP metadata XML, to upload
to the IdP (Google Admin, ADFS ...).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import socket
import ssl
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import click
from cryptography import x509
from flask import Flask, url_for

from ..audit.dispatcher import where_events_go
from ..audit.settings import AuditSettings
from ..audit.spool import describe_io_error, ensure_dir
from ..config import is_loopback_host, unrouted_introspection
from ..exceptions import CCSSOError, ConfigError, StoreUnavailable
from ..gate.decorators import check_skill_names
from ..gate.policy import SINGLE_FACTOR_ACR_VALUES
from ..providers.keys import classify_http_failure
from ..providers.oidc import OIDCProvider
from ..state import CCSSOState
from ..views import redirect_uri_for
from ._common import app_state, as_config, error_text, fail, load_app

#: certificates closer than this to their end are a warning
CERT_WARN_DAYS = 14
#: a clock this far off (seconds) is worth a warning even inside the skew
CLOCK_WARN_SECONDS = 10.0

OK, WARN, ERROR, INFO = "ok", "warning", "error", "info"
_LABEL = {OK: ("  ok ", "green"), WARN: ("WARN ", "yellow"), ERROR: ("ERROR", "red"), INFO: (" info", None)}


class Report:
    """What the checks found; decides the exit code."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo = echo
        self.counts = {OK: 0, WARN: 0, ERROR: 0, INFO: 0}
        #: ``(level, message)`` of every finding, in order (the operator console shows them)
        self.findings: list[tuple[str, str]] = []

    def add(self, level: str, message: str) -> None:
        self.counts[level] += 1
        self.findings.append((level, message))
        label, colour = _LABEL[level]
        self.echo(f"[{click.style(label, fg=colour) if colour else label}] {message}")

    @property
    def exit_code(self) -> int:
        return 2 if self.counts[ERROR] else 1 if self.counts[WARN] else 0


def resolved_config(state: CCSSOState) -> dict[str, Any]:
    """The configuration as the app parsed it -- defaults filled in, secrets
    masked -- under the keys a config file holds (what ``--json`` prints).

    Every block is rendered from its settings struct through the keys the
    structs declare (:func:`~flask_ccsso.cli._common.as_config`), so a key
    reads the same here as in the file. ``logging`` shows what it resolved
    to: a single ``destination`` appears as the ``destinations`` it means.
    """
    cfg = state.config
    return {
        "auth": {"default": cfg.default_provider,
                 "providers": {name: {"provider": p.type, **as_config(p)} for name, p in cfg.providers.items()}},
        "skills": {name: as_config(s) for name, s in cfg.skills.items()},
        "session": as_config(cfg.session),
        "logging": _logging_config(state.audit_settings),
    }


def _logging_config(settings: AuditSettings) -> dict[str, Any]:
    """The resolved ``logging`` block: each sink with the keys of its type only."""
    out = as_config(settings)
    if settings.failure_threshold is None:
        out["failureThreshold"] = False  # how the file turns it off
    sinks = []
    for sink in settings.destinations:
        shown = {"type": sink.type, "name": sink.name,
                 **{k: v for k, v in as_config(sink).items() if k in sink.config_keys}}
        if sink.azure is not None:
            shown["azureMonitor"] = as_config(sink.azure)
        sinks.append(shown)
    out["destinations"] = sinks
    return out


# --------------------------------------------------------------------------- network checks

def _http_date_skew(resp: Any, sent_at: float, received_at: float) -> float | None:
    """Local clock minus the server's (``Date`` header, RFC 9110 5.6.7), in seconds."""
    header = resp.headers.get("Date")
    if not header:
        return None
    try:
        server = parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError):
        return None
    # the Date header has 1 s resolution and was made somewhere in the round trip
    local = (sent_at + received_at) / 2
    return local - server


def _cert_not_after(host: str, port: int, timeout: float) -> dt.datetime | None:
    """The end of validity of the TLS certificate ``host:port`` presents (verified)."""
    context = ssl.create_default_context()
    with socket.create_connection((host, port), timeout=timeout) as sock, \
            context.wrap_socket(sock, server_hostname=host) as tls:
        cert = tls.getpeercert()
    not_after = cert.get("notAfter") if cert else None
    if not not_after:
        return None
    return dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(str(not_after)), tz=dt.timezone.utc)


def _check_expiry(report: Report, what: str, not_after: dt.datetime, now: float) -> None:
    days = (not_after.timestamp() - now) / 86400
    when = not_after.strftime("%Y-%m-%d")
    if days < 0:
        report.add(ERROR, f"{what}: certificate expired on {when}.")
    elif days < CERT_WARN_DAYS:
        report.add(WARN, f"{what}: certificate expires in {days:.0f} days ({when}).")
    else:
        report.add(OK, f"{what}: certificate valid until {when}.")


def _check_tls(report: Report, what: str, url: str, timeout: float, seen: set[str]) -> None:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        return
    key = f"{parts.hostname}:{parts.port or 443}"
    if key in seen:
        return
    seen.add(key)
    try:
        not_after = _cert_not_after(parts.hostname, parts.port or 443, timeout)
    except ssl.SSLCertVerificationError as exc:
        report.add(ERROR, f"{what}: TLS certificate of {key} does not verify ({exc.verify_message}).")
        return
    except (OSError, ssl.SSLError) as exc:
        report.add(WARN, f"{what}: could not read the TLS certificate of {key} ({type(exc).__name__}).")
        return
    if not_after is not None:
        _check_expiry(report, f"{what} TLS ({key})", not_after, time.time())


def _check_oidc(report: Report, name: str, prov: Any, tls_seen: set[str]) -> None:
    s = prov.settings
    what = f"provider {name}"
    sent = time.time()
    try:
        resp = prov.http.get(s.discovery_url, timeout=s.timeout, headers={"Accept": "application/json"})
    except Exception as exc:  # noqa: BLE001 - requests' errors and friends
        failure = classify_http_failure(exc, s.discovery_url, s.timeout)
        report.add(ERROR, f"{what}: cannot reach the discovery document {s.discovery_url}: {failure.problem}. "
                          f"Check {failure.check}.")
        return
    received = time.time()
    if resp.status_code != 200:
        report.add(ERROR, f"{what}: discovery document {s.discovery_url} answered HTTP {resp.status_code}.")
        return
    try:
        meta = prov.metadata()
    except CCSSOError as exc:
        report.add(ERROR, f"{what}: {exc.description}")
        return
    report.add(OK, f"{what}: discovery document OK (issuer {meta.get('issuer')}).")
    for key in ("authorization_endpoint", "token_endpoint", "jwks_uri", "end_session_endpoint"):
        url = meta.get(key)
        if isinstance(url, str):
            host = urlsplit(url).hostname
            if urlsplit(url).scheme != "https" and not is_loopback_host(host):
                report.add(ERROR, f"{what}: {key} {url} is not https.")
    methods = meta.get("code_challenge_methods_supported")
    if isinstance(methods, list) and "S256" not in methods:
        report.add(WARN, f"{what}: the IdP does not announce PKCE S256 (code_challenge_methods_supported).")
    _check_client_auth(report, what, prov, meta)
    try:
        keys = prov.jwks.keyset()
        report.add(OK, f"{what}: signing keys reachable ({len(keys.keys)} key(s)).")
    except CCSSOError as exc:
        report.add(ERROR, f"{what}: {exc.description}")
    skew = _http_date_skew(resp, sent, received)
    if skew is None:
        report.add(INFO, f"{what}: the IdP sent no Date header; clock skew not measured.")
    elif abs(skew) > s.clock_skew:
        report.add(ERROR, f"{what}: this machine's clock is {skew:+.0f} s off the IdP's (more than the accepted "
                          f"clockSkew {s.clock_skew:g} s): tokens would be refused. Sync the clock (NTP).")
    elif abs(skew) > CLOCK_WARN_SECONDS:
        report.add(WARN, f"{what}: this machine's clock is {skew:+.0f} s off the IdP's. Sync the clock (NTP).")
    else:
        report.add(OK, f"{what}: clock within {max(abs(skew), 1):.0f} s of the IdP's.")
    _check_tls(report, what, s.discovery_url, s.timeout, tls_seen)


def _check_client_auth(report: Report, what: str, prov: Any, meta: dict[str, Any]) -> None:
    """``tokenEndpointAuthMethod`` against the IdP's ``token_endpoint_auth_methods_supported``
    (OIDC Discovery 3: absent means ``client_secret_basic``), a client secret
    where the IdP takes a key, and the private_key_jwt key and certificate."""
    auth = prov.client_auth
    method = auth.method
    announced = meta.get("token_endpoint_auth_methods_supported")
    supported = [m for m in announced if isinstance(m, str)] if isinstance(announced, list) else ["client_secret_basic"]
    if method not in supported:
        report.add(WARN, f"{what}: tokenEndpointAuthMethod {method} is not in the IdP's "
                         f"token_endpoint_auth_methods_supported ({', '.join(supported) or 'none'}): the token request "
                         "will likely be refused. Choose one the IdP lists.")
    elif method.startswith("client_secret_") and "private_key_jwt" in supported:
        report.add(WARN, f"{what}: the client authenticates with a client secret, but the IdP supports "
                         "private_key_jwt: register a public key (Okta) or a certificate (Entra ID) and set "
                         "tokenEndpointAuthMethod private_key_jwt with clientAssertionKey -- no shared secret to "
                         "leak or rotate (see docs/okta.md, docs/azure-ad.md).")
    else:
        report.add(OK, f"{what}: client authentication {method} (announced by the IdP).")
    if auth.keys is None:
        return
    key = auth.keys.current()
    algs = meta.get("token_endpoint_auth_signing_alg_values_supported")
    if isinstance(algs, list) and algs and key.alg not in algs:
        report.add(WARN, f"{what}: clientAssertionAlgorithm {key.alg} is not in the IdP's "
                         f"token_endpoint_auth_signing_alg_values_supported ({', '.join(map(str, algs))}).")
    named = ", ".join(f"{k} {v}" for k, v in key.header.items() if k != "typ")
    report.add(OK, f"{what}: client assertion key loaded ({key.alg}{', ' + named if named else ''}).")
    if key.not_after is not None:
        _check_expiry(report, f"{what} client assertion", dt.datetime.fromtimestamp(key.not_after, tz=dt.timezone.utc),
                      time.time())


def _check_saml(report: Report, name: str, prov: Any, tls_seen: set[str]) -> None:
    s = prov.settings
    what = f"provider {name}"
    try:
        idp = prov.idp()
    except CCSSOError as exc:
        report.add(ERROR, f"{what}: IdP metadata {s.idp_metadata}: {exc.description}")
        return
    except Exception as exc:  # noqa: BLE001 - a parse error of an odd document
        report.add(ERROR, f"{what}: IdP metadata {s.idp_metadata} is unusable ({exc}).")
        return
    report.add(OK, f"{what}: IdP metadata OK (entity {idp.entity_id}).")
    if not idp.sso_redirect:
        report.add(ERROR, f"{what}: the IdP metadata has no HTTP-Redirect SingleSignOnService.")
    now = time.time()
    if idp.valid_until is not None:
        left = idp.valid_until - now
        if left < 0:
            report.add(ERROR, f"{what}: the IdP metadata's validUntil has passed.")
        elif left < CERT_WARN_DAYS * 86400:
            report.add(WARN, f"{what}: the IdP metadata's validUntil is {left / 86400:.0f} days away.")
    if not idp.signing_certs:
        report.add(ERROR, f"{what}: the IdP metadata has no signing certificate.")
    for i, der in enumerate(idp.signing_certs):
        not_after = _der_not_after(der)
        if not_after is not None:
            _check_expiry(report, f"{what} IdP signing cert #{i + 1}", not_after, now)
    sp_cert = s.sp_certificate
    if sp_cert:
        not_after = _pem_not_after(prov, sp_cert)
        if not_after is not None:
            _check_expiry(report, f"{what} SP certificate", not_after, now)
    if s.idp_metadata.startswith("https://"):
        _check_tls(report, what, s.idp_metadata, s.timeout, tls_seen)


def _der_not_after(der_b64: str) -> dt.datetime | None:
    try:
        cert = x509.load_der_x509_certificate(base64.b64decode(der_b64))
    except Exception:  # noqa: BLE001 - not a certificate
        return None
    return cert.not_valid_after_utc


def _pem_not_after(prov: Any, value: str) -> dt.datetime | None:
    try:
        if "-----BEGIN" in value:
            data = value.encode()
        else:
            with open(prov._resolve(value), "rb") as fh:
                data = fh.read()
        return x509.load_pem_x509_certificate(data).not_valid_after_utc
    except Exception:  # noqa: BLE001
        return None


# --------------------------------------------------------------------------- local checks

def _base_url(app: Flask) -> str | None:
    server = app.config.get("SERVER_NAME")
    if not server:
        return None
    return f"{app.config.get('PREFERRED_URL_SCHEME') or 'http'}://{server}"


def _redirect_urls(report: Report, app: Flask, state: CCSSOState) -> None:
    base = _base_url(app)
    trusted = int(app.config.get("CCSSO_TRUSTED_PROXIES") or 0)
    for name, prov in state.providers.items():
        key = "acsUrl" if prov.protocol == "saml" else "redirectUri"
        configured = getattr(prov.settings, "acs_url" if prov.protocol == "saml" else "redirect_uri", None)
        if not configured and not base:
            report.add(INFO, f"provider {name}: the redirect URL is built from each request's Host header; "
                             f"register it at the IdP as your public https URL + {state.url_prefix}/{name}/"
                             f"{'acs' if prov.protocol == 'saml' else 'callback'}, or set {key} (or SERVER_NAME) "
                             "so this command can check it.")
            continue
        if configured:
            url = configured
        else:
            with app.test_request_context("/", base_url=base):
                url = redirect_uri_for(prov)
        parts = urlsplit(url)
        loopback = is_loopback_host(parts.hostname)
        source = "configured" if configured else "built from SERVER_NAME"
        if parts.scheme != "https" and not loopback:
            report.add(ERROR, f"provider {name}: redirect URL {url} ({source}) is not https: the IdP would send "
                              f"codes and assertions in clear text. Use https (set {key}, or run behind TLS).")
        elif parts.scheme != "https":
            report.add(WARN, f"provider {name}: redirect URL {url} is plain http on loopback: development only.")
        else:
            report.add(OK, f"provider {name}: redirect URL {url} ({source}).")
    scheme = app.config.get("PREFERRED_URL_SCHEME") or "http"
    server_host = urlsplit(f"//{app.config.get('SERVER_NAME') or ''}").hostname
    behind_proxy = scheme == "https" or (server_host and not is_loopback_host(server_host))
    builds_urls = any(not (getattr(p.settings, "acs_url", None) or getattr(p.settings, "redirect_uri", None))
                      for p in state.providers.values())
    if trusted == 0 and behind_proxy and builds_urls:
        report.add(WARN, "CCSSO_TRUSTED_PROXIES is 0, but SERVER_NAME/PREFERRED_URL_SCHEME suggest the app runs "
                         "behind a proxy: behind a TLS-terminating proxy the app sees http and would build http:// "
                         "redirect URLs. Set CCSSO_TRUSTED_PROXIES to the number of proxies in front of the app.")
    networked = sorted(n for n, sk in state.config.skills.items() if sk.allowed_networks)
    if trusted == 0 and networked:
        report.add(WARN, f"skills {', '.join(networked)} use allowedNetworks, and CCSSO_TRUSTED_PROXIES is 0: behind "
                         "a proxy every request comes from the proxy's address, so a rule that admits the proxy's "
                         "network admits everyone. Set CCSSO_TRUSTED_PROXIES to the number of proxies in front.")


def _cookies(report: Report, app: Flask, state: CCSSOState) -> None:
    s = state.config.session
    name = app.config.get("SESSION_COOKIE_NAME")
    if not app.config.get("SESSION_COOKIE_SECURE"):
        report.add(WARN, f"session cookie {name!r} is not Secure (session.cookieSecure false): it would travel over "
                         "plain http. Development only.")
    else:
        report.add(OK, f"session cookie {name!r}: Secure, HttpOnly, SameSite={s.cookie_samesite}.")
    if s.cookie_samesite == "None":
        report.add(WARN, "session.cookieSameSite is None: the cookie is sent on cross-site requests (CSRF exposure).")
    key = app.config.get("SECRET_KEY")
    if isinstance(key, (str, bytes)) and len(key) < 32:
        report.add(WARN, "SECRET_KEY is shorter than 32 characters; use a long random value from the environment.")
    if any(bp.startswith("ccsso_devidp") for bp in app.blueprints):
        report.add(WARN, "the development IdP is mounted on this app (anyone can sign in as anyone). Never in "
                         "production.")


def _skills(report: Report, state: CCSSOState, offline: bool) -> None:
    """Skill settings that contradict each other or the providers.

    Warnings where a setting silently does less than it says; errors where
    nobody could ever have the skill. (``acrValues`` without ``sensitive``
    is not one of them: the ``acr`` is enforced on every request.)
    """
    session = state.config.session
    found = 0
    for name, sk in state.config.skills.items():
        provs = {p: state.providers[p] for p in (sk.providers or state.providers) if p in state.providers}
        weak = [v for v in sk.acr_values if v in SINGLE_FACTOR_ACR_VALUES]
        if sk.require_mfa and weak:
            found += 1
            report.add(WARN, f"skill {name}: requireMfa is true, but acrValues lists single-factor "
                             f"class(es) {', '.join(weak)}: a sign-in with that acr meets acrValues and still is "
                             "not MFA (it passes only if amr shows a second factor). List only MFA classes, or drop "
                             "requireMfa.")
        if sk.sensitive and sk.max_auth_age is None and not session.require_reauthentication_for_sensitive:
            found += 1
            report.add(WARN, f"skill {name}: sensitive is true, but session.requireReauthenticationForSensitive "
                             "is false and the skill has no maxAuthAge: it never asks for a recent sign-in. Set "
                             "maxAuthAge on it, or turn the session switch on.")
        if sk.required_scopes and provs and all(p.protocol == "saml" for p in provs.values()):
            granted = {sc for p in provs.values()
                       for scs in getattr(p.settings, "scopes_from_groups", {}).values() for sc in scs}
            missing = [sc for sc in sk.required_scopes if sc not in granted]
            if missing:
                found += 1
                report.add(ERROR, f"skill {name}: requiredScopes {', '.join(missing)} can never be met: it accepts "
                                  f"only SAML provider(s) {', '.join(provs)}, which carry no scopes, and no "
                                  "scopesFromGroups grants them. Nobody can have this skill.")
        if sk.acr_values and not offline:
            for pname, prov in provs.items():
                if not isinstance(prov, OIDCProvider):
                    continue
                try:
                    supported = prov.metadata().get("acr_values_supported")
                except CCSSOError:
                    continue  # already reported by the provider's own checks
                if isinstance(supported, list) and supported and not set(sk.acr_values) & set(supported):
                    found += 1
                    report.add(WARN, f"skill {name}: none of its acrValues ({', '.join(sk.acr_values)}) is in "
                                     f"provider {pname}'s acr_values_supported ({', '.join(map(str, supported))}): "
                                     f"a step-up through {pname} cannot produce them, so its sign-ins never have "
                                     "this skill.")
    if not found:
        report.add(OK, f"skills: no contradictory settings in {len(state.config.skills)} skill(s).")


def _audit(report: Report, state: CCSSOState) -> None:
    """Where audit events go, and each notice of the ``logging`` block as a
    warning (the Azure fallback, ``azure-log-analytics`` without
    ``azureMonitor``: the app runs, the events do not go
    where the config says)."""
    settings = state.audit_settings
    for notice in settings.notices:
        report.add(WARN, notice)
    if settings.level == "off":
        report.add(INFO, "audit: logging.level is off; no audit events are written.")
    else:
        report.add(INFO, f"audit: events (level {settings.level}) go to {where_events_go(settings)}.")
        if settings.spool_dir:
            try:
                ensure_dir(settings.spool_dir)
            except OSError as exc:
                report.add(ERROR, f"audit: the spool directory {settings.spool_dir} cannot be used "
                                  f"({describe_io_error(exc)}): while a sink is down, events would be held in memory "
                                  "only, and a crash would lose them.")
            else:
                report.add(OK, f"audit: the spool directory {settings.spool_dir} is private.")


def _store(report: Report, state: CCSSOState) -> None:
    st = state.config.session.store
    try:
        key = f"check:{time.time_ns()}"
        state.store.set(key, "1", 5)
        state.store.delete(key)
    except StoreUnavailable as exc:
        report.add(ERROR, error_text(exc))
        return
    except Exception as exc:  # noqa: BLE001 - any store failure
        report.add(ERROR, f"session store ({st.type}): not usable ({type(exc).__name__}).")
        return
    report.add(OK, f"session store ({st.type}) reachable.")


def run_checks(report: Report, app: Flask, state: CCSSOState, *, offline: bool = False) -> None:
    """Every check of ``check-config`` into ``report``: URLs, cookies, the
    store, the audit destinations, each IdP (network I/O with each provider's
    ``timeout``, unless ``offline``), the skills. The command prints the
    findings; the operator console shows them (``report.findings``)."""
    report.add(OK, f"configuration is valid: {len(state.providers)} provider(s), {len(state.config.skills)} skill(s).")
    with app.app_context():
        _redirect_urls(report, app, state)
        _cookies(report, app, state)
        _store(report, state)
        _audit(report, state)
        tls_seen: set[str] = set()
        for name, prov in state.providers.items():
            if offline:
                report.add(INFO, f"provider {name}: not contacted (--offline).")
            elif prov.protocol == "saml":
                _check_saml(report, name, prov, tls_seen)
            else:
                _check_oidc(report, name, prov, tls_seen)
        try:  # views and guards the app registered after init_app (init_app checked the others)
            check_skill_names(app, state.config.skills)
        except ConfigError as exc:
            report.add(ERROR, str(exc.description))
        _skills(report, state, offline)
        unrouted = unrouted_introspection({n: p.settings for n, p in state.providers.items()})
        if unrouted:
            report.add(WARN, unrouted)


# --------------------------------------------------------------------------- the commands

@click.command("check-config")
@click.option("--offline", is_flag=True, help="Skip the checks that talk to the network (IdPs, TLS).")
@click.option("--json", "as_json", is_flag=True, help="Print the resolved configuration only, as JSON.")
@click.option("--strict", is_flag=True, help="Treat warnings as errors: exit 2 on any warning (for deployment "
                                             "pipelines).")
def check_config(offline: bool, as_json: bool, strict: bool) -> None:
    """Validate the configuration, reach each IdP, check URLs, clocks, cookies and certificates.

    Exit status: 0 no problem, 1 warnings (2 with --strict), 2 errors (including an invalid config).
    """
    app = load_app()
    state = app_state(app)
    resolved = resolved_config(state)
    if as_json:
        click.echo(json.dumps(resolved, indent=2, sort_keys=True))
        return
    report = Report(click.echo)
    click.echo("Resolved configuration (secrets masked):")
    click.echo(json.dumps(resolved, indent=2, sort_keys=True))
    click.echo("")
    run_checks(report, app, state, offline=offline)
    c = report.counts
    click.echo(f"\n{c[ERROR]} error(s), {c[WARN]} warning(s)."
               + (" --strict: warnings count as errors." if strict and c[WARN] else ""))
    click.get_current_context().exit(2 if strict and c[WARN] else report.exit_code)


@click.command("sp-metadata")
@click.argument("provider")
@click.option("--base-url", help="The app's public URL, e.g. https://portal.example.com (default: from "
                                 "SERVER_NAME and PREFERRED_URL_SCHEME).")
def sp_metadata(provider: str, base_url: str | None) -> None:
    """Print PROVIDER's SAML service-provider metadata XML (upload it to the IdP)."""
    app = load_app()
    state = app_state(app)
    prov = state.providers.get(provider)
    if prov is None:
        raise click.BadParameter(f"no provider {provider!r}; configured: {', '.join(state.providers)}.",
                                 param_hint="PROVIDER")
    if not hasattr(prov, "metadata_xml"):
        raise click.BadParameter(f"provider {provider!r} is {prov.type}, not SAML: it has no SP metadata.",
                                 param_hint="PROVIDER")
    base = base_url or _base_url(app)
    if not base:
        raise click.UsageError("pass --base-url https://your-portal.example.com (or set SERVER_NAME).")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.BadParameter(f"{base!r} is not an absolute http(s) URL.", param_hint="--base-url")
    with app.test_request_context("/", base_url=base.rstrip("/")):
        acs = redirect_uri_for(prov)
        slo = url_for("ccsso.slo", provider=provider, _external=True)
        try:
            xml = prov.metadata_xml(acs_url=acs, slo_url=slo)
        except CCSSOError as exc:
            fail(str(exc.description))
    if parts.scheme != "https" and not is_loopback_host(parts.hostname):
        click.echo(f"warning: {base} is not https; IdPs post assertions to the ACS URL.", err=True)
    click.echo(xml)


__all__ = ["Report", "check_config", "resolved_config", "run_checks", "sp_metadata"]
