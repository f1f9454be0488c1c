"""auth: device and user login, refresh-token rotation, and who-am-I (DESIGN section 3)."""
from __future__ import annotations

import functools

import flask
import functions_framework

from easysmart.auth import AuthService, Credentials, TokenService, bearer_principal
from easysmart.config import settings
from easysmart.db import Database
from easysmart.errors import BadRequestError
from easysmart.observability import configure_logging
from easysmart.web import Reply, Router, client_address

configure_logging("auth")


@functools.cache
def _service() -> AuthService:
    config = settings()
    return AuthService(Database(config.database_url, config.db_pool_max), TokenService(config), config)


def _json_body(request: flask.Request) -> object:
    body = request.get_json(silent=True, force=True)
    if body is None:
        raise BadRequestError("the body must be JSON")
    return body


def _login(request: flask.Request, kind: str) -> Reply:
    service = _service()
    credentials = Credentials.from_body(_json_body(request))
    return Reply(200, service.login(credentials, kind, client_address(request, service.settings.trusted_proxies)))


def device_login(request: flask.Request) -> Reply:
    return _login(request, "device")


def user_login(request: flask.Request) -> Reply:
    return _login(request, "user")


def refresh(request: flask.Request) -> Reply:
    return Reply(200, _service().refresh(_json_body(request)))


def me(request: flask.Request) -> Reply:
    service = _service()
    return Reply(200, service.me(bearer_principal(request.headers, service.tokens)))


router = Router("auth")
router.add("POST", "/api/v1/auth/device/login", device_login)
router.add("POST", "/api/v1/auth/login", user_login)
router.add("POST", "/api/v1/auth/refresh", refresh)
router.add("GET", "/api/v1/auth/me", me)


@functions_framework.http
def handle(request: flask.Request) -> flask.Response:
    return router(request)
