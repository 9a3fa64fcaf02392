"""The errors a request can end with, each mapped to one HTTP status.

::

    ApiError                 any error that has a place in the wire contract
    ├── BadRequest           400  malformed JSON, invalid field, bad query value
    ├── Unauthorized         401  no, invalid or revoked credentials
    ├── Forbidden            403  authenticated, but not allowed
    ├── NotFound             404  missing or inaccessible object
    ├── MethodNotAllowed     405
    ├── RequestTimeout       408  the body did not arrive in time
    ├── Conflict             409  the change contradicts the current state
    ├── PayloadTooLarge      413
    ├── UnsupportedMediaType 415
    ├── HeaderTooLarge       431  request head over server.max_header_bytes
    ├── RateLimited          429  carries ``retry_after`` seconds
    └── ServiceUnavailable   503  storage busy or shutting down

Services raise these; the API layer renders them as
``{"errorText": ..., "httpStatusCode": ...}``.  Anything else that escapes a
request is a bug and becomes a 500 without internals.
"""

from __future__ import annotations

__all__ = [
    "ApiError",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "HeaderTooLarge",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "RequestTimeout",
    "RateLimited",
    "ServiceUnavailable",
    "Unauthorized",
    "UnsupportedMediaType",
]


class ApiError(Exception):
    status: int = 500

    def __init__(self, text: str, status: int | None = None) -> None:
        super().__init__(text)
        self.text = text
        if status is not None:  # a status this hierarchy has no class for (426, ...)
            self.status = status


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class MethodNotAllowed(ApiError):
    status = 405


class RequestTimeout(ApiError):
    status = 408


class Conflict(ApiError):
    status = 409


class PayloadTooLarge(ApiError):
    status = 413


class UnsupportedMediaType(ApiError):
    status = 415


class HeaderTooLarge(ApiError):
    status = 431


class RateLimited(ApiError):
    status = 429

    def __init__(self, text: str, retry_after: int) -> None:
        super().__init__(text)
        self.retry_after = retry_after


class ServiceUnavailable(ApiError):
    status = 503
