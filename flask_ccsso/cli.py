"""``flask ccsso ...``: operator commands.

Each concern keeps its commands beside its code; this module only gathers
them under one group (registered through the ``flask.commands`` entry point).
"""

from __future__ import annotations

from importlib import import_module

import click
from flask.cli import AppGroup


class _Group(AppGroup):
    """Start-up errors (a bad config, the dev IdP refusing to start) end the
    command with their message and exit code 2, not a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        from flask.cli import ScriptInfo

        from .exceptions import ConfigError

        try:
            return super().invoke(ctx)
        except (ConfigError, RuntimeError) as exc:
            info = ctx.find_object(ScriptInfo)
            loading = info is None or getattr(info, "_loaded_app", None) is None
            if isinstance(exc, RuntimeError) and not loading:
                raise
            click.echo(f"[{click.style('ERROR', fg='red')}] the app could not start: {exc}", err=True)
            ctx.exit(2)


cli = _Group("ccsso", help="flask-ccsso: single sign-on, sessions, skills and audit.")

#: (module, attribute) of each sub-command or sub-group
_COMMANDS = (
    ("flask_ccsso.check", "check_config"),
    ("flask_ccsso.check", "sp_metadata"),
    ("flask_ccsso.session_cli", "sessions"),
    ("flask_ccsso.skills_cli", "explain"),
    ("flask_ccsso.audit.cli", "audit"),
    ("flask_ccsso.devidp.cli", "devidp_token"),
)

for _mod, _attr in _COMMANDS:
    try:
        _cmd = getattr(import_module(_mod), _attr)
    except (ModuleNotFoundError, AttributeError):  # a concern not installed / not built yet
        continue
    if isinstance(_cmd, click.Command):
        cli.add_command(_cmd)
