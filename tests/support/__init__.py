"""Helpers shared by the tests (no tests here). Fixtures built on them live in tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

#: data files the tests read: the seed configs (tests/data/seed_configs) and SAML metadata (tests/data/saml)
DATA = Path(__file__).resolve().parent.parent / "data"
