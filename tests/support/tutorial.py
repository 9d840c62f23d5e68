"""docs/tutorial.md, followed as a reader would: its files written out as they are, its app started, signed in.

Shared by tests/docs/test_tutorial.py and scripts/tutorial_timing.py, so the
test and the timing script follow the same steps. Nothing here edits the
tutorial's code: a block is written byte for byte, and the app is started
with the tutorial's own ``flask ... run`` command (plus ``--port`` and, in the
test, ``--no-reload``).
"""

from __future__ import annotations

import html
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin

import requests

from tests.support.network import free_port
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "tutorial.md"

#: an opening fence with attributes: ```python title="app.py"
_FENCE = re.compile(r'^```(?P<lang>[\w+-]+)(?P<attrs>[^\n]*)\n(?P<body>.*?)^```[ \t]*$', re.MULTILINE | re.DOTALL)
_TITLE = re.compile(r'title="(?P<title>[^"]+)"')
#: a file name a block may be written to (no spaces, no folders)
_FILE_NAME = re.compile(r"^[\w.-]+$")


@dataclass(frozen=True)
class Block:
    lang: str
    title: str | None
    code: str


def blocks(text: str | None = None) -> list[Block]:
    """Every fenced code block of the tutorial, in order."""
    text = TUTORIAL.read_text(encoding="utf-8") if text is None else text
    found = []
    for m in _FENCE.finditer(text):
        title = _TITLE.search(m.group("attrs"))
        found.append(Block(m.group("lang"), title.group("title") if title else None, m.group("body")))
    return found


def files(text: str | None = None) -> dict[str, str]:
    """The blocks titled with a bare file name (``app.py``, ``ccsso.json``): the files the reader writes."""
    out: dict[str, str] = {}
    for b in blocks(text):
        if b.title and _FILE_NAME.match(b.title):
            assert b.title not in out, f"the tutorial writes {b.title} twice"
            out[b.title] = b.code
    return out


def variants(prefix: str = "ccsso.json: auth for ") -> dict[str, str]:
    """The ``auth`` blocks of the switch to a real IdP, by IdP name."""
    return {b.title[len(prefix):]: b.code for b in blocks() if b.title and b.title.startswith(prefix)}


def console_commands() -> list[list[str]]:
    """Every ``$ ...`` line of the console blocks, split as a shell would."""
    return [shlex.split(line[2:]) for b in blocks() if b.lang == "console"
            for line in b.code.splitlines() if line.startswith("$ ")]


def run_command() -> list[str]:
    """The tutorial's command that starts the app (``flask --app app run ...``), without ``--port``."""
    for argv in console_commands():
        if argv[:1] == ["flask"] and "run" in argv and "--port" not in argv:
            return argv
    raise AssertionError("docs/tutorial.md has no `flask --app ... run` command")


def write_files(dest: Path) -> dict[str, Path]:
    """Write the tutorial's files into ``dest``, exactly as the page shows them."""
    written = {}
    for name, code in files().items():
        path = dest / name
        path.write_text(code, encoding="utf-8")
        written[name] = path
    return written


@dataclass
class RunningApp:
    """The tutorial's app in its own process (``flask --app app run``), on a free loopback port."""

    folder: Path
    python: str = sys.executable
    env: Mapping[str, str] = field(default_factory=dict)
    #: run the app under this launcher module instead of ``python -m flask`` (the test's clock)
    launcher: Sequence[str] = ("-m", "flask")
    extra_args: Sequence[str] = ()
    base: str = ""
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def start(self, timeout: float = 60.0) -> RunningApp:
        argv = run_command()
        assert argv[0] == "flask", argv
        for attempt in range(3):  # another process may take the free port between the check and the bind
            port = free_port()
            self.base = f"http://127.0.0.1:{port}"
            env = {**os.environ, **self.env, "BASE_URL": self.base}
            self.log_path = self.folder / f"server-{port}.log"
            with open(self.log_path, "wb") as log:
                self.process = subprocess.Popen(
                    [self.python, *self.launcher, *argv[1:], "--port", str(port), *self.extra_args],
                    cwd=self.folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                wait_for(self._ready, timeout=timeout, what=f"the tutorial app on {self.base}")
                return self
            except AssertionError:
                self.stop()
                if "Address already in use" not in self.log() or attempt == 2:
                    raise AssertionError(f"the tutorial app did not start:\n{self.log()}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the tutorial app exited with {self.process.returncode}:\n{self.log()}")
        try:
            return requests.get(f"{self.base}/devidp/.well-known/openid-configuration", timeout=10).status_code == 200
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or still loading the app
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def stop(self) -> None:
        """End the app's process group (the ``--debug`` reloader starts a child)."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:  # pragma: no cover - it just ended
            return
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:  # pragma: no cover
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=15)


def idp_sign_in(http: requests.Session, page: requests.Response, username: str, *, mfa: bool = False) -> requests.Response:
    """Press a user's button on the development IdP's sign-in page (the form a browser posts)."""
    assert page.status_code == 200 and "/devidp/authorize" in page.url, (page.status_code, page.url)
    body = page.text
    action = html.unescape(re.search(r'<form method="post" action="([^"]+)"', body).group(1))  # type: ignore[union-attr]
    csrf = re.search(r'name="csrf" value="([^"]+)"', body).group(1)  # type: ignore[union-attr]
    data = {"csrf": csrf, "username": username}
    if mfa:
        data["mfa"] = "1"
    return http.post(urljoin(page.url, action), data=data, timeout=30)


def open_signed_in(base: str, path: str, username: str) -> tuple[requests.Session, requests.Response]:
    """A new browser opens ``path``, is sent to the IdP, signs in as ``username`` and lands on ``path``."""
    http = requests.Session()
    page = http.get(base + path, timeout=30)
    landed = idp_sign_in(http, page, username)
    return http, landed
