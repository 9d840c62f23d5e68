"""What the README tells a newcomer to type works, and says where things go (issue #14 item 7).

* It makes a virtual environment before the first ``pip install``, and says
  that ``bash scripts/test`` installs into the active one (and the script
  does install with the active ``python3``).
* Next to the "port 5000 taken" hint it says what the other commands need on
  another port (``CCSSO_EXAMPLE_BASE_URL``): only ``flask run`` can see the
  port it serves on. The test starts the portal on a free port that is not
  5000 and runs the README's ``check-config`` line, with that port, against it.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import requests

from tests.support.tutorial import ROOT, free_port, wait_for

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _paragraph_with(needle: str) -> str:
    for paragraph in re.split(r"\n\s*\n", README):
        if needle in paragraph:
            return paragraph
    raise AssertionError(f"the README has no paragraph with {needle!r}")


def _first_shell_block() -> list[str]:
    block = re.search(r"```sh\n(.*?)```", README, re.DOTALL)
    assert block, "the README has no sh block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_the_readme_makes_a_virtual_environment_before_installing() -> None:
    lines = _first_shell_block()
    venv = next(i for i, line in enumerate(lines) if "-m venv" in line)
    activate = next(i for i, line in enumerate(lines) if re.search(r"(?:^|&&\s*|\s)(?:\.|source) \S*bin/activate", line))
    install = next(i for i, line in enumerate(lines) if "pip install" in line)
    assert venv <= activate <= install and ("&&" in lines[venv] or venv < activate), lines


def test_the_readme_says_scripts_test_installs_into_the_active_environment() -> None:
    paragraph = _paragraph_with("It installs the package")
    assert "active" in paragraph and "python3 -m pip" in paragraph
    script = (ROOT / "scripts" / "test").read_text(encoding="utf-8")
    installs = [line for line in script.splitlines() if re.search(r"\bpip3?\b.*\binstall\b", line)]
    # what the README promises: the active python3, no --user, no sudo, no other interpreter
    assert installs and all(line.strip().startswith("python3 -m pip install") for line in installs), installs
    assert not any("--user" in line or "sudo" in line for line in installs), installs


def test_the_port_hint_names_the_base_url_for_the_other_commands() -> None:
    paragraph = _paragraph_with("--port 5001")
    assert "CCSSO_EXAMPLE_BASE_URL=http://127.0.0.1:5001" in paragraph, paragraph


def _readme_check_config_command(port: int) -> tuple[dict[str, str], list[str]]:
    """The README's own ``... flask --app example_app ccsso check-config`` line, for ``port``."""
    text = " ".join(_paragraph_with("--port 5001").split())
    line = re.search(r"`(CCSSO_EXAMPLE_BASE_URL=\S+ [^`]*ccsso check-config)`", text)
    assert line, text
    words = shlex.split(line.group(1).replace("5001", str(port)))
    env = dict(w.split("=", 1) for w in words if re.match(r"^[A-Z_]+=", w))
    argv = [w for w in words if not re.match(r"^[A-Z_]+=", w)]
    return env, argv


def test_the_readme_check_config_line_works_on_another_port(tmp_path: Path) -> None:
    port = free_port()
    while port == 5000:  # pragma: no cover - the point is a port other than the default
        port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCSSO_")}
    env.update(CCSSO_DEVIDP_ENABLED="1", CCSSO_EXAMPLE_INSTANCE=str(tmp_path / "instance"), SECRET_KEY="r" * 64)
    with open(tmp_path / "portal.log", "wb") as log:  # the child keeps its own copy of the descriptor
        portal = subprocess.Popen([sys.executable, "-m", "flask", "--app", "example_app", "run", "--port", str(port)],
                                  cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        def up() -> bool:
            assert portal.poll() is None, (tmp_path / "portal.log").read_text()
            try:
                return requests.get(f"{base}/devidp/.well-known/openid-configuration", timeout=2).ok
            except requests.ConnectionError:
                return False

        wait_for(up, timeout=60, what=f"the example portal on {base}")
        extra, argv = _readme_check_config_command(port)
        assert argv[:1] == ["flask"], argv
        done = subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, env={**env, **extra},
                              capture_output=True, text=True, timeout=120, check=False)
        out = done.stdout + done.stderr
        assert f"discovery document OK (issuer {base}/devidp)" in out, out
        assert "cannot reach the discovery document" not in out, out
    finally:
        portal.terminate()
        portal.wait(timeout=30)
