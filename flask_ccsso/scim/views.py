"""The SCIM 2.0 endpoint: ``/Users``, ``/Groups`` and the discovery resources.

An API for the IdP's provisioning client, not for browsers: every request
carries the ``scim.token`` bearer secret or an OAuth access token from
``scim.tokenProvider`` (:mod:`.auth`; never logged), no session cookie is
read or set, and there is no CSRF check (a browser never adds that header by
itself). Every answer is ``application/scim+json``; every refusal a SCIM
``Error`` (RFC 7644 3.12) with its status -- 400 ``invalidSyntax`` /
``invalidFilter`` / ``invalidValue``, 401, 403 (an OAuth client or scope
that may not provision), 404, 409 ``uniqueness``, 413 -- and a store or
token-provider outage a 503, so an IdP retries rather than records a failure.

The schema work -- parsing, validation, PATCH operations, filters,
``attributes`` / ``excludedAttributes`` -- is ``scim2-models``'; the
directory and deprovisioning are :mod:`.directory`'s.
"""

from __future__ import annotations

import json
import logging
from typing import Any, TypeVar

from flask import Blueprint, Response, current_app, g, request, url_for
from pydantic import ValidationError
from scim2_models import (
    Bulk,
    ChangePassword,
    Context,
    EnterpriseUser,
    ETag,
    Filter,
    Group,
    InvalidFilterException,
    InvalidSyntaxException,
    InvalidValueException,
    ListResponse,
    NotFoundException,
    NotImplementedException,
    Patch,
    PatchOp,
    PayloadTooLargeException,
    Resource,
    ResourceType,
    ResponseParameters,
    Schema,
    SCIMException,
    ScimFilter,
    ScimPolicy,
    ScimProvider,
    SearchRequest,
    ServiceProviderConfig,
    Sort,
    User,
)
from scim2_models.path.expressions import Comparison
from werkzeug.exceptions import HTTPException

from ..config import ScimSettings
from ..exceptions import StoreUnavailable
from ..state import get_state
from .auth import IdPUnreachable, ScimAuthenticator, authentication_schemes
from .directory import Directory, UserModel

log = logging.getLogger("flask_ccsso")

SCIM_JSON = "application/scim+json"
#: the largest request body accepted (bytes): a user or a membership change is a few KiB
MAX_BODY = 256 * 1024
#: the most resources one list answer holds
MAX_RESULTS = 200

R = TypeVar("R", bound=Resource[Any])

_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]

_CONFIG = ServiceProviderConfig(
    patch=Patch(supported=True),
    bulk=Bulk(supported=False, max_operations=0, max_payload_size=0),
    filter=Filter(supported=True, max_results=MAX_RESULTS),
    change_password=ChangePassword(supported=False),
    sort=Sort(supported=False),
    etag=ETag(supported=False),
)
PROVIDER = ScimProvider(models=[User, EnterpriseUser, Group], config=_CONFIG, resource_types=[
    ResourceType.from_resource(UserModel), ResourceType.from_resource(Group)])
#: what the endpoint tolerates beyond the strict RFC reading, because the IdPs send it:
#: unknown attributes and schema URNs are dropped (Entra's ``name`` on a PATCH operation,
#: its own group schema), and a ``remove`` carrying a ``value`` removes that value
#: (Entra's member removal)
POLICY = ScimPolicy(unknown=ScimPolicy.Unknown.ignore, remove_value_as_filter=ScimPolicy.RemoveValue.apply)


def _answer(data: dict[str, Any], status: int = 200, **headers: str) -> Response:
    return Response(json.dumps(data), status=status, mimetype=SCIM_JSON, headers=headers)


def _error(exc: SCIMException) -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="scim"'} if int(exc.status) == 401 else {}
    return _answer(exc.to_error().model_dump(), int(exc.status), **headers)


def _plain_error(status: int, detail: str) -> Response:
    return _answer({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": str(status),
                    "detail": detail}, status)


def _body() -> dict[str, Any]:
    """The request's JSON object (any content type: IdPs send ``application/json`` too)."""
    if (request.content_length or 0) > MAX_BODY:
        raise PayloadTooLargeException(detail=f"the body is larger than {MAX_BODY} bytes")
    raw = request.stream.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise PayloadTooLargeException(detail=f"the body is larger than {MAX_BODY} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidSyntaxException(detail="the body is not JSON") from None
    if not isinstance(data, dict):
        raise InvalidSyntaxException(detail="the body is not a JSON object")
    try:  # a lone surrogate (``"\\ud800"``) is valid JSON but no text a store can keep
        json.dumps(data, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise InvalidSyntaxException(detail="the body holds a string that is not valid Unicode") from None
    return data


def _validated(model: Any, data: dict[str, Any], ctx: Context) -> Any:
    try:
        return model.model_validate(data, scim_ctx=ctx)
    except ValidationError as exc:
        raise _invalid(exc) from None


def _invalid(exc: ValidationError) -> SCIMException:
    errors = exc.errors()
    detail = "; ".join(str(e.get("msg")) for e in errors[:3]) or "invalid value"
    return InvalidValueException(detail=detail[:500])


def _parameters(model: type[R]) -> ResponseParameters[R]:
    raw = {k: request.args[k] for k in ("attributes", "excludedAttributes") if k in request.args}
    try:
        return ResponseParameters[model].model_validate(raw)  # type: ignore[valid-type]
    except ValidationError as exc:
        raise _invalid(exc) from None


def _one(resource: Resource[Any], status: int = 200) -> Response:
    params = _parameters(type(resource))
    ctx = Context.RESOURCE_CREATION_RESPONSE if status == 201 else Context.RESOURCE_QUERY_RESPONSE
    data = resource.model_dump(scim_ctx=ctx, response_parameters=params)
    headers = {"Location": str(resource.meta.location)} if status == 201 and resource.meta else {}
    return _answer(data, status, **headers)


def _listing(model: type[R], found: list[R]) -> Response:
    try:
        search: SearchRequest[Any] = SearchRequest.model_validate(
            {k: request.args[k] for k in ("startIndex", "count") if k in request.args})
    except ValidationError as exc:
        raise _invalid(exc) from None
    start = max(1, search.start_index or 1)
    count = MAX_RESULTS if search.count is None else max(0, min(search.count, MAX_RESULTS))
    page = found[start - 1:start - 1 + count]
    params = _parameters(model)
    answer = ListResponse[model](total_results=len(found), start_index=start,  # type: ignore[valid-type]
                                 items_per_page=len(page), resources=page or None)
    return _answer(answer.model_dump(scim_ctx=Context.SEARCH_RESPONSE, response_parameters=params))


def _filter(model: type[R]) -> ScimFilter[R] | None:
    text = request.args.get("filter")
    if not text:
        return None
    if len(text) > 1024:
        raise InvalidFilterException(detail="the filter is too long")
    try:
        return ScimFilter[model](text)  # type: ignore[valid-type]
    except SCIMException:
        raise
    except (ValueError, ValidationError) as exc:
        raise InvalidFilterException(detail=f"invalid filter: {exc}"[:500]) from None


def _equality(flt: ScimFilter[Any] | None, attribute: str) -> str | None:
    """The value of a plain ``<attribute> eq "value"`` filter (answered from the index), else ``None``."""
    node = flt.ast if flt is not None else None
    if (isinstance(node, Comparison) and node.op.value == "eq" and isinstance(node.value, str)
            and str(node.attr_path).lower() == attribute.lower()):
        return node.value
    return None


def make_blueprint(settings: ScimSettings) -> Blueprint:
    """The SCIM endpoint, authenticated by ``settings.token`` and / or ``settings.token_provider``'s tokens."""
    bp = Blueprint("ccsso_scim", __name__)
    check = ScimAuthenticator(settings)
    config = _CONFIG.model_copy(update={"authentication_schemes": authentication_schemes(settings)})

    def directory() -> Directory:
        return Directory(get_state())

    def location(kind: str) -> Any:
        return lambda rid: url_for(f"ccsso_scim.{kind}", rid=rid, _external=True)

    @bp.before_request
    def tolerate() -> None:
        POLICY.__enter__()  # every read and dump of this request, left in teardown_request
        g._ccsso_scim_policy = True

    @bp.teardown_request
    def untolerate(exc: BaseException | None) -> None:
        if g.pop("_ccsso_scim_policy", False):
            POLICY.__exit__(None, None, None)

    @bp.before_request
    def authenticate() -> Response | None:
        try:
            check(request.headers.get("Authorization", ""))
        except SCIMException as exc:
            return _error(exc)
        except IdPUnreachable:
            return _plain_error(503, "the identity provider could not be reached to verify the token; retry later")
        return None

    @bp.errorhandler(SCIMException)
    def scim_error(exc: SCIMException) -> Response:
        return _error(exc)

    @bp.errorhandler(StoreUnavailable)
    def store_error(exc: StoreUnavailable) -> Response:
        log.warning("flask-ccsso: SCIM request failed: the session store is unavailable")
        return _plain_error(503, "the directory store is unavailable; retry later")

    @bp.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return _plain_error(exc.code or 500, exc.description or exc.name)

    @bp.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        # a bug, not an input: the traceback to the operator's log, a SCIM Error to the IdP
        log.exception("flask-ccsso: unexpected error in the SCIM endpoint")
        return _plain_error(500, "internal error")

    # -- discovery ------------------------------------------------------------------------
    @bp.get("/ServiceProviderConfig")
    def service_provider_config() -> Response:
        return _answer(config.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE))

    @bp.get("/ResourceTypes")
    def resource_types() -> Response:
        types = list(PROVIDER.resource_types)
        answer = ListResponse[ResourceType](total_results=len(types), start_index=1, items_per_page=len(types),
                                   resources=types)
        return _answer(answer.model_dump(scim_ctx=Context.SEARCH_RESPONSE))

    @bp.get("/ResourceTypes/<rid>")
    def resource_type(rid: str) -> Response:
        for found in PROVIDER.resource_types:
            if found.id == rid or found.name == rid:
                return _answer(found.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE))
        raise NotFoundException(detail=f"no resource type {rid!r}")

    @bp.get("/Schemas")
    def schemas() -> Response:
        found = list(PROVIDER.schemas)
        answer = ListResponse[Schema](total_results=len(found), start_index=1, items_per_page=len(found),
                                   resources=found)
        return _answer(answer.model_dump(scim_ctx=Context.SEARCH_RESPONSE))

    @bp.get("/Schemas/<rid>")
    def schema(rid: str) -> Response:
        for found in PROVIDER.schemas:
            if found.id == rid:
                return _answer(found.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE))
        raise NotFoundException(detail=f"no schema {rid!r}")

    # -- users ---------------------------------------------------------------------------
    @bp.get("/Users")
    def users() -> Response:
        flt = _filter(UserModel)
        d = directory()
        name = _equality(flt, "userName")
        if name is not None:  # what Okta and Entra ask before each create: one index read
            user_id = d.user_id_by_name(name)
            found = [d.user(user_id)] if user_id is not None else []
        else:
            found = [u for u in d.users() if flt is None or flt.match(u)]
        return _listing(UserModel, found)

    @bp.post("/Users")
    def create_user() -> Response:
        user = _validated(UserModel, _body(), Context.RESOURCE_CREATION_REQUEST)
        return _one(directory().create_user(user, location("user")), 201)

    @bp.get("/Users/<rid>")
    def user(rid: str) -> Response:
        return _one(directory().user(rid))

    @bp.put("/Users/<rid>")
    def replace_user(rid: str) -> Response:
        new = _validated(UserModel, _body(), Context.RESOURCE_REPLACEMENT_REQUEST)
        return _one(directory().replace_user(rid, new))

    @bp.patch("/Users/<rid>")
    def patch_user(rid: str) -> Response:
        patch = _validated(PatchOp[UserModel], _body(), Context.RESOURCE_PATCH_REQUEST)
        try:
            return _one(directory().patch_user(rid, patch))
        except ValidationError as exc:
            raise _invalid(exc) from None

    @bp.delete("/Users/<rid>")
    def delete_user(rid: str) -> Response:
        directory().delete_user(rid)
        return Response(status=204)

    # -- groups --------------------------------------------------------------------------
    @bp.get("/Groups")
    def groups() -> Response:
        flt = _filter(Group)
        d = directory()
        name = _equality(flt, "displayName")
        if name is not None:
            group_id = d.group_id_by_name(name)
            found = [d.group(group_id)] if group_id is not None else []
        else:
            found = [g for g in d.groups() if flt is None or flt.match(g)]
        return _listing(Group, found)

    @bp.post("/Groups")
    def create_group() -> Response:
        group = _validated(Group, _body(), Context.RESOURCE_CREATION_REQUEST)
        return _one(directory().create_group(group, location("group")), 201)

    @bp.get("/Groups/<rid>")
    def group(rid: str) -> Response:
        return _one(directory().group(rid))

    @bp.put("/Groups/<rid>")
    def replace_group(rid: str) -> Response:
        new = _validated(Group, _body(), Context.RESOURCE_REPLACEMENT_REQUEST)
        return _one(directory().replace_group(rid, new))

    @bp.patch("/Groups/<rid>")
    def patch_group(rid: str) -> Response:
        patch = _validated(PatchOp[Group], _body(), Context.RESOURCE_PATCH_REQUEST)
        try:
            return _one(directory().patch_group(rid, patch))
        except ValidationError as exc:
            raise _invalid(exc) from None

    @bp.delete("/Groups/<rid>")
    def delete_group(rid: str) -> Response:
        directory().delete_group(rid)
        return Response(status=204)

    @bp.post("/.search")
    def search_everything() -> Response:
        # RFC 7644 3.4.3: optional; an IdP's provisioning never asks for it
        raise NotImplementedException(detail="searching several resource types at once is not supported")

    @bp.route("/<path:rest>", methods=_METHODS)
    def unknown(rest: str) -> Response:
        """A SCIM Error for what no route serves: 405 when another method would be, else 404."""
        adapter = current_app.url_map.bind_to_environ(request.environ)
        for method in _METHODS:
            try:
                endpoint, _ = adapter.match(method=method)
            except HTTPException:
                continue
            if endpoint != "ccsso_scim.unknown":
                return _plain_error(405, f"{request.method} is not supported here")
        raise NotFoundException(detail="no such SCIM endpoint")

    return bp


__all__ = ["PROVIDER", "SCIM_JSON", "make_blueprint"]
