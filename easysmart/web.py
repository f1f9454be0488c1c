"""The HTTP adapter every function shares: routing, request ids, JSON errors, health, metrics.

Entry points stay thin: they build a Router of plain handlers and hand it the Flask
request functions-framework gives them.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

import flask
import orjson
from opentelemetry.trace import INVALID_SPAN
from prometheus_client import Counter, Histogram

from easysmart.config import ConfigError, ProxySettings
from easysmart.errors import (
    BadRequestError,
    EasySmartError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    UnavailableError,
)
from easysmart.metrics import HTTP_LATENCY, HTTP_REQUESTS
from easysmart.observability import batch_id_var, metrics_response, request_id_var, tenant_id_var
from easysmart.tracing import mark_failed, server_span

logger = logging.getLogger(__name__)


@dataclass
class Reply:
    status: int
    body: object
    headers: dict[str, str] = field(default_factory=dict)


# A handler answers a Reply (JSON), or a flask.Response of its own (a stream of Server-Sent Events).
Handler = Callable[..., "Reply | flask.Response"]
_HEALTH_PATHS = {"/", "/_/health", "/_/ready", "/healthz"}
# Probes and scrapes are not traced.
_UNTRACED = contextlib.nullcontext(INVALID_SPAN)


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


MAX_JSON_BODY_BYTES = 64 * 1024
# A client's X-Request-Id is kept when it is short printable ASCII without spaces: it goes into logs, the claim
# check and the blob's metadata (an HTTP header of the object store).
_CLIENT_REQUEST_ID = re.compile(r"[!-~]{1,128}")


def request_id_of(sent: str | None) -> str:
    """The request's id: the client's when usable, else a new one."""
    return sent if sent is not None and _CLIENT_REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex


def json_body(request: flask.Request, max_bytes: int = MAX_JSON_BODY_BYTES, optional: bool = False) -> object:
    """The request's JSON body, read at most `max_bytes` (413 above); 400 when not JSON, or empty unless
    `optional` (then None)."""
    if (request.content_length or 0) > max_bytes:
        raise PayloadTooLargeError(f"the body is larger than {max_bytes} bytes")
    raw = request.stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise PayloadTooLargeError(f"the body is larger than {max_bytes} bytes")
    if not raw.strip():
        if optional:
            return None
        raise BadRequestError("the body is empty; send a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise BadRequestError(f"the body is not valid JSON: {error}") from None


# The front proxy sets this header from its Secret and replaces any copy a client sends.
PROXY_SECRET_HEADER = "X-ESM-Proxy-Secret"
MIN_PROXY_SECRET_BYTES = 32


@dataclass(frozen=True)
class ProxyTrust:
    """Which requests came through the front proxy: those carrying its shared secret.

    The peer address proves nothing: in a Knative pod every request arrives from queue-proxy on
    loopback, whoever sent it, and anything in the cluster can reach a cluster-local Service.
    """

    secret: bytes  # empty: no request is believed to come through the front proxy

    @classmethod
    def from_settings(cls, settings: ProxySettings) -> ProxyTrust:
        secret = settings.front_proxy_secret.encode()
        if not secret:
            logger.warning(
                "FRONT_PROXY_SECRET is not set: no X-Real-IP is believed, every client address is the peer's"
            )
        elif len(secret) < MIN_PROXY_SECRET_BYTES:
            raise ConfigError(
                f"FRONT_PROXY_SECRET is shorter than {MIN_PROXY_SECRET_BYTES} bytes; generate a longer one"
            )
        return cls(secret)

    def vouches_for(self, request: flask.Request) -> bool:
        presented = request.headers.get(PROXY_SECRET_HEADER)
        return bool(self.secret) and presented is not None and hmac.compare_digest(presented.encode(), self.secret)


def client_address(request: flask.Request, proxy: ProxyTrust) -> str:
    """The address the front proxy saw (X-Real-IP) when the request carries its secret; otherwise the peer's."""
    peer = request.remote_addr or "unknown"
    real_ip = request.headers.get("X-Real-IP", "").strip()
    if real_ip and proxy.vouches_for(request):
        return real_ip
    return peer


class Router:
    """`metrics` answers GET /metrics (the catalogue's metrics of the function's workers unless given).
    `parent_decides_sampling`: a caller's traceparent decides whether a request is traced, for a function
    only the platform reaches (process); elsewhere a client's sampled flag is not taken (easysmart.tracing)."""

    def __init__(
        self,
        function: str,
        metrics: Callable[[], tuple[bytes, int, dict[str, str]]] = metrics_response,
        parent_decides_sampling: bool = False,
    ) -> None:
        self.function = function
        self.metrics = metrics
        self.parent_decides_sampling = parent_decides_sampling
        self._routes: list[tuple[str, re.Pattern[str], str, Handler]] = []
        # The metrics' children of each (route, status): labels() takes a lock and builds a key on every call.
        self._counted: dict[tuple[str, int], tuple[Counter, Histogram]] = {}

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        """pattern uses {name} placeholders for one path segment each."""
        regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "/?$")
        self._routes.append((method.upper(), regex, pattern, handler))

    def __call__(self, request: flask.Request) -> flask.Response:
        request_id = request_id_of(request.headers.get("X-Request-Id"))
        token = request_id_var.set(request_id)
        # Worker threads serve many requests: ids of an earlier one must not leak into this one's logs.
        batch_id_var.set(None)
        tenant_id_var.set(None)
        started = time.perf_counter()
        route_label = "unmatched"
        probe = request.method == "GET" and (request.path in _HEALTH_PATHS or request.path == "/metrics")
        traced = _UNTRACED if probe else server_span(request.method, request.headers, self.parent_decides_sampling)
        with traced as span:
            try:
                route_label, response = self._dispatch(request)
            finally:
                request_id_var.reset(token)
            if span.is_recording():
                if route_label != "unmatched":
                    # The route's template, never the path (ids) or the query (a stream ticket).
                    span.update_name(f"{request.method} {route_label}")
                    span.set_attribute("http.route", route_label)
                span.set_attribute("http.response.status_code", response.status_code)
                if response.status_code >= 500:
                    mark_failed(span, str(response.status_code))
        response.headers["X-Request-Id"] = request_id
        counted = self._counted.get((route_label, response.status_code))
        if counted is None:
            counted = self._counted[(route_label, response.status_code)] = (
                HTTP_REQUESTS.labels(self.function, route_label, str(response.status_code)),
                HTTP_LATENCY.labels(self.function, route_label),
            )
        requests, latency = counted
        requests.inc()
        latency.observe(time.perf_counter() - started)
        return response

    def _dispatch(self, request: flask.Request) -> tuple[str, flask.Response]:
        path = request.path
        if request.method == "GET" and path in _HEALTH_PATHS:
            return "health", json_response(200, {"status": "ok", "function": self.function})
        if request.method == "GET" and path == "/metrics":
            body, status, headers = self.metrics()
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
            if isinstance(reply, flask.Response):
                return label, reply
            return label, json_response(reply.status, reply.body, reply.headers)
        if allowed:
            not_allowed = MethodNotAllowedError(f"{request.method} is not allowed on {path}", allowed=allowed)
            return "unmatched", error_response(not_allowed)
        return "unmatched", error_response(NotFoundError(f"no route for {path}"))
