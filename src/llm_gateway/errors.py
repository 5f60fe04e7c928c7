"""The gateway's one error tree.

Every failure a client can see is a ``GatewayError``; it knows its HTTP status,
its OpenAI error ``type`` and ``code``, and whether a retry on another
deployment could help. Provider and transport errors are mapped into this tree
once, at the adapter boundary; the API layer renders it in the client's dialect.

An error mapped from an upstream's failure also carries its ``cause`` in a
few words for the operator's log ("connection refused", "timed out (connect)",
"HTTP 503: <the provider's message>"); the client never sees it.

    GatewayError
    ├── InvalidRequest            400 invalid_request_error
    │   ├── ModelNotFound         404 model_not_found
    │   └── RequestTooLarge       413 request_too_large
    ├── AuthenticationFailed      401 authentication_error
    ├── InsufficientQuota         402 insufficient_quota
    ├── PermissionDenied          403 permission_error
    ├── NotFound                  404 not_found
    ├── Conflict                  409 conflict
    ├── RateLimited               429 rate_limit_error
    ├── UpstreamError             502 upstream_error      (retryable)
    │   ├── UpstreamRateLimited   429 rate_limit_error    (retryable)
    │   └── UpstreamAuthRejected  502 upstream_error      (retryable elsewhere only)
    ├── UpstreamRejected          provider's 4xx, passed on (not retryable)
    ├── NoHealthyDeployment       503 service_unavailable
    ├── ServiceUnavailable        503 service_unavailable (e.g. limits unverifiable)
    └── UpstreamTimeout           504 timeout_error       (retryable)
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson


class GatewayError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "api_error"
    default_code: ClassVar[str | None] = None
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
        cause: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.cause = cause  # why an upstream attempt failed, for the log only
        self.code = code if code is not None else self.default_code
        self.param = param
        self.retry_after = retry_after
        self.headers = headers or {}
        if status is not None:
            self.status_code = status
        else:
            self.status_code = self.status

    def to_openai(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.to_openai())

    def response_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.retry_after is not None:
            headers["retry-after"] = str(max(1, int(-(-self.retry_after // 1))))
        return headers


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    default_code = "invalid_request"


class ModelNotFound(InvalidRequest):
    status = 404
    default_code = "model_not_found"


class RequestTooLarge(InvalidRequest):
    status = 413
    default_code = "request_too_large"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "authentication_error"
    default_code = "invalid_api_key"


class InsufficientQuota(GatewayError):
    status = 402
    type = "insufficient_quota"
    default_code = "insufficient_quota"


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"
    default_code = "model_not_allowed"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    default_code = "not_found"


class Conflict(GatewayError):
    status = 409
    type = "invalid_request_error"
    default_code = "conflict"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class UpstreamError(GatewayError):
    """The provider failed, answered garbage, or refused our credentials."""

    status = 502
    type = "upstream_error"
    default_code = "upstream_error"
    retryable = True


class UpstreamRateLimited(UpstreamError):
    status = 429
    type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class UpstreamAuthRejected(UpstreamError):
    """The provider refused the gateway's own credentials (its 401/403): another
    deployment may serve the request, the same one again will not."""


class UpstreamRejected(GatewayError):
    """The provider's own 4xx about the request: same status, provider's message."""

    type = "invalid_request_error"


class NoHealthyDeployment(GatewayError):
    status = 503
    type = "service_unavailable"
    default_code = "no_healthy_deployment"


class ServiceUnavailable(GatewayError):
    """A part the gateway needs to decide is down (and configured to refuse
    rather than guess)."""

    status = 503
    type = "service_unavailable"
    default_code = "service_unavailable"


class DatabaseUnavailable(ServiceUnavailable):
    """The gateway's database cannot be reached (refused before any upstream call)."""

    default_code = "database_unavailable"

    def __init__(self, message: str = "The gateway cannot reach its database. Try again shortly.") -> None:
        super().__init__(message, retry_after=1)


class UpstreamTimeout(GatewayError):
    status = 504
    type = "timeout_error"
    default_code = "upstream_timeout"
    retryable = True


def upstream_status_error(
    status: int, message: str | None, *, code: str | None = None, param: str | None = None,
    retry_after: float | None = None, provider: str = "provider",
) -> GatewayError:
    """Map a provider's HTTP error status to the gateway's tree (SPEC §4, §8)."""
    if status in (401, 403):
        # Never echo the provider's message: it may quote part of our key.
        return UpstreamAuthRejected(f"The {provider} provider rejected the gateway's credentials.")
    if status == 429:
        return UpstreamRateLimited(
            message or f"The {provider} provider is rate limiting requests.",
            retry_after=retry_after,
        )
    if status == 408:
        return UpstreamTimeout(f"The {provider} provider timed out.")
    if 400 <= status < 500:
        return UpstreamRejected(
            message or f"The {provider} provider rejected the request.",
            status=status, code=code, param=param,
        )
    if status == 504:
        return UpstreamTimeout(f"The {provider} provider timed out (504).", retry_after=retry_after)
    return UpstreamError(
        f"The {provider} provider failed with status {status}.", retry_after=retry_after
    )
