"""admin: the administration API under /api/v1/admin/ (users, devices, equipment, tenant settings, the audit
log; easysmart.admin, easysmart.audit)."""

from __future__ import annotations

import functools

import flask
import functions_framework
import redis

from easysmart import audit
from easysmart.accountstate import AccountStates
from easysmart.admin.devices import DevicesService
from easysmart.admin.equipment import EquipmentService
from easysmart.admin.tenant import TenantService
from easysmart.admin.users import MAX_USER_BODY_BYTES, UsersService
from easysmart.audit import Origin
from easysmart.config import (
    AdminDatabaseTimeouts,
    AdminSettings,
    BackendSettings,
    DatabaseSettings,
    LoggingSettings,
    ProxySettings,
    RedisSettings,
    TokenSettings,
    TracingSettings,
)
from easysmart.db import Database
from easysmart.identity import Principal, TokenService
from easysmart.observability import configure_logging, request_id_var
from easysmart.tracing import configure_tracing
from easysmart.web import ProxyTrust, Reply, Router, client_address, json_body

configure_logging("admin", LoggingSettings.from_env())
configure_tracing("admin", TracingSettings.from_env())
MAX_ADMIN_BODY_BYTES = 4096
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


@functools.cache
def _devices() -> DevicesService:
    return DevicesService(_database(), AdminSettings.from_env(), _access()[1])


@functools.cache
def _equipment() -> EquipmentService:
    return EquipmentService(_database())


@functools.cache
def _tenant() -> TenantService:
    return TenantService(_database())


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


def list_devices(request: flask.Request) -> Reply:
    return Reply(200, _devices().list(_principal(request), request.args))


def create_device(request: flask.Request) -> Reply:
    principal = _principal(request)
    return Reply(201, _devices().create(principal, json_body(request, MAX_ADMIN_BODY_BYTES), _origin(request)))


def rotate_device(request: flask.Request, device_id: str) -> Reply:
    principal = _principal(request)
    # The grace period is optional: an empty body rotates at once.
    body = json_body(request, MAX_ADMIN_BODY_BYTES, optional=True)
    return Reply(200, _devices().rotate(principal, device_id, body, _origin(request)))


def block_device(request: flask.Request, device_id: str) -> Reply:
    return Reply(200, _devices().set_blocked(_principal(request), device_id, True, _origin(request)))


def unblock_device(request: flask.Request, device_id: str) -> Reply:
    return Reply(200, _devices().set_blocked(_principal(request), device_id, False, _origin(request)))


def delete_device(request: flask.Request, device_id: str) -> Reply:
    return Reply(200, _devices().delete(_principal(request), device_id, _origin(request)))


def list_equipment(request: flask.Request) -> Reply:
    return Reply(200, _equipment().list(_principal(request), request.args))


def update_equipment(request: flask.Request, equipment_uuid: str) -> Reply:
    principal = _principal(request)
    body = json_body(request, MAX_ADMIN_BODY_BYTES)
    return Reply(200, _equipment().update(principal, equipment_uuid, body, _origin(request)))


def get_tenant(request: flask.Request) -> Reply:
    return Reply(200, _tenant().get(_principal(request)))


def update_tenant(request: flask.Request) -> Reply:
    principal = _principal(request)
    return Reply(200, _tenant().update(principal, json_body(request, MAX_ADMIN_BODY_BYTES), _origin(request)))


def list_audit(request: flask.Request) -> Reply:
    return Reply(200, audit.list_entries(_database(), _principal(request), request.args))


router = Router("admin")
router.add("GET", "/api/v1/admin/users", list_users)
router.add("POST", "/api/v1/admin/users", create_user)
router.add("PATCH", "/api/v1/admin/users/{user_id}", update_user)
router.add("GET", "/api/v1/admin/audit", list_audit)
router.add("GET", "/api/v1/admin/devices", list_devices)
router.add("POST", "/api/v1/admin/devices", create_device)
router.add("POST", "/api/v1/admin/devices/{device_id}/rotate", rotate_device)
router.add("POST", "/api/v1/admin/devices/{device_id}/block", block_device)
router.add("POST", "/api/v1/admin/devices/{device_id}/unblock", unblock_device)
router.add("DELETE", "/api/v1/admin/devices/{device_id}", delete_device)
router.add("GET", "/api/v1/admin/equipment", list_equipment)
router.add("PATCH", "/api/v1/admin/equipment/{equipment_uuid}", update_equipment)
router.add("GET", "/api/v1/admin/tenant", get_tenant)
router.add("PATCH", "/api/v1/admin/tenant", update_tenant)


@functions_framework.http
def handle(request: flask.Request) -> flask.Response:
    return router(request)
