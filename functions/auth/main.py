"""auth: device and user login, refresh-token rotation, who-am-I and passwords (docs/architecture.md §3.9, §8)."""

from __future__ import annotations

import functools

import flask
import functions_framework
import redis

from easysmart.accountstate import AccountStates
from easysmart.auth import AuthService, Credentials, PasswordChange, PasswordSet, refresh_token_from_body
from easysmart.config import (
    AuthDatabaseTimeouts,
    BackendSettings,
    DatabaseSettings,
    LoggingSettings,
    LoginSettings,
    ProxySettings,
    RedisSettings,
    TokenSettings,
    TracingSettings,
)
from easysmart.db import Database
from easysmart.identity import TokenService, bearer_principal
from easysmart.observability import configure_logging
from easysmart.ratelimit import RateLimiter
from easysmart.tracing import configure_tracing
from easysmart.web import ProxyTrust, Reply, Router, client_address, json_body

configure_logging("auth", LoggingSettings.from_env())
configure_tracing("auth", TracingSettings.from_env())
_PROXY_TRUST = ProxyTrust.from_settings(ProxySettings.from_env())


@functools.cache
def _service() -> AuthService:
    database, timeouts = DatabaseSettings.from_env(), AuthDatabaseTimeouts.from_env()
    db = Database(
        database.database_url,
        database.db_pool_max,
        statement_timeout_s=timeouts.statement_timeout_s,
        lock_timeout_s=timeouts.lock_timeout_s,
    )
    timeout_s = BackendSettings.from_env().backend_timeout_s
    redis_client = redis.Redis.from_url(
        RedisSettings.from_env().redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )
    return AuthService(
        db,
        TokenService(TokenSettings.from_env()),
        LoginSettings.from_env(),
        RateLimiter(redis_client),
        AccountStates(db, redis_client),
    )


def _login(request: flask.Request, kind: str) -> Reply:
    service = _service()
    credentials = Credentials.from_body(json_body(request))
    return Reply(
        200,
        service.login(credentials, kind, client_address(request, _PROXY_TRUST), request.headers.get("User-Agent")),
    )


def device_login(request: flask.Request) -> Reply:
    return _login(request, "device")


def user_login(request: flask.Request) -> Reply:
    return _login(request, "user")


def refresh(request: flask.Request) -> Reply:
    return Reply(200, _service().refresh(refresh_token_from_body(json_body(request))))


def me(request: flask.Request) -> Reply:
    service = _service()
    return Reply(200, service.me(bearer_principal(request.headers, service.tokens)))


def set_password(request: flask.Request) -> Reply:
    service = _service()
    body = PasswordSet.from_body(json_body(request))
    answer = service.set_password(body, client_address(request, _PROXY_TRUST), request.headers.get("User-Agent"))
    return Reply(200, answer)


def change_password(request: flask.Request) -> Reply:
    service = _service()
    assert service.states is not None
    principal = service.states.principal(request.headers, service.tokens)
    change = PasswordChange.from_body(json_body(request))
    return Reply(
        200,
        service.change_password(
            principal, change, client_address(request, _PROXY_TRUST), request.headers.get("User-Agent")
        ),
    )


router = Router("auth")
router.add("POST", "/api/v1/auth/device/login", device_login)
router.add("POST", "/api/v1/auth/login", user_login)
router.add("POST", "/api/v1/auth/refresh", refresh)
router.add("GET", "/api/v1/auth/me", me)
router.add("POST", "/api/v1/auth/password", change_password)
router.add("POST", "/api/v1/auth/password/set", set_password)


@functions_framework.http
def handle(request: flask.Request) -> flask.Response:
    return router(request)
