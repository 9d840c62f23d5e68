"""Turning flask-ccsso errors into responses: HTML for browsers, JSON for APIs.

Never a traceback, never a secret: only the error's ``description`` (written
to be safe to show) and its ``reason`` code.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from flask import Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from .exceptions import CCSSOError, StepUpRequired

_TITLES = {400: "Sign-in failed", 401: "Sign-in required", 403: "Access denied", 404: "Not found",
           503: "Temporarily unavailable"}


def wants_json() -> bool:
    """API clients: a bearer token, or an Accept header preferring JSON over HTML."""
    if request.headers.get("Authorization", "").lower().startswith("bearer "):
        return True
    if request.is_json and request.method != "GET":
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    if best == "application/json":
        return request.accept_mimetypes["application/json"] > request.accept_mimetypes["text/html"]
    return False


def error_response(exc: HTTPException, *, extra: dict[str, Any] | None = None,
                   action_url: str | None = None, action_label: str | None = None) -> Response:
    code = exc.code or 500
    reason = getattr(exc, "reason", None) or "error"
    description = exc.description or _TITLES.get(code, "Error")
    if wants_json():
        body: dict[str, Any] = {"error": reason, "error_description": description}
        body.update(extra or {})
        resp = jsonify(body)
    else:
        html = render_template("ccsso/message.html", title=_TITLES.get(code, "Error"), message=description,
                               reason=reason, request_id=None, action_url=action_url, action_label=action_label)
        resp = Response(html, mimetype="text/html")
    resp.status_code = code
    resp.headers["Cache-Control"] = "no-store"
    if code == 503:
        resp.headers["Retry-After"] = "5"
    return resp


def bearer_challenge(exc: CCSSOError) -> str:
    """``WWW-Authenticate`` for API clients (RFC 6750, RFC 9470 for step-up)."""
    if isinstance(exc, StepUpRequired):
        parts = ['Bearer error="insufficient_user_authentication"',
                 f'error_description="{_q(exc.description or "")}"']
        if exc.max_age is not None:
            parts.append(f'max_age="{int(exc.max_age)}"')
        if exc.acr_values:
            parts.append(f'acr_values="{_q(" ".join(exc.acr_values))}"')
        return ", ".join(parts)
    if getattr(exc, "code", None) == 401:
        err = "invalid_token" if request.headers.get("Authorization", "").lower().startswith("bearer ") else None
        return 'Bearer' + (f' error="{err}", error_description="{_q(exc.description or "")}"' if err else "")
    return "Bearer"


def _q(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', "'")


def login_url_for(provider: str, next_url: str, prefix: str, step_up_skill: str | None = None) -> str:
    url = f"{prefix}/{provider}/login?next={quote(next_url, safe='/')}"
    if step_up_skill:
        url += f"&stepup={quote(step_up_skill, safe='')}"
    return url
