"""Azure AD (Microsoft Entra ID), v2.0 endpoints.

* The issuer comes from ``tenantId`` (``https://login.microsoftonline.com/<tenant>/v2.0``)
  and the token's ``tid`` must be that tenant: a token from any other
  Microsoft tenant is refused even if its signature is good (all tenants
  share one set of signing keys).
* ``groups`` (object ids, or names when the app is set to emit them) and app
  ``roles`` are read from the token.
* Group overage: past 200 groups (6 in the implicit flow) Entra leaves
  ``groups`` out and sets ``_claim_names.groups`` / ``hasgroups``. The list is
  then fetched from Microsoft Graph ``/me/transitiveMemberOf`` with the
  person's access token, following ``@odata.nextLink`` pages. If that fails
  the identity is marked ``groups_complete=False`` -- never "no groups" --
  and group-based skills are refused with ``groups_incomplete``.
* Certificate credentials (``tokenEndpointAuthMethod: private_key_jwt``):
  the assertion names the certificate by thumbprint and is signed PS256
  unless ``clientAssertionAlgorithm`` says otherwise (see docs/azure-ad.md).
* From Graph only the groups' **object ids** are kept. A display name is
  chosen by whoever creates the group (by default any member of the tenant
  can create one), so a group named ``database-admins`` -- or named after
  the admins group's object id -- would otherwise grant that skill. Names are
  not even requested (``$select=id``), so no later change can match them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests

from .. import reasons
from ..config import AzureADSettings
from ..exceptions import AuthenticationFailed, IdPUnavailable
from .keys import MAX_IDP_RESPONSE_BYTES, loads_strict, read_capped
from .oidc import OIDCProvider

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_MAX_GRAPH_PAGES = 50


class AzureADProvider(OIDCProvider):
    type: ClassVar[str] = "azure-ad"
    settings_class = AzureADSettings
    # certificate credentials: Entra ID finds the key by the certificate's thumbprint
    # (x5t / x5t#S256) and its current documentation asks for PS256
    default_assertion_rsa_algorithm: ClassVar[str] = "PS256"
    assertion_needs_certificate: ClassVar[bool] = True

    def expected_issuer(self) -> str:
        # with a domain as tenantId, Entra's issuer carries the tenant GUID;
        # the configured issuer (from the domain) is only used for discovery
        return self._issuer_override or self.settings.issuer

    _issuer_override: str | None = None

    def _load_discovery(self) -> dict[str, Any]:
        tenant = self.settings.tenant_id or ""
        if tenant and not _GUID.match(tenant) and self._issuer_override is None:
            from .keys import fetch_json

            doc = fetch_json(self.http, self.settings.discovery_url, self.settings.timeout, "discovery document")
            iss = doc.get("issuer")
            m = re.match(r"^https://[^/]+/([0-9a-fA-F-]{36})/v2\.0$", iss or "")
            if not m:
                from ..exceptions import IdPUnavailable

                raise IdPUnavailable("Entra ID's discovery document has an unexpected issuer.",
                                     reason=reasons.ISSUER_MISMATCH)
            self._issuer_override = iss
            self._tenant_guid = m.group(1)
        return super()._load_discovery()

    _tenant_guid: str | None = None

    def tenant_guid(self) -> str | None:
        tenant = self.settings.tenant_id
        if tenant and _GUID.match(tenant):
            return tenant.lower()
        if self._tenant_guid is None:
            self.metadata()
        return self._tenant_guid.lower() if self._tenant_guid else None

    def check_claims(self, claims: Mapping[str, Any]) -> None:
        expected = self.tenant_guid()
        tid = claims.get("tid")
        if expected and (not isinstance(tid, str) or tid.lower() != expected):
            raise AuthenticationFailed("This account belongs to another Microsoft tenant.",
                                       reason=reasons.TENANT_MISMATCH)

    def accepted_access_token_issuers(self) -> tuple[str, ...]:
        """v2 and v1 access-token issuers of this tenant (APIs may get either)."""
        guid = self.tenant_guid()
        out = [self.expected_issuer()]
        if guid:
            out.append(f"https://sts.windows.net/{guid}/")
        return tuple(out)

    def resolve_groups(self, claims: Mapping[str, Any], tokens: Mapping[str, Any]) -> tuple[frozenset[str], bool]:
        names = claims.get("_claim_names")
        overage = (isinstance(names, dict) and "groups" in names) or claims.get("hasgroups") in (True, "true")
        if not overage:
            return super().resolve_groups(claims, tokens)
        access_token = tokens.get("access_token")
        if not isinstance(access_token, str):
            return frozenset(), False
        try:
            return frozenset(self._graph_groups(access_token)), True
        except (requests.RequestException, ValueError, KeyError, TypeError, AttributeError, IdPUnavailable):
            return frozenset(), False

    def _graph_groups(self, access_token: str) -> set[str]:
        """Object ids of the person's groups (transitively), never their names."""
        base = self.settings.graph_url or "https://graph.microsoft.com/v1.0"
        host = urlsplit(base).netloc
        # ids only: see the module docstring (display names are chosen by group creators)
        url: str | None = f"{base}/me/transitiveMemberOf/microsoft.graph.group?$select=id&$top=999"
        out: set[str] = set()
        pages = 0
        while url:
            # never send the person's token to a host other than Graph's
            if urlsplit(url).netloc != host:
                raise ValueError("nextLink points to another host")
            pages += 1
            if pages > _MAX_GRAPH_PAGES:
                raise ValueError("too many pages")
            resp = self.http.get(url, headers={"Authorization": f"Bearer {access_token}",
                                               "ConsistencyLevel": "eventual"}, timeout=self.settings.timeout,
                                 stream=True)
            if resp.status_code != 200:
                resp.close()
                resp.raise_for_status()
                raise ValueError(f"Graph answered {resp.status_code}")
            data = loads_strict(read_capped(resp, self.settings.timeout, 4 * MAX_IDP_RESPONSE_BYTES))
            if not isinstance(data, dict) or not isinstance(data.get("value", []), list):
                raise ValueError("Graph answered something other than a page of groups")  # noqa: TRY004
            out.update(_group_ids(data.get("value", [])))
            url = data.get("@odata.nextLink")
            if url is not None and not isinstance(url, str):
                raise ValueError("nextLink is not a URL")
        return out


def _group_ids(items: list[Any]) -> set[str]:
    """The ``id`` of each group on a Graph page -- and nothing else.

    ``displayName`` (and any other field) is ignored even when Graph sends
    it: the set returned is matched against ``allowedGroups`` and app-role
    names, and a name is whatever the group's creator typed. Graph's object
    ids are GUIDs; an entry without one means the answer is not what we asked
    for, so the whole list is refused (``groups_complete=False``) rather than
    partly read.
    """
    out: set[str] = set()
    for item in items:
        gid = item.get("id") if isinstance(item, dict) else None
        if not isinstance(gid, str) or not _GUID.match(gid):
            raise ValueError("Graph listed a group without an object id")
        out.add(gid)
    return out
