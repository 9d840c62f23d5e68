"""``flask ccsso ...``: operator commands.

Each concern keeps its commands beside its code; this module only gathers
them under one group (registered through the ``flask.commands`` entry point).
"""

from __future__ import annotations

from importlib import import_module

import click
from flask.cli import AppGroup

cli = AppGroup("ccsso", help="flask-ccsso: single sign-on, sessions, skills and audit.")

#: (module, attribute) of each sub-command or sub-group
_COMMANDS = (
    ("flask_ccsso.check", "check_config"),
    ("flask_ccsso.check", "sp_metadata"),
    ("flask_ccsso.session_cli", "sessions"),
    ("flask_ccsso.skills_cli", "explain"),
    ("flask_ccsso.audit.cli", "audit"),
)

for _mod, _attr in _COMMANDS:
    try:
        _cmd = getattr(import_module(_mod), _attr)
    except (ModuleNotFoundError, AttributeError):  # a concern not installed / not built yet
        continue
    if isinstance(_cmd, click.Command):
        cli.add_command(_cmd)
