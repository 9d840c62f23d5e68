"""One default per setting (issue #11, item 3): each config key is declared
once, on its settings struct, and everything else reads it from there.

* the parsers hand no default of their own to the ``expect*`` readers (the
  place defaults used to be written a second time);
* a parsed minimal config holds exactly the struct defaults, and a struct
  with another default parses to that other default;
* the defaults in docs/configuration.md's tables agree with the structs for
  every documented key (keys whose default is a rule rather than a value are
  listed below, each with the rule, so none is skipped silently).
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from flask_ccsso import config
from flask_ccsso._validate import config_keys, redefault, setting_defaults
from flask_ccsso.audit import settings as audit_settings
from flask_ccsso.audit.settings import (
    AuditSettings,
    AzureMonitorSettings,
    FailureThresholdSettings,
    SinkSettings,
    parse_logging_block,
)
from flask_ccsso.config import (
    AzureADSettings,
    ConsoleSettings,
    OIDCSettings,
    OktaSettings,
    ProviderSettings,
    SAMLSettings,
    ScimSettings,
    SessionSettings,
    SkillSettings,
    StoreSettings,
    parse_config,
)

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "configuration.md"
PARSERS = [config, audit_settings]
#: the readers that take a default, and the position of that argument
READERS = {"expect": 4, "expect_positive": 3, "expect_int": 3, "expect_str_list": 3, "_int": 3, "_choice": 4}

OIDC = {"provider": "oidc", "clientId": "portal", "issuer": "https://idp.example.com"}
AZURE = {"provider": "azure-ad", "clientId": "portal", "tenantId": "11111111-2222-3333-4444-555555555555"}
SAML = {"provider": "saml", "idpMetadata": "idp-metadata.xml", "spEntityId": "https://portal.example.com"}


# --------------------------------------------------------------------------- the source

def _default_arg(call: ast.Call) -> ast.expr | None:
    assert isinstance(call.func, ast.Name)
    pos = READERS[call.func.id]
    if len(call.args) > pos:
        return call.args[pos]
    return next((k.value for k in call.keywords if k.arg == "default"), None)


def _is_constant(node: ast.expr) -> bool:
    """A literal (``60.0``, ``"ccsso:"``, ``()``, ``{}``) or a module constant (``DEFAULT_TABLE``)."""
    if isinstance(node, ast.Constant):
        return node.value not in (None, "")
    if isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict)):
        return True
    if isinstance(node, ast.BinOp):
        return _is_constant(node.left) and _is_constant(node.right)
    return isinstance(node, ast.Name) and node.id.isupper()


def _written_defaults(source: str) -> list[str]:
    """Reader calls handed a default written right there (a value, not a variable)."""
    return [f"line {call.lineno}: {ast.unparse(call)}" for call in ast.walk(ast.parse(source))
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id in READERS
            and (arg := _default_arg(call)) is not None and _is_constant(arg)]


@pytest.mark.parametrize("module", PARSERS, ids=lambda m: m.__name__)
def test_no_parser_writes_a_default_of_its_own(module):
    """Every default lives on a settings field: reader calls pass the default
    their field handed them (a variable), ``None``/``""`` for "absent", or
    nothing -- never a value of their own, which is how defaults came to be
    written twice (and to drift)."""
    offenders = _written_defaults(Path(module.__file__).read_text())
    assert not offenders, "defaults written outside their settings field:\n" + "\n".join(offenders)


def test_the_source_check_sees_a_second_default():
    """Guards the check above: the old parser's style is caught."""
    assert _written_defaults('x = expect_positive(raw, "idleTimeout", path, 3600.0)')
    assert _written_defaults('x = expect(raw, "table", str, path, DEFAULT_TABLE)')
    assert _written_defaults('x = expect_str_list(raw, "scopes", path, ("openid",))')
    assert not _written_defaults('x = expect(raw, key, str, path, default)')


STRUCTS = [OIDCSettings, OktaSettings, AzureADSettings, SAMLSettings, SkillSettings, StoreSettings, SessionSettings,
           AuditSettings, SinkSettings, FailureThresholdSettings, ScimSettings, ConsoleSettings]


@pytest.mark.parametrize("struct", STRUCTS, ids=lambda s: s.__name__)
def test_each_key_is_declared_once_per_struct(struct):
    keys = config_keys(struct)
    assert len(keys) == len(set(keys)), keys
    assert keys, "the struct declares its keys with setting(...)"


# --------------------------------------------------------------------------- the parser follows the struct

#: fields a provider derives from other keys when unset
DERIVED = {"issuer", "discovery_url", "audience", "display_name"}


@pytest.mark.parametrize("raw, struct", [(OIDC, OIDCSettings), ({**OIDC, "provider": "okta"}, OktaSettings),
                                         (AZURE, AzureADSettings), (SAML, SAMLSettings)],
                         ids=["oidc", "okta", "azure-ad", "saml"])
def test_a_minimal_provider_holds_the_struct_defaults(raw, struct):
    (parsed,) = parse_config({"auth": raw}).providers.values()
    assert type(parsed) is struct
    given = {k for k in raw}
    for f in dataclasses.fields(struct):
        key = f.metadata.get("key")
        if key is None or key in given or f.name in DERIVED:
            continue
        assert getattr(parsed, f.name) == setting_defaults(struct)[key], key


def test_minimal_session_skill_and_logging_blocks_hold_the_struct_defaults():
    cfg = parse_config({"auth": OIDC, "session": {}, "skills": {"read": {}}})
    assert cfg.session == SessionSettings()
    assert cfg.skills["read"] == SkillSettings(name="read")
    audit = parse_logging_block({})
    assert dataclasses.replace(audit, destinations=(), notices=()) == AuditSettings()
    sink = parse_logging_block({"destinations": [{"type": "http", "url": "https://c.example.com"}]}).destinations[0]
    assert sink == SinkSettings(type="http", name="http", url="https://c.example.com")


def test_a_struct_with_another_default_parses_to_it():
    """The parser has no copy of the default: change it on the field, and parsing follows."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class SlowIdP(OIDCSettings):
        timeout: float = redefault(OIDCSettings, "timeout", 42.0)
        groups_claim: str = redefault(OIDCSettings, "groups_claim", "memberOf")

    parsed = SlowIdP.from_config("slow", "oidc", OIDC, "auth")
    assert (parsed.timeout, parsed.groups_claim) == (42.0, "memberOf")
    # and the key keeps its limits: the redefined field is still checked
    with pytest.raises(config.ConfigError) as e:
        SlowIdP.from_config("slow", "oidc", {**OIDC, "timeout": 10**6}, "auth")
    assert e.value.path == "auth.timeout"


# --------------------------------------------------------------------------- the docs

def _tables(text: str) -> dict[str, list[list[str]]]:
    """Heading -> rows (cells) of the tables under it."""
    out: dict[str, list[list[str]]] = {}
    heading = ""
    for line in text.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("|") and not re.match(r"^\|[-| ]+\|$", line):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            out.setdefault(heading, []).append(cells)
    return out


def _literal(token: str) -> Any:
    try:
        return json.loads(token)
    except ValueError:
        return token


def _same(documented: Any, default: Any) -> bool:
    if dataclasses.is_dataclass(default) and not isinstance(default, type):
        return documented == dataclasses.asdict(default)
    if isinstance(default, (tuple, frozenset)):
        items = documented.split() if isinstance(documented, str) else documented
        return isinstance(items, list) and list(items) == list(default)
    if isinstance(default, bool) or isinstance(documented, bool):
        return documented is default
    return documented == default


#: documented keys whose default is a rule, not a value: (table, key) -> the rule, as the docs state it
RULES = {
    ("provider", "displayName"): "Okta / Microsoft / Google Workspace for a saml provider named saml / the name",
    ("oidc", "issuer"): "required; azure-ad builds it from tenantId",
    ("oidc", "discoveryUrl"): "<issuer>/.well-known/openid-configuration",
    ("oidc", "redirectUri"): "<prefix>/<name>/callback on the request's host",
    ("oidc", "audience"): "clientId",
    ("oidc", "rolesClaim"): "roles for azure-ad, else none",
    ("oidc", "postLogoutRedirectUri"): "<prefix>/logged-out",
    ("saml", "idpEntityId"): "the only IdP in the metadata",
    ("saml", "nameIdFormat"): "the IdP's default",
    ("saml", "acsUrl"): "<prefix>/<name>/acs",
    ("saml", "xmlsecBinary"): "found on PATH",
    ("skills", "allowedGroups"): "any signed-in person",
    ("skills", "allowedNetworks"): "any address",
    ("skills", "providers"): "any provider",
    ("session", "store"): "embedded",
    ("session", "cookieHostPrefix"): "auto",
    ("session", "tokenEncryptionKey"): "SECRET_KEY",
    ("session", "tokenEncryptionKeyFallbacks"): "SECRET_KEY_FALLBACKS",
    ("logging", "events"): "every event except skill.invoked",
    ("logging", "spoolDir"): "<instance>/ccsso-audit-spool",
    ("console", "auditDestination"): "the first sqlalchemy destination",
}
#: keys of a table that are not fields of its struct (read by the parser around it)
NOT_FIELDS = {("provider", "provider"), ("logging", "destination"), ("logging", "destinations"),
              ("logging", "azureMonitor"), ("auth", "providers"), ("auth", "default")}
#: heading -> (table name, struct)
SECTIONS = {"`auth`": ("auth", None), "OIDC providers (`okta`, `azure-ad`, `oidc`)": ("oidc", OIDCSettings),
            "SAML providers (`saml`)": ("saml", SAMLSettings), "`skills`": ("skills", SkillSettings),
            "`session`": ("session", SessionSettings), "`logging`": ("logging", AuditSettings),
            "`scim`": ("scim", ScimSettings), "`console`": ("console", ConsoleSettings)}


def _documented() -> list[tuple[str, str, type | None, str, str]]:
    """(table, key, struct, default cell, meaning cell) for every key row of every settings table."""
    rows = []
    for heading, table in _tables(DOCS.read_text()).items():
        if heading not in SECTIONS:
            continue
        name, struct = SECTIONS[heading]
        for cells in table:
            m = re.fullmatch(r"`(\w+)`", cells[0])
            if not m or len(cells) < 4 or cells[2] == "default":
                continue
            key, default, meaning = m.group(1), cells[2], cells[3]
            # the "Every provider has" table sits under `auth` with the provider keys
            if name == "auth" and (key == "provider" or key in config_keys(ProviderSettings)):
                rows.append(("provider", key, ProviderSettings, default, meaning))
            else:
                rows.append((name, key, struct, default, meaning))
    return rows


DOCUMENTED = _documented()


def test_the_docs_tables_are_found():
    tables = {t for t, *_ in DOCUMENTED}
    assert tables == {"auth", "provider", "oidc", "saml", "skills", "session", "logging", "scim", "console"}
    assert len(DOCUMENTED) > 80


@pytest.mark.parametrize("table, key, struct, cell, meaning", DOCUMENTED,
                         ids=[f"{t}.{k}" for t, k, *_ in DOCUMENTED])
def test_the_documented_default_is_the_struct_default(table, key, struct, cell, meaning):
    if (table, key) in NOT_FIELDS:
        assert struct is None or key not in config_keys(struct)
        return
    if meaning.startswith("`azure-ad` only"):
        struct = AzureADSettings
    assert key in config_keys(struct), f"docs name {table}.{key}, which {struct.__name__} does not declare"
    defaults = setting_defaults(struct)
    if (table, key) in RULES:
        return
    if cell.startswith("required"):
        assert key not in defaults, f"{key} is documented as required but has a default"
        return
    if cell in ("none", "—") or cell.startswith("none "):
        assert defaults[key] is None, f"{key}: docs say none, the struct says {defaults[key]!r}"
        return
    m = re.match(r"`([^`]*)`", cell)
    assert m, f"{table}.{key}: the default {cell!r} is neither a value nor a listed rule"
    assert _same(_literal(m.group(1)), defaults[key]), f"{table}.{key}: docs {m.group(1)}, struct {defaults[key]!r}"
    # "`true` (`azure-ad`: `false`)": the Entra ID struct's own default
    other = re.search(r"\(`azure-ad`: `([^`]*)`\)", cell)
    if other:
        assert _same(_literal(other.group(1)), setting_defaults(AzureADSettings)[key])


@pytest.mark.parametrize("struct, tables", [
    (OIDCSettings, {"oidc", "provider"}), (AzureADSettings, {"oidc", "provider"}), (SAMLSettings, {"saml", "provider"}),
    (SkillSettings, {"skills"}), (SessionSettings, {"session"}), (AuditSettings, {"logging"}),
    (ScimSettings, {"scim"}), (ConsoleSettings, {"console"}),
], ids=lambda v: v.__name__ if isinstance(v, type) else "")
def test_every_key_is_documented(struct, tables):
    documented = {k for t, k, *_ in DOCUMENTED if t in tables}
    assert set(config_keys(struct)) <= documented, set(config_keys(struct)) - documented


def _sink_row_defaults() -> list[tuple[str, str, str]]:
    """(sink type, key, default) from the ``destinations`` keys table: ``key`` (`default`)."""
    out = []
    for cells in _tables(DOCS.read_text())["`logging`"]:
        m = re.fullmatch(r"`(\w+)`", cells[0])
        if m and m.group(1) in ("sqlalchemy", "http", "logging") and len(cells) == 2:
            for key, default in re.findall(r"`(\w+)` \(`([^`]*)`", cells[1]):
                out.append((m.group(1), key, default))
    text = DOCS.read_text()
    scope = re.search(r"`scope` \(`([^`]*)`\)", text)
    assert scope
    out.append(("azureMonitor", "scope", scope.group(1)))
    return out


SINK_ROWS = _sink_row_defaults()


def test_the_sink_table_is_found():
    assert {k for _, k, _ in SINK_ROWS} >= {"table", "createTable", "format", "connectTimeout", "readTimeout",
                                            "verify", "maxBatchBytes", "sourcetype", "logger", "headers", "scope"}


@pytest.mark.parametrize("kind, key, cell", SINK_ROWS, ids=[f"{t}.{k}" for t, k, _ in SINK_ROWS])
def test_the_documented_sink_default_is_the_struct_default(kind, key, cell):
    struct = AzureMonitorSettings if kind == "azureMonitor" else SinkSettings
    assert _same(_literal(cell), setting_defaults(struct)[key]), (key, cell)
