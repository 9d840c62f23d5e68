"""Where a SQLite database lives never depends on the current directory.

A relative ``sqlite:///audit.sqlite`` and ``sqlite:///{instance}/...`` mean
the app's instance folder (as Flask-SQLAlchemy reads relative SQLite paths)
for the running app's audit sink, the ``sqlalchemy`` session store and every
``flask ccsso audit`` command -- including ``--url`` -- whatever directory
the process started in. Without an app such a URL is refused with the fix,
never guessed from the current directory. The CLI runs as a real
``python -m flask`` process, from a working directory that is not the app's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_ccsso import CCSSO
from flask_ccsso.audit import parse_logging_block
from flask_ccsso.exceptions import ConfigError

ROOT = Path(__file__).resolve().parents[2]

APP = '''
import os
from flask import Flask
from flask_ccsso import CCSSO

HERE = os.path.dirname(os.path.abspath(__file__))
app = Flask(__name__, instance_path=os.path.join(HERE, "instance"))
app.config["SECRET_KEY"] = "k" * 48
app.config["CCSSO"] = {
    "auth": {"providers": {"idp": {"provider": "oidc", "clientId": "c", "issuer": "https://idp.example.com",
                                   "redirectUri": "https://portal.example.com/sso/idp/callback"}}},
    "session": {"store": {"type": "sqlalchemy", "url": os.environ["TEST_STORE_URL"]}},
    "logging": {"destinations": [{"type": "sqlalchemy", "url": os.environ["TEST_AUDIT_URL"]}]},
}
CCSSO(app)
'''


def flask_cli(app_dir: Path, cwd: Path, *args: str, audit_url: str, store_url: str = "sqlite:///state.sqlite",
              ) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(app_dir), str(ROOT)]), TEST_AUDIT_URL=audit_url,
               TEST_STORE_URL=store_url)
    env.pop("FLASK_APP", None)
    return subprocess.run([sys.executable, "-m", "flask", "--app", "portalapp", "ccsso", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """The app's folder (with ``portalapp.py``) and another, unrelated working directory."""
    app_dir, elsewhere = tmp_path / "app", tmp_path / "elsewhere"
    app_dir.mkdir()
    elsewhere.mkdir()
    (app_dir / "portalapp.py").write_text(textwrap.dedent(APP))
    return app_dir, elsewhere


@pytest.mark.parametrize("audit_url", ["sqlite:///audit.sqlite", "sqlite:///{instance}/audit.sqlite"])
def test_cli_from_another_directory_uses_the_instance_folder(folders, audit_url):
    app_dir, elsewhere = folders
    done = flask_cli(app_dir, elsewhere, "audit", "init-db", audit_url=audit_url)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert (app_dir / "instance" / "audit.sqlite").exists()
    engine = sa.create_engine(f"sqlite:///{app_dir / 'instance' / 'audit.sqlite'}")
    assert sa.inspect(engine).has_table("ccsso_audit_events")
    engine.dispose()  # Python 3.13 warns about a pooled connection left to the garbage collector
    # nothing was created where the command ran: not the audit file, not the session store, no "{instance}" folder
    assert sorted(p.name for p in elsewhere.iterdir()) == []
    # the session store's relative SQLite URL is in the instance folder too
    assert (app_dir / "instance" / "state.sqlite").exists()

    for cwd in (elsewhere, app_dir):
        done = flask_cli(app_dir, cwd, "audit", "verify", audit_url=audit_url)
        assert done.returncode == 0 and "intact" in done.stdout, done.stderr


def test_url_option_resolves_against_the_apps_instance_folder(folders):
    app_dir, elsewhere = folders
    done = flask_cli(app_dir, elsewhere, "audit", "init-db", "--url", "sqlite:///{instance}/other.sqlite",
                     audit_url="sqlite:///audit.sqlite")
    assert done.returncode == 0, done.stderr
    assert (app_dir / "instance" / "other.sqlite").exists() and not list(elsewhere.iterdir())


def test_store_url_with_placeholder(folders):
    app_dir, elsewhere = folders
    done = flask_cli(app_dir, elsewhere, "sessions", "list", audit_url="sqlite:///audit.sqlite",
                     store_url="sqlite:///{instance}/sessions.sqlite")
    assert done.returncode == 0, done.stderr
    assert (app_dir / "instance" / "sessions.sqlite").exists() and not list(elsewhere.iterdir())


def test_running_app_writes_into_the_instance_folder(tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    app = Flask("relaudit", instance_path=str(tmp_path / "instance"))
    app.config.update(SECRET_KEY="k" * 48, CCSSO={
        "auth": {"providers": {"idp": {"provider": "oidc", "clientId": "c", "issuer": "https://idp.example.com"}}},
        "logging": {"spoolDir": "spool", "destinations": [{"type": "sqlalchemy", "url": "sqlite:///audit.sqlite"}]}})
    CCSSO(app)
    pipeline = app.extensions["ccsso"].audit
    try:
        expected = f"sqlite:///{tmp_path / 'instance' / 'audit.sqlite'}"
        assert app.extensions["ccsso"].audit_settings.database_url == expected
        assert pipeline.settings.spool_dir == str(tmp_path / "instance" / "spool")
        pipeline.emit("auth.logout", reason="user")
        assert pipeline.flush(timeout=10)
    finally:
        pipeline.close(timeout=5)
    engine = sa.create_engine(expected)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM ccsso_audit_events")).scalar() == 1
    engine.dispose()
    assert not list(elsewhere.iterdir())


def test_resolution_rules(tmp_path):
    from flask_ccsso.stores.database import resolve_database_url

    inst = str(tmp_path / "inst")
    assert resolve_database_url("sqlite:///a.sqlite", inst) == f"sqlite:///{inst}/a.sqlite"
    assert resolve_database_url("sqlite+pysqlite:///sub/a.sqlite", inst) == f"sqlite+pysqlite:///{inst}/sub/a.sqlite"
    assert resolve_database_url("sqlite:///{instance}/a.sqlite", inst) == f"sqlite:///{inst}/a.sqlite"
    assert resolve_database_url("sqlite:///file:a.db?uri=true", inst) == f"sqlite:///file:{inst}/a.db?uri=true"
    for unchanged in ("sqlite://", "sqlite:///:memory:", "sqlite:////abs/a.sqlite",
                      "postgresql+psycopg://u:p@db/audit"):
        assert resolve_database_url(unchanged, inst) == unchanged
    assert os.path.isdir(inst)  # created, as Flask-SQLAlchemy does
    # no app: refused with the fix, never resolved against the current directory
    for needs_app in ("sqlite:///a.sqlite", "sqlite:///{instance}/a.sqlite"):
        with pytest.raises(ConfigError) as info:
            resolve_database_url(needs_app, None, key="--url")
        assert info.value.path == "--url" and "--app" in (info.value.fix or "")
    # the placeholder means nothing in a server URL
    with pytest.raises(ConfigError, match="only understood in a SQLite"):
        resolve_database_url("postgresql+psycopg://u:secret@db/{instance}", inst)


def test_placeholder_in_a_server_url_is_a_start_up_error(tmp_path):
    app = Flask("badph", instance_path=str(tmp_path / "i"))
    app.config.update(SECRET_KEY="k" * 48, CCSSO={
        "auth": {"providers": {"idp": {"provider": "oidc", "clientId": "c", "issuer": "https://idp.example.com"}}},
        "logging": {"destinations": [{"type": "sqlalchemy", "name": "db",
                                      "url": "postgresql+psycopg://audit:pw@db/{instance}"}]}})
    with pytest.raises(ConfigError) as info:
        CCSSO(app)
    assert info.value.path == "logging.destinations.db.url" and "pw" not in str(info.value)


def test_settings_resolved_is_idempotent(tmp_path):
    settings = parse_logging_block({"destinations": [{"type": "sqlalchemy", "url": "sqlite:///a.sqlite"}]})
    once = settings.resolved(str(tmp_path))
    assert once.resolved(str(tmp_path)) == once
    assert once.database_url == f"sqlite:///{tmp_path}/a.sqlite"
