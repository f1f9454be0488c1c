"""analytics: read-only statistics of the tenant's equipment (easysmart.analytics)."""

from __future__ import annotations

import functools

import flask
import functions_framework
import redis

from easysmart.accountstate import AccountStates
from easysmart.aggregates import PlainAggregates, backend_for
from easysmart.analytics import AnalyticsService
from easysmart.analytics_cache import HistoryCache
from easysmart.config import (
    AggregateSettings,
    AnalyticsCacheSettings,
    AnalyticsDatabaseTimeouts,
    BackendSettings,
    DatabaseSettings,
    LoggingSettings,
    RedisSettings,
    TokenSettings,
    TracingSettings,
)
from easysmart.db import Database
from easysmart.identity import Principal, TokenService
from easysmart.observability import configure_logging
from easysmart.tracing import TracedCursor, configure_tracing
from easysmart.web import Reply, Router

configure_logging("analytics", LoggingSettings.from_env())
configure_tracing("analytics", TracingSettings.from_env())


@functools.cache
def _clients() -> tuple[AnalyticsService, TokenService, AccountStates]:
    database, timeouts = DatabaseSettings.from_env(), AnalyticsDatabaseTimeouts.from_env()
    db = Database(
        database.database_url,
        database.db_pool_max,
        statement_timeout_s=timeouts.statement_timeout_s,
        lock_timeout_s=timeouts.lock_timeout_s,
        cursor_factory=TracedCursor,  # its SQL is traced
    )
    timeout_s = BackendSettings.from_env().backend_timeout_s
    redis_client = redis.Redis.from_url(
        RedisSettings.from_env().redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )
    cache_settings = AnalyticsCacheSettings.from_env()
    # Only the plain-PostgreSQL refresh bumps the cache generation (easysmart.analytics_cache).
    cached = cache_settings.analytics_cache_ttl_s > 0 and isinstance(backend_for(db), PlainAggregates)
    return (
        AnalyticsService(
            db, AggregateSettings.from_env(), cache=HistoryCache(redis_client, cache_settings) if cached else None
        ),
        TokenService(TokenSettings.from_env()),
        AccountStates(db, redis_client),
    )


def _principal(request: flask.Request) -> Principal:
    _, tokens, states = _clients()
    return states.principal(request.headers, tokens)


def equipments(request: flask.Request) -> Reply:
    return Reply(200, _clients()[0].equipments(_principal(request), request.args))


def equipment_history(request: flask.Request, uuid: str) -> Reply:
    return Reply(200, _clients()[0].equipment_history(_principal(request), uuid, request.args))


def sensor_history(request: flask.Request, uuid: str) -> Reply:
    return Reply(200, _clients()[0].sensor_history(_principal(request), uuid, request.args))


def equipment_stats(request: flask.Request, uuid: str) -> Reply:
    return Reply(200, _clients()[0].equipment_stats(_principal(request), uuid, request.args))


def home_assistant(request: flask.Request, uuid: str) -> Reply:
    return Reply(200, _clients()[0].home_assistant(_principal(request), uuid, request.args))


router = Router("analytics")
router.add("GET", "/api/v1/analytics/equipments", equipments)
router.add("GET", "/api/v1/analytics/equipment/{uuid}/history", equipment_history)
router.add("GET", "/api/v1/analytics/sensor/{uuid}/history", sensor_history)
router.add("GET", "/api/v1/analytics/equipment/{uuid}/stats", equipment_stats)
router.add("GET", "/api/v1/analytics/home-assistant/{uuid}", home_assistant)


@functions_framework.http
def handle(request: flask.Request) -> flask.Response:
    return router(request)
