"""The HTTP adapter every function shares: routing, request ids, JSON errors, health, metrics.

Entry points stay thin: they build a Router of plain handlers and hand it the Flask
request functions-framework gives them.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

import flask
import orjson

from easysmart.errors import (
    EasySmartError,
    MethodNotAllowedError,
    NotFoundError,
    RateLimitedError,
    UnavailableError,
)
from easysmart.observability import LATENCY, REQUESTS, batch_id_var, metrics_response, request_id_var, tenant_id_var

logger = logging.getLogger(__name__)


@dataclass
class Reply:
    status: int
    body: object
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[..., Reply]
_HEALTH_PATHS = {"/", "/_/health", "/_/ready", "/healthz"}


def json_response(status: int, body: object, headers: dict[str, str] | None = None) -> flask.Response:
    response = flask.Response(
        orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS), status=status, mimetype="application/json"
    )
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def error_response(error: EasySmartError) -> flask.Response:
    headers: dict[str, str] = {}
    if isinstance(error, (RateLimitedError, UnavailableError)):
        headers["Retry-After"] = str(error.retry_after_s)
    if isinstance(error, RateLimitedError):
        headers.update(error.headers)
    return json_response(error.status, error.to_body(), headers)


def client_address(request: flask.Request, trusted_proxies: tuple[str, ...]) -> str:
    """The address the front door saw; a forwarded header counts only from a trusted proxy."""
    peer = request.remote_addr or "unknown"
    if peer not in trusted_proxies:
        return peer
    real_ip = request.headers.get("X-Real-IP")
    if real_ip:
        return real_ip.strip()
    forwarded = request.headers.get("X-Forwarded-For")
    if forwarded:
        # The right-most entry was added by the proxy we trust; earlier ones are client claims.
        return forwarded.split(",")[-1].strip()
    return peer


class Router:
    def __init__(self, function: str) -> None:
        self.function = function
        self._routes: list[tuple[str, re.Pattern[str], str, Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        """pattern uses {name} placeholders for one path segment each."""
        regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "/?$")
        self._routes.append((method.upper(), regex, pattern, handler))

    def __call__(self, request: flask.Request) -> flask.Response:
        request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
        token = request_id_var.set(request_id)
        # Worker threads serve many requests: ids of an earlier one must not leak into this one's logs.
        batch_id_var.set(None)
        tenant_id_var.set(None)
        started = time.perf_counter()
        route_label = "unmatched"
        try:
            route_label, response = self._dispatch(request)
        finally:
            request_id_var.reset(token)
        response.headers["X-Request-Id"] = request_id
        REQUESTS.labels(self.function, route_label, str(response.status_code)).inc()
        LATENCY.labels(self.function, route_label).observe(time.perf_counter() - started)
        return response

    def _dispatch(self, request: flask.Request) -> tuple[str, flask.Response]:
        path = request.path
        if request.method == "GET" and path in _HEALTH_PATHS:
            return "health", json_response(200, {"status": "ok", "function": self.function})
        if request.method == "GET" and path == "/metrics":
            body, status, headers = metrics_response()
            return "metrics", flask.Response(body, status=status, headers=headers)
        allowed: list[str] = []
        for method, regex, label, handler in self._routes:
            match = regex.match(path)
            if not match:
                continue
            if method != request.method:
                allowed.append(method)
                continue
            try:
                reply = handler(request, **match.groupdict())
            except EasySmartError as error:
                if error.status >= 500:
                    logger.warning("request failed: %s", error.message, extra={"status": error.status})
                return label, error_response(error)
            except Exception:
                logger.exception("unhandled error", extra={"path": path})
                return label, json_response(
                    500, {"error": "internal_error", "message": "internal error; see the function's logs"}
                )
            return label, json_response(reply.status, reply.body, reply.headers)
        if allowed:
            not_allowed = MethodNotAllowedError(f"{request.method} is not allowed on {path}", allowed=allowed)
            return "unmatched", error_response(not_allowed)
        return "unmatched", error_response(NotFoundError(f"no route for {path}"))
