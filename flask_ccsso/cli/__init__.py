"""``flask ccsso ...``: operator commands.

One module per command group: :mod:`.check` (``check-config``,
``sp-metadata``), :mod:`.sessions` (``sessions list|revoke``), :mod:`.skills`
(``explain``), :mod:`.audit` (``audit init-db|tail|verify``) and
:mod:`.devidp` (``devidp-token``); :mod:`._common` holds what they share
(loading the app, one-line errors, masking). This package only gathers them
under the ``ccsso`` group, registered through the ``flask.commands`` entry
point (``ccsso = "flask_ccsso.cli:cli"``).

The CLI is part of the face: it may import anything of the package, and
nothing of the package imports it.
"""

from __future__ import annotations

from flask.cli import AppGroup

from .audit import audit
from .check import check_config, sp_metadata
from .devidp import devidp_token
from .sessions import sessions
from .skills import explain

__all__ = ["cli"]

cli = AppGroup("ccsso", help="flask-ccsso: single sign-on, sessions, skills and audit.")

for _command in (check_config, sp_metadata, sessions, explain, audit, devidp_token):
    cli.add_command(_command)
