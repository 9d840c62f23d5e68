"""Config in the shape users already write, parsed once into frozen settings.

Sources, in order: ``app.config["CCSSO"]`` (a dict) or
``app.config["CCSSO_CONFIG_FILE"]`` (a JSON file). Both take the seed's blocks
-- ``auth``, ``skills``, ``logging``, ``session`` -- verbatim. ``${VAR}`` and
``${VAR:-default}`` are replaced from the environment once, here, at start-up;
``$$`` stands for a literal ``$``. Nothing reads raw config at request time.
A secret in a config *file* must be exactly one ``${VAR}``.

Every problem raises :class:`~flask_ccsso.exceptions.ConfigError` naming the
key path (``auth.providers.okta.clientSecret``) and the fix.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._validate import (
    SECRET,
    check_keys,
    check_number,
    check_url,
    expect,
    expect_int,
    expect_positive,
    expect_str_list,
    join,
    mask_url,
    secret_field,
    url_field,
)
from ._validate import is_loopback_host as is_loopback_host  # noqa: PLC0414 - re-exported: providers and check-config use it
from .exceptions import ConfigError

#: provider types and the block keys each one accepts
OIDC_TYPES = ("okta", "azure-ad", "oidc")
PROVIDER_TYPES = OIDC_TYPES + ("saml",)

#: signature algorithms an ID token may use unless a provider narrows the list.
#: ``none`` and the HMAC family are never accepted for ID tokens here: an RP
#: that trusts the IdP's metadata for this can be tricked into verifying an
#: HS256 token keyed with the IdP's *public* key.
DEFAULT_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
_FORBIDDEN_ALGORITHMS = {"none", "HS256", "HS384", "HS512"}

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECRET_KEYS = {"clientSecret", "spPrivateKey", "token", "password", "clientSecretValue", "tokenEncryptionKey",
                "tokenEncryptionKeyFallbacks"}
#: header names (in an audit sink's ``headers``) that carry credentials
_SECRET_HEADER = re.compile(r"authorization|token|secret|api-?key|cookie|password", re.IGNORECASE)
#: the only shape a secret may have in a file: one variable, no default, nothing around it
_ONE_VAR = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")


# --------------------------------------------------------------------------- interpolation

def interpolate(value: Any, path: str = "", environ: Mapping[str, str] | None = None) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string of ``value``."""
    env = os.environ if environ is None else environ
    if isinstance(value, str):
        def repl(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name, default = m.group(1), m.group(2)
            if name in env and env[name] != "":
                return env[name]
            if default is not None:
                return default
            optional = "" if path.rpartition(".")[2] in _SECRET_KEYS else f", or write ${{{name}:-default}} in the config"
            raise ConfigError(path or "<root>", f"environment variable {name} is not set.",
                              f"export {name}=... before starting{optional}.")
        return _VAR.sub(repl, value)
    if isinstance(value, list):
        return [interpolate(v, join(path, i), env) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: interpolate(v, join(path, k), env) for k, v in value.items()}
    return value


def _is_secret(key: Any, path: str) -> bool:
    if key in _SECRET_KEYS:
        return True
    return path.endswith(".headers") and isinstance(key, str) and bool(_SECRET_HEADER.search(key))


def _one_reference(value: Any, path: str) -> None:
    if value is None or value == "":
        return
    if not isinstance(value, str):
        raise ConfigError(path, f"must be a string, not {type(value).__name__}.",
                          "write exactly \"${SOME_VAR}\" and set the secret in the environment.")
    if not _ONE_VAR.fullmatch(value):
        raise ConfigError(path, "holds a literal secret (or a literal default) in a config file.",
                          "write exactly \"${SOME_VAR}\" (no :-default, no text around it) and set the "
                          "secret in the environment.")


def _literal_secrets(value: Any, path: str) -> None:
    """Secrets never live in files: a secret key in a JSON file must be exactly ``${VAR}``.

    Exactly: ``${VAR:-hunter2}`` (a literal default), ``$$hunter2`` (an
    escaped dollar) or ``hunter2${EMPTY}`` would each put the secret in the
    file while looking like a reference. A credential header of an audit sink
    (``Authorization``, ``X-Api-Key`` ...) is a secret too.
    """
    if isinstance(value, dict):
        for k, v in value.items():
            if _is_secret(k, path):
                # a list of secrets (key fallbacks) is held to the same rule, item by item
                items: list[tuple[int | None, Any]] = list(enumerate(v)) if isinstance(v, list) else [(None, v)]
                for i, item in items:
                    _one_reference(item, join(path, k) if i is None else join(join(path, k), i))
                continue
            _literal_secrets(v, join(path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _literal_secrets(v, join(path, i))


def _no_duplicates(filename: str) -> Any:
    """A JSON object hook refusing a key written twice (JSON keeps the last
    silently, so a second ``clientSecret`` or ``wantAssertionsSigned`` would
    quietly win over the first)."""
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise ConfigError(filename, f"defines the key {k!r} twice in one object.",
                                  "keep one of the two (JSON would silently use the last).")
            out[k] = v
        return out
    return hook


def _bounded_int(filename: str) -> Any:
    """A JSON integer hook refusing more than 300 digits: Python's own limit
    (4,300) raises a bare ``ValueError`` out of ``json.load``, and no setting
    needs a number beyond ``float`` anyway (the range checks come later)."""
    def hook(text: str) -> int:
        if len(text) > 300:
            raise ConfigError(filename, "holds a number with more than 300 digits.",
                              "fix the number (every setting has a far smaller limit).")
        return int(text)
    return hook


def load_file(filename: str) -> dict[str, Any]:
    """Read one JSON config file. Anything wrong with the file itself -- missing,
    unreadable, not UTF-8, not JSON, nested absurdly deep, a number with
    thousands of digits -- is a ConfigError naming the file, never a raw
    ``OSError`` / ``UnicodeDecodeError`` / ``ValueError``."""
    try:
        # utf-8-sig: a byte-order mark written by some Windows editors is not an error
        with open(filename, encoding="utf-8-sig") as fh:
            data = json.load(fh, object_pairs_hook=_no_duplicates(filename), parse_int=_bounded_int(filename))
    except FileNotFoundError:
        raise ConfigError(filename, "does not exist.",
                          "point CCSSO_CONFIG_FILE at your JSON config (relative paths are from the app root).") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(filename, f"is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}).",
                          "fix the JSON syntax.") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(filename, f"is not UTF-8 text (byte {exc.start} cannot be decoded).",
                          "save the file as UTF-8 (for example with iconv -f latin1 -t utf-8).") from None
    except RecursionError:
        raise ConfigError(filename, "nests objects or lists too deeply to be a config.",
                          "fix the JSON structure.") from None
    except OSError as exc:
        raise ConfigError(filename, f"cannot be read ({exc.strerror or type(exc).__name__}).",
                          "check that the path names a readable file.") from None
    if not isinstance(data, dict):
        raise ConfigError(filename, "must hold a JSON object.", "wrap the blocks in { }.")
    _literal_secrets(data, "")
    return data


# --------------------------------------------------------------------------- settings

def _check_url(value: str, path: str, *, https_unless_loopback: bool = True) -> str:
    """An absolute http(s) URL (https unless loopback); see :func:`~flask_ccsso._validate.check_url`."""
    return check_url(value, path, http=True, https_unless_loopback=https_unless_loopback)


@dataclass(frozen=True)
class ProviderSettings:
    name: str
    type: str
    display_name: str
    path: str


@dataclass(frozen=True)
class OIDCSettings(ProviderSettings):
    client_id: str
    client_secret: str | None = field(repr=False, metadata=SECRET)
    issuer: str
    discovery_url: str
    scopes: tuple[str, ...]
    redirect_uri: str | None
    audience: tuple[str, ...]
    tenant_id: str | None = None
    allowed_algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    clock_skew: float = 60.0
    discovery_ttl: float = 3600.0
    jwks_ttl: float = 3600.0
    jwks_refresh_cooldown: float = 60.0
    timeout: float = 5.0
    groups_claim: str = "groups"
    roles_claim: str | None = None
    graph_url: str | None = None
    post_logout_redirect_uri: str | None = None
    idp_logout: bool = True
    require_iss_parameter: bool = False
    login_state_ttl: float = 600.0
    extra_authorize_params: Mapping[str, str] = field(default_factory=dict)
    keep_claims: tuple[str, ...] = ()
    introspection: bool = True
    #: bearer tokens only from these OAuth clients (empty: any client)
    allowed_clients: tuple[str, ...] = ()
    #: opaque tokens starting with this go to this provider's introspection
    introspection_token_prefix: str | None = None
    #: opaque tokens matching no prefix go to this provider's introspection
    introspection_default: bool = False
    #: an introspection answer must name an accepted ``aud`` (opt-out: weaker)
    introspection_require_audience: bool = True


@dataclass(frozen=True)
class SAMLSettings(ProviderSettings):
    idp_metadata: str
    sp_entity_id: str
    attribute_mapping: Mapping[str, str]
    sp_certificate: str | None = None
    sp_private_key: str | None = secret_field(default=None)
    sign_authn_requests: bool = False
    want_assertions_signed: bool = True
    want_response_signed: bool = False
    #: decrypt EncryptedAssertions (with the SP key pair) -- and then refuse plain ones;
    #: off: an EncryptedAssertion is refused before anything decrypts it
    want_assertions_encrypted: bool = False
    allow_unsolicited: bool = False
    clock_skew: float = 60.0
    metadata_refresh: float = 3600.0
    idp_entity_id: str | None = None
    requested_authn_context: tuple[str, ...] = ()
    name_id_format: str | None = None
    groups_truncated_attribute: str | None = None
    acs_url: str | None = None
    max_response_size: int = 256 * 1024
    login_state_ttl: float = 600.0
    scopes_from_groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    idp_logout: bool = True
    timeout: float = 5.0
    xmlsec_binary: str | None = None
    #: PEM text or file path: when set, the metadata must carry a valid signature by this certificate
    idp_metadata_certificate: str | None = None


@dataclass(frozen=True)
class SkillSettings:
    name: str
    allowed_groups: tuple[str, ...]
    required_scopes: tuple[str, ...]
    sensitive: bool = False
    max_auth_age: float | None = None
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    require_mfa: bool = False
    acr_values: tuple[str, ...] = ()
    description: str = ""
    providers: tuple[str, ...] = ()


@dataclass(frozen=True)
class StoreSettings:
    #: ``"redis"``, ``"sqlalchemy"`` or ``"embedded"`` (a SQLite file + file
    #: cache in the instance folder: one machine, any number of processes)
    type: str = "embedded"
    url: str | None = url_field(default=None)
    key_prefix: str = "ccsso:"
    path: str | None = None


@dataclass(frozen=True)
class SessionSettings:
    absolute_timeout: float = 28800.0
    idle_timeout: float = 3600.0
    refresh_window: float = 300.0
    enable_sliding_expiration: bool = True
    require_reauthentication_for_sensitive: bool = True
    #: default freshness for sensitive skills (seconds since auth_time)
    max_auth_age: float = 900.0
    #: how stale the stored idle deadline may get before a write renews it
    sliding_write_interval: float = 60.0
    store: StoreSettings = field(default_factory=StoreSettings)
    cookie_name: str = "ccsso_session"
    cookie_secure: bool = True
    cookie_samesite: str = "Lax"
    #: ``__Host-`` cookie prefix; ``None``: on when the cookie is Secure, on
    #: ``Path=/`` and host-only (see session.cookie_settings)
    cookie_host_prefix: bool | None = None
    refresh_lock_timeout: float = 10.0
    #: seals session records (else SECRET_KEY); never stored with them
    token_encryption_key: str | None = secret_field(default=None)
    #: old keys that still open records (else SECRET_KEY_FALLBACKS)
    token_encryption_key_fallbacks: tuple[str, ...] = secret_field(default=())


@dataclass(frozen=True)
class CCSSOConfig:
    providers: Mapping[str, ProviderSettings]
    skills: Mapping[str, SkillSettings]
    session: SessionSettings
    #: the raw ``logging`` block (parsed by the audit package): it may hold sink tokens and headers
    logging: Mapping[str, Any] = field(repr=False)
    default_provider: str | None = None


# --------------------------------------------------------------------------- parsing

_COMMON_KEYS = ("provider", "displayName")
_OIDC_KEYS = _COMMON_KEYS + (
    "clientId", "clientSecret", "issuer", "tenantId", "audience", "scopes", "redirectUri", "discoveryUrl",
    "allowedAlgorithms", "clockSkew", "discoveryTtl", "jwksTtl", "jwksRefreshCooldown", "timeout", "groupsClaim",
    "rolesClaim", "graphUrl", "postLogoutRedirectUri", "idpLogout", "requireIssParameter", "authority",
    "loginStateTtl", "extraAuthorizeParams", "keepClaims", "introspection", "allowedClients",
    "introspectionTokenPrefix", "introspectionDefault", "introspectionRequireAudience",
)
_SAML_KEYS = _COMMON_KEYS + (
    "idpMetadata", "spEntityId", "attributeMapping", "spCertificate", "spPrivateKey", "signAuthnRequests",
    "wantAssertionsSigned", "wantResponseSigned", "wantAssertionsEncrypted", "allowUnsolicited", "clockSkew", "metadataRefresh", "idpEntityId",
    "requestedAuthnContext", "nameIdFormat", "groupsTruncatedAttribute", "acsUrl", "maxResponseSize",
    "loginStateTtl", "scopesFromGroups", "idpLogout", "timeout", "xmlsecBinary", "idpMetadataCertificate",
)
_AZURE_TENANT = re.compile(r"^[0-9a-fA-F-]{36}$|^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")


def _parse_oidc(name: str, ptype: str, raw: Mapping[str, Any], path: str) -> OIDCSettings:
    check_keys(raw, _OIDC_KEYS, path)
    client_id = expect(raw, "clientId", str, path, required=True, fix="copy the client (application) id from your IdP.")
    secret = expect(raw, "clientSecret", str, path) or None
    tenant = expect(raw, "tenantId", str, path)
    issuer = expect(raw, "issuer", str, path)
    groups_claim, roles_claim, graph_url = "groups", None, None
    if ptype == "azure-ad":
        if not tenant and not issuer:
            raise ConfigError(join(path, "tenantId"), "is required for azure-ad.",
                              "copy the Directory (tenant) ID from Entra ID > Overview.")
        if tenant and tenant.lower() in ("common", "organizations", "consumers"):
            raise ConfigError(join(path, "tenantId"), f"'{tenant}' is multi-tenant: any Microsoft tenant could sign in.",
                              "use your own tenant id (a GUID) or domain.")
        if tenant and not _AZURE_TENANT.match(tenant):
            raise ConfigError(join(path, "tenantId"), f"{tenant!r} is not a tenant GUID or domain.",
                              "copy the Directory (tenant) ID from Entra ID > Overview.")
        authority = expect(raw, "authority", str, path, "https://login.microsoftonline.com").rstrip("/")
        if not issuer:
            issuer = f"{authority}/{tenant}/v2.0"
        roles_claim = expect(raw, "rolesClaim", str, path, "roles")
        graph_url = expect(raw, "graphUrl", str, path, "https://graph.microsoft.com/v1.0").rstrip("/")
        _check_url(graph_url, join(path, "graphUrl"))
    else:
        if "authority" in raw:
            raise ConfigError(join(path, "authority"), "applies to azure-ad only.", "use 'issuer' instead.")
        if not issuer:
            raise ConfigError(join(path, "issuer"), "is required.",
                              "set the issuer URL, e.g. https://your-org.okta.com/oauth2/default.")
        roles_claim = expect(raw, "rolesClaim", str, path)
    groups_claim = expect(raw, "groupsClaim", str, path, groups_claim)
    issuer = _check_url(issuer.rstrip("/") if ptype != "azure-ad" else issuer, join(path, "issuer"))
    discovery = expect(raw, "discoveryUrl", str, path) or issuer.rstrip("/") + "/.well-known/openid-configuration"
    _check_url(discovery, join(path, "discoveryUrl"))
    scopes = expect_str_list(raw, "scopes", path, ("openid", "profile", "email"))
    if "openid" not in scopes:
        raise ConfigError(join(path, "scopes"), "must include 'openid' for OpenID Connect sign-in.",
                          "add \"openid\" to the list.")
    redirect = expect(raw, "redirectUri", str, path)
    if redirect:
        _check_url(redirect, join(path, "redirectUri"))
    aud_raw = raw.get("audience")
    if isinstance(aud_raw, list):
        audience = expect_str_list(raw, "audience", path)
    else:
        a = expect(raw, "audience", str, path)
        audience = (a,) if a else (client_id,)
    algs = expect_str_list(raw, "allowedAlgorithms", path, DEFAULT_ALGORITHMS)
    unknown = [a for a in algs if a not in DEFAULT_ALGORITHMS and a not in _FORBIDDEN_ALGORITHMS and a.lower() != "none"]
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0].upper(), DEFAULT_ALGORITHMS, n=1)
        raise ConfigError(join(path, "allowedAlgorithms"), f"{unknown[0]!r} is not a signature algorithm flask-ccsso knows.",
                          f"did you mean '{close[0]}'?" if close else f"use some of {', '.join(DEFAULT_ALGORITHMS)}.")
    bad = [a for a in algs if a in _FORBIDDEN_ALGORITHMS or a.lower() == "none"]
    if bad:
        raise ConfigError(join(path, "allowedAlgorithms"), f"{bad[0]!r} is not allowed for ID tokens.",
                          "list asymmetric algorithms only (RS256, PS256, ES256, EdDSA ...).")
    if not algs:
        raise ConfigError(join(path, "allowedAlgorithms"), "is empty.", "list at least RS256.")
    post_logout = expect(raw, "postLogoutRedirectUri", str, path)
    if post_logout:
        _check_url(post_logout, join(path, "postLogoutRedirectUri"))
    extra = expect(raw, "extraAuthorizeParams", dict, path, {})
    for k, v in extra.items():
        if k in ("state", "nonce", "code_challenge", "code_challenge_method", "redirect_uri", "client_id",
                 "response_type", "scope"):
            raise ConfigError(join(join(path, "extraAuthorizeParams"), k), "is set by flask-ccsso itself.",
                              "remove it.")
        if not isinstance(v, str):
            raise ConfigError(join(join(path, "extraAuthorizeParams"), k), "must be a string.", "quote the value.")
    return OIDCSettings(
        name=name, type=ptype, path=path,
        display_name=expect(raw, "displayName", str, path, {"okta": "Okta", "azure-ad": "Microsoft"}.get(ptype, name)),
        client_id=client_id, client_secret=secret, issuer=issuer, discovery_url=discovery, scopes=scopes,
        redirect_uri=redirect, audience=audience, tenant_id=tenant, allowed_algorithms=algs,
        clock_skew=expect_positive(raw, "clockSkew", path, 60.0, allow_zero=True),
        discovery_ttl=expect_positive(raw, "discoveryTtl", path, 3600.0),
        jwks_ttl=expect_positive(raw, "jwksTtl", path, 3600.0),
        jwks_refresh_cooldown=expect_positive(raw, "jwksRefreshCooldown", path, 60.0, allow_zero=True),
        timeout=expect_positive(raw, "timeout", path, 5.0),
        groups_claim=groups_claim, roles_claim=roles_claim, graph_url=graph_url,
        post_logout_redirect_uri=post_logout,
        idp_logout=expect(raw, "idpLogout", bool, path, True),
        require_iss_parameter=expect(raw, "requireIssParameter", bool, path, False),
        login_state_ttl=expect_positive(raw, "loginStateTtl", path, 600.0),
        extra_authorize_params=dict(extra),
        keep_claims=expect_str_list(raw, "keepClaims", path),
        # Entra ID has no RFC 7662 endpoint: its providers introspect only when asked
        introspection=expect(raw, "introspection", bool, path, ptype != "azure-ad"),
        allowed_clients=expect_str_list(raw, "allowedClients", path),
        introspection_token_prefix=expect(raw, "introspectionTokenPrefix", str, path) or None,
        introspection_default=expect(raw, "introspectionDefault", bool, path, False),
        introspection_require_audience=expect(raw, "introspectionRequireAudience", bool, path, True),
    )


def _introspects(p: ProviderSettings) -> bool:
    return isinstance(p, OIDCSettings) and p.introspection and bool(p.client_secret)


def _check_introspection_routing(providers: Mapping[str, ProviderSettings]) -> None:
    """Each opaque bearer token goes to at most one provider's introspection
    endpoint (never to every provider with its credentials): routing keys on
    providers that do not introspect, several ``introspectionDefault`` and
    overlapping prefixes are errors; introspecting providers that nothing
    routes to are a warning (their opaque tokens are refused)."""
    for p in providers.values():
        if isinstance(p, OIDCSettings) and not _introspects(p):
            for key, value in (("introspectionTokenPrefix", p.introspection_token_prefix),
                               ("introspectionDefault", p.introspection_default)):
                if value:
                    raise ConfigError(join(p.path, key), "is set, but this provider does not introspect tokens "
                                      "(introspection is off or there is no clientSecret).",
                                      "set 'introspection': true and a 'clientSecret', or remove the key.")
    active = [p for p in providers.values() if _introspects(p)]
    defaults = [p for p in active if isinstance(p, OIDCSettings) and p.introspection_default]
    if len(defaults) > 1:
        raise ConfigError(join(defaults[1].path, "introspectionDefault"),
                          f"is true for several providers ({', '.join(p.name for p in defaults)}).",
                          "set it on one provider only.")
    prefixed = [(p.introspection_token_prefix, p) for p in active
                if isinstance(p, OIDCSettings) and p.introspection_token_prefix]
    for a, pa in prefixed:
        for b, pb in prefixed:
            if pa is not pb and b.startswith(a):
                raise ConfigError(join(pb.path, "introspectionTokenPrefix"),
                                  f"overlaps the prefix of provider {pa.name!r}: a token could belong to both.",
                                  "give each provider a prefix that no other prefix starts with.")
    message = unrouted_introspection(providers)
    if message:
        # not an error: a portal with several providers that takes no opaque
        # tokens must still start. Such tokens are refused (bearer.py) until
        # a rule says where they go.
        logging.getLogger("flask_ccsso").warning("flask-ccsso: %s", message)


def unrouted_introspection(providers: Mapping[str, ProviderSettings]) -> str | None:
    """The warning for introspecting providers that no rule routes opaque
    tokens to (``None`` when every opaque token has exactly one provider)."""
    active = [p for p in providers.values() if isinstance(p, OIDCSettings) and _introspects(p)]
    if len(active) < 2:
        return None
    unrouted = [p for p in active if not p.introspection_token_prefix and not p.introspection_default]
    if not unrouted:
        return None
    return (f"several providers introspect opaque bearer tokens ({', '.join(p.name for p in active)}) and "
            f"nothing routes a token to {', '.join(p.name for p in unrouted)}: opaque tokens matching no "
            "introspectionTokenPrefix are refused. Set 'introspectionTokenPrefix' on the providers whose tokens "
            "have one, 'introspectionDefault': true on at most one, or 'introspection': false on providers that "
            "issue no opaque tokens for this API.")


def _parse_saml(name: str, raw: Mapping[str, Any], path: str) -> SAMLSettings:
    check_keys(raw, _SAML_KEYS, path)
    metadata = expect(raw, "idpMetadata", str, path, required=True,
                      fix="point it at the IdP's metadata XML file or https URL (Google Admin > Apps > SAML app).")
    if metadata.startswith(("http://", "https://")):
        _check_url(metadata, join(path, "idpMetadata"))
    entity = expect(raw, "spEntityId", str, path, required=True, fix="use your portal's URL, e.g. https://portal.example.com.")
    mapping = expect(raw, "attributeMapping", dict, path, {})
    check_keys(mapping, ("email", "name", "groups", "firstName", "lastName", "scopes"), join(path, "attributeMapping"))
    for k, v in mapping.items():
        if not isinstance(v, str):
            raise ConfigError(join(join(path, "attributeMapping"), k), "must be an attribute name (a string).",
                              "write the attribute's Name or URI.")
    if expect(raw, "wantAssertionsSigned", bool, path, True) is False and not expect(raw, "wantResponseSigned", bool, path, False):
        raise ConfigError(join(path, "wantAssertionsSigned"),
                          "false with wantResponseSigned false would accept unsigned assertions (anyone could forge a sign-in).",
                          "leave wantAssertionsSigned true, or set wantResponseSigned true.")
    acs = expect(raw, "acsUrl", str, path)
    if acs:
        _check_url(acs, join(path, "acsUrl"))
    sp_cert = expect(raw, "spCertificate", str, path) or None
    sp_key = expect(raw, "spPrivateKey", str, path) or None
    if bool(sp_cert) != bool(sp_key):
        missing = "spPrivateKey" if sp_cert else "spCertificate"
        raise ConfigError(join(path, missing), "is needed together with the other half of the SP key pair.",
                          "set both spCertificate and spPrivateKey (file paths, or PEM text from ${VAR}).")
    if expect(raw, "signAuthnRequests", bool, path, False) and not sp_key:
        raise ConfigError(join(path, "signAuthnRequests"), "is true but no SP key pair is configured.",
                          "set spCertificate and spPrivateKey, or signAuthnRequests false.")
    if expect(raw, "wantAssertionsEncrypted", bool, path, False) and not sp_key:
        raise ConfigError(join(path, "wantAssertionsEncrypted"), "is true but no SP key pair is configured.",
                          "set spCertificate and spPrivateKey (the key the IdP encrypts to), "
                          "or wantAssertionsEncrypted false.")
    sfg = expect(raw, "scopesFromGroups", dict, path, {})
    scopes_from_groups = {g: expect_str_list(sfg, g, join(path, "scopesFromGroups")) for g in sfg}
    return SAMLSettings(
        name=name, type="saml", path=path,
        display_name=expect(raw, "displayName", str, path, "Google Workspace" if name == "saml" else name),
        idp_metadata=metadata, sp_entity_id=entity, attribute_mapping=dict(mapping),
        sp_certificate=sp_cert,
        sp_private_key=sp_key,
        sign_authn_requests=expect(raw, "signAuthnRequests", bool, path, False),
        want_assertions_signed=expect(raw, "wantAssertionsSigned", bool, path, True),
        want_response_signed=expect(raw, "wantResponseSigned", bool, path, False),
        want_assertions_encrypted=expect(raw, "wantAssertionsEncrypted", bool, path, False),
        allow_unsolicited=expect(raw, "allowUnsolicited", bool, path, False),
        clock_skew=expect_positive(raw, "clockSkew", path, 60.0, allow_zero=True),
        metadata_refresh=expect_positive(raw, "metadataRefresh", path, 3600.0),
        idp_entity_id=expect(raw, "idpEntityId", str, path),
        requested_authn_context=expect_str_list(raw, "requestedAuthnContext", path),
        name_id_format=expect(raw, "nameIdFormat", str, path),
        groups_truncated_attribute=expect(raw, "groupsTruncatedAttribute", str, path),
        acs_url=acs,
        max_response_size=expect_int(raw, "maxResponseSize", path, 256 * 1024, minimum=1024),
        login_state_ttl=expect_positive(raw, "loginStateTtl", path, 600.0),
        scopes_from_groups=scopes_from_groups,
        idp_logout=expect(raw, "idpLogout", bool, path, True),
        timeout=expect_positive(raw, "timeout", path, 5.0),
        xmlsec_binary=expect(raw, "xmlsecBinary", str, path),
        idp_metadata_certificate=expect(raw, "idpMetadataCertificate", str, path) or None,
    )


def _parse_provider(name: str, raw: Any, path: str) -> ProviderSettings:
    if not isinstance(raw, dict):
        raise ConfigError(path, "must be an object.", "write the provider's settings as { ... }.")
    ptype = expect(raw, "provider", str, path, required=True, fix=f"set 'provider' to one of {', '.join(PROVIDER_TYPES)}.")
    if ptype not in PROVIDER_TYPES:
        import difflib
        close = difflib.get_close_matches(ptype, PROVIDER_TYPES, n=1)
        raise ConfigError(join(path, "provider"), f"unknown provider type {ptype!r}.",
                          f"did you mean '{close[0]}'?" if close else f"use one of {', '.join(PROVIDER_TYPES)}.")
    if not re.match(r"^[a-z0-9][a-z0-9_-]{0,39}$", name):
        raise ConfigError(path, f"provider name {name!r} is not URL-safe.", "use lower-case letters, digits, '-' and '_'.")
    if ptype == "saml":
        return _parse_saml(name, raw, path)
    return _parse_oidc(name, ptype, raw, path)


def _parse_auth(raw: Any) -> tuple[dict[str, ProviderSettings], str | None]:
    if raw is None:
        raise ConfigError("auth", "is missing.", "add an 'auth' block with a provider (see docs/configuration.md).")
    if not isinstance(raw, dict):
        raise ConfigError("auth", "must be an object.", "write the block as { ... }.")
    if "providers" in raw:
        check_keys(raw, ("providers", "default"), "auth")
        provs = expect(raw, "providers", dict, "auth", required=True)
        if not provs:
            raise ConfigError("auth.providers", "is empty.", "configure at least one provider.")
        out = {n: _parse_provider(n, p, f"auth.providers.{n}") for n, p in provs.items()}
        _check_introspection_routing(out)
        default = expect(raw, "default", str, "auth")
        if default is not None and default not in out:
            raise ConfigError("auth.default", f"names {default!r}, which is not configured.",
                              f"use one of {', '.join(out)}.")
        return out, default or (next(iter(out)) if len(out) == 1 else None)
    ptype = raw.get("provider")
    name = ptype if isinstance(ptype, str) and re.match(r"^[a-z0-9][a-z0-9_-]*$", ptype or "") else "default"
    prov = _parse_provider(name, raw, "auth")
    _check_introspection_routing({name: prov})
    return {name: prov}, name


_SKILL_KEYS = ("allowedGroups", "requiredScopes", "sensitive", "maxAuthAge", "allowedNetworks", "requireMfa",
               "acrValues", "description", "providers")


def _parse_skills(raw: Any, providers: Mapping[str, ProviderSettings]) -> dict[str, SkillSettings]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError("skills", "must be an object of skill name -> rules.", "see docs/skills.md.")
    out = {}
    for name, rules in raw.items():
        path = f"skills.{name}"
        if not isinstance(rules, dict):
            raise ConfigError(path, "must be an object.", "write {\"allowedGroups\": [...], \"requiredScopes\": [...]}.")
        check_keys(rules, _SKILL_KEYS, path)
        groups = expect_str_list(rules, "allowedGroups", path)
        if "allowedGroups" in rules and not groups:
            raise ConfigError(join(path, "allowedGroups"), "is an empty list: nobody could ever have this skill.",
                              "list the groups, or remove the key to allow any signed-in person.")
        nets = []
        for i, cidr in enumerate(expect_str_list(rules, "allowedNetworks", path)):
            try:
                nets.append(ipaddress.ip_network(cidr, strict=False))
            except ValueError:
                raise ConfigError(join(join(path, "allowedNetworks"), i), f"{cidr!r} is not a CIDR range.",
                                  "write ranges like 10.0.0.0/8 or 2001:db8::/32.") from None
        max_age = expect_positive(rules, "maxAuthAge", path, None)
        provs = expect_str_list(rules, "providers", path)
        for i, p in enumerate(provs):
            if p not in providers:
                raise ConfigError(join(join(path, "providers"), i), f"names provider {p!r}, which is not configured.",
                                  f"use one of {', '.join(providers)}.")
        out[name] = SkillSettings(
            name=name, allowed_groups=groups, required_scopes=expect_str_list(rules, "requiredScopes", path),
            sensitive=expect(rules, "sensitive", bool, path, False), max_auth_age=max_age,
            allowed_networks=tuple(nets), require_mfa=expect(rules, "requireMfa", bool, path, False),
            acr_values=expect_str_list(rules, "acrValues", path),
            description=expect(rules, "description", str, path, ""), providers=provs,
        )
    return out


_SESSION_KEYS = ("absoluteTimeout", "idleTimeout", "refreshWindow", "enableSlidingExpiration",
                 "requireReauthenticationForSensitive", "maxAuthAge", "slidingWriteInterval", "store", "cookieName",
                 "cookieSecure", "cookieSameSite", "cookieHostPrefix", "refreshLockTimeout", "tokenEncryptionKey",
                 "tokenEncryptionKeyFallbacks")


def _check_store_url(stype: str, url: str, path: str) -> None:
    """Let the client library parse the URL now, so a bad one is a ConfigError
    at start-up; their own messages are not passed on (SQLAlchemy's and
    redis-py's may quote the URL, password included)."""
    try:
        if stype == "sqlalchemy":
            from sqlalchemy.engine import make_url

            make_url(url).get_dialect()
        else:
            try:
                from redis.connection import parse_url
            except ImportError:  # the redis extra is not installed: the store says so when it starts
                return
            options = parse_url(url)
    except ImportError:
        raise ConfigError(path, "names a database driver that is not installed.",
                          "install the driver (e.g. pip install 'psycopg[binary]') or fix the URL's scheme.") from None
    except Exception:  # noqa: BLE001 - the drivers' parsers raise anything; their text may quote the password
        raise ConfigError(path, f"{mask_url(url)!r} is not a valid {stype} URL.",
                          "e.g. redis://:${REDIS_PASSWORD}@host:6379/0" if stype == "redis"
                          else "e.g. postgresql+psycopg://user:password@host/db.") from None
    if stype == "redis":
        # redis-py reads ?socket_timeout=nan as a float and fails on every command
        # later; its numeric options obey the same rule as every other number
        for option, value in options.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                check_number(value, option, path)


def _parse_store(raw: Any, path: str) -> StoreSettings:
    if raw is None:
        return StoreSettings()
    if not isinstance(raw, dict):
        raise ConfigError(path, "must be an object like {\"type\": \"redis\", \"url\": \"redis://...\"}.", "see docs/sessions.md.")
    check_keys(raw, ("type", "url", "keyPrefix", "path"), path)
    stype = expect(raw, "type", str, path, "embedded")
    if stype not in ("redis", "sqlalchemy", "embedded"):
        raise ConfigError(join(path, "type"), f"unknown store {stype!r}.", "use redis, sqlalchemy or embedded.")
    url = expect(raw, "url", str, path)
    if stype in ("redis", "sqlalchemy") and not url:
        example = "redis://127.0.0.1:6379/0" if stype == "redis" else "postgresql+psycopg://user@host/db"
        raise ConfigError(join(path, "url"), f"is required for a {stype} store.", f"e.g. \"{example}\" (from ${{VAR}}).")
    if stype == "redis" and url and not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(join(path, "url"), f"{mask_url(url)!r} is not a redis:// URL.", "e.g. redis://127.0.0.1:6379/0.")
    if url and stype in ("redis", "sqlalchemy"):
        _check_store_url(stype, url, join(path, "url"))
    return StoreSettings(type=stype, url=url, key_prefix=expect(raw, "keyPrefix", str, path, "ccsso:"),
                         path=expect(raw, "path", str, path))


def _parse_session(raw: Any) -> SessionSettings:
    if raw is None:
        return SessionSettings()
    if not isinstance(raw, dict):
        raise ConfigError("session", "must be an object.", "see docs/sessions.md.")
    path = "session"
    check_keys(raw, _SESSION_KEYS, path)
    absolute = expect_positive(raw, "absoluteTimeout", path, 28800.0)
    idle = expect_positive(raw, "idleTimeout", path, 3600.0)
    if idle > absolute:
        raise ConfigError("session.idleTimeout", f"({idle:g}s) is longer than absoluteTimeout ({absolute:g}s).",
                          "make idleTimeout at most absoluteTimeout.")
    samesite = expect(raw, "cookieSameSite", str, path, "Lax")
    if samesite not in ("Lax", "Strict", "None"):
        raise ConfigError("session.cookieSameSite", f"{samesite!r} is not Lax, Strict or None.", "use Lax (recommended).")
    secure = expect(raw, "cookieSecure", bool, path, True)
    host_prefix = expect(raw, "cookieHostPrefix", bool, path, None)
    if host_prefix and not secure:
        raise ConfigError("session.cookieHostPrefix", "needs cookieSecure true (browsers drop __Host- cookies otherwise).",
                          "set cookieSecure true or cookieHostPrefix false.")
    if samesite == "None" and not secure:
        raise ConfigError("session.cookieSameSite", "None needs cookieSecure true.", "use Lax.")
    name = expect(raw, "cookieName", str, path, "ccsso_session")
    if not re.match(r"^[A-Za-z0-9_\-]+$", name):
        raise ConfigError("session.cookieName", f"{name!r} is not a valid cookie name.", "use letters, digits, '-' and '_'.")
    return SessionSettings(
        absolute_timeout=absolute, idle_timeout=idle,
        refresh_window=expect_positive(raw, "refreshWindow", path, 300.0, allow_zero=True),
        enable_sliding_expiration=expect(raw, "enableSlidingExpiration", bool, path, True),
        require_reauthentication_for_sensitive=expect(raw, "requireReauthenticationForSensitive", bool, path, True),
        max_auth_age=expect_positive(raw, "maxAuthAge", path, 900.0),
        sliding_write_interval=expect_positive(raw, "slidingWriteInterval", path, 60.0, allow_zero=True),
        store=_parse_store(raw.get("store"), "session.store"),
        cookie_name=name, cookie_secure=secure, cookie_samesite=samesite, cookie_host_prefix=host_prefix,
        refresh_lock_timeout=expect_positive(raw, "refreshLockTimeout", path, 10.0),
        **_session_keys(raw, path),
    )


#: shortest accepted session key (characters): 256 bits as hex or base64
MIN_SESSION_KEY = 32


def _session_keys(raw: Mapping[str, Any], path: str) -> dict[str, Any]:
    """``tokenEncryptionKey`` and its fallbacks (old keys, whitespace- or
    comma-separated in one ``${VAR}``): long enough, never echoed."""
    key = expect(raw, "tokenEncryptionKey", str, path) or None
    olds = tuple(k for k in re.split(r"[\s,]+", expect(raw, "tokenEncryptionKeyFallbacks", str, path, "")) if k)
    if olds and key is None:
        raise ConfigError(join(path, "tokenEncryptionKeyFallbacks"), "is set without tokenEncryptionKey.",
                          "set tokenEncryptionKey too (without it, SECRET_KEY and SECRET_KEY_FALLBACKS are used).")
    for name, value in [("tokenEncryptionKey", key), *(("tokenEncryptionKeyFallbacks", k) for k in olds)]:
        if value is not None and len(value) < MIN_SESSION_KEY:
            raise ConfigError(join(path, name), f"is shorter than {MIN_SESSION_KEY} characters.",
                              "use a long random value, e.g. python -c 'import secrets; print(secrets.token_hex(32))'.")
    return {"token_encryption_key": key, "token_encryption_key_fallbacks": olds}


_TOP_KEYS = ("auth", "skills", "logging", "session")


def parse_config(raw: Mapping[str, Any], *, environ: Mapping[str, str] | None = None) -> CCSSOConfig:
    """Validate a whole config (the seed's blocks) into a :class:`CCSSOConfig`."""
    if not isinstance(raw, Mapping):
        raise ConfigError("CCSSO", "must be a dict with the blocks auth, skills, logging, session.", "see docs/configuration.md.")
    check_keys(raw, _TOP_KEYS, "")
    data = interpolate(dict(raw), "", environ)
    providers, default = _parse_auth(data.get("auth"))
    skills = _parse_skills(data.get("skills"), providers)
    session = _parse_session(data.get("session"))
    logging_block = data.get("logging")
    if logging_block is not None and not isinstance(logging_block, dict):
        raise ConfigError("logging", "must be an object.", "see docs/audit.md.")
    return CCSSOConfig(providers=providers, skills=skills, session=session, logging=dict(logging_block or {}),
                       default_provider=default)
