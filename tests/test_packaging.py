"""Packaging facts the rest of the project relies on (docs/design.md, "setup.cfg").

* one version source: ``pyproject.toml``; ``flask_ccsso.__version__`` reads the
  installed metadata, and no module writes a version of its own;
* every dependency declares a ``>=`` lower bound, so ``scripts/matrix`` can pin
  them all for its lowest-versions leg.
"""

from __future__ import annotations

import re
from importlib.metadata import requires, version
from pathlib import Path

import flask_ccsso

ROOT = Path(__file__).resolve().parent.parent


def test_the_version_is_written_once() -> None:
    declared = re.search(r'^version = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert declared is not None
    assert flask_ccsso.__version__ == version("flask-ccsso") == declared.group(1)
    written = [str(path.relative_to(ROOT)) for path in (ROOT / "flask_ccsso").rglob("*.py")
               if re.search(r"^__version__\s*=", path.read_text(), re.MULTILINE)]
    assert written == []
    assert not (ROOT / "setup.cfg").exists() and not (ROOT / "setup.py").exists()


def test_every_dependency_has_a_lower_bound() -> None:
    unbounded = [req for req in requires("flask-ccsso") or ()
                 if not req.startswith("flask-ccsso") and ">=" not in req.partition(";")[0]]
    assert unbounded == []
