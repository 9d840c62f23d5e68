"""Harness around a real, OpenID-Certified provider (panva/oidc-provider v9).

``RealOP`` runs ``tests/interop/op/server.mjs`` under Node on 127.0.0.1 and
``Browser`` is a headless user-agent (``requests.Session`` + ``html.parser``)
that walks the OP's login/logout pages and stops at the first redirect that
leaves the OP, handing that URL back untouched (it never fetches the RP).

Nothing here imports flask_ccsso: interop tests feed the returned URLs to the
Flask test client themselves.
"""

from __future__ import annotations

import atexit
import base64
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterable
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

import requests
from joserfc.jwk import RSAKey

from tests.support.waiting import wait_for as wait_until  # kept under its old name (exported)

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "OP_DIR",
    "Browser",
    "LoginFailed",
    "LoginRequired",
    "OPError",
    "OPStartError",
    "RealOP",
    "callback_params",
    "ensure_node_modules",
    "generate_signing_key",
    "pkce_pair",
    "wait_until",
]

OP_DIR = Path(__file__).resolve().parent / "op"
RESOURCE = "api://portal"
USERS = ("alice", "bob", "carol", "dave", "erin")
PASSWORD = "password"
START_TIMEOUT = 20.0


class OPError(RuntimeError):
    """The OP answered with an error page or something the harness did not expect."""


class OPStartError(OPError):
    """node could not be installed/started; the message carries node's stderr."""


class LoginFailed(OPError):
    """The login form was re-rendered with an error (bad password, MFA required...)."""


class LoginRequired(OPError):
    """``Browser.authorize_silently`` hit the OP's login form."""


# --------------------------------------------------------------- helpers ---


def generate_signing_key(kid: str | None = None) -> dict[str, Any]:
    """A fresh private RS256 signing JWK (dict) with ``kid``/``use``/``alg`` set."""
    kid = kid or f"k-{secrets.token_hex(6)}"
    key = RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"}, private=True)
    return dict(key.as_dict(private=True))


def pkce_pair() -> tuple[str, str]:
    """``(code_verifier, S256 code_challenge)``."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_node_modules(op_dir: Path = OP_DIR) -> None:
    """Run ``npm ci`` once if node_modules/oidc-provider is missing (file-locked)."""
    marker = op_dir / "node_modules" / "oidc-provider" / "package.json"
    if marker.exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise OPStartError("npm not found on PATH; cannot install tests/interop/op dependencies")
    with open(Path(tempfile.gettempdir()) / "ccsso-interop-npm-ci.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if marker.exists():
                return
            proc = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"],
                cwd=op_dir,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            if proc.returncode != 0:
                raise OPStartError(f"npm ci failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# ---------------------------------------------------------------- RealOP ---


class RealOP:
    """A running oidc-provider instance with the project's users and clients.

    >>> op = RealOP().start(["http://localhost/callback"])
    >>> op.issuer            # 'http://127.0.0.1:<port>'
    >>> op.stop()
    """

    client_id = "portal"
    client_secret = "portal-secret-0123456789abcdef0123456789"
    other_client_id = "other"
    other_client_secret = "other-secret-0123456789abcdef0123456789"
    resource = RESOURCE
    users = USERS
    password = PASSWORD

    def __init__(self, node: str | None = None) -> None:
        self._node = node or shutil.which("node") or "node"
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr_file: Any = None
        self._stdout_thread: threading.Thread | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self._session: requests.Session | None = None
        self._config: dict[str, Any] = {}
        self._jwks: dict[str, Any] = {"keys": []}
        self._metadata: dict[str, Any] | None = None
        self._atexit_registered = False

    # -- lifecycle ---------------------------------------------------------

    def start(
        self,
        redirect_uris: list[str],
        post_logout_redirect_uris: list[str] | None = None,
        backchannel_logout_uri: str | None = None,
        port: int | None = None,
        *,
        jwt_access_tokens: bool = True,
        backchannel_deliver: bool = False,
        clock_skew_seconds: float = 0,
        jwks: dict[str, Any] | None = None,
    ) -> RealOP:
        """Start the OP; returns self.

        ``jwt_access_tokens=False`` makes a plain code exchange return an opaque,
        userinfo-capable access token instead of the api://portal JWT.
        ``backchannel_deliver=True`` really POSTs logout tokens to
        ``backchannel_logout_uri`` (they are always recorded, see
        ``backchannel_logouts()``). ``clock_skew_seconds`` offsets the OP clock.
        """
        if self._proc is not None:
            raise OPError("RealOP already running")
        if self._tmpdir is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="ccsso-op-")
        self._jwks = jwks or {"keys": [generate_signing_key()]}
        self._config = {
            "port": port or _free_port(),
            "redirectUris": list(redirect_uris),
            "postLogoutRedirectUris": list(post_logout_redirect_uris or []),
            "backchannelLogoutUri": backchannel_logout_uri,
            "backchannelDeliver": bool(backchannel_deliver),
            "jwtAccessTokens": bool(jwt_access_tokens),
            "clockSkewSeconds": clock_skew_seconds,
            "stateFile": os.path.join(self._tmpdir.name, "state.json"),
        }
        self._spawn()
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        return self

    def restart(
        self,
        rotate_keys: bool = False,
        keep_old: bool = False,
        *,
        keep_state: bool = True,
        clock_skew_seconds: float | None = None,
    ) -> RealOP:
        """Stop and start again on the same port.

        ``rotate_keys``: a fresh key is generated and served (and used) first;
        the previous keys stay in the JWKS only with ``keep_old=True``.
        ``keep_state``: sessions, grants, refresh tokens survive the restart
        (dumped on SIGTERM, reloaded on start); ``False`` wipes them.
        """
        if not self._config:
            raise OPError("RealOP was never started")
        self._shutdown_process()
        if rotate_keys:
            new = generate_signing_key()
            self._jwks = {"keys": [new, *(self._jwks["keys"] if keep_old else [])]}
        if clock_skew_seconds is not None:
            self._config["clockSkewSeconds"] = clock_skew_seconds
        if not keep_state:
            Path(self._config["stateFile"]).unlink(missing_ok=True)
        self._spawn()
        return self

    def stop(self) -> None:
        self._shutdown_process()
        if self._session is not None:
            self._session.close()
            self._session = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _spawn(self) -> None:
        ensure_node_modules()
        if shutil.which(self._node) is None and not os.path.exists(self._node):
            raise OPStartError(f"node executable {self._node!r} not found")
        config = dict(self._config, jwks=self._jwks)
        env = dict(os.environ, OP_CONFIG=json.dumps(config), NODE_NO_WARNINGS="1")
        self._stderr_file = tempfile.TemporaryFile(mode="w+b")  # noqa: SIM115 - lives as long as node
        self._proc = subprocess.Popen(
            [self._node, "server.mjs"],
            cwd=OP_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr_file,
            start_new_session=True,
        )
        ready = threading.Event()
        lines: list[str] = []
        proc = self._proc

        def pump() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                lines.append(line)
                if line.startswith("READY "):
                    ready.set()
            ready.set()  # EOF: process died

        self._stdout_thread = threading.Thread(target=pump, name="realop-stdout", daemon=True)
        self._stdout_thread.start()
        ok = ready.wait(START_TIMEOUT)
        if not ok or not any(line == f"READY {self.port}" for line in lines):
            rc = proc.poll()
            stderr = self.stderr_text()
            self._shutdown_process()
            raise OPStartError(
                f"oidc-provider did not become ready (rc={rc}, timeout={not ok}).\n"
                f"stdout:\n{chr(10).join(lines)}\nstderr:\n{stderr}"
            )
        self._metadata = None

    def _shutdown_process(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    proc.wait(timeout=5)
            if self._stdout_thread is not None:
                self._stdout_thread.join(timeout=2)
                self._stdout_thread = None
            if proc.stdout is not None:
                proc.stdout.close()
        if self._stderr_file is not None:
            self._last_stderr = self._read_stderr(self._stderr_file)
            self._stderr_file.close()
            self._stderr_file = None

    @staticmethod
    def _read_stderr(f: Any) -> str:
        f.flush()
        f.seek(0)
        return str(f.read().decode("utf-8", "replace"))

    def stderr_text(self) -> str:
        """Node's stderr so far (of the current, or else the last, process)."""
        if self._stderr_file is not None:
            text = self._read_stderr(self._stderr_file)
            self._stderr_file.seek(0, os.SEEK_END)
            return text
        return getattr(self, "_last_stderr", "")

    # -- facts ---------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._config["port"])

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def redirect_uris(self) -> list[str]:
        return list(self._config.get("redirectUris", []))

    @property
    def post_logout_redirect_uris(self) -> list[str]:
        return list(self._config.get("postLogoutRedirectUris", []))

    @property
    def backchannel_logout_uri(self) -> str | None:
        return self._config.get("backchannelLogoutUri")

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def jwks_private(self) -> dict[str, Any]:
        """The JWKS (private keys) the OP currently signs with; keys[0] signs."""
        return json.loads(json.dumps(self._jwks))

    @property
    def signing_kid(self) -> str:
        return str(self._jwks["keys"][0]["kid"])

    @property
    def http(self) -> requests.Session:
        if self._session is None:
            self._session = requests.Session()
        return self._session

    @property
    def metadata(self) -> dict[str, Any]:
        """The discovery document (cached per process start)."""
        if self._metadata is None:
            resp = self.http.get(self.discovery_url, timeout=10)
            resp.raise_for_status()
            self._metadata = resp.json()
        return self._metadata

    def endpoint(self, name: str) -> str:
        """``endpoint("token")`` -> metadata["token_endpoint"]."""
        return str(self.metadata[f"{name}_endpoint"])

    def jwks_public(self) -> dict[str, Any]:
        resp = self.http.get(str(self.metadata["jwks_uri"]), timeout=10)
        resp.raise_for_status()
        return dict(resp.json())

    # -- admin -------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        resp = self.http.get(f"{self.issuer}/__admin/health", timeout=10)
        resp.raise_for_status()
        return dict(resp.json())

    def set_groups(self, username: str, groups: Iterable[str]) -> None:
        """Replace a user's groups now (affects new ID tokens, refreshes, userinfo, policy)."""
        resp = self.http.post(f"{self.issuer}/__admin/users/{username}/groups", json=list(groups), timeout=10)
        if resp.status_code != 200:
            raise OPError(f"set_groups({username!r}) failed: {resp.status_code} {resp.text}")

    def get_groups(self, username: str) -> list[str]:
        resp = self.http.get(f"{self.issuer}/__admin/users/{username}/groups", timeout=10)
        resp.raise_for_status()
        return list(resp.json()["groups"])

    def backchannel_logouts(self) -> list[dict[str, Any]]:
        """Every logout token the OP emitted: ``{"uri", "logout_token", "at", "delivered", "error"}``."""
        resp = self.http.get(f"{self.issuer}/__admin/backchannel-logouts", timeout=10)
        resp.raise_for_status()
        return list(resp.json())

    def clear_backchannel_logouts(self) -> None:
        self.http.delete(f"{self.issuer}/__admin/backchannel-logouts", timeout=10).raise_for_status()

    # -- protocol helpers (for tests that play the RP by hand) ---------------

    def authorize_url(
        self,
        redirect_uri: str | None = None,
        *,
        scope: str = "openid email profile",
        client_id: str | None = None,
        state: str | None = None,
        nonce: str | None = None,
        code_challenge: str | None = None,
        **params: str,
    ) -> str:
        """Build an authorization request URL (code flow, S256). ``None`` values are left out."""
        query: dict[str, str] = {
            "response_type": "code",
            "client_id": client_id or self.client_id,
            "redirect_uri": redirect_uri or self.redirect_uris[0],
            "scope": scope,
            "state": state or secrets.token_urlsafe(12),
            "nonce": nonce or secrets.token_urlsafe(12),
        }
        if code_challenge is not None:
            query["code_challenge"] = code_challenge
            query["code_challenge_method"] = "S256"
        query.update({k: v for k, v in params.items() if v is not None})
        return f"{self.endpoint('authorization')}?{urlencode(query)}"

    def token_request(self, data: dict[str, str], *, client: str = "portal") -> requests.Response:
        """POST to the token endpoint with client_secret_basic for ``portal`` or ``other``."""
        auth = (
            (self.client_id, self.client_secret)
            if client == "portal"
            else (self.other_client_id, self.other_client_secret)
        )
        return self.http.post(self.endpoint("token"), data=data, auth=auth, timeout=10)


# --------------------------------------------------------------- Browser ---


class _Form:
    def __init__(self, attrs: dict[str, str]) -> None:
        self.id = attrs.get("id", "")
        self.action = attrs.get("action", "")
        self.method = (attrs.get("method") or "get").lower()
        self.fields: list[tuple[str, str]] = []


class _PageParser(HTMLParser):
    """Forms (with inputs, incl. ones bound via form="id") and text of id'd elements."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[_Form] = []
        self.texts: dict[str, str] = {}
        self._current: _Form | None = None
        self._orphans: list[tuple[str, tuple[str, str], str]] = []  # (form id, field, type)
        self._text_stack: list[tuple[str, str, list[str]]] = []  # (tag, id, chunks)

    def handle_starttag(self, tag: str, attrs_list: list[tuple[str, str | None]]) -> None:
        attrs = {k: (v if v is not None else "") for k, v in attrs_list}
        if attrs.get("id") and tag not in ("input", "br", "img", "meta"):
            self._text_stack.append((tag, attrs["id"], []))
        if tag == "form":
            self._current = _Form(attrs)
            self.forms.append(self._current)
            return
        if tag not in ("input", "button", "textarea", "select"):
            return
        name = attrs.get("name")
        if not name:
            return
        kind = attrs.get("type", "submit" if tag == "button" else "text").lower()
        if kind in ("checkbox", "radio") and "checked" not in attrs:
            return
        field = (name, attrs.get("value", "on" if kind in ("checkbox", "radio") else ""))
        owner = attrs.get("form")
        if owner:
            self._orphans.append((owner, field, kind))
        elif self._current is not None and kind not in ("submit", "button"):
            self._current.fields.append(field)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None
        if self._text_stack and self._text_stack[-1][0] == tag:
            _, ident, chunks = self._text_stack.pop()
            self.texts[ident] = " ".join("".join(chunks).split())

    def handle_data(self, data: str) -> None:
        for _, _, chunks in self._text_stack:
            chunks.append(data)

    def form(self, ident: str | None = None, action_contains: str | None = None) -> _Form | None:
        for form in self.forms:
            if (ident is None or form.id == ident) and (action_contains is None or action_contains in form.action):
                return form
        return None

    def hidden_for(self, form: _Form) -> list[tuple[str, str]]:
        """Fields bound to ``form`` via the form= attribute (submit buttons excluded)."""
        return [field for owner, field, kind in self._orphans if owner == form.id and kind not in ("submit", "button")]


def _parse(html: str) -> _PageParser:
    parser = _PageParser()
    parser.feed(html)
    parser.close()
    return parser


class Browser:
    """A cookie-keeping, headless user-agent for the OP's pages.

    It follows redirects only while they stay on the OP's origin; the first
    redirect leaving the OP (normally to a registered redirect_uri or
    post_logout_redirect_uri) is returned as a string and never fetched.
    """

    def __init__(self, op: RealOP | None = None, *, issuer: str | None = None, max_hops: int = 20) -> None:
        if op is None and issuer is None:
            raise ValueError("Browser needs an op or an issuer")
        self._op = op
        self._issuer = issuer
        self.max_hops = max_hops
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "ccsso-interop-browser/1.0"
        self.last_url: str | None = None
        self.last_response: requests.Response | None = None
        self.history: list[str] = []

    @property
    def issuer(self) -> str:
        return self._op.issuer if self._op is not None else str(self._issuer)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def clear_cookies(self) -> None:
        """Forget the OP session (a fresh user agent)."""
        self.session.cookies.clear()

    # -- public flows ------------------------------------------------------

    def login(self, authorize_url: str, username: str, password: str = PASSWORD, mfa: bool = False) -> str:
        """Authorize, sign in through the login form if shown, return the callback URL.

        If the OP does not ask for a login (session reuse) the callback URL is
        returned as well. Raises ``LoginFailed`` if the form comes back with an
        error and ``OPError`` on an OP error page.
        """
        outcome = self._navigate("GET", authorize_url)
        for _ in range(3):
            if isinstance(outcome, str):
                return outcome
            page = _parse(outcome.text)
            form = page.form("login")
            if form is None:
                self._raise_for_page(outcome, page, "expected the OP login form")
                raise AssertionError("unreachable")
            data = dict(form.fields)
            data.update(username=username, password=password)
            if mfa:
                data["mfa"] = "1"
            outcome = self._navigate("POST", urljoin(outcome.url, form.action), data=data)
            if not isinstance(outcome, str):
                again = _parse(outcome.text)
                if again.form("login") is not None and "login-error" in again.texts:
                    raise LoginFailed(again.texts["login-error"])
        raise OPError("login did not complete after repeated forms")

    def authorize_silently(self, url: str) -> str:
        """Authorize with the existing OP session; raise ``LoginRequired`` if the OP shows a login form."""
        outcome = self._navigate("GET", url)
        if isinstance(outcome, str):
            return outcome
        page = _parse(outcome.text)
        if page.form("login") is not None:
            raise LoginRequired(f"OP demanded a login at {outcome.url}")
        self._raise_for_page(outcome, page, "expected a redirect back to the RP")
        raise AssertionError("unreachable")

    def logout(self, end_session_url: str, confirm: bool = True) -> str:
        """Drive RP-initiated logout; returns the post-logout redirect URL (not fetched).

        Without a (valid) post_logout_redirect_uri the OP ends on its own
        success page, whose URL is returned. ``confirm=False`` presses
        "No, stay signed in".
        """
        outcome = self._navigate("GET", end_session_url)
        if isinstance(outcome, str):
            return outcome
        page = _parse(outcome.text)
        form = page.form("op.logoutForm") or page.form(action_contains="/session/end/confirm")
        if form is None:
            self._raise_for_page(outcome, page, "expected the OP logout confirmation form")
            raise AssertionError("unreachable")
        data = dict(form.fields)
        data.update(page.hidden_for(form))
        if confirm:
            data["logout"] = "yes"
        final = self._navigate("POST", urljoin(outcome.url, form.action), data=data)
        if isinstance(final, str):
            return final
        page = _parse(final.text)
        if "op-error" in page.texts:
            self._raise_for_page(final, page, "logout failed")
        return final.url

    def get(self, url: str) -> str | requests.Response:
        """Follow ``url`` on the OP: a str if it redirected off the OP, else the final page."""
        return self._navigate("GET", url)

    # -- internals -----------------------------------------------------------

    def _is_op(self, url: str) -> bool:
        a, b = urlsplit(url), urlsplit(self.issuer)
        return (a.scheme, a.netloc) == (b.scheme, b.netloc)

    def _navigate(self, method: str, url: str, data: dict[str, str] | None = None) -> str | requests.Response:
        for _ in range(self.max_hops):
            if not self._is_op(url):
                self.history.append(url)
                return url
            resp = self.session.request(method, url, data=data, allow_redirects=False, timeout=15)
            self.history.append(url)
            self.last_url, self.last_response = url, resp
            if resp.is_redirect or resp.status_code in (301, 302, 303, 307, 308):
                location = resp.headers.get("Location")
                if not location:
                    raise OPError(f"redirect without Location from {url}")
                url = urljoin(url, location)
                if resp.status_code not in (307, 308):
                    method, data = "GET", None
                continue
            if resp.status_code >= 400:
                page = _parse(resp.text)
                self._raise_for_page(resp, page, f"HTTP {resp.status_code}")
            return resp
        raise OPError(f"too many redirects starting at {url}")

    @staticmethod
    def _raise_for_page(resp: requests.Response, page: _PageParser, what: str) -> None:
        if "op-error" in page.texts:
            raise OPError(
                f"OP error page at {resp.url}: {page.texts['op-error']}: {page.texts.get('op-error-description', '')}"
            )
        snippet = " ".join(resp.text.split())[:500]
        raise OPError(f"{what}; got HTTP {resp.status_code} at {resp.url}: {snippet}")


def callback_params(callback_url: str) -> dict[str, str]:
    """Query parameters of a callback URL as a flat dict."""
    return dict(parse_qsl(urlsplit(callback_url).query))
