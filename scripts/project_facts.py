"""Facts the test matrix reads from ``pyproject.toml``, so they are said once.

``python scripts/project_facts.py pythons``
    The supported Python versions (the ``Programming Language :: Python :: 3.X``
    classifiers), one a line. The lowest must match ``requires-python``, so the
    matrix cannot drift from what pip lets users install.

``python scripts/project_facts.py lowest-constraints``
    A pip constraints file pinning every declared ``>=`` lower bound of the
    runtime dependencies and of the ``test`` extra (``name==bound``), for the
    leg that runs the unit suite against the oldest versions we claim to
    support. A bound that cannot be installed or fails a test is a false bound.

Needs Python >= 3.11 (``tomllib``), the default interpreter of the matrix.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
# Extras that are tools for working on the project, not part of what users run.
NOT_PINNED_EXTRAS = frozenset({"docs", "dev", "bench"})
_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*?)\s*(?:;.*)?$")
_CLASSIFIER = re.compile(r"^Programming Language :: Python :: (3\.\d+)$")


def _project() -> dict:
    with PYPROJECT.open("rb") as f:
        return tomllib.load(f)["project"]


def pythons() -> list[str]:
    project = _project()
    versions = sorted((m.group(1) for c in project.get("classifiers", []) if (m := _CLASSIFIER.match(c))),
                      key=lambda v: tuple(map(int, v.split("."))))
    if not versions:
        sys.exit("pyproject.toml lists no 'Programming Language :: Python :: 3.X' classifiers")
    floor = re.fullmatch(r">=\s*(3\.\d+)", project["requires-python"].strip())
    if floor is None or floor.group(1) != versions[0]:
        sys.exit(f"requires-python {project['requires-python']!r} does not start at the lowest "
                 f"classifier version {versions[0]}")
    return versions


def lowest_constraints() -> list[str]:
    project = _project()
    name = project["name"].lower()
    reqs = list(project.get("dependencies", []))
    for extra, items in project.get("optional-dependencies", {}).items():
        if extra not in NOT_PINNED_EXTRAS:
            reqs.extend(items)
    pins: dict[str, str] = {}
    for req in reqs:
        m = _REQ.match(req)
        if m is None:
            sys.exit(f"cannot read the requirement {req!r}")
        dist, spec = m.group(1).lower(), m.group(2)
        if dist == name:
            continue  # an extra that names other extras
        bound = re.fullmatch(r">=\s*([0-9][0-9A-Za-z.]*)(?:\s*,\s*<.*)?", spec)
        if bound is None:
            sys.exit(f"{req!r} has no '>=' lower bound: every dependency must declare the oldest version it works with")
        if pins.setdefault(dist, bound.group(1)) != bound.group(1):
            sys.exit(f"{dist} is declared with two lower bounds: {pins[dist]} and {bound.group(1)}")
    return [f"{dist}=={version}" for dist, version in sorted(pins.items())]


def main(argv: list[str]) -> None:
    commands = {"pythons": pythons, "lowest-constraints": lowest_constraints}
    if len(argv) != 1 or argv[0] not in commands:
        sys.exit(f"usage: {Path(__file__).name} {{{'|'.join(commands)}}}")
    print("\n".join(commands[argv[0]]()))


if __name__ == "__main__":
    main(sys.argv[1:])
