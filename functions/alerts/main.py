"""alerts: evaluates the rules when a batch is stored and on the minute's ping (CloudEvents at POST /), and
serves the rules, alerts and maintenance windows API (easysmart.alerting)."""

from __future__ import annotations

import functools

import flask
import functions_framework
import redis

from easysmart.accountstate import AccountStates
from easysmart.alerting.api import MAX_ACK_BODY_BYTES, MAX_SNOOZE_BODY_BYTES, AlertsService
from easysmart.alerting.engine import AlertEngine
from easysmart.alerting.maintenance import MAX_WINDOW_BODY_BYTES, MaintenanceWindows
from easysmart.alerting.rules import MAX_RULE_BODY_BYTES, RuleStore
from easysmart.alerting.triggers import dispatch
from easysmart.config import (
    AlertsDatabaseTimeouts,
    AlertSettings,
    BackendSettings,
    DatabaseSettings,
    LoggingSettings,
    RedisSettings,
    TokenSettings,
    TracingSettings,
)
from easysmart.db import Database
from easysmart.errors import BadRequestError
from easysmart.events import cloudevent_from_http
from easysmart.identity import Principal, TokenService
from easysmart.observability import configure_logging
from easysmart.tracing import configure_tracing
from easysmart.web import Reply, Router, json_body

configure_logging("alerts", LoggingSettings.from_env())
configure_tracing("alerts", TracingSettings.from_env())


@functools.cache
def _database() -> Database:
    database, timeouts = DatabaseSettings.from_env(), AlertsDatabaseTimeouts.from_env()
    return Database(
        database.database_url,
        database.db_pool_max,
        statement_timeout_s=timeouts.statement_timeout_s,
        lock_timeout_s=timeouts.lock_timeout_s,
    )


@functools.cache
def _engine() -> AlertEngine:
    return AlertEngine(_database(), AlertSettings.from_env())


@functools.cache
def _api() -> tuple[RuleStore, AlertsService, MaintenanceWindows, TokenService, AccountStates]:
    timeout_s = BackendSettings.from_env().backend_timeout_s
    redis_client = redis.Redis.from_url(
        RedisSettings.from_env().redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )
    db = _database()
    return (
        RuleStore(db),
        AlertsService(db),
        MaintenanceWindows(db),
        TokenService(TokenSettings.from_env()),
        AccountStates(db, redis_client),
    )


def _principal(request: flask.Request) -> Principal:
    _, _, _, tokens, states = _api()
    return states.principal(request.headers, tokens)


def receive(request: flask.Request) -> Reply:
    event = cloudevent_from_http(request.headers, request.get_data())
    if event is None:
        raise BadRequestError("expected a CloudEvent (com.easysmart.telemetry.stored, or a ping of the tick job)")
    return Reply(200, dispatch(event, _engine()))


def list_rules(request: flask.Request) -> Reply:
    return Reply(200, _api()[0].list(_principal(request), request.args))


def create_rule(request: flask.Request) -> Reply:
    principal = _principal(request)
    return Reply(201, _api()[0].create(principal, json_body(request, MAX_RULE_BODY_BYTES)))


def get_rule(request: flask.Request, rule_id: str) -> Reply:
    return Reply(200, _api()[0].get(_principal(request), rule_id))


def replace_rule(request: flask.Request, rule_id: str) -> Reply:
    principal = _principal(request)
    return Reply(200, _api()[0].replace(principal, rule_id, json_body(request, MAX_RULE_BODY_BYTES)))


def delete_rule(request: flask.Request, rule_id: str) -> Reply:
    _api()[0].delete(_principal(request), rule_id)
    return Reply(204, None)


def list_alerts(request: flask.Request) -> Reply:
    return Reply(200, _api()[1].list(_principal(request), request.args))


def acknowledge(request: flask.Request, alert_id: str) -> Reply:
    principal = _principal(request)
    # The comment is optional: an empty body acknowledges without one.
    return Reply(200, _api()[1].acknowledge(principal, alert_id, json_body(request, MAX_ACK_BODY_BYTES, optional=True)))


def snooze(request: flask.Request, alert_id: str) -> Reply:
    principal = _principal(request)
    return Reply(200, _api()[1].snooze(principal, alert_id, json_body(request, MAX_SNOOZE_BODY_BYTES)))


def list_maintenance(request: flask.Request) -> Reply:
    return Reply(200, _api()[2].list(_principal(request), request.args))


def create_maintenance(request: flask.Request) -> Reply:
    principal = _principal(request)
    return Reply(201, _api()[2].create(principal, json_body(request, MAX_WINDOW_BODY_BYTES)))


def delete_maintenance(request: flask.Request, window_id: str) -> Reply:
    _api()[2].delete(_principal(request), window_id)
    return Reply(204, None)


router = Router("alerts")
router.add("POST", "/", receive)
router.add("GET", "/api/v1/alerts", list_alerts)
router.add("GET", "/api/v1/alerts/rules", list_rules)
router.add("POST", "/api/v1/alerts/rules", create_rule)
router.add("GET", "/api/v1/alerts/rules/{rule_id}", get_rule)
router.add("PUT", "/api/v1/alerts/rules/{rule_id}", replace_rule)
router.add("DELETE", "/api/v1/alerts/rules/{rule_id}", delete_rule)
router.add("GET", "/api/v1/alerts/maintenance", list_maintenance)
router.add("POST", "/api/v1/alerts/maintenance", create_maintenance)
router.add("DELETE", "/api/v1/alerts/maintenance/{window_id}", delete_maintenance)
router.add("POST", "/api/v1/alerts/{alert_id}/ack", acknowledge)
router.add("POST", "/api/v1/alerts/{alert_id}/snooze", snooze)


@functions_framework.http
def handle(request: flask.Request) -> flask.Response:
    return router(request)
