"""Machine-readable reason codes carried by signals, audit events and error
bodies. Strings, so they survive JSON and SIEM queries unchanged."""

from __future__ import annotations

# sign-in failures
IDP_ERROR = "idp_error"                    # the IdP answered with an error response
STATE_MISSING = "state_missing"            # no state, or unknown / already used state
STATE_MISMATCH = "state_mismatch"          # state bound to another provider or browser
STATE_EXPIRED = "state_expired"
ISSUER_MISMATCH = "issuer_mismatch"        # RFC 9207 iss, or token / response issuer
INVALID_TOKEN = "invalid_token"            # signature, alg, claims
TOKEN_EXPIRED = "token_expired"
INVALID_AUDIENCE = "invalid_audience"
INVALID_NONCE = "invalid_nonce"
TENANT_MISMATCH = "tenant_mismatch"
TOKEN_EXCHANGE_FAILED = "token_exchange_failed"
IDP_UNAVAILABLE = "idp_unavailable"
GROUPS_UNAVAILABLE = "groups_unavailable"  # Azure overage could not be resolved
INVALID_RESPONSE = "invalid_response"      # SAML: malformed / unsigned / wrong destination ...
REPLAYED = "replayed"
UNSOLICITED = "unsolicited"
STEPUP_NOT_SATISFIED = "stepup_not_satisfied"
STEPUP_SUBJECT_MISMATCH = "stepup_subject_mismatch"  # a step-up answered by another account (sub / NameID)
BAD_REQUEST = "bad_request"
REQUEST_TOO_LARGE = "request_too_large"  # a body over the route's limit, refused unparsed
RATE_LIMITED = "rate_limited"              # too many sign-ins started from one address
DEPROVISIONED = "deprovisioned"            # SCIM deprovisioned the person (active: false / DELETE)
FALLBACK_NOT_NEEDED = "fallback_not_needed"  # a fallbackOnly provider while every provider it stands in for is up

# session
IDLE_TIMEOUT = "idle_timeout"
ABSOLUTE_TIMEOUT = "absolute_timeout"
REVOKED = "revoked"
OPERATOR = "operator"                      # an operator ended it (CLI, operator console)
REFRESH_FAILED = "refresh_failed"
STORE_UNAVAILABLE = "store_unavailable"

# access decisions
NOT_AUTHENTICATED = "not_authenticated"
MISSING_GROUP = "missing_group"
MISSING_SCOPE = "missing_scope"
NETWORK_NOT_ALLOWED = "network_not_allowed"
MFA_REQUIRED = "mfa_required"
STALE_AUTHENTICATION = "stale_authentication"
INSUFFICIENT_ACR = "insufficient_acr"        # the sign-in's acr is not one of the skill's acrValues
GROUPS_INCOMPLETE = "groups_incomplete"
CSRF_FAILED = "csrf_failed"                # a state-changing request without a valid CSRF token
BROWSER_ONLY = "browser_only"              # a bearer token at a browser-only page (the operator console)
