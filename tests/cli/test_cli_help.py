"""``flask ccsso [<command>...] --help`` prints the help and exits 0, for every command.

The commands are enumerated from the ``ccsso`` click group itself (sub-groups
walked), so a command added later is covered without touching this module.
Each is run twice: through a real ``flask --app <app> ccsso ... --help``
process (the entry point, as a user types it) and through click's CliRunner.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import click
import pytest
from click.testing import CliRunner
from flask import Flask
from flask.cli import ScriptInfo

from flask_ccsso import ConfigError
from flask_ccsso.cli import cli
from tests.support.cli import LONG_KEY, make

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: an app with a valid config: --help must not depend on the app failing to load
HELP_APP = textwrap.dedent(f'''
    from flask import Flask
    from flask_ccsso import CCSSO
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "{LONG_KEY}"
    app.config["CCSSO"] = {{"auth": {{"providers": {{"op": {{
        "provider": "oidc", "clientId": "portal", "clientSecret": "s3cret",
        "issuer": "https://idp.example.com"}}}}}}}}
    CCSSO(app)
''')


def _paths(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command path under ``group``: the groups themselves and their leaves."""
    for name in sorted(group.commands):
        command = group.commands[name]
        path = (*prefix, name)
        yield path
        if isinstance(command, click.Group):
            yield from _paths(command, path)


PATHS = [(), *_paths(cli)]


def _ids(path: tuple[str, ...]) -> str:
    return " ".join(("ccsso", *path))


def _command(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


def _assert_help(path: tuple[str, ...], code: int, stdout: str, stderr: str) -> None:
    """Exit 0, click's help for this very command on stdout, and no error anywhere.

    (CliRunner callers pass click's combined ``output`` as ``stdout``: that
    works with every click the project supports, mixed stderr or not.)
    """
    command = _command(path)
    assert code == 0, (path, stdout, stderr)
    assert stdout.startswith("Usage: ") and " ".join(("ccsso", *path)) in stdout.splitlines()[0], stdout
    assert "--help" in stdout and "Show this message and exit." in stdout
    first = (command.help or "").strip().splitlines()[0].rstrip(".")
    assert first and first[:40] in " ".join(stdout.split()), (first, stdout)
    assert "[ERROR]" not in stdout + stderr and "Traceback" not in stderr, stderr
    if isinstance(command, click.Group):  # a group's help lists each of its commands
        for name in command.commands:
            assert f"  {name}" in stdout, (name, stdout)


def test_every_command_is_enumerated() -> None:
    names = {_ids(p) for p in PATHS}
    for expected in ("ccsso check-config", "ccsso sp-metadata", "ccsso explain", "ccsso sessions list",
                     "ccsso sessions revoke", "ccsso audit init-db", "ccsso audit tail", "ccsso audit verify",
                     "ccsso devidp-token"):
        assert expected in names


@pytest.fixture(scope="module")
def help_app_dir(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("help_app")
    (folder / "helpapp.py").write_text(HELP_APP)
    return folder


@pytest.mark.parametrize("path", PATHS, ids=_ids)
def test_help_exits_0_in_a_real_flask_process(path: tuple[str, ...], help_app_dir: Any) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join((str(help_app_dir), ROOT)), NO_COLOR="1")
    env.pop("FLASK_APP", None)
    proc = subprocess.run([sys.executable, "-m", "flask", "--app", "helpapp", "ccsso", *path, "--help"],
                          cwd=help_app_dir, env=env, capture_output=True, text=True, timeout=120, check=False)
    _assert_help(path, proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.parametrize("path", PATHS, ids=_ids)
def test_help_exits_0_through_clirunner(path: tuple[str, ...], tmp_path: Any) -> None:
    app = make(tmp_path, {"auth": {"providers": {"op": {
        "provider": "oidc", "clientId": "portal", "clientSecret": "s3cret", "issuer": "https://idp.example.com"}}}})
    result = app.test_cli_runner().invoke(cli, [*path, "--help"], prog_name="ccsso")
    _assert_help(path, result.exit_code, result.output, "")


@pytest.mark.parametrize("path", PATHS, ids=_ids)
def test_help_never_loads_the_app(path: tuple[str, ...]) -> None:
    """Help is there when the app cannot start at all: it is what one reads to fix it."""
    def broken() -> Flask:
        raise ConfigError("auth.clientID", "unknown key.", "did you mean 'clientId'?")

    result = CliRunner().invoke(cli, [*path, "--help"], obj=ScriptInfo(create_app=broken), prog_name="ccsso")
    _assert_help(path, result.exit_code, result.output, "")
