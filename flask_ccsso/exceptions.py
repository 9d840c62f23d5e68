"""One error tree for flask-ccsso.

:class:`CCSSOError` is the root. Errors that become HTTP responses also
subclass the matching werkzeug exception (as Flask-WTF's ``CSRFError`` does),
so applications can register ``@app.errorhandler(SkillRequired)`` or handle
the werkzeug class they already know. Every leaf carries a machine-readable
``reason`` (see :mod:`flask_ccsso.reasons`) and a short, secret-free
``description`` that is safe to show.

Third-party errors (Authlib/joserfc, pysaml2, requests, redis, SQLAlchemy) are
mapped onto this tree at one boundary per integration, never caught piecemeal.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from werkzeug.exceptions import (
    BadRequest,
    Forbidden,
    HTTPException,
    RequestEntityTooLarge,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
)


class CCSSOError(Exception):
    """Base of every error raised by flask-ccsso."""

    #: machine-readable reason code
    reason: str = "error"
    #: human-readable, secret-free text
    description: str | None = "Single sign-on error."

    def __init__(self, description: str | None = None, *, reason: str | None = None, **extra: Any) -> None:
        if reason is not None:
            self.reason = reason
        if description is not None:
            self.description = description
        self.extra = extra
        # werkzeug's HTTPException.__init__ accepts (description, response)
        if isinstance(self, HTTPException):
            HTTPException.__init__(self, self.description)
        else:
            Exception.__init__(self, self.description)

    def __str__(self) -> str:  # pragma: no cover - trivial
        return f"{self.reason}: {self.description}"

    def body_extra(self) -> dict[str, Any]:
        """Members the JSON error body carries beside ``error`` and
        ``error_description`` (never secrets; subclasses add theirs)."""
        return {}

    def response_headers(self) -> dict[str, str]:
        """Headers the error's response carries (``Retry-After`` when the
        error was raised with ``retry_after=seconds``)."""
        retry = self.extra.get("retry_after")
        return {"Retry-After": str(int(retry))} if isinstance(retry, (int, float)) else {}


class ConfigError(CCSSOError, ValueError):
    """The configuration is invalid. Raised at start-up, never at request time.

    ``path`` is the dotted key path (``auth.providers.okta.clientSecret``) and
    ``fix`` says what to do about it.
    """

    reason = "config_error"

    def __init__(self, path: str, problem: str, fix: str | None = None) -> None:
        self.path = path
        self.problem = problem
        self.fix = fix
        text = f"{path}: {problem}"
        if fix:
            text += f" Fix: {fix}"
        super().__init__(text)


class AuthenticationFailed(CCSSOError, BadRequest):
    """A sign-in attempt (callback / ACS) was refused. HTTP 400."""

    reason = "authentication_failed"
    description = "Sign-in failed."


class IdPUnavailable(CCSSOError, ServiceUnavailable):
    """The identity provider could not be reached or answered garbage. HTTP 503."""

    reason = "idp_unavailable"
    description = "The identity provider is not reachable right now. Try again in a moment."

    def body_extra(self) -> dict[str, Any]:
        """``failure``: what went wrong reaching the IdP, when it is known
        (``dns``, ``refused``, ``tls``, ``tls_untrusted``, ``timeout``,
        ``connect_timeout``, ``proxy``, ``connection``, ``too_large``,
        ``bad_answer``); the description says it in words, with the URL."""
        failure = self.extra.get("failure")
        return {"failure": failure} if isinstance(failure, str) else {}


class StoreUnavailable(CCSSOError, ServiceUnavailable):
    """The session or shared-state store is unreachable. HTTP 503, fail closed."""

    reason = "store_unavailable"
    description = "The session store is not reachable right now. Try again in a moment."


class LoginRequired(CCSSOError, Unauthorized):
    """Nobody is signed in (or the session ended). Browsers are redirected to
    sign in; API clients get 401 JSON."""

    reason = "not_authenticated"
    description = "Sign-in required."


class SessionExpired(LoginRequired):
    """The session passed a deadline or was revoked. HTTP 401, as
    :class:`LoginRequired` (browsers are sent to sign in again)."""

    reason = "session_expired"
    description = "Your session has ended. Please sign in again."


class StepUpRequired(CCSSOError, Unauthorized):
    """Signed in, but not recently (or strongly) enough for this skill.

    Browsers are sent back to their IdP; API clients get an RFC 9470
    ``insufficient_user_authentication`` challenge.
    """

    reason = "stale_authentication"
    description = "This action needs a fresh sign-in."

    def __init__(
        self,
        description: str | None = None,
        *,
        skill: str | None = None,
        max_age: int | None = None,
        acr_values: tuple[str, ...] = (),
        reason: str | None = None,
    ) -> None:
        self.skill = skill
        self.max_age = max_age
        self.acr_values = tuple(acr_values)
        super().__init__(description, reason=reason)

    def body_extra(self) -> dict[str, Any]:
        return {"skill": self.skill, "max_age": self.max_age, "acr_values": list(self.acr_values) or None}


class SkillRequired(CCSSOError, Forbidden):
    """Signed in, but lacking the skill. HTTP 403 naming the skill and the
    failed condition, never the person's groups."""

    reason = "permission_denied"
    description = "You do not have access to this."

    def __init__(
        self,
        description: str | None = None,
        *,
        skill: str | None = None,
        condition: str | None = None,
        reason: str | None = None,
        missing_scopes: tuple[str, ...] = (),
    ) -> None:
        self.skill = skill
        self.condition = condition
        #: the skill's ``requiredScopes`` the caller lacks (configuration, not the person's data)
        self.missing_scopes = tuple(missing_scopes)
        super().__init__(description, reason=reason)

    def body_extra(self) -> dict[str, Any]:
        # the skill, the failed condition, the missing required scopes; never the person's groups
        extra: dict[str, Any] = {"skill": self.skill, "condition": self.condition}
        if self.missing_scopes:
            extra["missing_scopes"] = list(self.missing_scopes)
        return extra


class UnknownProvider(CCSSOError, BadRequest):
    """A route named a provider that is not configured. HTTP 400."""

    reason = "unknown_provider"
    description = "Unknown sign-in provider."


class RequestTooLarge(CCSSOError, RequestEntityTooLarge):
    """A body larger than the route accepts (the SAML ACS and SLO), refused
    before it is read or parsed. HTTP 413."""

    reason = "request_too_large"
    description = "The request is too large."


class LoginRateLimited(CCSSOError, TooManyRequests):
    """Too many sign-ins were started from one client address. HTTP 429.

    Starting a sign-in costs the shared store an entry before anyone has
    authenticated, so the number one address may start per window is capped.
    """

    reason = "rate_limited"
    description = "Too many sign-ins were started from your address. Wait a few minutes, then try again."


class CSRFError(CCSSOError, BadRequest):
    """A state-changing request carried no valid CSRF token, or came from
    another site. HTTP 400 (the name and base match Flask-WTF's)."""

    reason = "csrf_failed"
    description = "The form was out of date or came from another site. Reload the page and try again."
    #: the heading of the HTML error page (the 400 default speaks of sign-in)
    title = "Request refused"


__all__ = [
    "AuthenticationFailed",
    "CCSSOError",
    "CSRFError",
    "ConfigError",
    "IdPUnavailable",
    "LoginRateLimited",
    "LoginRequired",
    "RequestTooLarge",
    "SessionExpired",
    "SkillRequired",
    "StepUpRequired",
    "StoreUnavailable",
    "UnknownProvider",
]


def exception_chain(exc: BaseException, *, links: tuple[str, ...] = (), args: bool = False,
                    limit: int = 32) -> Iterator[BaseException]:
    """``exc`` and everything it wraps, breadth first, each once: the named
    attributes (``links``, e.g. urllib3's ``reason`` or SQLAlchemy's ``orig``),
    ``__cause__``, ``__context__`` and, with ``args``, exceptions kept in
    ``args`` (requests' ``ConnectionError(MaxRetryError(...))``). At most
    ``limit`` exceptions: a chain is diagnosis, never a loop to follow for ever."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(seen) < limit:
        e = todo.pop(0)
        if any(e is s for s in seen):
            continue
        seen.append(e)
        yield e
        linked = [*(getattr(e, name, None) for name in links), e.__cause__, e.__context__, *(e.args if args else ())]
        todo.extend(x for x in linked if isinstance(x, BaseException))
