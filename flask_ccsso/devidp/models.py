"""The people and applications the development identity provider knows.

Both are plain dataclasses so tests can build their own. :class:`DevUser` is
deliberately *mutable*: the provider reads ``groups`` and ``allowed_scopes``
each time it issues a token, so a test can move a user out of a group and see
the next refresh reflect it.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

#: acr value for a plain password sign-in.
ACR_LOA1 = "urn:ccsso:loa1"
#: acr value for a sign-in with the "Use MFA" box ticked.
ACR_MFA = "urn:ccsso:mfa"
ACR_VALUES_SUPPORTED = (ACR_LOA1, ACR_MFA)

#: Scopes every client may ask for; they are never dropped.
STANDARD_SCOPES = ("openid", "profile", "email", "groups", "offline_access")

DEFAULT_AUDIENCE = "api://ccsso-dev"

#: where flask-ccsso sends people after sign-out (``<CCSSO_URL_PREFIX>/logged-out``, default prefix)
EXTENSION_LOGGED_OUT_PATH = "/sso/logged-out"
#: a redirect URI of the extension's own shape: ``<prefix>/<provider>/callback``
_EXTENSION_CALLBACK = re.compile(r"(?P<prefix>(?:/[^/]+)*)/[^/]+/callback")


@dataclass
class DevUser:
    """A person who can sign in at the development IdP.

    ``allowed_scopes`` lists the *custom* scopes (anything outside
    :data:`STANDARD_SCOPES`) this user may be granted; a custom scope a client
    asks for but the user lacks is silently dropped from the grant, as Okta
    does with scope policies.
    """

    username: str
    sub: str
    email: str
    name: str
    groups: list[str] = field(default_factory=list)
    allowed_scopes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DevClient:
    """A relying party registered at the development IdP.

    A client with ``client_secret=None`` is *public*: it authenticates with
    ``client_id`` alone and therefore must use PKCE (which the IdP requires of
    every client anyway). Confidential clients may use ``client_secret_basic``
    or ``client_secret_post``.
    """

    client_id: str
    client_secret: str | None
    redirect_uris: Sequence[str]
    post_logout_redirect_uris: Sequence[str] = ()
    audience: str = DEFAULT_AUDIENCE
    backchannel_logout_uri: str | None = None

    @property
    def is_public(self) -> bool:
        return not self.client_secret

    def accepted_post_logout_redirect_uris(self) -> tuple[str, ...]:
        """The ``post_logout_redirect_uris`` plus flask-ccsso's own sign-out
        page on the origin of every redirect URI, so sign-out works without
        registering it (the extension sends ``<prefix>/logged-out``).

        That page is ``<origin>/sso/logged-out`` (the default prefix) and,
        for a redirect URI shaped ``<prefix>/<provider>/callback``,
        ``<origin><prefix>/logged-out``. Every origin here already receives
        authorization codes, so a sign-out redirect to it trusts nothing new;
        the match stays exact (no prefixes, no wildcards).
        """
        accepted = list(self.post_logout_redirect_uris)
        for uri in self.redirect_uris:
            parts = urlsplit(uri)
            if not parts.scheme or not parts.netloc:
                continue
            origin = f"{parts.scheme}://{parts.netloc}"
            accepted.append(origin + EXTENSION_LOGGED_OUT_PATH)
            shaped = _EXTENSION_CALLBACK.fullmatch(parts.path)
            if shaped:
                accepted.append(f"{origin}{shaped['prefix']}/logged-out")
        return tuple(dict.fromkeys(accepted))


class _AuthlibClient:
    """Adapter giving a :class:`DevClient` Authlib's ``ClientMixin`` methods.

    Kept apart from the public dataclass so Authlib's vocabulary does not leak
    into the API users see.
    """

    GRANT_TYPES = ("authorization_code", "refresh_token")

    def __init__(self, client: DevClient, scopes_supported: Sequence[str]) -> None:
        self.dev = client
        self.client_id = client.client_id
        self._scopes_supported = tuple(scopes_supported)

    # -- ClientMixin ---------------------------------------------------------
    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        # RFC 6749 §3.1.2.3: with several registered URIs the request must name one.
        uris = list(self.dev.redirect_uris)
        return uris[0] if len(uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str:
        if not scope:
            return ""
        wanted = scope.split()
        return " ".join(s for s in dict.fromkeys(wanted) if s in self._scopes_supported)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        # Exact string comparison, as OIDC Core §3.1.2.1 requires.
        return redirect_uri in self.dev.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        if not self.dev.client_secret:
            return False
        return hmac.compare_digest(self.dev.client_secret.encode(), client_secret.encode())

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.dev.is_public:
            return method == "none"
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.GRANT_TYPES

    # -- used by Authlib's RP-initiated logout endpoint ----------------------
    @property
    def client_metadata(self) -> dict[str, Any]:
        return {"post_logout_redirect_uris": list(self.dev.accepted_post_logout_redirect_uris())}

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"<DevClient {self.client_id!r}>"


DEFAULT_USERS: tuple[DevUser, ...] = (
    DevUser(
        "alice",
        "00u-dev-alice",
        "alice@example.com",
        "Alice Admin",
        ["database-admins", "senior-developers"],
        ["migration:write"],
    ),
    DevUser("bob", "00u-dev-bob", "bob@example.com", "Bob Security", ["security-team"], ["security:read"]),
    DevUser("carol", "00u-dev-carol", "carol@example.com", "Carol Devops", ["devops-engineers"], ["infra:deploy"]),
    DevUser("dave", "00u-dev-dave", "dave@example.com", "Dave Contractor", ["contractors"], []),
    DevUser("erin", "00u-dev-erin", "erin@example.com", "Erin Engineer", ["senior-developers"], []),
)


def default_users() -> list[DevUser]:
    """Fresh copies of the default users (safe to mutate in a test)."""
    return [DevUser(u.username, u.sub, u.email, u.name, list(u.groups), list(u.allowed_scopes)) for u in DEFAULT_USERS]
