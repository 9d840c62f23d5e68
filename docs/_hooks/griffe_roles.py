"""Griffe extension for the API reference (docs/api.md).

The docstrings are written in Sphinx style (``:param:``, ``:raises:``), which
mkdocstrings parses, but the inline roles (``:class:`~flask_ccsso.x.Y```,
``:meth:`init_app```, ``:data:`...```) and reST literal-block markers
(``text::``) would show up verbatim. This turns each role into a code span of
what Sphinx would display (``~`` keeps the last part) and each ``text::`` into
``text:`` (a line of just ``::`` goes), so the docstrings stay readable in the
source, in ``help()`` and on the page. The indented block that follows is a
Markdown code block already.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension, Module, Object

_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|data|mod|exc|obj|const):`(~?)([^`]+)`")
_LONE_LITERAL = re.compile(r"(?m)^[ \t]*::[ \t]*\n")
_TRAILING_LITERAL = re.compile(r"(?m)(?<=\S)::[ \t]*$")


def _display(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2)
    if "<" in target and target.endswith(">"):  # :meth:`text <target>`
        return f"`{target[: target.index('<')].strip()}`"
    target = target.lstrip(".")
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


def readable(text: str) -> str:
    """``text`` with Sphinx roles and literal-block markers made Markdown."""
    text = _ROLE.sub(_display, text)
    text = _LONE_LITERAL.sub("", text)
    return _TRAILING_LITERAL.sub(":", text)


class SphinxRoles(Extension):
    """Rewrite every docstring of the package once it is loaded."""

    def on_package(self, *, pkg: Module, **kwargs: Any) -> None:
        self._walk(pkg, set())

    def _walk(self, obj: Object, seen: set[str]) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        if obj.docstring is not None:
            obj.docstring.value = readable(obj.docstring.value)
        for member in obj.members.values():
            if not member.is_alias:  # an alias's docstring is its target's, rewritten there
                self._walk(member, seen)  # type: ignore[arg-type]
