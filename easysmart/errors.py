"""The package's one exception root and the HTTP status each error maps to."""

from __future__ import annotations


class EasySmartError(Exception):
    """Root of every error this package raises on purpose.

    A 5xx error's message reads "what failed: why"; only "what failed" is answered (the why names hosts, ports and
    library errors: internals), and the whole is logged."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_body(self) -> dict:
        message = self.message.split(": ", 1)[0] if self.status >= 500 else self.message
        return {"error": self.code, "message": message, **self.details}


class BadRequestError(EasySmartError):
    status, code = 400, "bad_request"


class UnauthorizedError(EasySmartError):
    status, code = 401, "unauthorized"


class ForbiddenError(EasySmartError):
    status, code = 403, "forbidden"


class NotFoundError(EasySmartError):
    status, code = 404, "not_found"


class MethodNotAllowedError(EasySmartError):
    status, code = 405, "method_not_allowed"


class ConflictError(EasySmartError):
    status, code = 409, "conflict"


class PayloadTooLargeError(EasySmartError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaTypeError(EasySmartError):
    status, code = 415, "unsupported_media_type"


class UnprocessableError(EasySmartError):
    status, code = 422, "unprocessable"


class RateLimitedError(EasySmartError):
    status, code = 429, "rate_limited"

    def __init__(self, message: str, retry_after_s: int, headers: dict[str, str], limit: str = "") -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.retry_after_s = retry_after_s
        self.headers = headers
        self.limit = limit  # the name of the limit that refused (for metrics; not in the answer)


class UnavailableError(EasySmartError):
    """A backing service (database, object store, Kafka) cannot be reached: retry later."""

    status, code = 503, "unavailable"

    def __init__(self, message: str, retry_after_s: int = 5, **details: object) -> None:
        super().__init__(message, **details)
        self.retry_after_s = retry_after_s


class DatabaseTimeoutError(UnavailableError):
    """A statement or lock timeout: the database is up but the work did not finish in time."""

    code = "database_timeout"
