"""admin: the administration API under /api/v1/admin/ (users, devices, equipment, tenant settings, the audit
log; easysmart.admin, easysmart.audit)."""

from __future__ import annotations

import functools

import flask
import functions_framework
import redis

from easysmart import audit
from easysmart.accountstate import AccountStates
from easysmart.admin.users import MAX_USER_BODY_BYTES, UsersService
from easysmart.audit import Origin
from easysmart.config import (
    AdminDatabaseTimeouts,
    BackendSettings,
    DatabaseSettings,
    LoggingSettings,
    ProxySettings,
    RedisSettings,
    TokenSettings,
)
from easysmart.db import Database
from easysmart.identity import Principal, TokenService
from easysmart.observability import configure_logging, request_id_var
from easysmart.web import ProxyTrust, Reply, Router, client_address, json_body

configure_logging("admin", LoggingSettings.from_env())
_PROXY_TRUST = ProxyTrust.from_settings(ProxySettings.from_env())


@functools.cache
def _database() -> Database:
    database, timeouts = DatabaseSettings.from_env(), AdminDatabaseTimeouts.from_env()
    return Database(
        database.database_url,
        database.db_pool_max,
        statement_timeout_s=timeouts.statement_timeout_s,
        lock_timeout_s=timeouts.lock_timeout_s,
    )


@functools.cache
def _access() -> tuple[TokenService, AccountStates]:
    timeout_s = BackendSettings.from_env().backend_timeout_s
    redis_client = redis.Redis.from_url(
        RedisSettings.from_env().redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )
    return TokenService(TokenSettings.from_env()), AccountStates(_database(), redis_client)


@functools.cache
def _users() -> UsersService:
    return UsersService(_database(), _access()[1])


def _principal(request: flask.Request) -> Principal:
    tokens, states = _access()
    return states.principal(request.headers, tokens)


def _origin(request: flask.Request) -> Origin:
    return Origin(request_id_var.get(), client_address(request, _PROXY_TRUST), request.headers.get("User-Agent"))


def list_users(request: flask.Request) -> Reply:
    return Reply(200, _users().list(_principal(request), request.args))


def create_user(request: flask.Request) -> Reply:
    principal = _principal(request)
    return Reply(201, _users().create(principal, json_body(request, MAX_USER_BODY_BYTES), _origin(request)))


def update_user(request: flask.Request, user_id: str) -> Reply:
    principal = _principal(request)
    return Reply(200, _users().update(principal, user_id, json_body(request, MAX_USER_BODY_BYTES), _origin(request)))


def list_audit(request: flask.Request) -> Reply:
    return Reply(200, audit.list_entries(_database(), _principal(request), request.args))


router = Router("admin")
router.add("GET", "/api/v1/admin/users", list_users)
router.add("POST", "/api/v1/admin/users", create_user)
router.add("PATCH", "/api/v1/admin/users/{user_id}", update_user)
router.add("GET", "/api/v1/admin/audit", list_audit)


@functions_framework.http
def handle(request: flask.Request) -> flask.Response:
    return router(request)
