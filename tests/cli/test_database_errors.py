"""Every ``flask ccsso`` command ends a database error with one line: the
database (password masked by ``_validate.mask_url``), what failed, the fix;
exit code 2, no traceback.

Real faults: a PostgreSQL URL on a closed port of 127.0.0.1 (refused), a
``.invalid`` host (DNS), the real PostgreSQL on 127.0.0.1:5432 and a real
SQLite file without the audit table (``tail`` / ``verify`` before
``init-db``), a SQLite path in a folder that does not exist, a session store
on a closed port (PostgreSQL and Redis) for the commands that load the app.
"""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.cli import ScriptInfo

from flask_ccsso import CCSSO
from flask_ccsso.cli import cli
from flask_ccsso.cli.audit import audit
from tests.support.audit import PG_URL

PASSWORD = "s3cret-pw"


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound on 127.0.0.1 but not listening: connections are refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


def one_error_line(result: Any) -> str:
    """The command failed with exit 2 and exactly one ``[ERROR]`` line, no traceback, no password."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("[ERROR]")]
    assert len(errors) == 1, result.output
    assert "Traceback" not in result.output and PASSWORD not in result.output
    assert "Fix: " in errors[0]
    return errors[0]


@pytest.mark.parametrize("command", ["init-db", "tail", "verify"])
def test_unreachable_postgres_is_one_line(command, closed_port):
    url = f"postgresql+psycopg://audit:{PASSWORD}@127.0.0.1:{closed_port}/audit"
    line = one_error_line(CliRunner().invoke(audit, [command, "--url", url]))
    assert f"postgresql+psycopg://audit:***@127.0.0.1:{closed_port}/audit" in line
    assert f"connection to 127.0.0.1:{closed_port} was refused" in line
    assert "start the server" in line


def test_unresolvable_database_host_is_one_line():
    url = f"postgresql+psycopg://audit:{PASSWORD}@ccsso-no-such-db.invalid/audit"
    line = one_error_line(CliRunner().invoke(audit, ["init-db", "--url", url]))
    assert "audit:***@ccsso-no-such-db.invalid" in line and "(DNS)" in line


@pytest.mark.parametrize("command", ["tail", "verify"])
def test_missing_table_in_sqlite_says_init_db(command, tmp_path):
    db = tmp_path / "audit.sqlite"
    sqlite3.connect(db).close()  # the file exists, the table does not
    line = one_error_line(CliRunner().invoke(audit, [command, "--url", f"sqlite:///{db}"]))
    assert "the table 'ccsso_audit_events' does not exist" in line and "flask ccsso audit init-db" in line


@pytest.mark.parametrize("command", ["tail", "verify"])
def test_missing_table_in_postgres_says_init_db(command, pg_table):
    _engine, table = pg_table  # a fresh name: never created
    line = one_error_line(CliRunner().invoke(audit, [command, "--url", PG_URL, "--table", table]))
    assert f"the table '{table}' does not exist" in line and "init-db" in line


@pytest.mark.parametrize("command", ["tail", "verify"])
def test_reading_commands_never_create_a_database(command, tmp_path):
    db = tmp_path / "audit.sqlite"
    line = one_error_line(CliRunner().invoke(audit, [command, "--url", f"sqlite:///{db}"]))
    assert f"the SQLite file {db} does not exist" in line and "init-db" in line
    assert not db.exists()


def test_missing_folder_is_named(tmp_path):
    db = tmp_path / "no" / "such" / "folder" / "audit.sqlite"
    line = one_error_line(CliRunner().invoke(audit, ["init-db", "--url", f"sqlite:///{db}"]))
    assert f"folder {db.parent} does not exist" in line


def test_placeholder_without_an_app_is_one_line():
    line = one_error_line(CliRunner().invoke(audit, ["init-db", "--url", "sqlite:///{instance}/audit.sqlite"]))
    assert "--url" in line and "--app" in line


# --------------------------------------------------------------------------- the session store, every command

def _store_app(tmp_path: Path, store: dict[str, str]) -> Flask:
    app = Flask("storedown", instance_path=str(tmp_path / "instance"))
    app.config.update(SECRET_KEY="k" * 48, CCSSO={
        "auth": {"providers": {"idp": {"provider": "oidc", "clientId": "c", "issuer": "https://idp.example.com",
                                       "redirectUri": "https://portal.example.com/sso/idp/callback"}}},
        "skills": {"reports": {}}, "session": {"store": store}, "logging": {"level": "off"}})
    CCSSO(app)
    return app


COMMANDS = [["sessions", "list"], ["sessions", "revoke", "--user", "a@example.com"],
            ["explain", "--user", "a@example.com", "--skill", "reports"], ["check-config", "--offline"],
            ["audit", "tail"], ["devidp-token", "--user", "alice"]]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_sql_session_store_down_at_start_up(args, tmp_path, closed_port):
    store = {"type": "sqlalchemy", "url": f"postgresql+psycopg://app:{PASSWORD}@127.0.0.1:{closed_port}/app"}
    result = CliRunner().invoke(cli, args, obj=ScriptInfo(create_app=lambda: _store_app(tmp_path, store)))
    line = one_error_line(result)
    assert f"session store postgresql+psycopg://app:***@127.0.0.1:{closed_port}/app" in line
    assert "refused" in line


@pytest.mark.parametrize("args", COMMANDS[:3], ids=lambda a: " ".join(a[:2]))
def test_redis_session_store_down_in_a_command(args, tmp_path, closed_port):
    app = _store_app(tmp_path, {"type": "redis", "url": f"redis://:{PASSWORD}@127.0.0.1:{closed_port}/0"})
    line = one_error_line(app.test_cli_runner().invoke(cli, args))
    assert f"session store redis://:***@127.0.0.1:{closed_port}/0" in line and "refused" in line


def test_check_config_names_the_store(tmp_path, closed_port):
    app = _store_app(tmp_path, {"type": "redis", "url": f"redis://:{PASSWORD}@127.0.0.1:{closed_port}/0"})
    result = app.test_cli_runner().invoke(cli, ["check-config", "--offline"])
    assert result.exit_code == 2 and PASSWORD not in result.output
    assert f"session store redis://:***@127.0.0.1:{closed_port}/0: the connection to 127.0.0.1:{closed_port} " \
           "was refused" in result.output
