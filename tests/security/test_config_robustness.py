"""Config robustness (issue #10, item 15): every bad input is a ConfigError
naming the key or the file, never a raw Python error, never a secret.

The classes, each as a table:

* every number of every settings struct -- found by walking the dataclasses,
  so a field added later is attacked too -- with NaN, ±Infinity, negatives,
  absurdly large values, numeric strings and ``${VAR}`` interpolation;
* every URL setting with URLs ``urlsplit`` chokes on, ports out of range,
  no host, spaces and control characters;
* config files that are not UTF-8, not JSON, not readable, nested absurdly
  deep or define a key twice, and a corrupt audit spool file;
* a recognisable secret in every position an error message could echo it
  (type errors, did-you-mean, masked URLs, logs);
* the two bypasses of the no-literal-secrets rule: ``${X:-literal}`` and
  ``$$literal``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_ccsso import CCSSO, ConfigError
from flask_ccsso.audit.settings import (
    AuditSettings,
    AzureMonitorSettings,
    FailureThresholdSettings,
    SinkSettings,
    parse_logging_block,
)
from flask_ccsso.config import (
    OIDCSettings,
    SAMLSettings,
    SessionSettings,
    SkillSettings,
    StoreSettings,
    interpolate,
    load_file,
    parse_config,
)
from flask_ccsso.stores import MemoryStore

SECRET = "Sup3r-S3cret-Zebra-42"
OIDC = {"provider": "oidc", "clientId": "portal", "issuer": "https://idp.example.com"}
AZURE = {"provider": "azure-ad", "clientId": "portal", "tenantId": "11111111-2222-3333-4444-555555555555"}
SAML = {"provider": "saml", "idpMetadata": "idp-metadata.xml", "spEntityId": "https://portal.example.com"}
HTTP_SINK = {"type": "http", "url": "https://collector.example.com/in"}
AZURE_MONITOR = {"endpoint": "https://dce.westeurope-1.ingest.monitor.azure.com", "dcrImmutableId": "dcr-1",
                 "streamName": "Custom-X", "clientId": "c", "clientSecret": "${AZ_SECRET}", "tenantId": "t"}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


# --------------------------------------------------------------------------- where each struct's keys live

def _auth(provider: dict[str, Any]) -> Callable[[str, Any], tuple[str, Callable[[dict[str, str]], Any]]]:
    def build(key: str, value: Any) -> tuple[str, Callable[[dict[str, str]], Any]]:
        return f"auth.{key}", lambda env: parse_config({"auth": {**provider, key: value}}, environ=env)
    return build


def _block(block: str, inner: Callable[[str, Any], dict[str, Any]], prefix: str):
    def build(key: str, value: Any) -> tuple[str, Callable[[dict[str, str]], Any]]:
        return f"{prefix}.{key}", lambda env: parse_config({"auth": OIDC, block: inner(key, value)}, environ=env)
    return build


def _logging(inner: Callable[[str, Any], dict[str, Any]], prefix: str):
    def build(key: str, value: Any) -> tuple[str, Callable[[dict[str, str]], Any]]:
        # the logging block is parsed by the audit glue after interpolation: do the same
        return f"{prefix}.{key}", lambda env: parse_logging_block(interpolate(inner(key, value), "logging", env))
    return build


#: every settings struct and how a config reaches its keys
STRUCTS: dict[type, Callable[[str, Any], tuple[str, Callable[[dict[str, str]], Any]]]] = {
    OIDCSettings: _auth(OIDC),
    SAMLSettings: _auth(SAML),
    SessionSettings: _block("session", lambda k, v: {k: v}, "session"),
    StoreSettings: _block("session", lambda k, v: {"store": {"type": "redis", "url": "redis://127.0.0.1:6379/0",
                                                              k: v}}, "session.store"),
    SkillSettings: _block("skills", lambda k, v: {"deploy": {k: v}}, "skills.deploy"),
    AuditSettings: _logging(lambda k, v: {k: v}, "logging"),
    SinkSettings: _logging(lambda k, v: {"destinations": [{**HTTP_SINK, k: v}]}, "logging.destinations[0]"),
    FailureThresholdSettings: _logging(lambda k, v: {"failureThreshold": {k: v}}, "logging.failureThreshold"),
    AzureMonitorSettings: _logging(lambda k, v: {"destination": "azure-log-analytics",
                                                 "azureMonitor": {**AZURE_MONITOR, k: v}}, "logging.azureMonitor"),
}
#: fields whose config key is not their camelCase name
KEY_OF = {(SessionSettings, "cookie_samesite"): "cookieSameSite"}
#: struct fields that are not read from a key of their own
NOT_KEYS = {(AuditSettings, "notices"), (AuditSettings, "events"), (SinkSettings, "azure"),
            (AuditSettings, "failure_threshold"), (AuditSettings, "destinations"), (SessionSettings, "store"),
            (SinkSettings, "log_level")}
ENV = {"AZ_SECRET": "x"}


def _fields(kinds: set[str], name_pattern: str | None = None) -> list[tuple[type, str, Any]]:
    out = []
    for struct in STRUCTS:
        for f in dataclasses.fields(struct):
            if (struct, f.name) in NOT_KEYS:
                continue
            tokens = set(re.findall(r"\w+", str(f.type)))
            if (tokens & kinds) and "bool" not in tokens or (name_pattern and re.search(name_pattern, f.name)):
                default = f.default if f.default is not dataclasses.MISSING else None
                out.append((struct, KEY_OF.get((struct, f.name), _camel(f.name)), default))
    return out


NUMERIC_FIELDS = _fields({"int", "float"})
BAD_NUMBERS = {
    "nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"), "negative": -1, "huge-float": 1e300,
    "huge-int": 10**30, "400-digits": 10**400, "string-nan": "nan", "string-inf": "Infinity",
    "env-nan": "${NUM}",
}


def test_the_table_finds_the_numeric_settings():
    keys = {k for _, k, _ in NUMERIC_FIELDS}
    # a sample the issue names; the table holds every numeric field of every struct
    assert {"idleTimeout", "absoluteTimeout", "clockSkew", "maxResponseSize", "timeout", "queueSize",
            "connectTimeout", "maxAuthAge", "count", "window"} <= keys
    assert len(NUMERIC_FIELDS) >= 25


@pytest.mark.parametrize("struct, key, default", NUMERIC_FIELDS,
                         ids=[f"{s.__name__}.{k}" for s, k, _ in NUMERIC_FIELDS])
def test_a_sane_value_of_each_numeric_field_is_accepted(struct, key, default):
    """Guards the table itself: the key is real (an unknown key is a ConfigError too)."""
    _, parse = STRUCTS[struct](key, default if default is not None else 300)
    parse(ENV)


@pytest.mark.parametrize("bad", BAD_NUMBERS.values(), ids=BAD_NUMBERS.keys())
@pytest.mark.parametrize("struct, key, default", NUMERIC_FIELDS,
                         ids=[f"{s.__name__}.{k}" for s, k, _ in NUMERIC_FIELDS])
def test_every_number_is_finite_and_in_range(struct, key, default, bad):
    path, parse = STRUCTS[struct](key, bad)
    with pytest.raises(ConfigError) as e:
        parse({**ENV, "NUM": "nan"})
    assert e.value.path == path, str(e.value)
    assert "Fix:" in str(e.value) and "Traceback" not in str(e.value)


def _app(tmp_path: Path, **config: Any) -> Flask:
    app = Flask("robust", instance_path=str(tmp_path / "inst"), root_path=str(tmp_path))
    app.config.update(SECRET_KEY="k" * 32, **config)
    return app


def test_nan_idle_timeout_in_a_json_file_is_refused_at_start_up(tmp_path):
    """The reported attack: ``idleTimeout: NaN`` made every idle check false."""
    # json.dumps writes a float NaN as the bare token NaN, as a hand-edited file would have it
    (tmp_path / "c.json").write_text(json.dumps({"auth": OIDC, "session": {"idleTimeout": float("nan")}}))
    with pytest.raises(ConfigError) as e:
        CCSSO(_app(tmp_path, CCSSO_CONFIG_FILE="c.json"), store=MemoryStore())
    assert e.value.path == "session.idleTimeout"


def test_infinite_max_response_size_in_a_json_file_is_refused(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"auth": {**SAML, "maxResponseSize": float("inf")}}))  # Infinity
    with pytest.raises(ConfigError) as e:
        CCSSO(_app(tmp_path, CCSSO_CONFIG_FILE="c.json"), store=MemoryStore())
    assert e.value.path == "auth.maxResponseSize"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1, "abc", "1e9", 10**9])
def test_trusted_proxies_setting_is_a_small_whole_number(tmp_path, value):
    with pytest.raises(ConfigError) as e:
        CCSSO(_app(tmp_path, CCSSO={"auth": OIDC}, CCSSO_TRUSTED_PROXIES=value), store=MemoryStore())
    assert e.value.path == "CCSSO_TRUSTED_PROXIES"


# --------------------------------------------------------------------------- URLs

URL_FIELDS = [(s, k) for s, k, _ in _fields(set(), r"(url|uri|endpoint|issuer)$") if s is not StoreSettings]
BAD_URLS = {
    "unclosed-ipv6": "https://[x", "not-ipv6": "https://[zz]/x", "port-too-big": "https://idp.example.com:99999/x",
    "port-not-number": "https://idp.example.com:abc/x", "no-host": "https://", "space": "https://exa mple.com/x",
    "crlf": "https://idp.example.com/x\r\nX-Injected: 1", "leading-space": " https://idp.example.com/x",
    "nul": "https://idp.example.com/\x00", "password-unparseable": f"https://u:{SECRET}@[x/",
}


def _url_case(struct: type, key: str, value: str) -> tuple[str, Callable[[dict[str, str]], Any]]:
    if struct is OIDCSettings and key == "graphUrl":
        return _auth(AZURE)(key, value)
    if struct is SinkSettings and key == "tokenUrl":
        return _logging(lambda k, v: {"destinations": [{**HTTP_SINK, "format": "azure-monitor", **AZURE_MONITOR,
                                                        k: v}]}, "logging.destinations[0]")(key, value)
    return STRUCTS[struct](key, value)


def test_the_table_finds_the_url_settings():
    assert {"issuer", "discoveryUrl", "redirectUri", "postLogoutRedirectUri", "graphUrl", "acsUrl", "url",
            "endpoint", "tokenUrl"} <= {k for _, k in URL_FIELDS}


@pytest.mark.parametrize("bad", BAD_URLS.values(), ids=BAD_URLS.keys())
@pytest.mark.parametrize("struct, key", URL_FIELDS, ids=[f"{s.__name__}.{k}" for s, k in URL_FIELDS])
def test_every_url_parses(struct, key, bad):
    path, parse = _url_case(struct, key, bad)
    with pytest.raises(ConfigError) as e:
        parse(ENV)
    assert e.value.path == path, str(e.value)
    assert SECRET not in str(e.value)


@pytest.mark.parametrize("provider, key", [(AZURE, "authority"), (AZURE, "graphUrl"), (SAML, "idpMetadata")])
@pytest.mark.parametrize("bad", ["https://[x", "https://idp.example.com:0/md", "https://idp.example.com:70000/md"])
def test_other_urls_parse(provider, key, bad):
    with pytest.raises(ConfigError) as e:
        parse_config({"auth": {**provider, key: bad}})
    assert e.value.path == f"auth.{key}"


@pytest.mark.parametrize("stype, url", [
    ("redis", f"redis://:{SECRET}@[x"), ("redis", f"redis://:{SECRET}@127.0.0.1:99999/0"),
    ("redis", f"redis://:{SECRET}@127.0.0.1:6379/0\n"), ("redis", f"http://:{SECRET}@127.0.0.1:6379/0"),
    ("sqlalchemy", f"postgresql://u:{SECRET}@[x/db"), ("sqlalchemy", f"nosuchdialect://u:{SECRET}@h/db"),
    ("sqlalchemy", f"not a url {SECRET}"),
])
def test_store_urls_are_checked_and_masked(stype, url):
    with pytest.raises(ConfigError) as e:
        parse_config({"auth": OIDC, "session": {"store": {"type": stype, "url": url}}})
    assert e.value.path == "session.store.url"
    assert SECRET not in str(e.value)


# --------------------------------------------------------------------------- files

@pytest.mark.parametrize("content, says", [
    (b'{"auth": {"provider": "oidc", "clientId": "caf\xe9"}}', "UTF-8"),
    (b'{"auth": {"provider": "oidc",}}', "JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "deep"),
    (b'{"auth": {"provider": "oidc"}, "auth": {"provider": "saml"}}', "twice"),
    (b'["auth"]', "object"),
    (b"", "JSON"),
])
def test_a_broken_config_file_names_the_file(tmp_path, content, says):
    (tmp_path / "c.json").write_bytes(content)
    with pytest.raises(ConfigError) as e:
        CCSSO(_app(tmp_path, CCSSO_CONFIG_FILE="c.json"), store=MemoryStore())
    assert e.value.path == str(tmp_path / "c.json")
    assert says.lower() in str(e.value).lower() and "Fix:" in str(e.value)


def test_a_directory_as_config_file_names_the_file(tmp_path):
    (tmp_path / "c.json").mkdir()
    with pytest.raises(ConfigError) as e:
        load_file(str(tmp_path / "c.json"))
    assert e.value.path == str(tmp_path / "c.json")


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    (tmp_path / "c.json").write_bytes(b"\xef\xbb\xbf" + json.dumps({"auth": OIDC}).encode())
    assert load_file(str(tmp_path / "c.json"))["auth"]["issuer"] == OIDC["issuer"]


def test_a_corrupt_audit_spool_file_names_the_file(tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    corrupt = spool / "ccsso-audit-logging.spool.sqlite3"
    corrupt.write_bytes(b"this is not a database " * 200)
    app = _app(tmp_path, CCSSO={"auth": OIDC, "logging": {"spoolDir": str(spool), "destinations": [
        {"type": "logging"}]}})
    with pytest.raises(ConfigError) as e:
        CCSSO(app, store=MemoryStore())
    assert e.value.path == str(corrupt)
    assert "Fix:" in str(e.value)


# --------------------------------------------------------------------------- secrets never echoed

SECRET_POSITIONS = {
    "secret-as-list": {"auth": {**OIDC, "clientSecret": [SECRET]}},
    "secret-as-object": {"auth": {**OIDC, "clientSecret": {"value": SECRET}}},
    "private-key-as-list": {"auth": {**SAML, "spPrivateKey": [SECRET]}},
    "url-list-with-password": {"auth": {**OIDC, "discoveryUrl": [f"https://u:{SECRET}@idp.example.com/d"]}},
    "issuer-http-with-password": {"auth": {**OIDC, "issuer": f"http://u:{SECRET}@idp.example.com"}},
    "issuer-ftp-with-password": {"auth": {**OIDC, "issuer": f"ftp://u:{SECRET}@idp.example.com"}},
    "issuer-token-as-user": {"auth": {**OIDC, "issuer": f"http://{SECRET}@idp.example.com"}},
    "issuer-token-in-query": {"auth": {**OIDC, "redirectUri": f"http://portal.example.com/cb?token={SECRET}"}},
    "redis-url-not-redis": {"auth": OIDC, "session": {"store": {"type": "redis",
                                                                "url": f"https://:{SECRET}@cache.internal:6379"}}},
    "mistyped-secret-key": {"auth": {**OIDC, "clientSecert": SECRET}},
    "sink-token-as-list": {"auth": OIDC, "logging": {"destinations": [{**HTTP_SINK, "token": [SECRET]}]}},
    "sink-header-as-number": {"auth": OIDC, "logging": {"destinations": [{**HTTP_SINK, "headers": {
        "Authorization": [SECRET]}}]}},
    "sink-url-with-password": {"auth": OIDC, "logging": {"destinations": [{
        "type": "http", "url": f"ftp://u:{SECRET}@collector.example.com"}]}},
    "azure-secret-as-list": {"auth": OIDC, "logging": {"destination": "azure-log-analytics", "azureMonitor": {
        **AZURE_MONITOR, "clientSecret": [SECRET]}}},
    "sqlalchemy-url-unparseable": {"auth": OIDC, "session": {"store": {"type": "sqlalchemy",
                                                                      "url": f"nope://u:{SECRET}@db/x"}}},
    "trusted-proxies-float": {"auth": OIDC},
}


@pytest.mark.parametrize("config", SECRET_POSITIONS.values(), ids=SECRET_POSITIONS.keys())
def test_no_secret_in_any_error_or_log(tmp_path, caplog, config):
    caplog.set_level(logging.DEBUG)
    extra = {"CCSSO_TRUSTED_PROXIES": float("nan")} if config is SECRET_POSITIONS["trusted-proxies-float"] else {}
    with pytest.raises(ConfigError) as e:
        CCSSO(_app(tmp_path, CCSSO=config, **extra), store=MemoryStore())
    assert e.value.path, str(e.value)
    assert SECRET not in str(e.value)
    assert SECRET not in repr(e.value.args)
    assert SECRET not in caplog.text


# --------------------------------------------------------------------------- no literal secrets, no bypass

@pytest.mark.parametrize("value", [
    f"${{UNSET_SECRET_VAR:-{SECRET}}}",         # a literal default
    f"${{SET_SECRET_VAR:-{SECRET}}}",           # a literal default, even when the variable is set
    f"$${SECRET}",                              # an escaped dollar
    f"{SECRET}${{SET_SECRET_VAR}}",             # text around a reference
    f"${{SET_SECRET_VAR}}{SECRET}",
    f"$${{SET_SECRET_VAR}}{SECRET}",
    SECRET,                                     # plain (refused before too)
])
@pytest.mark.parametrize("where", ["clientSecret", "spPrivateKey", "token", "azureSecret", "header"])
def test_a_literal_secret_in_a_file_is_refused_whatever_its_disguise(tmp_path, monkeypatch, value, where):
    monkeypatch.setenv("SET_SECRET_VAR", "from-the-environment")
    monkeypatch.delenv("UNSET_SECRET_VAR", raising=False)
    config: dict[str, Any]
    if where == "clientSecret":
        config, path = {"auth": {**OIDC, "clientSecret": value}}, "auth.clientSecret"
    elif where == "spPrivateKey":
        config, path = {"auth": {**SAML, "spPrivateKey": value}}, "auth.spPrivateKey"
    elif where == "token":
        config = {"auth": OIDC, "logging": {"destinations": [{**HTTP_SINK, "token": value}]}}
        path = "logging.destinations[0].token"
    elif where == "azureSecret":
        config = {"auth": OIDC, "logging": {"destination": "azure-log-analytics",
                                            "azureMonitor": {**AZURE_MONITOR, "clientSecret": value}}}
        path = "logging.azureMonitor.clientSecret"
    else:
        config = {"auth": OIDC, "logging": {"destinations": [{**HTTP_SINK, "headers": {"Authorization": value}}]}}
        path = "logging.destinations[0].headers.Authorization"
    (tmp_path / "c.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError) as e:
        CCSSO(_app(tmp_path, CCSSO_CONFIG_FILE="c.json"), store=MemoryStore())
    assert e.value.path == path
    assert SECRET not in str(e.value)


def test_exactly_one_reference_is_the_allowed_shape(tmp_path, monkeypatch):
    monkeypatch.setenv("SET_SECRET_VAR", SECRET)
    (tmp_path / "c.json").write_text(json.dumps({"auth": {**OIDC, "clientSecret": "${SET_SECRET_VAR}"},
                                                 "logging": {"destinations": [{**HTTP_SINK, "headers": {
                                                     "Authorization": "${SET_SECRET_VAR}", "X-Tenant": "t1"}}]}}))
    app = _app(tmp_path, CCSSO_CONFIG_FILE="c.json")
    CCSSO(app, store=MemoryStore())
    assert app.extensions["ccsso"].config.providers["oidc"].client_secret == SECRET


# --------------------------------------------------------------------------- secrets in repr and check-config

def _every_secret_config() -> dict[str, Any]:
    return {
        "auth": {"providers": {
            "op": {**OIDC, "clientSecret": SECRET + "-client"},
            "idp": {**SAML, "spCertificate": "sp.crt", "spPrivateKey": SECRET + "-spkey"},
        }},
        "session": {"store": {"type": "redis", "url": f"redis://:{SECRET}-redis@127.0.0.1:6379/0"},
                    "tokenEncryptionKey": SECRET + "-sealing-key-0123456789",
                    "tokenEncryptionKeyFallbacks": SECRET + "-old-sealing-key-0123456789"},
        "logging": {"destinations": [{**HTTP_SINK, "name": "h", "token": SECRET + "-sink",
                                      "headers": {"X-Api-Key": SECRET + "-header"}}]},
    }


def test_no_settings_object_shows_a_secret_in_its_repr():
    """A settings object ends up in a traceback's locals, a debugger or a log line
    (``log.debug("%r", config)``): its repr must hold no secret."""
    config = parse_config(_every_secret_config())
    audit = parse_logging_block(_every_secret_config()["logging"])
    text = repr(config) + repr(audit) + "".join(repr(p) for p in config.providers.values())
    assert SECRET not in text, re.findall(rf"\w+='?[^,]*{SECRET}[^,]*", text)


def test_check_config_json_masks_every_secret(tmp_path):
    """``flask ccsso check-config --json`` printed ``tokenEncryptionKey`` and its
    fallbacks in clear: every field a settings struct marks as secret is masked."""
    from flask_ccsso.cli import cli

    (tmp_path / "sp.crt").write_text("not read at start-up\n")
    app = _app(tmp_path, CCSSO=_every_secret_config())
    app.config["CCSSO"]["auth"]["providers"]["idp"]["spCertificate"] = str(tmp_path / "sp.crt")
    app.config["CCSSO"]["auth"]["providers"] = {"op": app.config["CCSSO"]["auth"]["providers"]["op"]}
    CCSSO(app, store=MemoryStore())
    result = app.test_cli_runner().invoke(cli, ["check-config", "--json"])
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    data = json.loads(result.output)
    assert data["session"]["tokenEncryptionKey"] == "***"
    assert data["session"]["tokenEncryptionKeyFallbacks"] == "***"
    assert data["session"]["store"]["url"] == "redis://:***@127.0.0.1:6379/0"  # masked, still useful


# --------------------------------------------------------------------------- numbers reached another way

APP_NUMBER_SETTINGS = ["CCSSO_BEARER_CACHE_SIZE", "CCSSO_BEARER_REFUSAL_CACHE_SECONDS",
                       "CCSSO_BEARER_INTROSPECTION_LIMIT", "CCSSO_MAX_PENDING_LOGINS", "CCSSO_TRUSTED_PROXIES"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1, "abc", 10**30, True, [3]],
                         ids=["nan", "inf", "negative", "text", "huge", "bool", "list"])
@pytest.mark.parametrize("key", APP_NUMBER_SETTINGS)
def test_every_ccsso_number_setting_is_a_config_error(tmp_path, key, value):
    """``int(app.config[...])`` raised a raw ValueError/OverflowError (or took -1 and 10**30)."""
    with pytest.raises(ConfigError) as e:
        CCSSO(_app(tmp_path, CCSSO={"auth": OIDC}, **{key: value}), store=MemoryStore())
    assert e.value.path == key


@pytest.mark.parametrize("key", APP_NUMBER_SETTINGS)
def test_ccsso_number_settings_from_the_environment_are_accepted(tmp_path, key):
    """``app.config.from_prefixed_env()`` / ``os.environ`` give strings of digits."""
    CCSSO(_app(tmp_path, CCSSO={"auth": OIDC}, **{key: "3"}), store=MemoryStore())


@pytest.mark.parametrize("value", [(float("inf"), 60), (float("nan"), 60), (10, float("nan")), (10, float("inf")),
                                   (10**30, 60), (600,), (600, 60, 1), "600/60"])
def test_login_rate_limit_is_a_config_error(tmp_path, value):
    with pytest.raises(ConfigError) as e:
        CCSSO(_app(tmp_path, CCSSO={"auth": OIDC}, CCSSO_LOGIN_RATE_LIMIT=value), store=MemoryStore())
    assert e.value.path == "CCSSO_LOGIN_RATE_LIMIT"


@pytest.mark.parametrize("number", [b"1" * 5000, b"-" + b"9" * 4400, b"1e999999", b"-1e400"],
                         ids=["5000-digits", "minus-4400-digits", "exponent-overflow", "minus-overflow"])
def test_a_number_json_cannot_hold_names_the_file_or_the_key(tmp_path, number):
    """5,000 digits: Python's int() limit raised a raw ValueError out of json.load."""
    (tmp_path / "c.json").write_bytes(b'{"auth": %s, "session": {"idleTimeout": %s}}'
                                      % (json.dumps(OIDC).encode(), number))
    with pytest.raises(ConfigError) as e:
        CCSSO(_app(tmp_path, CCSSO_CONFIG_FILE="c.json"), store=MemoryStore())
    assert e.value.path in (str(tmp_path / "c.json"), "session.idleTimeout")


@pytest.mark.parametrize("query", ["socket_timeout=nan", "socket_timeout=inf", "socket_timeout=-1",
                                   "socket_connect_timeout=1e300", "health_check_interval=-5"])
def test_redis_url_options_obey_the_number_rule(query):
    """redis-py parses ``?socket_timeout=nan`` into a float, and every command then
    raised ``ValueError: Invalid value NaN`` (a 500 per request, not a start-up error)."""
    with pytest.raises(ConfigError) as e:
        parse_config({"auth": OIDC, "session": {"store": {
            "type": "redis", "url": f"redis://:{SECRET}@127.0.0.1:6379/0?{query}"}}})
    assert e.value.path.startswith("session.store.url")
    assert SECRET not in str(e.value)
