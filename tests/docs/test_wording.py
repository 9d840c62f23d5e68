"""The docs use only words a reader can know, and no made-up repository addresses (issue #14 item 15).

"The seed" was the name of the config blocks this project started from; a
reader never saw it. The docs say "the config blocks from the usual Okta /
Azure AD / Google guides" instead. The API reference is rendered from
docstrings and ``#:`` comments, so those are read too.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: words only the project's authors know
UNKNOWN_WORDS = re.compile(r"\bseed(?:'s|s)?\b", re.IGNORECASE)
#: a repository address that names no real repository
PLACEHOLDER_REPO = re.compile(
    r"(?:github|gitlab|bitbucket)\.(?:com|org)/(?:example|examples|your[-_]?org\w*|your[-_]?name|yourname|owner|"
    r"user|username|org|organization|me|<[^>/]+>|\{[^}/]+\}|\.\.\.)/", re.IGNORECASE)


def _doc_pages() -> list[Path]:
    # the changelog is history: it may quote the words of its time
    return [ROOT / "README.md", ROOT / "mkdocs.yml",
            *sorted(p for p in (ROOT / "docs").rglob("*.md") if p.name != "changelog.md")]


def _reader_facing_python_text() -> Iterator[tuple[str, int, str]]:
    """Docstrings and ``#:`` comments of the package and the example app (the API page shows them)."""
    for folder in ("flask_ccsso", "example_app"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            source = path.read_text(encoding="utf-8")
            rel = str(path.relative_to(ROOT))
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node, clean=False)
                    if doc:
                        line = node.body[0].lineno
                        yield rel, line, doc
            for number, line in enumerate(source.splitlines(), 1):
                if line.strip().startswith("#"):
                    yield rel, number, line


@pytest.mark.parametrize("page", _doc_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_pages_use_words_a_reader_knows(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    bad = [f"{page.name}:{text[:m.start()].count(chr(10)) + 1}: {m.group(0)!r}" for m in UNKNOWN_WORDS.finditer(text)]
    assert not bad, "say 'the config blocks from the usual Okta / Azure AD / Google guides' instead:\n" + "\n".join(bad)


@pytest.mark.parametrize("page", _doc_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_pages_name_no_placeholder_repository(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert not PLACEHOLDER_REPO.findall(text), PLACEHOLDER_REPO.findall(text)


def test_docstrings_and_attribute_comments_use_words_a_reader_knows() -> None:
    bad = [f"{rel}:{line}" for rel, line, text in _reader_facing_python_text() if UNKNOWN_WORDS.search(text)]
    assert not bad, bad


def test_packaging_metadata_names_no_placeholder_repository() -> None:
    assert not PLACEHOLDER_REPO.findall((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


@pytest.mark.parametrize("text", ["repo_url: https://github.com/example/flask-ccsso", "the seed's shapes",
                                  "https://github.com/your-org/flask-ccsso", "one per seed block"])
def test_the_checks_catch_what_they_are_for(text: str) -> None:
    assert UNKNOWN_WORDS.search(text) or PLACEHOLDER_REPO.search(text)
