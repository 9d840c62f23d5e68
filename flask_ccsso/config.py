"""Config in the shape users already write, parsed once into frozen settings.

Sources, in order: ``app.config["CCSSO"]`` (a dict) or
``app.config["CCSSO_CONFIG_FILE"]`` (a JSON file). Both take the config blocks
from the usual Okta / Azure AD / Google guides
-- ``auth``, ``skills``, ``logging``, ``session`` -- verbatim. ``${VAR}`` and
``${VAR:-default}`` are replaced from the environment once, here, at start-up;
``$$`` stands for a literal ``$``. Nothing reads raw config at request time.
A secret in a config *file* must be exactly one ``${VAR}``.

Every problem raises :class:`~flask_ccsso.exceptions.ConfigError` naming the
key path (``auth.providers.okta.clientSecret``) and the fix.
"""

from __future__ import annotations

import builtins
import difflib
import ipaddress
import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeVar

from ._validate import (
    check_keys,
    check_number,
    check_url,
    config_keys,
    expect,
    expect_str_list,
    join,
    mask_url,
    parse_struct,
    read_settings,
    redefault,
)
from ._validate import is_loopback_host as is_loopback_host  # noqa: PLC0414 - re-exported: providers and check-config use it
from ._validate import setting as setting  # noqa: PLC0414 - re-exported: third-party provider settings declare keys with it
from .exceptions import ConfigError

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


_P = TypeVar("_P", bound="ProviderSettings")


@dataclass(frozen=True, kw_only=True)
class ProviderSettings:
    """What every provider has; each provider type subclasses it with its own keys.

    A field declared with :func:`~flask_ccsso._validate.setting` is a config
    key: its camelCase key, type, default, limits and marks are written there
    once, and :meth:`from_config` reads all of them the same way. A provider
    type's cross-key rules and derived values live in its :meth:`complete`,
    so no parser branches on the provider type.
    """

    name: str
    type: str
    path: str
    #: the chooser's button text; empty: :meth:`default_display_name`
    display_name: str = setting("displayName", "")
    #: other configured providers offered while this one's IdP cannot be reached (see :func:`_check_fallbacks`)
    fallback: tuple[str, ...] = setting("fallback", ())
    #: a break-glass provider: hidden from the chooser and refused at sign-in while every provider
    #: listing it as a ``fallback`` can be reached (see :func:`_check_fallbacks`)
    fallback_only: bool = setting("fallbackOnly", False)

    @classmethod
    def config_keys(cls) -> tuple[str, ...]:
        """Every key a provider block of this type may hold."""
        return ("provider", *config_keys(cls))

    @classmethod
    def default_display_name(cls, name: str) -> str:
        return name

    @classmethod
    def from_config(cls: builtins.type[_P], name: str, ptype: str, raw: Mapping[str, Any], path: str) -> _P:
        """Validate one provider block (``provider`` already checked)."""
        check_keys(raw, cls.config_keys(), path)
        values = cls.complete(read_settings(cls, raw, path), raw, path)
        values["display_name"] = values["display_name"] or cls.default_display_name(name)
        return cls(name=name, type=ptype, path=path, **values)

    @classmethod
    def complete(cls, values: dict[str, Any], raw: Mapping[str, Any], path: str) -> dict[str, Any]:
        """Cross-key rules and values derived from other keys (none here)."""
        return values


def _read_audience(raw: Mapping[str, Any], key: str, path: str, default: Any, meta: Mapping[str, Any]) -> Any:
    """A string or a list; ``None`` when unset (then ``clientId``, see :meth:`OIDCSettings.complete`)."""
    if isinstance(raw.get(key), list):
        return expect_str_list(raw, key, path)
    value = expect(raw, key, str, path)
    return (value,) if value else None


#: authorization request parameters flask-ccsso sets itself
_OWN_AUTHORIZE_PARAMS = ("state", "nonce", "code_challenge", "code_challenge_method", "redirect_uri", "client_id",
                         "response_type", "scope")


@dataclass(frozen=True, kw_only=True)
class OIDCSettings(ProviderSettings):
    """Any discovery-capable OpenID Provider (``provider: oidc``)."""

    client_id: str = setting("clientId", fix="copy the client (application) id from your IdP.")
    client_secret: str | None = setting("clientSecret", None, secret=True)
    #: required (Entra ID builds it from ``tenantId``)
    issuer: str = setting("issuer", "")
    tenant_id: str | None = setting("tenantId", None)
    #: Entra ID only (sovereign clouds)
    authority: str | None = setting("authority", None)
    #: empty: ``<issuer>/.well-known/openid-configuration``
    discovery_url: str = setting("discoveryUrl", "")
    scopes: tuple[str, ...] = setting("scopes", ("openid", "profile", "email"))
    redirect_uri: str | None = setting("redirectUri", None)
    #: accepted ``aud`` of bearer tokens; unset: ``(client_id,)``
    audience: tuple[str, ...] = setting("audience", (), read=_read_audience)
    allowed_algorithms: tuple[str, ...] = setting("allowedAlgorithms", DEFAULT_ALGORITHMS)
    clock_skew: float = setting("clockSkew", 60.0, allow_zero=True)
    discovery_ttl: float = setting("discoveryTtl", 3600.0)
    jwks_ttl: float = setting("jwksTtl", 3600.0)
    jwks_refresh_cooldown: float = setting("jwksRefreshCooldown", 60.0, allow_zero=True)
    timeout: float = setting("timeout", 5.0)
    groups_claim: str = setting("groupsClaim", "groups")
    roles_claim: str | None = setting("rolesClaim", None)
    graph_url: str | None = setting("graphUrl", None)
    post_logout_redirect_uri: str | None = setting("postLogoutRedirectUri", None)
    idp_logout: bool = setting("idpLogout", True)
    require_iss_parameter: bool = setting("requireIssParameter", False)
    login_state_ttl: float = setting("loginStateTtl", 600.0)
    extra_authorize_params: Mapping[str, str] = setting("extraAuthorizeParams", default_factory=dict)
    keep_claims: tuple[str, ...] = setting("keepClaims", ())
    introspection: bool = setting("introspection", True)
    #: bearer tokens only from these OAuth clients (empty: any client)
    allowed_clients: tuple[str, ...] = setting("allowedClients", ())
    #: opaque tokens starting with this go to this provider's introspection
    introspection_token_prefix: str | None = setting("introspectionTokenPrefix", None)
    #: opaque tokens matching no prefix go to this provider's introspection
    introspection_default: bool = setting("introspectionDefault", False)
    #: an introspection answer must name an accepted ``aud`` (opt-out: weaker)
    introspection_require_audience: bool = setting("introspectionRequireAudience", True)
    # client authentication at the token endpoint (see _check_client_auth)
    #: ``client_secret_basic`` / ``client_secret_post`` / ``private_key_jwt`` / ``none``; unset: from the credentials
    token_endpoint_auth_method: str | None = setting("tokenEndpointAuthMethod", None)
    #: private_key_jwt: the private key, a PEM / JWK file path or the PEM / JWK text from ``${VAR}``
    client_assertion_key: str | None = setting("clientAssertionKey", None, secret=True)
    #: the assertion's ``kid`` header (Okta: the key's id in the app's JWKS); unset: the JWK's own
    client_assertion_key_id: str | None = setting("clientAssertionKeyId", None)
    #: the key's X.509 certificate (Entra ID certificate credentials: sent as ``x5t`` / ``x5t#S256``)
    client_assertion_certificate: str | None = setting("clientAssertionCertificate", None)
    #: RS256 (azure-ad: PS256) for RSA keys, ES256/384/512 by curve, EdDSA for Ed25519
    client_assertion_algorithm: str | None = setting("clientAssertionAlgorithm", None)

    @property
    def auth_method(self) -> str:
        """The client authentication method in effect (:func:`auth_method_for`)."""
        return auth_method_for(self.token_endpoint_auth_method, self.client_secret, self.client_assertion_key)

    @classmethod
    def complete(cls, values: dict[str, Any], raw: Mapping[str, Any], path: str) -> dict[str, Any]:
        values = cls.locate_issuer(values, raw, path)
        issuer = values["issuer"] = _check_url(values["issuer"], join(path, "issuer"))
        discovery = values["discovery_url"] or issuer.rstrip("/") + "/.well-known/openid-configuration"
        values["discovery_url"] = _check_url(discovery, join(path, "discoveryUrl"))
        if "openid" not in values["scopes"]:
            raise ConfigError(join(path, "scopes"), "must include 'openid' for OpenID Connect sign-in.",
                              "add \"openid\" to the list.")
        if values["redirect_uri"]:
            _check_url(values["redirect_uri"], join(path, "redirectUri"))
        if values["audience"] is None:
            values["audience"] = (values["client_id"],)
        _check_client_auth(values, path)
        _check_algorithms(values["allowed_algorithms"], join(path, "allowedAlgorithms"))
        if values["post_logout_redirect_uri"]:
            _check_url(values["post_logout_redirect_uri"], join(path, "postLogoutRedirectUri"))
        for k, v in values["extra_authorize_params"].items():
            if k in _OWN_AUTHORIZE_PARAMS:
                raise ConfigError(join(join(path, "extraAuthorizeParams"), k), "is set by flask-ccsso itself.",
                                  "remove it.")
            if not isinstance(v, str):
                raise ConfigError(join(join(path, "extraAuthorizeParams"), k), "must be a string.", "quote the value.")
        return values

    @classmethod
    def locate_issuer(cls, values: dict[str, Any], raw: Mapping[str, Any], path: str) -> dict[str, Any]:
        """The issuer as configured (trailing ``/`` removed); ``authority`` is Entra ID's alone."""
        if "authority" in raw:
            raise ConfigError(join(path, "authority"), "applies to azure-ad only.", "use 'issuer' instead.")
        if not values["issuer"]:
            raise ConfigError(join(path, "issuer"), "is required.",
                              "set the issuer URL, e.g. https://your-org.okta.com/oauth2/default.")
        values["issuer"] = values["issuer"].rstrip("/")
        return values


#: ``tokenEndpointAuthMethod`` values; keys that only private_key_jwt uses; its signature algorithms
#: (which suits which key: ``providers.client_auth``)
CLIENT_AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt", "none")
_ASSERTION_KEYS = {"client_assertion_key_id": "clientAssertionKeyId",
                   "client_assertion_certificate": "clientAssertionCertificate",
                   "client_assertion_algorithm": "clientAssertionAlgorithm"}
CLIENT_ASSERTION_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


def auth_method_for(method: str | None, client_secret: str | None, assertion_key: str | None) -> str:
    """``tokenEndpointAuthMethod``, or when unset what the credentials imply:
    a key means private_key_jwt, a secret client_secret_basic, neither a public client."""
    if method:
        return method
    return "private_key_jwt" if assertion_key else "client_secret_basic" if client_secret else "none"


def _check_client_auth(values: dict[str, Any], path: str) -> None:
    """``tokenEndpointAuthMethod`` and the credentials it needs: exactly the
    secret or the key, never both (the key itself is read by the provider at
    start-up, see :mod:`flask_ccsso.providers.client_auth`)."""
    method, secret, key = values["token_endpoint_auth_method"], values["client_secret"], values["client_assertion_key"]
    where = join(path, "tokenEndpointAuthMethod")
    if method is None:
        if secret and key:
            raise ConfigError(where, "is needed: both clientSecret and clientAssertionKey are set.",
                              "set it to private_key_jwt (and remove clientSecret) or to client_secret_basic.")
        method = auth_method_for(None, secret, key)
    elif method not in CLIENT_AUTH_METHODS:
        close = difflib.get_close_matches(method, CLIENT_AUTH_METHODS, n=1)
        raise ConfigError(where, f"{method!r} is not a client authentication method flask-ccsso knows.",
                          f"did you mean '{close[0]}'?" if close else f"use one of {', '.join(CLIENT_AUTH_METHODS)}.")
    if method.startswith("client_secret_") and not secret:
        raise ConfigError(join(path, "clientSecret"), f"is required with tokenEndpointAuthMethod {method}.",
                          "set clientSecret from ${VAR}, or authenticate with a key (private_key_jwt and "
                          "clientAssertionKey).")
    if method in ("private_key_jwt", "none") and secret:
        raise ConfigError(join(path, "clientSecret"), f"is not used with tokenEndpointAuthMethod {method}.",
                          "remove clientSecret (and delete the secret at the IdP), or choose client_secret_basic.")
    if method == "private_key_jwt" and not key:
        raise ConfigError(join(path, "clientAssertionKey"), "is required with tokenEndpointAuthMethod private_key_jwt.",
                          "point it at the PEM or JWK private key file (or give the key text from ${VAR}).")
    if method != "private_key_jwt":
        for name, k in {"client_assertion_key": "clientAssertionKey", **_ASSERTION_KEYS}.items():
            if values[name]:
                raise ConfigError(join(path, k), f"applies to private_key_jwt only (the method is {method}).",
                                  f"set tokenEndpointAuthMethod to private_key_jwt, or remove {k}.")
    alg = values["client_assertion_algorithm"]
    if alg and alg not in CLIENT_ASSERTION_ALGORITHMS:
        close = difflib.get_close_matches(alg.upper(), CLIENT_ASSERTION_ALGORITHMS, n=1)
        raise ConfigError(join(path, "clientAssertionAlgorithm"), f"{alg!r} is not an assertion signing algorithm.",
                          f"did you mean '{close[0]}'?" if close else
                          f"use one of {', '.join(CLIENT_ASSERTION_ALGORITHMS)} (or leave it unset).")


def _check_algorithms(algs: tuple[str, ...], path: str) -> None:
    unknown = [a for a in algs if a not in DEFAULT_ALGORITHMS and a not in _FORBIDDEN_ALGORITHMS and a.lower() != "none"]
    if unknown:
        close = difflib.get_close_matches(unknown[0].upper(), DEFAULT_ALGORITHMS, n=1)
        raise ConfigError(path, f"{unknown[0]!r} is not a signature algorithm flask-ccsso knows.",
                          f"did you mean '{close[0]}'?" if close else f"use some of {', '.join(DEFAULT_ALGORITHMS)}.")
    bad = [a for a in algs if a in _FORBIDDEN_ALGORITHMS or a.lower() == "none"]
    if bad:
        raise ConfigError(path, f"{bad[0]!r} is not allowed for ID tokens.",
                          "list asymmetric algorithms only (RS256, PS256, ES256, EdDSA ...).")
    if not algs:
        raise ConfigError(path, "is empty.", "list at least RS256.")


@dataclass(frozen=True, kw_only=True)
class OktaSettings(OIDCSettings):
    """Okta (``provider: okta``): the issuer as given (org or custom authorization server)."""

    display_name: str = redefault(ProviderSettings, "display_name", "Okta")


_AZURE_TENANT = re.compile(r"^[0-9a-fA-F-]{36}$|^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")


@dataclass(frozen=True, kw_only=True)
class AzureADSettings(OIDCSettings):
    """Microsoft Entra ID (``provider: azure-ad``): one tenant, app roles, Graph for group overage."""

    display_name: str = redefault(ProviderSettings, "display_name", "Microsoft")
    authority: str | None = redefault(OIDCSettings, "authority", "https://login.microsoftonline.com")
    roles_claim: str | None = redefault(OIDCSettings, "roles_claim", "roles")
    graph_url: str | None = redefault(OIDCSettings, "graph_url", "https://graph.microsoft.com/v1.0")
    # Entra ID has no RFC 7662 endpoint: its providers introspect only when asked
    introspection: bool = redefault(OIDCSettings, "introspection", False)

    @classmethod
    def locate_issuer(cls, values: dict[str, Any], raw: Mapping[str, Any], path: str) -> dict[str, Any]:
        """The tenant's issuer, built from ``authority`` and ``tenantId`` unless given."""
        tenant, issuer = values["tenant_id"], values["issuer"]
        if not tenant and not issuer:
            raise ConfigError(join(path, "tenantId"), "is required for azure-ad.",
                              "copy the Directory (tenant) ID from Entra ID > Overview.")
        if tenant and tenant.lower() in ("common", "organizations", "consumers"):
            raise ConfigError(join(path, "tenantId"), f"'{tenant}' is multi-tenant: any Microsoft tenant could sign in.",
                              "use your own tenant id (a GUID) or domain.")
        if tenant and not _AZURE_TENANT.match(tenant):
            raise ConfigError(join(path, "tenantId"), f"{tenant!r} is not a tenant GUID or domain.",
                              "copy the Directory (tenant) ID from Entra ID > Overview.")
        authority = (values["authority"] or "").rstrip("/")
        values["authority"] = authority
        if not issuer:
            values["issuer"] = f"{authority}/{tenant}/v2.0"
        if values["graph_url"]:
            values["graph_url"] = _check_url(values["graph_url"].rstrip("/"), join(path, "graphUrl"))
        return values


def _read_scopes_from_groups(raw: Mapping[str, Any], key: str, path: str, default: Any,
                             meta: Mapping[str, Any]) -> Any:
    groups = expect(raw, key, dict, path, default)
    return {g: expect_str_list(groups, g, join(path, key)) for g in groups}


#: the names ``attributeMapping`` may map
_SAML_ATTRIBUTES = ("email", "name", "groups", "firstName", "lastName", "scopes")


#: the values of a SAML provider's ``xmlsecBackend``
XMLSEC_BACKENDS = ("auto", "binding", "xmlsec1")


@dataclass(frozen=True, kw_only=True)
class SAMLSettings(ProviderSettings):
    """A SAML 2.0 IdP (``provider: saml``)."""

    idp_metadata: str = setting("idpMetadata", fix="point it at the IdP's metadata XML file or https URL "
                                "(Google Admin > Apps > SAML app).")
    sp_entity_id: str = setting("spEntityId", fix="use your portal's URL, e.g. https://portal.example.com.")
    attribute_mapping: Mapping[str, str] = setting("attributeMapping", default_factory=dict)
    sp_certificate: str | None = setting("spCertificate", None)
    sp_private_key: str | None = setting("spPrivateKey", None, secret=True)
    sign_authn_requests: bool = setting("signAuthnRequests", False)
    want_assertions_signed: bool = setting("wantAssertionsSigned", True)
    want_response_signed: bool = setting("wantResponseSigned", False)
    #: decrypt EncryptedAssertions (with the SP key pair) -- and then refuse plain ones;
    #: off: an EncryptedAssertion is refused before anything decrypts it
    want_assertions_encrypted: bool = setting("wantAssertionsEncrypted", False)
    allow_unsolicited: bool = setting("allowUnsolicited", False)
    clock_skew: float = setting("clockSkew", 60.0, allow_zero=True)
    metadata_refresh: float = setting("metadataRefresh", 3600.0)
    idp_entity_id: str | None = setting("idpEntityId", None)
    requested_authn_context: tuple[str, ...] = setting("requestedAuthnContext", ())
    name_id_format: str | None = setting("nameIdFormat", None)
    groups_truncated_attribute: str | None = setting("groupsTruncatedAttribute", None)
    acs_url: str | None = setting("acsUrl", None)
    max_response_size: int = setting("maxResponseSize", 256 * 1024, minimum=1024)
    login_state_ttl: float = setting("loginStateTtl", 600.0)
    scopes_from_groups: Mapping[str, tuple[str, ...]] = setting("scopesFromGroups", default_factory=dict,
                                                                read=_read_scopes_from_groups)
    idp_logout: bool = setting("idpLogout", True)
    timeout: float = setting("timeout", 5.0)
    xmlsec_binary: str | None = setting("xmlsecBinary", None)
    #: who verifies response signatures: ``auto`` (the in-process ``xmlsec`` binding when it
    #: loads, else the xmlsec1 program), ``binding`` (required) or ``xmlsec1`` (always the program)
    xmlsec_backend: str = setting("xmlsecBackend", "auto")
    #: PEM text or file path: when set, the metadata must carry a valid signature by this certificate
    idp_metadata_certificate: str | None = setting("idpMetadataCertificate", None)

    @classmethod
    def default_display_name(cls, name: str) -> str:
        return "Google Workspace" if name == "saml" else name

    @classmethod
    def complete(cls, values: dict[str, Any], raw: Mapping[str, Any], path: str) -> dict[str, Any]:
        if values["idp_metadata"].startswith(("http://", "https://")):
            _check_url(values["idp_metadata"], join(path, "idpMetadata"))
        mapping = values["attribute_mapping"]
        check_keys(mapping, _SAML_ATTRIBUTES, join(path, "attributeMapping"))
        for k, v in mapping.items():
            if not isinstance(v, str):
                raise ConfigError(join(join(path, "attributeMapping"), k), "must be an attribute name (a string).",
                                  "write the attribute's Name or URI.")
        if not values["want_assertions_signed"] and not values["want_response_signed"]:
            raise ConfigError(join(path, "wantAssertionsSigned"),
                              "false with wantResponseSigned false would accept unsigned assertions (anyone could "
                              "forge a sign-in).", "leave wantAssertionsSigned true, or set wantResponseSigned true.")
        if values["acs_url"]:
            _check_url(values["acs_url"], join(path, "acsUrl"))
        if values["xmlsec_backend"] not in XMLSEC_BACKENDS:
            raise ConfigError(join(path, "xmlsecBackend"), f"must be one of {', '.join(XMLSEC_BACKENDS)}.",
                              "leave it out (auto), or write binding or xmlsec1.")
        cert, key = values["sp_certificate"], values["sp_private_key"]
        if bool(cert) != bool(key):
            raise ConfigError(join(path, "spPrivateKey" if cert else "spCertificate"),
                              "is needed together with the other half of the SP key pair.",
                              "set both spCertificate and spPrivateKey (file paths, or PEM text from ${VAR}).")
        if values["sign_authn_requests"] and not key:
            raise ConfigError(join(path, "signAuthnRequests"), "is true but no SP key pair is configured.",
                              "set spCertificate and spPrivateKey, or signAuthnRequests false.")
        if values["want_assertions_encrypted"] and not key:
            raise ConfigError(join(path, "wantAssertionsEncrypted"), "is true but no SP key pair is configured.",
                              "set spCertificate and spPrivateKey (the key the IdP encrypts to), "
                              "or wantAssertionsEncrypted false.")
        return values


def _read_networks(raw: Mapping[str, Any], key: str, path: str, default: Any, meta: Mapping[str, Any]) -> Any:
    nets = []
    for i, cidr in enumerate(expect_str_list(raw, key, path, default)):
        try:
            nets.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            raise ConfigError(join(join(path, key), i), f"{cidr!r} is not a CIDR range.",
                              "write ranges like 10.0.0.0/8 or 2001:db8::/32.") from None
    return tuple(nets)


@dataclass(frozen=True, kw_only=True)
class SkillSettings:
    name: str
    #: empty: any signed-in person (an empty list in the config is refused)
    allowed_groups: tuple[str, ...] = setting("allowedGroups", ())
    required_scopes: tuple[str, ...] = setting("requiredScopes", ())
    sensitive: bool = setting("sensitive", False)
    max_auth_age: float | None = setting("maxAuthAge", None)
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = setting(
        "allowedNetworks", (), read=_read_networks)
    require_mfa: bool = setting("requireMfa", False)
    acr_values: tuple[str, ...] = setting("acrValues", ())
    description: str = setting("description", "")
    providers: tuple[str, ...] = setting("providers", ())


@dataclass(frozen=True, kw_only=True)
class StoreSettings:
    #: ``"redis"``, ``"sqlalchemy"`` or ``"embedded"`` (a SQLite file + file
    #: cache in the instance folder: one machine, any number of processes)
    type: str = setting("type", "embedded")
    url: str | None = setting("url", None, url=True)
    key_prefix: str = setting("keyPrefix", "ccsso:")
    path: str | None = setting("path", None)
    #: Redis only: seconds to open a connection / to wait for a reply before
    #: the request answers 503 (a URL's ``?socket_timeout=`` wins)
    connect_timeout: float = setting("connectTimeout", 1.0)
    socket_timeout: float = setting("socketTimeout", 1.0)
    #: Redis only: consecutive timeouts that open the circuit breaker (``0``:
    #: no breaker), and seconds it then fails calls at once before one probe
    breaker_failures: int = setting("breakerFailures", 3, minimum=0)
    breaker_cooldown: float = setting("breakerCooldown", 5.0)
    #: Redis over TLS (``rediss://``): the CA bundle that signs the server's
    #: certificate, and a client certificate and key when the server asks for one
    ssl_ca_certs: str | None = setting("sslCaCerts", None)
    ssl_certfile: str | None = setting("sslCertfile", None)
    ssl_keyfile: str | None = setting("sslKeyfile", None)


def _read_store(raw: Mapping[str, Any], key: str, path: str, default: Any, meta: Mapping[str, Any]) -> Any:
    return _parse_store(raw.get(key), join(path, key))


def _read_key_list(raw: Mapping[str, Any], key: str, path: str, default: Any, meta: Mapping[str, Any]) -> Any:
    """Old keys, whitespace- or comma-separated in one ``${VAR}``."""
    return tuple(k for k in re.split(r"[\s,]+", expect(raw, key, str, path, "")) if k) or default


#: shortest accepted SCIM bearer secret (characters)
MIN_SCIM_TOKEN = 32


@dataclass(frozen=True, kw_only=True)
class ScimSettings:
    """The ``scim`` block: the SCIM 2.0 endpoint an IdP provisions (and deprovisions) people through."""

    enabled: bool = setting("enabled", False)
    url_prefix: str = setting("urlPrefix", "/scim/v2")
    #: the bearer secret the IdP sends (from the environment; never logged)
    token: str | None = setting("token", None, secret=True)
    #: the OIDC provider whose JWT access tokens are accepted instead of (or besides) ``token``
    token_provider: str | None = setting("tokenProvider", None)
    #: the OAuth clients that may provision (``client_id`` / ``azp`` / ``cid`` / ``appid``):
    #: an access token's audience is the portal, but only these clients may change its directory
    token_clients: tuple[str, ...] = setting("tokenClients", ())
    #: the scope (``scp`` / ``scope``) or app role (``roles``, Entra ID) such a token must carry
    token_scope: str = setting("tokenScope", "scim")


def _parse_scim(raw: Any, providers: Mapping[str, ProviderSettings]) -> ScimSettings:
    if raw is None:
        return ScimSettings()
    if not isinstance(raw, dict):
        raise ConfigError("scim", "must be an object.", "see docs/scim.md.")
    s = parse_struct(ScimSettings, raw, "scim")
    fix = ("set \"token\": \"${SCIM_TOKEN}\" and export SCIM_TOKEN from a long random value, e.g. "
           "python -c 'import secrets; print(secrets.token_urlsafe(32))'.")
    if s.enabled and not s.token and not s.token_provider:
        raise ConfigError("scim.token", "is not set (nor scim.tokenProvider), but scim.enabled is true.",
                          f"{fix} Or accept the IdP's OAuth access tokens: \"tokenProvider\" (see docs/scim.md).")
    if s.token is not None and len(s.token) < MIN_SCIM_TOKEN:
        raise ConfigError("scim.token", f"is shorter than {MIN_SCIM_TOKEN} characters.", fix)
    if not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", s.url_prefix):
        raise ConfigError("scim.urlPrefix", f"{s.url_prefix!r} is not a URL path.", 'use e.g. "/scim/v2".')
    _check_scim_oauth(s, providers)
    return s


def _check_scim_oauth(s: ScimSettings, providers: Mapping[str, ProviderSettings]) -> None:
    """``tokenProvider`` names a configured OIDC provider (SAML issues no access
    tokens), with the clients that may provision and a scope to require."""
    oidc = sorted(n for n, p in providers.items() if isinstance(p, OIDCSettings))
    if s.token_provider is None:
        if s.token_clients:
            raise ConfigError("scim.tokenClients", "is set, but scim.tokenProvider is not.",
                              "name the OIDC provider that issues the provisioning client's tokens in "
                              "\"tokenProvider\", or remove tokenClients.")
        return
    prov = providers.get(s.token_provider)
    if prov is None:
        raise ConfigError("scim.tokenProvider", f"names {s.token_provider!r}, which is not configured.",
                          f"name one of the OIDC providers in auth.providers: {', '.join(oidc) or '(none)'}.")
    if not isinstance(prov, OIDCSettings):
        raise ConfigError("scim.tokenProvider", f"names {s.token_provider!r}, a {prov.type} provider, which issues "
                          "no OAuth access tokens.",
                          f"name an OIDC provider (okta, azure-ad, oidc): {', '.join(oidc) or '(none configured)'}.")
    if prov.fallback_only:
        raise ConfigError("scim.tokenProvider", f"names {s.token_provider!r}, a fallbackOnly (break-glass) provider: "
                          "its tokens serve only during an outage, provisioning is everyday work.",
                          "name the everyday OIDC provider whose provisioning client calls SCIM.")
    if not s.token_clients or not all(c.strip() for c in s.token_clients):
        raise ConfigError("scim.tokenClients", "is empty (or lists an empty id), but scim.tokenProvider is set.",
                          "list the client id(s) of the IdP's provisioning client, e.g. \"tokenClients\": "
                          "[\"0oa...\"]: a token's audience is the portal, but only these clients may provision.")
    # a sign-in client's tokens are people's tokens: naming one would let every person holding the
    # scope or role provision (re-activate themselves, deactivate others)
    for other in providers.values():
        sign_in = {other.client_id, *other.allowed_clients} if isinstance(other, OIDCSettings) else set()
        clash = sorted(sign_in & set(s.token_clients))
        if clash:
            raise ConfigError("scim.tokenClients", f"names {clash[0]!r}, a client people sign in or call the API "
                              f"with (auth.providers.{other.name}); its tokens are people's, not the provisioning "
                              "client's.", "create a separate client-credentials client for provisioning at the IdP "
                              "and list only its id.")
    if not re.fullmatch(r"\S+", s.token_scope):
        raise ConfigError("scim.tokenScope", f"{s.token_scope!r} is not one scope or app role name.",
                          'use the scope or app role the provisioning client is granted, e.g. "scim".')


@dataclass(frozen=True, kw_only=True)
class ConsoleSettings:
    """The ``console`` block: the operator console (sessions, audit, charts, skills, providers)."""

    enabled: bool = setting("enabled", False)
    #: the configured skill an operator needs; it must ask for a recent sign-in (``sensitive``
    #: with re-authentication on, or its own ``maxAuthAge``; checked by init_app with the gate's
    #: freshness rule) unless ``requireSensitiveSkill`` is false: the console ends other people's sessions
    skill: str | None = setting("skill", None)
    url_prefix: str = setting("urlPrefix", "/sso-console")
    require_sensitive_skill: bool = setting("requireSensitiveSkill", True)
    #: the audit destination (its ``name``) the audit explorer reads; default: the first ``sqlalchemy`` one
    audit_destination: str | None = setting("auditDestination", None)


def _parse_console(raw: Any, skills: Mapping[str, SkillSettings]) -> ConsoleSettings:
    if raw is None:
        return ConsoleSettings()
    if not isinstance(raw, dict):
        raise ConfigError("console", "must be an object.", "see docs/console.md.")
    c = parse_struct(ConsoleSettings, raw, "console")
    if not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", c.url_prefix):
        raise ConfigError("console.urlPrefix", f"{c.url_prefix!r} is not a URL path.", 'use e.g. "/sso-console".')
    if not c.enabled:
        return c
    if not c.skill:
        raise ConfigError("console.skill", "is not set, but console.enabled is true.",
                          'name the skill operators need, e.g. "skill": "sso-operator", and define it in "skills" '
                          'with "allowedGroups" and "sensitive": true.')
    skill = skills.get(c.skill)
    if skill is None:
        raise ConfigError("console.skill", f"names {c.skill!r}, which is not a configured skill.",
                          f"define {c.skill!r} in the skills block, or name one of: {', '.join(sorted(skills)) or '(none)'}.")
    if not skill.allowed_groups:
        raise ConfigError("console.skill", f"names {c.skill!r}, which any signed-in person has (no allowedGroups).",
                          f"give skills.{c.skill}.allowedGroups the operators' group.")
    # whether the skill asks for a recent sign-in is the gate's freshness rule, which sits above the
    # config: init_app checks it right after parsing (flask_ccsso.console.recent_sign_in)
    return c


@dataclass(frozen=True, kw_only=True)
class SessionSettings:
    absolute_timeout: float = setting("absoluteTimeout", 28800.0)
    idle_timeout: float = setting("idleTimeout", 3600.0)
    refresh_window: float = setting("refreshWindow", 300.0, allow_zero=True)
    enable_sliding_expiration: bool = setting("enableSlidingExpiration", True)
    require_reauthentication_for_sensitive: bool = setting("requireReauthenticationForSensitive", True)
    #: default freshness for sensitive skills (seconds since auth_time)
    max_auth_age: float = setting("maxAuthAge", 900.0)
    #: how stale the stored idle deadline may get before a write renews it
    sliding_write_interval: float = setting("slidingWriteInterval", 60.0, allow_zero=True)
    store: StoreSettings = setting("store", default_factory=StoreSettings, read=_read_store)  # noqa: RUF009 - a field specifier
    cookie_name: str = setting("cookieName", "ccsso_session")
    cookie_secure: bool = setting("cookieSecure", True)
    cookie_samesite: str = setting("cookieSameSite", "Lax")
    #: ``__Host-`` cookie prefix; ``None``: on when the cookie is Secure, on
    #: ``Path=/`` and host-only (see session.cookie_settings)
    cookie_host_prefix: bool | None = setting("cookieHostPrefix", None)
    refresh_lock_timeout: float = setting("refreshLockTimeout", 10.0)
    #: how long past its expiry an access token the IdP cannot renew (unreachable, not a
    #: refusal) still serves the session; ``0``: fail closed at once (see gate/refresh.py)
    outage_grace: float = setting("outageGrace", 3600.0, allow_zero=True)
    #: seals session records (else SECRET_KEY); never stored with them
    token_encryption_key: str | None = setting("tokenEncryptionKey", None, secret=True)
    #: old keys that still open records (else SECRET_KEY_FALLBACKS)
    token_encryption_key_fallbacks: tuple[str, ...] = setting("tokenEncryptionKeyFallbacks", (), secret=True,
                                                              read=_read_key_list)


@dataclass(frozen=True)
class CCSSOConfig:
    providers: Mapping[str, ProviderSettings]
    skills: Mapping[str, SkillSettings]
    session: SessionSettings
    #: the raw ``logging`` block (parsed by the audit package): it may hold sink tokens and headers
    logging: Mapping[str, Any] = field(repr=False)
    default_provider: str | None = None
    #: the ``scim`` block (SCIM 2.0 provisioning, off by default; see docs/scim.md)
    scim: ScimSettings = field(default_factory=ScimSettings)
    #: the ``console`` block (the operator console, off by default; see docs/console.md)
    console: ConsoleSettings = field(default_factory=ConsoleSettings)


# --------------------------------------------------------------------------- provider types

#: the built-in provider types and their settings (their provider classes are
#: in :data:`flask_ccsso.providers.BUILTIN_PROVIDERS`)
BUILTIN_SETTINGS: Mapping[str, type[ProviderSettings]] = {
    "oidc": OIDCSettings, "okta": OktaSettings, "azure-ad": AzureADSettings, "saml": SAMLSettings,
}
#: the entry point group third-party provider types register in (``name = "module:ProviderClass"``)
ENTRY_POINT_GROUP = "flask_ccsso.providers"


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known_provider_types() -> tuple[str, ...]:
    """The built-in provider types, then those installed through entry points."""
    return tuple(BUILTIN_SETTINGS) + tuple(sorted(set(_entry_points()) - set(BUILTIN_SETTINGS)))


def _unknown_type(ptype: str, path: str) -> ConfigError:
    known = known_provider_types()
    close = difflib.get_close_matches(ptype, known, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return ConfigError(path, f"unknown provider type {ptype!r}.", f"{hint}known types: {', '.join(known)}.")


def plugin_provider(ptype: str, path: str = "provider") -> Any:
    """The provider class an installed distribution registers for ``ptype``
    in the ``flask_ccsso.providers`` entry point group; a ConfigError listing
    the known types when none does. The class must name its settings struct
    (``settings_class``, a :class:`ProviderSettings` subclass)."""
    ep = _entry_points().get(ptype)
    if ep is None:
        raise _unknown_type(ptype, path)
    try:
        cls = ep.load()
    except Exception as exc:  # a broken plug-in is a config problem with a name
        raise ConfigError(path, f"provider type {ptype!r} ({ep.value}) cannot be loaded ({type(exc).__name__}).",
                          "reinstall the package that provides it, or use another provider type.") from exc
    settings = getattr(cls, "settings_class", None)
    if not (isinstance(settings, type) and issubclass(settings, ProviderSettings)):
        raise ConfigError(path, f"provider type {ptype!r} ({ep.value}) names no settings class.",
                          "its provider class must set settings_class to a ProviderSettings subclass.")
    return cls


def settings_class(ptype: str, path: str = "provider") -> type[ProviderSettings]:
    """The settings struct of the provider type ``ptype`` (built-ins first, then entry points)."""
    if ptype in BUILTIN_SETTINGS:
        return BUILTIN_SETTINGS[ptype]
    settings: type[ProviderSettings] = plugin_provider(ptype, path).settings_class
    return settings


# --------------------------------------------------------------------------- parsing

def _introspects(p: ProviderSettings) -> bool:
    # a confidential client (a secret or a key): a public one cannot authenticate to introspect
    return isinstance(p, OIDCSettings) and p.introspection and p.auth_method != "none"


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
    active = [p for p in providers.values() if isinstance(p, OIDCSettings) and _introspects(p)]
    defaults = [p for p in active if p.introspection_default]
    if len(defaults) > 1:
        raise ConfigError(join(defaults[1].path, "introspectionDefault"),
                          f"is true for several providers ({', '.join(p.name for p in defaults)}).",
                          "set it on one provider only.")
    prefixed = [(p.introspection_token_prefix, p) for p in active if p.introspection_token_prefix]
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


def _check_fallbacks(providers: Mapping[str, ProviderSettings]) -> None:
    """Each provider's ``fallback`` names other configured providers, each
    once, and no chain of fallbacks leads back to where it started: the
    fallback offered while an IdP is down must not itself send people back
    to that IdP (and every fallback sign-in raises an alert, so the chain
    must be one an operator can read)."""
    for prov in providers.values():
        where = join(prov.path, "fallback")
        for i, name in enumerate(prov.fallback):
            if name == prov.name:
                raise ConfigError(join(where, i), "names this provider itself.",
                                  "name another configured provider, the one to offer while this one is unreachable.")
            if name not in providers:
                others = [n for n in providers if n != prov.name]
                raise ConfigError(join(where, i), f"names provider {name!r}, which is not configured.",
                                  f"use one of {', '.join(others)}." if others else
                                  "configure the fallback provider under auth.providers first.")
            if name in prov.fallback[:i]:
                raise ConfigError(join(where, i), f"names {name!r} twice.", "list each fallback once.")
    for prov in providers.values():
        if prov.fallback_only and not any(prov.name in other.fallback for other in providers.values()):
            raise ConfigError(join(prov.path, "fallbackOnly"),
                              f"is true, but no provider lists {prov.name!r} as a fallback, so it could never be used.",
                              f"add {prov.name!r} to the 'fallback' list of the provider it stands in for, "
                              "or remove fallbackOnly.")
    for start in providers.values():
        # depth-first along the fallbacks; at most one walk per provider, and configs hold a handful
        trail = [start.name]
        stack = [(start.name, iter(start.fallback))]
        while stack:
            step = next(stack[-1][1], None)
            if step is None:
                stack.pop()
                trail.pop()
                continue
            if step == start.name:
                raise ConfigError(join(start.path, "fallback"),
                                  f"makes a cycle: {' -> '.join([*trail, step])}.",
                                  "a fallback must not fall back (directly or through others) to the provider it "
                                  "stands in for; remove one of these fallback entries.")
            if step in trail:
                continue  # a cycle not through start: reported when the walk starts there
            trail.append(step)
            stack.append((step, iter(providers[step].fallback)))


def _parse_provider(name: str, raw: Any, path: str) -> ProviderSettings:
    if not isinstance(raw, dict):
        raise ConfigError(path, "must be an object.", "write the provider's settings as { ... }.")
    ptype = expect(raw, "provider", str, path, required=True,
                   fix=f"set 'provider' to one of {', '.join(known_provider_types())}.")
    cls = settings_class(ptype, join(path, "provider"))
    if not re.match(r"^[a-z0-9][a-z0-9_-]{0,39}$", name):
        raise ConfigError(path, f"provider name {name!r} is not URL-safe.", "use lower-case letters, digits, '-' and '_'.")
    return cls.from_config(name, ptype, raw, path)


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
        _check_fallbacks(out)
        default = expect(raw, "default", str, "auth")
        if default is not None and default not in out:
            raise ConfigError("auth.default", f"names {default!r}, which is not configured.",
                              f"use one of {', '.join(out)}.")
        if default is not None and out[default].fallback_only:
            raise ConfigError("auth.default", f"names {default!r}, a fallbackOnly provider (refused while the "
                              "providers it stands in for can be reached).", "name the everyday provider.")
        return out, default or (next(iter(out)) if len(out) == 1 else None)
    ptype = raw.get("provider")
    name = ptype if isinstance(ptype, str) and re.match(r"^[a-z0-9][a-z0-9_-]*$", ptype or "") else "default"
    prov = _parse_provider(name, raw, "auth")
    _check_introspection_routing({name: prov})
    _check_fallbacks({name: prov})
    return {name: prov}, name


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
        skill = parse_struct(SkillSettings, rules, path, name=name)
        if "allowedGroups" in rules and not skill.allowed_groups:
            raise ConfigError(join(path, "allowedGroups"), "is an empty list: nobody could ever have this skill.",
                              "list the groups, or remove the key to allow any signed-in person.")
        for i, p in enumerate(skill.providers):
            if p not in providers:
                raise ConfigError(join(join(path, "providers"), i), f"names provider {p!r}, which is not configured.",
                                  f"use one of {', '.join(providers)}.")
        out[name] = skill
    return out


#: what a Redis store URL may start with: one server, Sentinel, a cluster
REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://", "rediss+sentinel://",
                 "redis+cluster://", "rediss+cluster://")


def split_redis_url(url: str) -> tuple[str, list[tuple[str, int]], str, str]:
    """``(mode, nodes, service, server_url)`` of a Redis store URL.

    ``mode`` is ``"server"`` (``redis://``, ``rediss://``, ``unix://``: the
    URL as it is), ``"sentinel"`` (``redis[s]+sentinel://[[user]:password@]
    host:port[,host:port...]/service[/db]``) or ``"cluster"``
    (``redis[s]+cluster://[[user]:password@]host:port[,host:port...]``). For
    the last two, ``nodes`` are the sentinels / the cluster's startup nodes,
    ``service`` the Sentinel service (master) name, and ``server_url`` a
    one-server URL with the same credentials, database, TLS and ``?options``
    -- what redis-py parses for the data connections (its host is a
    placeholder). Raises ValueError on a malformed host list.
    """
    scheme, _, rest = url.partition("://")
    base, _, mode = scheme.partition("+")
    if mode not in ("sentinel", "cluster"):
        return "server", [], "", url
    rest, _, query = rest.partition("?")
    netloc, _, tail = rest.partition("/")
    auth, at, hosts = netloc.rpartition("@")
    nodes = []
    for part in hosts.split(","):
        host, colon, port = part.strip().rpartition(":")
        if not colon or host.endswith(":"):  # no port, or a bare IPv6 address
            host, port = part.strip(), "26379" if mode == "sentinel" else "6379"
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("bad host:port")
        nodes.append((host, int(port)))
    segments = [s for s in tail.split("/") if s]
    service = segments.pop(0) if mode == "sentinel" and segments else ""
    db = segments[0] if segments else "0"
    return mode, nodes, service, f"{base}://{auth}{at}localhost/{db}" + (f"?{query}" if query else "")


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
            parse: Callable[[str], dict[str, Any]] = parse_url  # redis leaves it unannotated
            mode, _, service, server_url = split_redis_url(url)
            options = parse(server_url)
    except ImportError:
        raise ConfigError(path, "names a database driver that is not installed.",
                          "install the driver (e.g. pip install 'psycopg[binary]') or fix the URL's scheme.") from None
    except Exception:  # noqa: BLE001 - the drivers' parsers raise anything; their text may quote the password
        raise ConfigError(path, f"{mask_url(url)!r} is not a valid {stype} URL.",
                          "e.g. redis://:${REDIS_PASSWORD}@host:6379/0" if stype == "redis"
                          else "e.g. postgresql+psycopg://user:password@host/db.") from None
    if stype == "redis" and mode == "sentinel" and not service:
        raise ConfigError(path, "names no Sentinel service.",
                          "e.g. redis+sentinel://sentinel1:26379,sentinel2:26379/mymaster/0.")
    if stype == "redis" and mode == "cluster" and options.get("db", 0) != 0:
        raise ConfigError(path, "names a database other than 0; Redis Cluster has only database 0.",
                          "drop the /db part of the URL.")
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
    store = parse_struct(StoreSettings, raw, path)
    stype, url = store.type, store.url
    if stype not in ("redis", "sqlalchemy", "embedded"):
        raise ConfigError(join(path, "type"), f"unknown store {stype!r}.", "use redis, sqlalchemy or embedded.")
    if stype in ("redis", "sqlalchemy") and not url:
        example = "redis://127.0.0.1:6379/0" if stype == "redis" else "postgresql+psycopg://user@host/db"
        raise ConfigError(join(path, "url"), f"is required for a {stype} store.", f"e.g. \"{example}\" (from ${{VAR}}).")
    if stype == "redis" and url and not url.startswith(REDIS_SCHEMES):
        raise ConfigError(join(path, "url"), f"{mask_url(url)!r} is not a redis:// URL.",
                          "e.g. redis://127.0.0.1:6379/0, rediss://... (TLS), redis+sentinel://... or redis+cluster://... .")
    if url and stype in ("redis", "sqlalchemy"):
        _check_store_url(stype, url, join(path, "url"))
    tls_files = {"sslCaCerts": store.ssl_ca_certs, "sslCertfile": store.ssl_certfile, "sslKeyfile": store.ssl_keyfile}
    for key, file in tls_files.items():
        if file is None:
            continue
        if stype != "redis" or not (url or "").startswith(("rediss://", "rediss+")):
            raise ConfigError(join(path, key), "is set but the store does not use TLS.",
                              "use a rediss:// URL (or rediss+sentinel:// / rediss+cluster://), or remove the key.")
        if not os.path.isfile(file):
            raise ConfigError(join(path, key), f"{file!r} is not a file.", "give the path of a PEM file.")
    if bool(store.ssl_certfile) != bool(store.ssl_keyfile):
        raise ConfigError(join(path, "sslKeyfile" if store.ssl_certfile else "sslCertfile"),
                          "is needed together with the other half of the client certificate.",
                          "set both sslCertfile and sslKeyfile, or neither.")
    return store


#: shortest accepted session key (characters): 256 bits as hex or base64
MIN_SESSION_KEY = 32


def _parse_session(raw: Any) -> SessionSettings:
    if raw is None:
        return SessionSettings()
    if not isinstance(raw, dict):
        raise ConfigError("session", "must be an object.", "see docs/sessions.md.")
    s = parse_struct(SessionSettings, raw, "session")
    if s.idle_timeout > s.absolute_timeout:
        raise ConfigError("session.idleTimeout", f"({s.idle_timeout:g}s) is longer than absoluteTimeout "
                          f"({s.absolute_timeout:g}s).", "make idleTimeout at most absoluteTimeout.")
    if s.cookie_samesite not in ("Lax", "Strict", "None"):
        raise ConfigError("session.cookieSameSite", f"{s.cookie_samesite!r} is not Lax, Strict or None.",
                          "use Lax (recommended).")
    if s.cookie_host_prefix and not s.cookie_secure:
        raise ConfigError("session.cookieHostPrefix", "needs cookieSecure true (browsers drop __Host- cookies otherwise).",
                          "set cookieSecure true or cookieHostPrefix false.")
    if s.cookie_samesite == "None" and not s.cookie_secure:
        raise ConfigError("session.cookieSameSite", "None needs cookieSecure true.", "use Lax.")
    if not re.match(r"^[A-Za-z0-9_\-]+$", s.cookie_name):
        raise ConfigError("session.cookieName", f"{s.cookie_name!r} is not a valid cookie name.",
                          "use letters, digits, '-' and '_'.")
    _check_session_keys(s, "session")
    return s


def _check_session_keys(s: SessionSettings, path: str) -> None:
    """``tokenEncryptionKey`` and its fallbacks: long enough, never echoed."""
    if s.token_encryption_key_fallbacks and s.token_encryption_key is None:
        raise ConfigError(join(path, "tokenEncryptionKeyFallbacks"), "is set without tokenEncryptionKey.",
                          "set tokenEncryptionKey too (without it, SECRET_KEY and SECRET_KEY_FALLBACKS are used).")
    keys = [("tokenEncryptionKey", s.token_encryption_key),
            *(("tokenEncryptionKeyFallbacks", k) for k in s.token_encryption_key_fallbacks)]
    for name, value in keys:
        if value is not None and len(value) < MIN_SESSION_KEY:
            raise ConfigError(join(path, name), f"is shorter than {MIN_SESSION_KEY} characters.",
                              "use a long random value, e.g. python -c 'import secrets; print(secrets.token_hex(32))'.")


_TOP_KEYS = ("auth", "skills", "logging", "session", "scim", "console")


def parse_config(raw: Mapping[str, Any], *, environ: Mapping[str, str] | None = None) -> CCSSOConfig:
    """Validate a whole config (``auth``, ``skills``, ``logging``, ``session``) into a :class:`CCSSOConfig`."""
    if not isinstance(raw, Mapping):
        raise ConfigError("CCSSO", "must be a dict with the blocks auth, skills, logging, session.", "see docs/configuration.md.")
    check_keys(raw, _TOP_KEYS, "")
    data = interpolate(dict(raw), "", environ)
    providers, default = _parse_auth(data.get("auth"))
    skills = _parse_skills(data.get("skills"), providers)
    session = _parse_session(data.get("session"))
    scim = _parse_scim(data.get("scim"), providers)
    console = _parse_console(data.get("console"), skills)
    logging_block = data.get("logging")
    if logging_block is not None and not isinstance(logging_block, dict):
        raise ConfigError("logging", "must be an object.", "see docs/audit.md.")
    return CCSSOConfig(providers=providers, skills=skills, session=session, logging=dict(logging_block or {}),
                       default_provider=default, scim=scim, console=console)
