"""MkDocs hook: a placeholder for each concern page that is not written yet.

The concern pages (audit, sessions, skills, SAML, Google Workspace) are
written beside their code. Until one lands, this hook adds a short generated
page in its place, so links to it resolve and ``mkdocs build --strict`` keeps
checking every other link. Once the real file exists the hook does nothing.
"""

from __future__ import annotations

from typing import Any

from mkdocs.structure.files import File, Files

PENDING = {
    "audit.md": "Audit trail",
    "sessions.md": "Sessions",
    "skills.md": "Skills and step-up",
    "saml.md": "SAML",
    "google-workspace.md": "Google Workspace (SAML)",
    "devidp.md": "Development IdP",
}


def on_files(files: Files, config: Any) -> Files:
    for src, title in PENDING.items():
        if files.get_file_from_path(src) is None:
            content = (f"# {title}\n\nThis page is being written. Until it lands, see the module docstrings in "
                       "`flask_ccsso/` and the [configuration reference](configuration.md).\n")
            files.append(File.generated(config, src, content=content))
    return files
