"""The provider registry (issue #11, item 3): built-in types, then the
``flask_ccsso.providers`` entry point group, like Flask-Multipass.

A real distribution is installed for these tests: a ``dist-info`` folder with
an ``entry_points.txt`` and a module, in a temporary directory put on
``sys.path``, found by :mod:`importlib.metadata` as pip's would be.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from flask import Flask

from flask_ccsso import CCSSO, ConfigError, get_state
from flask_ccsso.config import BUILTIN_SETTINGS, ENTRY_POINT_GROUP, known_provider_types, parse_config
from flask_ccsso.providers import BUILTIN_PROVIDERS, provider_class
from flask_ccsso.stores import MemoryStore

ACME = '''
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from flask_ccsso.config import ProviderSettings, setting
from flask_ccsso.providers.base import Provider


@dataclass(frozen=True, kw_only=True)
class AcmeSettings(ProviderSettings):
    realm: str = setting("realm", fix="name the Acme realm.")
    login_url: str = setting("loginUrl", "https://sso.acme.example/login")
    timeout: float = setting("timeout", 7.0)
    api_key: str | None = setting("apiKey", None, secret=True)


class AcmeProvider(Provider):
    type: ClassVar[str] = "acme"
    protocol: ClassVar[str] = "acme"
    settings_class: ClassVar[type[ProviderSettings]] = AcmeSettings

    def begin_login(self, req):
        return f"{self.settings.login_url}?realm={self.settings.realm}"

    def finish_login(self, req):
        raise NotImplementedError


class NoSettings:
    """Registered by mistake: names no settings struct."""
'''


def _install(root: Path, name: str, entry_points: str, module: str | None = None) -> None:
    """Write a distribution as pip lays one out: ``<name>.py`` and ``<name>-1.0.dist-info``."""
    info = root / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    if module is not None:
        (root / f"{name}.py").write_text(module)


@pytest.fixture
def acme(tmp_path, monkeypatch):
    """A third-party distribution registering the provider type ``acme`` (and
    two broken registrations, and one that tries to replace a built-in)."""
    _install(tmp_path, "acme_sso", f"""
        [{ENTRY_POINT_GROUP}]
        acme = acme_sso:AcmeProvider
        nosettings = acme_sso:NoSettings
        okta = acme_sso:AcmeProvider
        gone = acme_sso_missing:Provider
        """, ACME)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("acme_sso", None)
    yield tmp_path
    sys.modules.pop("acme_sso", None)


def test_a_third_party_provider_type_is_found(acme):
    cls = provider_class("acme")
    assert cls.__name__ == "AcmeProvider"
    assert Path(__import__(cls.__module__).__file__).parent == acme  # loaded from the installed distribution
    assert cls.config_keys() == ("provider", "displayName", "fallback", "fallbackOnly", "realm", "loginUrl", "timeout", "apiKey")
    assert "acme" in known_provider_types()


def test_a_third_party_provider_type_is_configured_like_a_built_in(acme):
    cfg = parse_config({"auth": {"provider": "acme", "realm": "north", "apiKey": "${ACME_KEY}"}},
                       environ={"ACME_KEY": "k-123"})
    settings = cfg.providers["acme"]
    assert type(settings).__name__ == "AcmeSettings"
    assert (settings.type, settings.realm, settings.login_url, settings.timeout) == (
        "acme", "north", "https://sso.acme.example/login", 7.0)
    assert settings.display_name == "acme" and "k-123" not in repr(settings)


@pytest.mark.parametrize("block, path, says", [
    ({"provider": "acme"}, "auth.realm", "name the Acme realm"),
    ({"provider": "acme", "realm": "n", "timeout": float("nan")}, "auth.timeout", "finite"),
    ({"provider": "acme", "realm": "n", "loginUrl": "https://[x"}, "auth.loginUrl", "not a valid URL"),
    ({"provider": "acme", "realm": "n", "relm": "n"}, "auth.relm", "did you mean 'realm'"),
])
def test_a_third_party_type_gets_the_same_checks(acme, block, path, says):
    """Its keys pass the checks of their kind (numbers, URLs, unknown keys) without code of its own."""
    with pytest.raises(ConfigError) as e:
        parse_config({"auth": block})
    assert e.value.path == path and says in str(e.value)


def test_a_third_party_provider_is_built_at_init_app(acme, tmp_path):
    app = Flask("plugin", instance_path=str(tmp_path / "inst"), root_path=str(tmp_path))
    app.config.update(SECRET_KEY="k" * 32, CCSSO={"auth": {"providers": {
        "corp": {"provider": "acme", "realm": "north"},
        "okta": {"provider": "okta", "clientId": "portal", "issuer": "https://idp.example.com"},
    }}})
    CCSSO(app, store=MemoryStore())
    providers = get_state(app).providers
    assert type(providers["corp"]).__name__ == "AcmeProvider"
    assert providers["corp"].settings.realm == "north"
    assert type(providers["okta"]) is provider_class("okta")


def test_an_unknown_type_lists_the_known_ones(acme):
    with pytest.raises(ConfigError) as e:
        parse_config({"auth": {"provider": "acmee", "realm": "n"}})
    assert e.value.path == "auth.provider"
    assert "did you mean 'acme'?" in str(e.value)
    assert "known types: oidc, okta, azure-ad, saml, acme" in str(e.value)


def test_an_unknown_type_without_plugins():
    with pytest.raises(ConfigError) as e:
        provider_class("keycloak")
    assert "unknown provider type 'keycloak'" in str(e.value) and "oidc, okta, azure-ad, saml" in str(e.value)


def test_a_built_in_type_is_not_replaced_by_an_entry_point(acme):
    cfg = parse_config({"auth": {"provider": "okta", "clientId": "portal", "issuer": "https://idp.example.com"}})
    assert type(cfg.providers["okta"]) is BUILTIN_SETTINGS["okta"]
    assert provider_class("okta").__module__ == "flask_ccsso.providers.oidc"


@pytest.mark.parametrize("ptype, says", [("nosettings", "names no settings class"),
                                         ("gone", "cannot be loaded (ModuleNotFoundError)")])
def test_a_broken_registration_is_a_config_error_naming_it(acme, ptype, says):
    with pytest.raises(ConfigError) as e:
        parse_config({"auth": {"provider": ptype}})
    assert e.value.path == "auth.provider" and says in str(e.value) and "acme_sso" in str(e.value)


@pytest.mark.parametrize("ptype", sorted(BUILTIN_PROVIDERS))
def test_each_built_in_provider_declares_its_settings(ptype):
    cls = provider_class(ptype)
    assert cls.type == ptype
    assert cls.settings_class is BUILTIN_SETTINGS[ptype]
    assert set(BUILTIN_PROVIDERS) == set(BUILTIN_SETTINGS)
