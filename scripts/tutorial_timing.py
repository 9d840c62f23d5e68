"""Time docs/tutorial.md from a fresh clone to its protected route, the way a newcomer follows it.

    python scripts/tutorial_timing.py [--source PATH_OR_URL] [--keep]

Steps, each timed: ``git clone`` the repository (default: this checkout;
a clone holds its committed state only), ``python -m venv``, ``pip install -e
'<clone>[all]'`` (the tutorial's step 1), write ``app.py`` and ``ccsso.json``
exactly as the tutorial shows them, start the app with the tutorial's
``flask --app app run --debug`` (on a free port, ``BASE_URL`` set as step 4
says), then a real HTTP client opens ``/migrations``, signs in as alice at
the development IdP and gets the protected page. The tutorial's text is read
from this checkout (tests/support/tutorial.py, shared with the docs test).

Reading and typing time is not measured; the figure is what the machine
needs, with pip's cache and index as they are on this machine.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import tutorial  # (after the repository root is put on the path above)


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, check=False, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--source", default=str(ROOT), help="repository to clone (default: this checkout)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="ccsso-tutorial-"))
    clone, portal = work / "flask-ccsso", work / "my-portal"
    steps: list[tuple[str, float]] = []
    start = last = time.monotonic()

    def step(name: str) -> None:
        nonlocal last
        now = time.monotonic()
        steps.append((name, now - last))
        print(f"  {name:<44} {now - last:7.1f} s", file=sys.stderr, flush=True)
        last = now

    app = None
    try:
        _run(["git", "clone", "--quiet", args.source, str(clone)])
        step("git clone")
        portal.mkdir()
        _run([sys.executable, "-m", "venv", str(portal / ".venv")])
        step("python -m venv .venv")
        python = str(portal / ".venv" / "bin" / "python")
        _run([python, "-m", "pip", "install", "--quiet", "-e", f"{clone}[all]"])
        step("pip install -e '<clone>[all]'")
        tutorial.write_files(portal)
        env = {"SECRET_KEY": secrets.token_hex(32), "CCSSO_DEVIDP_ENABLED": "1",
               "PATH": f"{portal / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
               "VIRTUAL_ENV": str(portal / ".venv")}
        app = tutorial.RunningApp(portal, python=python, env=env).start()
        step("write the files, flask --app app run --debug")
        _, landed = tutorial.open_signed_in(app.base, "/migrations", "alice")
        assert landed.status_code == 200 and landed.json()["caller"] == "alice@example.com", landed.text
        step("sign in as alice, GET /migrations (200)")
    finally:
        if app is not None:
            app.stop()
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    total = time.monotonic() - start
    print(f"fresh clone to the tutorial's protected route: {total:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
